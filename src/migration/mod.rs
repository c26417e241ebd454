//! `keyrot migrate-issuer`: the five steps of an issuer migration, each verified before the next.
//!
//! 1. publish the new issuer's discovery document and the JWKS of the current keys to every
//!    target; 2. read them back anonymously at the new issuer URL; 3. change kube-apiserver's
//!    flags (new issuer first, old kept) and restart it; 4. check the apiserver's discovery
//!    document and a fresh token name the new issuer; 5. after the grace period, if the plan says
//!    so, drop the old issuer, restart, check again. The first failure stops the run and nothing
//!    after it is changed. Each finished step is recorded (`progress`), so running the command
//!    again continues where it stopped; every step is idempotent.

pub mod progress;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::adapters::Restarter;
use crate::adapters::probe::KubeProber;
use crate::adapters::publish::{Documents, publish_target, render_documents};
use crate::adapters::restart::ProcessRestarter;
use crate::documents::JWKS_CONTENT_TYPE;
use crate::http::block_on;
use crate::issuer::{
    self, Applied, FlagEdit, IssuerFlags, ManualChange, MigrationStep, compute_edit,
};
use crate::keys::load_verification_keys;
use crate::plan::{FlagSource, Issuer, IssuerMigration, Plan, Probe, PublicRead};
use crate::targets::{public, read_served};
use progress::Progress;

/// How a run ended when no step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every planned step is done.
    Done,
    /// Nothing failed, but the next step cannot start yet; the text says when or what to do.
    Waiting(String),
}

/// A step that failed; the steps after it were not started.
#[derive(Debug, thiserror::Error)]
#[error("step {step} ({name}) failed: {message}")]
pub struct StepError {
    pub step: u8,
    pub name: &'static str,
    pub message: String,
}

fn failed(step: u8, message: impl Into<String>) -> StepError {
    let name = match step {
        1 => "publish for the new issuer",
        2 => "verify the new issuer's documents",
        3 => "change the flags and restart",
        4 => "verify the cluster",
        5 => "drop the old issuer",
        _ => "prepare",
    };
    StepError {
        step,
        name,
        message: message.into(),
    }
}

/// What a migration needs from the plan, checked once.
struct Migration<'a> {
    plan: &'a Plan,
    section: &'a IssuerMigration,
    /// The plan with the new issuer: what the publisher renders for.
    for_new: Plan,
    kids: Vec<String>,
}

impl<'a> Migration<'a> {
    fn new(plan: &'a Plan) -> Result<Self, StepError> {
        let section = plan.issuer_migration.as_ref().ok_or_else(|| {
            failed(
                0,
                "the plan has no issuerMigration section: nothing to migrate",
            )
        })?;
        let paths: Vec<PathBuf> = std::iter::once(&plan.apiserver.verification_bundle)
            .chain(&plan.apiserver.extra_verification_files)
            .cloned()
            .collect();
        let loaded = load_verification_keys(&paths).map_err(|e| failed(0, e.to_string()))?;
        let kids = loaded.keys.iter().map(|k| k.kid().to_string()).collect();
        let mut for_new = plan.clone();
        for_new.issuer = section.new_issuer.clone();
        Ok(Migration {
            plan,
            section,
            for_new,
            kids,
        })
    }

    fn new_issuer(&self) -> &Issuer {
        &self.section.new_issuer
    }

    fn add_step(&self) -> MigrationStep {
        MigrationStep::AddNewIssuerFirst {
            new_issuer: self.new_issuer().url.clone(),
            new_jwks_uri: self.new_issuer().jwks_uri.clone(),
        }
    }

    fn drop_step(&self) -> MigrationStep {
        MigrationStep::DropOldIssuer {
            old_issuer: self.plan.issuer.url.clone(),
        }
    }

    fn documents(&self) -> Result<Documents, StepError> {
        render_documents(&self.for_new, &self.kids).map_err(|e| failed(1, e.to_string()))
    }

    /// The flags as the manual editor assumes them: only the plan's issuer, nothing else set.
    fn assumed_flags(&self) -> IssuerFlags {
        IssuerFlags {
            issuers: vec![self.plan.issuer.url.clone()],
            jwks_uri: None,
            api_audiences: None,
        }
    }
}

