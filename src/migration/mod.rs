//! `keyrot migrate-issuer`: the five steps of an issuer migration, each verified before the next.
//!
//! 1. publish the new issuer's discovery document and the JWKS of the current keys to every
//!    target; 2. read them back anonymously at the new issuer URL; 3. change kube-apiserver's
//!    flags (new issuer first, old kept) and restart it; 4. check the apiserver's discovery
//!    document and a fresh token name the new issuer; 5. after the grace period, if the plan says
//!    so, drop the old issuer, restart, check again. The first failure stops the run and nothing
//!    after it is changed. Each finished step is recorded (`record`), so running the command
//!    again continues where it stopped; every step is idempotent. A step that needs a person (a
//!    manual flag change) waits for `keyrot approve`; `rollback` puts the flags back.

mod checks;
mod edit;
pub mod grace;
mod interlock;
mod preview;
pub mod record;
mod rollback;

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::adapters::publish::{Documents, publish_target, render_documents};
use crate::issuer::{IssuerFlags, MigrationStep};
use crate::keys::load_verification_keys;
use crate::plan::{FlagSource, Issuer, IssuerMigration, Plan};
use checks::Expected;
use record::{Awaiting, ManualStep, MigrationRecord};

pub use interlock::{awaiting, blocks_rotation, due, refused_during_rotation};
pub use preview::dry_run;
pub use rollback::{preview_rollback, rollback};

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
        ROLLBACK => "roll back",
        _ => "prepare",
    };
    StepError {
        step,
        name,
        message: message.into(),
    }
}

/// The number rollback errors carry.
const ROLLBACK: u8 = 9;

/// What a person runs once a manual change is made.
const APPROVE: &str = "run `keyrot approve` so keyrot checks the apiserver and goes on";

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

    fn old_issuer(&self) -> &str {
        &self.plan.issuer.url
    }

    fn add_step(&self) -> MigrationStep {
        MigrationStep::AddNewIssuerFirst {
            new_issuer: self.new_issuer().url.clone(),
            new_jwks_uri: self.new_issuer().jwks_uri.clone(),
        }
    }

    fn drop_step(&self) -> MigrationStep {
        MigrationStep::DropOldIssuer {
            old_issuer: self.old_issuer().to_string(),
        }
    }

    fn accept_step(&self) -> MigrationStep {
        MigrationStep::AcceptNewIssuer {
            new_issuer: self.new_issuer().url.clone(),
        }
    }

    /// The flag steps the plan makes, in order, up to the add step.
    fn steps_to_add(&self) -> Vec<MigrationStep> {
        match self.section.accept_first {
            true => vec![self.accept_step(), self.add_step()],
            false => vec![self.add_step()],
        }
    }

    fn documents(&self) -> Result<Documents, StepError> {
        render_documents(&self.for_new, &self.kids).map_err(|e| failed(1, e.to_string()))
    }

    /// The flags as the manual editor assumes them: only the plan's issuer, nothing else set.
    fn assumed_flags(&self) -> IssuerFlags {
        IssuerFlags {
            issuers: vec![self.old_issuer().to_string()],
            jwks_uri: None,
            api_audiences: None,
        }
    }

    /// What the apiserver serves while it issues with the old issuer.
    fn expect_old(&self) -> Expected<'_> {
        Expected {
            issuer: self.old_issuer(),
            jwks_uri: None,
        }
    }

    /// What the apiserver serves once it issues with the new issuer.
    fn expect_new(&self) -> Expected<'_> {
        Expected {
            issuer: &self.new_issuer().url,
            jwks_uri: Some(&self.new_issuer().jwks_uri),
        }
    }

    /// The record of this migration; refused when it records another one.
    fn record(&self) -> Result<MigrationRecord, StepError> {
        let state_dir = &self.plan.state_dir;
        match record::read(state_dir).map_err(|e| failed(0, e))? {
            Some(found)
                if found.new_issuer != self.new_issuer().url
                    || found.old_issuer != self.old_issuer() =>
            {
                Err(failed(
                    0,
                    format!(
                        "{} records a migration from {} to {}, not this plan's; finish or remove \
                         it first",
                        record::path(state_dir).display(),
                        found.old_issuer,
                        found.new_issuer
                    ),
                ))
            }
            Some(found) => Ok(found),
            None => Ok(MigrationRecord::new(
                self.old_issuer(),
                &self.new_issuer().url,
            )),
        }
    }

    fn save(&self, record: &MigrationRecord, step: u8) -> Result<(), StepError> {
        record::write(&self.plan.state_dir, record).map_err(|e| failed(step, e))
    }
}

