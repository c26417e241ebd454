//! The issuer migration's effects on the world: the targets, the flag file and its restart, the
//! apiserver's answers. The migration's runner decides; this carries out.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::probe::KubeProber;
use super::publish::{preview_target, publish_target, render_documents};
use super::restart::ProcessRestarter;
use super::{AdapterError, ExpectedIssuer, MigrationEffects, Restarter};
use crate::documents::JWKS_CONTENT_TYPE;
use crate::http::block_on;
use crate::issuer::{self, Applied, FlagFile, MigrationStep};
use crate::plan::{FlagSource, Plan, Probe, PublicRead};
use crate::targets::{public, read_served};

/// The real effects, for `plan` (the plan as it names the old issuer).
pub struct ClusterEffects<'a> {
    plan: &'a Plan,
}

impl<'a> ClusterEffects<'a> {
    pub fn new(plan: &'a Plan) -> Self {
        ClusterEffects { plan }
    }
}

impl MigrationEffects for ClusterEffects<'_> {
    fn publish(
        &mut self,
        for_new: &Plan,
        kids: &[String],
        say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError> {
        let documents = render_documents(for_new, kids)?;
        for target in &for_new.targets {
            publish_target(target, &documents).map_err(|e| AdapterError {
                kind: e.error.kind(),
                message: format!("target {}: {e}", target.name),
            })?;
            say(format!(
                "step 1: target {}: published for {}",
                target.name, for_new.issuer.url
            ));
        }
        Ok(())
    }

    fn preview_publish(&mut self, for_new: &Plan, kids: &[String]) -> Result<String, AdapterError> {
        let documents = render_documents(for_new, kids)?;
        let mut out = format!(
            "step 1: publish for {} the discovery document\n{}\nand the JWKS (kids [{}])\n{}\n",
            for_new.issuer.url,
            documents.discovery,
            kids.join(", "),
            documents.jwks
        );
        for target in &for_new.targets {
            match preview_target(target, &documents) {
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
        Ok(out)
    }

    fn check_documents(
        &mut self,
        for_new: &Plan,
        kids: &[String],
        public_ca_file: Option<&Path>,
    ) -> Result<(), AdapterError> {
        // Read as a cloud reads them: a failure may pass once a cache or a server catches up.
        check_documents(for_new, kids, public_ca_file).map_err(AdapterError::transient)
    }

    fn change_flags(
        &mut self,
        step: &MigrationStep,
        backups: &Path,
        number: u8,
        say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError> {
        let Some(FlagSource::File { path, file }) =
            self.plan.issuer_migration.as_ref().map(|m| &m.flags)
        else {
            return Err(AdapterError::permanent(
                "the plan names no flag file: keyrot changes no flags (flags: manual)",
            ));
        };
        change_flags(self.plan, path, file, step, backups, number, say)
    }

    fn restore_flags(
        &mut self,
        path: &Path,
        steps: &[MigrationStep],
        backups: &Path,
        say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError> {
        let Some((_, original)) = issuer::original_backup(path, steps, backups) else {
            return Ok(());
        };
        let diff = issuer::restore_diff(path, &original)
            .map_err(|e| AdapterError::io(&e, e.to_string()))?;
        say(format!(
            "rollback: {} gets its bytes from before the migration back:\n{diff}",
            path.display()
        ));
        issuer::restore_original(path, steps, backups)
            .map_err(|e| AdapterError::permanent(e.to_string()))?;
        Ok(())
    }

    fn restart(&mut self, tag: &str) -> Result<(), AdapterError> {
        restart(self.plan, tag)
    }

    fn check_cluster(&mut self, expected: ExpectedIssuer) -> Result<(), AdapterError> {
        check_cluster(self.plan, expected)
    }
}

fn check_documents(
    for_new: &Plan,
    kids: &[String],
    public_ca_file: Option<&Path>,
) -> Result<(), String> {
    let issuer = &for_new.issuer;
    for target in &for_new.targets {
        let served = read_served(issuer, target);
        match served.kids {
            Ok(listed) if listed == kids => {}
            Ok(listed) => {
                return Err(format!(
                    "target {}: {} lists [{}], the key files [{}]",
                    target.name,
                    served.at,
                    listed.join(", "),
                    kids.join(", ")
                ));
            }
            Err(why) => return Err(format!("target {}: {why}", target.name)),
        }
    }
    // An object-store target names the JWKS content type its objects carry; otherwise the web
    // server serving a directory is expected to send kube-apiserver's.
    let jwks_content_type = for_new
        .targets
        .iter()
        .find_map(|t| t.kind.objects())
        .map_or(JWKS_CONTENT_TYPE, |o| o.jwks_content_type.as_str());
    let reach = PublicRead {
        url: None,
        ca_file: public_ca_file.map(Path::to_path_buf),
    };
    let view = block_on(public::read_public(issuer, &reach, jwks_content_type))
        .map_err(|e| e.to_string())?;
    if view.kids != kids {
        return Err(format!(
            "{} lists [{}], the key files [{}]",
            view.jwks_url,
            view.kids.join(", "),
            kids.join(", ")
        ));
    }
    Ok(())
}

fn prober(plan: &Plan) -> Result<KubeProber, AdapterError> {
    match &plan.probe {
        Probe::None => Err(AdapterError::permanent(
            "the plan has no probe (probe: none): keyrot cannot check the apiserver",
        )),
        Probe::Kubeconfig {
            path,
            namespace,
            service_account,
            audience,
        } => KubeProber::new(path, namespace, service_account, audience),
    }
}

/// Asks until `timings.gateTimeout` (the apiserver may be restarting) for the discovery
/// document naming what is expected, then for a token carrying the expected issuer.
fn check_cluster(plan: &Plan, expected: ExpectedIssuer) -> Result<(), AdapterError> {
    let mut prober = prober(plan)?;
    let timeout = plan.timings.gate_timeout.to_std().unwrap_or(Duration::ZERO);
    let deadline = Instant::now() + timeout;
    loop {
        let why = match prober.discovery() {
            Ok(d) if d.issuer != expected.issuer => format!(
                "the apiserver's discovery document names issuer {:?}, expected {:?}",
                d.issuer, expected.issuer
            ),
            Ok(d) if expected.jwks_uri.is_some_and(|uri| d.jwks_uri != uri) => format!(
                "the apiserver's discovery document names jwks_uri {:?}, expected {:?}",
                d.jwks_uri,
                expected.jwks_uri.unwrap_or_default()
            ),
            Ok(_) => match prober.token_issuer() {
                Ok(iss) if iss == expected.issuer => return Ok(()),
                Ok(iss) => format!(
                    "a new token carries iss {iss:?}, expected {:?}",
                    expected.issuer
                ),
                Err(e) => format!("TokenRequest: {e}"),
            },
            Err(e) => format!("GET /.well-known/openid-configuration: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(AdapterError::transient(format!(
                "{why} (still so after {})",
                crate::plan::format_duration(plan.timings.gate_timeout)
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The edit (shown as a diff), applied with its backup in the state directory, then the
/// restart. An edit that changes nothing (a run that stopped after writing) still restarts, so
/// the apiserver surely runs with the file's flags.
fn change_flags(
    plan: &Plan,
    path: &Path,
    file: &FlagFile,
    step: &MigrationStep,
    backups: &Path,
    number: u8,
    say: &mut dyn FnMut(String),
) -> Result<(), AdapterError> {
    let edit = issuer::compute_edit(file, path, step)
        .map_err(|e| AdapterError::permanent(e.to_string()))?;
    match issuer::apply(&edit, backups).map_err(|e| AdapterError::permanent(e.to_string()))? {
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
    if *file == FlagFile::KubeadmManifest {
        say(issuer::kubeadm::cluster_configuration_hint(
            &edit.flags_after,
        ));
    }
    restart(plan, step.tag())?;
    say(format!("step {number}: kube-apiserver restarted"));
    Ok(())
}

/// Restarts kube-apiserver the plan's way, naming the cause `tag`. The issuer flags are the
/// apiserver's alone: kube-controller-manager is not restarted.
fn restart(plan: &Plan, tag: &str) -> Result<(), AdapterError> {
    let tag = format!("{tag}-{}", Utc::now().timestamp());
    ProcessRestarter::new(plan)
        .restart(&tag, false)
        .map_err(|e| AdapterError {
            kind: e.kind,
            message: format!(
                "the flag file is written but restarting kube-apiserver failed: {e}; run the \
                 command again to restart"
            ),
        })
}