/// What `--dry-run` prints: the documents, what each target would get, the flag changes.
pub fn dry_run(plan: &Plan) -> Result<String, StepError> {
    let migration = Migration::new(plan)?;
    let documents = migration.documents()?;
    let mut out = format!(
        "step 1: publish for {} the discovery document\n{}\nand the JWKS (kids [{}])\n{}\n",
        migration.new_issuer().url,
        documents.discovery,
        migration.kids.join(", "),
        documents.jwks
    );
    for target in &plan.targets {
        let outcome = crate::adapters::publish::preview_target(target, &documents);
        match outcome {
            Ok(objects) => {
                for object in objects {
                    out.push_str(&format!(
                        "  target {}: {}: {:?}\n",
                        target.name, object.url, object.written
                    ));
                }
            }
            Err(e) => out.push_str(&format!("  target {}: cannot tell: {e}\n", target.name)),
        }
    }
    out.push_str(&format!(
        "step 2: read {} anonymously and compare\n",
        public::join(
            &migration.new_issuer().url,
            crate::documents::DISCOVERY_PATH
        )
    ));
    out.push_str("step 3: change kube-apiserver's flags, then restart it\n");
    match &migration.section.flags {
        FlagSource::File { path, file } => {
            let add = compute_edit(file, path, &migration.add_step())
                .map_err(|e| failed(3, e.to_string()))?;
            out.push_str(&add.diff());
            out.push_str("step 4: check the apiserver's discovery document and a new token\n");
            if migration.section.drop_old_issuer {
                let dropped = file
                    .edit_text(&add.after, &migration.drop_step())
                    .map_err(|e| failed(5, format!("{}: {e}", path.display())))?;
                let drop_edit = FlagEdit {
                    path: path.clone(),
                    step: migration.drop_step(),
                    flags_before: add.flags_after.clone(),
                    flags_after: dropped.flags_after,
                    before: add.after.clone(),
                    after: dropped.text,
                };
                out.push_str(&format!(
                    "step 5: after {}, drop the old issuer\n{}",
                    crate::plan::format_duration(migration.section.grace_period),
                    drop_edit.diff()
                ));
            }
        }
        FlagSource::Manual => {
            let change = ManualChange::new(&migration.assumed_flags(), &migration.add_step())
                .map_err(|e| failed(3, e.to_string()))?;
            out.push_str(&change.render_then(RUN_AGAIN));
        }
    }
    if !migration.section.drop_old_issuer {
        out.push_str("step 5: none: the old issuer stays accepted (dropOldIssuer: false)\n");
    }
    Ok(out)
}

const RUN_AGAIN: &str = "run `keyrot migrate-issuer` again so keyrot checks the apiserver";