/// Runs the steps not done yet, in order. The caller holds the state lock. With `approved`
/// (`keyrot approve`), the step waiting for a person goes on. `say` gets one line per thing
/// done.
pub fn run(
    plan: &Plan,
    now: impl Fn() -> DateTime<Utc>,
    approved: bool,
    say: &mut dyn FnMut(String),
) -> Result<Outcome, StepError> {
    let migration = Migration::new(plan)?;
    let mut record = migration.record()?;
    if record.rollback_started_at.is_some() {
        return Err(failed(
            0,
            "this migration is being rolled back: finish with `keyrot migrate-issuer --rollback`",
        ));
    }
    if approved && record.awaiting.is_none() {
        return Err(failed(
            0,
            "nothing in the issuer migration waits for approval",
        ));
    }
    let waits_for = |record: &MigrationRecord, step: ManualStep| {
        record.awaiting == Some(Awaiting::ManualChange { step })
    };
    let new_url = migration.new_issuer().url.clone();
    // Checked before anything is published: a plan naming another issuer than the cluster's
    // would migrate from the wrong one.
    if record.flags_changed_at.is_none()
        && let FlagSource::File { path, file } = &migration.section.flags
    {
        edit::check_current_issuer(path, file, migration.old_issuer(), &new_url)?;
    }

    if record.published_at.is_none() {
        let documents = migration.documents()?;
        for target in &plan.targets {
            publish_target(target, &documents)
                .map_err(|e| failed(1, format!("target {}: {e}", target.name)))?;
            say(format!(
                "step 1: target {}: published for {new_url}",
                target.name
            ));
        }
        record.published_at = Some(now());
        migration.save(&record, 1)?;
    }
    if record.verified_at.is_none() {
        checks::documents(&migration).map_err(|e| failed(2, e))?;
        say(format!(
            "step 2: {new_url} serves the discovery document and the JWKS [{}] anonymously",
            migration.kids.join(", ")
        ));
        record.verified_at = Some(now());
        migration.save(&record, 2)?;
    }
    if migration.section.accept_first && record.accepted_at.is_none() {
        if let Some(waiting) = accept_everywhere(&migration, &mut record, approved, say)? {
            return Ok(Outcome::Waiting(waiting));
        }
        record.accepted_at = Some(now());
        record.awaiting = None;
        migration.save(&record, 3)?;
    }
    if record.flags_changed_at.is_none() {
        match &migration.section.flags {
            FlagSource::File { path, file } => {
                edit::change_flags(plan, path, file, &migration.add_step(), 3, say)?;
            }
            FlagSource::Manual if approved && waits_for(&record, ManualStep::Add) => {
                checks::cluster(plan, migration.expect_new(), 3).map_err(not_made)?;
                say(format!(
                    "step 3: approved: the apiserver issues as {new_url}"
                ));
            }
            FlagSource::Manual => {
                let steps = migration.steps_to_add();
                let (add, done) = steps.split_last().expect("the add step is last");
                let change = edit::manual_change(&migration.assumed_flags(), done, add, 3)?;
                record.awaiting = Some(Awaiting::ManualChange {
                    step: ManualStep::Add,
                });
                migration.save(&record, 3)?;
                return Ok(Outcome::Waiting(change.render_then(APPROVE)));
            }
        }
        record.flags_changed_at = Some(now());
        record.awaiting = None;
        migration.save(&record, 3)?;
    }
    if record.cluster_verified_at.is_none() {
        checks::cluster(plan, migration.expect_new(), 4)?;
        say(format!(
            "step 4: the apiserver's discovery document and a new token name {new_url}"
        ));
        record.cluster_verified_at = Some(now());
        migration.save(&record, 4)?;
    }
    if !migration.section.drop_old_issuer {
        say(format!(
            "step 5: skipped: {} stays accepted (dropOldIssuer: false)",
            migration.old_issuer()
        ));
        return Ok(Outcome::Done);
    }
    if record.old_issuer_dropped_at.is_some() {
        return Ok(Outcome::Done);
    }
    let grace = grace::for_section(migration.section).map_err(|e| failed(5, e))?;
    let changed = record.flags_changed_at.expect("step 3 recorded above");
    // A grace period that ends past the end of the calendar never ends.
    let due = changed.checked_add_signed(grace.period);
    if due.is_none_or(|due| now() < due) {
        let when = match due {
            Some(due) => format!("again after {}", crate::describe::time(due)),
            None => "again once the grace period is shorter".to_string(),
        };
        return Ok(Outcome::Waiting(format!(
            "step 5 waits for the grace period ({}): run `keyrot migrate-issuer` {when} to drop {}",
            grace.why,
            migration.old_issuer()
        )));
    }
    match &migration.section.flags {
        FlagSource::File { path, file } => {
            edit::change_flags(plan, path, file, &migration.drop_step(), 5, say)?;
            checks::cluster(plan, migration.expect_new(), 5)?;
        }
        FlagSource::Manual if approved && waits_for(&record, ManualStep::Drop) => {
            checks::cluster(plan, migration.expect_new(), 5)?;
            say("step 5: approved: the apiserver still issues tokens it accepts".to_string());
        }
        FlagSource::Manual => {
            let change = edit::manual_change(
                &migration.assumed_flags(),
                &migration.steps_to_add(),
                &migration.drop_step(),
                5,
            )?;
            record.awaiting = Some(Awaiting::ManualChange {
                step: ManualStep::Drop,
            });
            migration.save(&record, 5)?;
            return Ok(Outcome::Waiting(change.render_then(APPROVE)));
        }
    }
    say(format!("step 5: {} dropped", migration.old_issuer()));
    record.old_issuer_dropped_at = Some(now());
    record.awaiting = None;
    migration.save(&record, 5)?;
    Ok(Outcome::Done)
}

/// The approval of a manual change the apiserver does not show.
fn not_made(error: StepError) -> StepError {
    failed(
        error.step,
        format!(
            "approved, but {}; make the change, restart kube-apiserver, then run `keyrot \
             approve` again",
            error.message
        ),
    )
}

/// Step 3 on a control plane with several apiservers (`acceptFirst`): this node's apiserver
/// accepts the new issuer and still issues with the old one; then the migration waits until a
/// person approves that every apiserver does, so that no apiserver ever rejects a token another
/// one issued. `Some(text)`: waiting, and what for.
fn accept_everywhere(
    migration: &Migration,
    record: &mut MigrationRecord,
    approved: bool,
    say: &mut dyn FnMut(String),
) -> Result<Option<String>, StepError> {
    let plan = migration.plan;
    let new_url = &migration.new_issuer().url;
    let old_url = migration.old_issuer();
    match &migration.section.flags {
        FlagSource::File { path, file } => {
            if record.awaiting != Some(Awaiting::AcceptEverywhere) {
                edit::change_flags(plan, path, file, &migration.accept_step(), 3, say)?;
                checks::cluster(plan, migration.expect_old(), 3)?;
                say(format!(
                    "step 3: this apiserver accepts {new_url} and still issues as {old_url}"
                ));
                record.awaiting = Some(Awaiting::AcceptEverywhere);
                migration.save(record, 3)?;
            }
            if !approved {
                return Ok(Some(format!(
                    "step 3 waits until every apiserver accepts {new_url} (acceptFirst): run \
                     `keyrot migrate-issuer` on every other control-plane node until it stops \
                     here too, then `keyrot approve` on each node in turn: it makes that \
                     node's apiserver issue as {new_url}"
                )));
            }
            say(format!(
                "step 3: approved: every apiserver accepts {new_url}"
            ));
        }
        FlagSource::Manual
            if approved
                && record.awaiting
                    == Some(Awaiting::ManualChange {
                        step: ManualStep::Accept,
                    }) =>
        {
            checks::cluster(plan, migration.expect_old(), 3).map_err(not_made)?;
            say(format!(
                "step 3: approved: every apiserver accepts {new_url}, this one still issues as \
                 {old_url}"
            ));
        }
        FlagSource::Manual => {
            let change =
                edit::manual_change(&migration.assumed_flags(), &[], &migration.accept_step(), 3)?;
            record.awaiting = Some(Awaiting::ManualChange {
                step: ManualStep::Accept,
            });
            migration.save(record, 3)?;
            return Ok(Some(change.render_then(APPROVE)));
        }
    }
    Ok(None)
}