/// Runs the steps not done yet, in order. The caller holds the state lock. `say` gets one line
/// per thing done.
pub fn run(
    plan: &Plan,
    now: impl Fn() -> DateTime<Utc>,
    say: &mut dyn FnMut(String),
) -> Result<Outcome, StepError> {
    let migration = Migration::new(plan)?;
    let state_dir = &plan.state_dir;
    let new_url = migration.new_issuer().url.clone();
    let mut progress = match progress::read(state_dir).map_err(|e| failed(0, e))? {
        Some(found) if found.new_issuer != new_url || found.old_issuer != plan.issuer.url => {
            return Err(failed(
                0,
                format!(
                    "{} records a migration from {} to {}, not this plan's; finish or remove it \
                     first",
                    progress::path(state_dir).display(),
                    found.old_issuer,
                    found.new_issuer
                ),
            ));
        }
        Some(found) => found,
        None => Progress::new(&plan.issuer.url, &new_url),
    };
    let save = |progress: &Progress, step: u8| {
        progress::write(state_dir, progress).map_err(|e| failed(step, e))
    };

    if progress.published_at.is_none() {
        let documents = migration.documents()?;
        for target in &plan.targets {
            publish_target(target, &documents)
                .map_err(|e| failed(1, format!("target {}: {e}", target.name)))?;
            say(format!(
                "step 1: target {}: published for {new_url}",
                target.name
            ));
        }
        progress.published_at = Some(now());
        save(&progress, 1)?;
    }
    if progress.verified_at.is_none() {
        verify_documents(&migration).map_err(|e| failed(2, e))?;
        say(format!(
            "step 2: {new_url} serves the discovery document and the JWKS [{}] anonymously",
            migration.kids.join(", ")
        ));
        progress.verified_at = Some(now());
        save(&progress, 2)?;
    }
    if progress.flags_changed_at.is_none() {
        match &migration.section.flags {
            FlagSource::File { path, file } => {
                change_flags(plan, path, file, &migration.add_step(), 3, say)?;
            }
            FlagSource::Manual => {
                // keyrot cannot see the flags: the apiserver naming the new issuer is the sign
                // that the person made the change.
                let mut prober = prober(plan, 3)?;
                if !apiserver_names(plan, &mut prober, migration.new_issuer()) {
                    let change =
                        ManualChange::new(&migration.assumed_flags(), &migration.add_step())
                            .map_err(|e| failed(3, e.to_string()))?;
                    return Ok(Outcome::Waiting(change.render_then(RUN_AGAIN)));
                }
            }
        }
        progress.flags_changed_at = Some(now());
        save(&progress, 3)?;
    }
    if progress.cluster_verified_at.is_none() {
        verify_cluster(plan, migration.new_issuer(), 4)?;
        say(format!(
            "step 4: the apiserver's discovery document and a new token name {new_url}"
        ));
        progress.cluster_verified_at = Some(now());
        save(&progress, 4)?;
    }
    if !migration.section.drop_old_issuer {
        say(format!(
            "step 5: skipped: {} stays accepted (dropOldIssuer: false)",
            plan.issuer.url
        ));
        return Ok(Outcome::Done);
    }
    if progress.old_issuer_dropped_at.is_some() {
        return Ok(Outcome::Done);
    }
    let changed = progress.flags_changed_at.expect("step 3 recorded above");
    let due = changed + migration.section.grace_period;
    if now() < due {
        return Ok(Outcome::Waiting(format!(
            "step 5 waits for the grace period: run `keyrot migrate-issuer` again after {} \
             to drop {}",
            due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            plan.issuer.url
        )));
    }
    match &migration.section.flags {
        FlagSource::File { path, file } => {
            change_flags(plan, path, file, &migration.drop_step(), 5, say)?;
            verify_cluster(plan, migration.new_issuer(), 5)?;
        }
        FlagSource::Manual => {
            let after_add = issuer::next_flags(&migration.assumed_flags(), &migration.add_step())
                .map_err(|e| failed(5, e.to_string()))?;
            let change = ManualChange::new(&after_add, &migration.drop_step())
                .map_err(|e| failed(5, e.to_string()))?;
            say(change.render_then("check that the cluster's tokens still work"));
        }
    }
    say(format!("step 5: {} dropped", plan.issuer.url));
    progress.old_issuer_dropped_at = Some(now());
    save(&progress, 5)?;
    Ok(Outcome::Done)
}

/// Step 2: every target holds the current kids (as `keyrot verify` reads it), and the documents
/// read anonymously at the new issuer URL, as a cloud reads them, name the new issuer, the new
/// jwks_uri and the current kids.
fn verify_documents(migration: &Migration) -> Result<(), String> {
    let issuer = migration.new_issuer();
    for target in &migration.plan.targets {
        let served = read_served(issuer, target);
        match served.kids {
            Ok(kids) if kids == migration.kids => {}
            Ok(kids) => {
                return Err(format!(
                    "target {}: {} lists [{}], the key files [{}]",
                    target.name,
                    served.at,
                    kids.join(", "),
                    migration.kids.join(", ")
                ));
            }
            Err(why) => return Err(format!("target {}: {why}", target.name)),
        }
    }
    // An object-store target names the JWKS content type its objects carry; otherwise the web
    // server serving a directory is expected to send kube-apiserver's.
    let jwks_content_type = migration
        .plan
        .targets
        .iter()
        .find_map(|t| t.kind.objects())
        .map_or(JWKS_CONTENT_TYPE, |o| o.jwks_content_type.as_str());
    let reach = PublicRead {
        url: None,
        ca_file: migration.section.public_ca_file.clone(),
    };
    let view = block_on(public::read_public(issuer, &reach, jwks_content_type))?;
    if view.kids != migration.kids {
        return Err(format!(
            "{} lists [{}], the key files [{}]",
            view.jwks_url,
            view.kids.join(", "),
            migration.kids.join(", ")
        ));
    }
    Ok(())
}

/// Steps 3 and 5: the edit (shown as a diff), applied with its backup in the state directory,
/// then the restart. An edit that changes nothing (a run that stopped after writing) still
/// restarts, so the apiserver surely runs with the file's flags.
fn change_flags(
    plan: &Plan,
    path: &std::path::Path,
    file: &issuer::FlagFile,
    step: &MigrationStep,
    number: u8,
    say: &mut dyn FnMut(String),
) -> Result<(), StepError> {
    let edit = compute_edit(file, path, step).map_err(|e| failed(number, e.to_string()))?;
    let backups = plan.state_dir.join("issuer-backups");
    match issuer::apply(&edit, &backups).map_err(|e| failed(number, e.to_string()))? {
        Applied::Unchanged => say(format!(
            "step {number}: {} already holds the {} flags",
            path.display(),
            step.tag()
        )),
        Applied::Written { backup } => say(format!(
            "step {number}: {} edited (the previous bytes are in {}):\n{}",
            path.display(),
            backup.display(),
            edit.diff()
        )),
    }
    let tag = format!("{}-{}", step.tag(), Utc::now().timestamp());
    ProcessRestarter::new(plan).restart(&tag).map_err(|e| {
        failed(
            number,
            format!(
                "{} holds the new flags but the restart failed: {e}; run again to restart, or \
                 put the backup back",
                path.display()
            ),
        )
    })?;
    say(format!("step {number}: kube-apiserver restarted"));
    Ok(())
}

fn prober(plan: &Plan, step: u8) -> Result<KubeProber, StepError> {
    match &plan.probe {
        Probe::None => Err(failed(
            step,
            "the plan has no probe (probe: none): keyrot cannot check the apiserver",
        )),
        Probe::Kubeconfig {
            path,
            namespace,
            service_account,
            audience,
        } => KubeProber::new(path, namespace, service_account, audience)
            .map_err(|e| failed(step, e.to_string())),
    }
}

/// Whether the apiserver's discovery document names `issuer` and its jwks_uri. An apiserver
/// that does not answer (restarting) is asked again until `timings.gateTimeout`; one that
/// answers with other values is taken at its word at once.
fn apiserver_names(plan: &Plan, prober: &mut KubeProber, issuer: &Issuer) -> bool {
    let timeout = plan.timings.gate_timeout.to_std().unwrap_or(Duration::ZERO);
    let deadline = Instant::now() + timeout;
    loop {
        match prober.discovery() {
            Ok(d) => return d.issuer == issuer.url && d.jwks_uri == issuer.jwks_uri,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(_) => return false,
        }
    }
}

/// Steps 4 and 5: asks until `timings.gateTimeout` (the apiserver is restarting) for the
/// discovery document naming the new issuer and jwks_uri, then for a token carrying it.
fn verify_cluster(plan: &Plan, issuer: &Issuer, step: u8) -> Result<(), StepError> {
    let mut prober = prober(plan, step)?;
    let timeout = plan.timings.gate_timeout.to_std().unwrap_or(Duration::ZERO);
    let deadline = Instant::now() + timeout;
    loop {
        let why = match prober.discovery() {
            Ok(d) if d.issuer != issuer.url => format!(
                "the apiserver's discovery document names issuer {:?}, expected {:?}",
                d.issuer, issuer.url
            ),
            Ok(d) if d.jwks_uri != issuer.jwks_uri => format!(
                "the apiserver's discovery document names jwks_uri {:?}, expected {:?}",
                d.jwks_uri, issuer.jwks_uri
            ),
            Ok(_) => match prober.token_issuer() {
                Ok(iss) if iss == issuer.url => return Ok(()),
                Ok(iss) => format!("a new token carries iss {iss:?}, expected {:?}", issuer.url),
                Err(e) => format!("TokenRequest: {e}"),
            },
            Err(e) => format!("GET /.well-known/openid-configuration: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(failed(
                step,
                format!(
                    "{why} (still so after {})",
                    crate::plan::format_duration(plan.timings.gate_timeout)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
