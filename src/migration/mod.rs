//! What an issuer migration's steps do, as the executor carries them out, and how a request ends.
//!
//! The decision core drives the migration like a rotation (`decision::migration`: which step
//! comes next, recorded in the state by `apply`); the executor carries each step out here,
//! through [`MigrationEffects`]: 1. publish the new issuer's discovery document and the JWKS of
//! the current keys to every target; 2. read them back anonymously at the new issuer URL; 3.
//! change kube-apiserver's flags (new issuer first, old kept) and restart it; 4. check the
//! apiserver's discovery document and a fresh token name the new issuer; 5. after the grace
//! period, if the plan says so, drop the old issuer, restart, check again. A failed step
//! changes nothing after it and is redone next time; every step is idempotent. A step that
//! needs a person (a manual flag change) waits for `keyrot approve`; the rollback puts the
//! flags back.

mod edit;
pub mod grace;
mod interlock;
mod preview;
pub mod record;
mod rollback;

pub mod ending;

use crate::adapters::{AdapterError, ExpectedIssuer, MigrationEffects};
use crate::decision::Action;
use crate::decision::migration::{self as steps, FlagChange, Issues, MigrationAction};
use crate::issuer::{IssuerFlags, MigrationStep};
use crate::plan::{Issuer, IssuerMigration, Plan};
use record::{ManualStep, MigrationRecord};

pub use edit::check_current_issuer;
pub use ending::{Outcome, RequestError, ending, is_rollback, switch_ending};
pub use interlock::awaiting;
pub use preview::Details;
pub use rollback::{original_backup, preview_rollback, rollback_warning};

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
}

impl<'a> Migration<'a> {
    fn new(plan: &'a Plan) -> Result<Self, StepError> {
        let section = plan.issuer_migration.as_ref().ok_or_else(|| {
            failed(
                0,
                "the plan has no issuerMigration section: nothing to migrate",
            )
        })?;
        let mut for_new = plan.clone();
        for_new.issuer = section.new_issuer.clone();
        Ok(Migration {
            plan,
            section,
            for_new,
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

    /// The flags as the manual editor assumes them: only the plan's issuer, nothing else set.
    fn assumed_flags(&self) -> IssuerFlags {
        IssuerFlags {
            issuers: vec![self.old_issuer().to_string()],
            jwks_uri: None,
            api_audiences: None,
        }
    }

    /// What the apiserver serves when it issues as `issues`.
    fn expect(&self, issues: Issues) -> ExpectedIssuer<'_> {
        match issues {
            Issues::Old => self.expect_old(),
            Issues::New => self.expect_new(),
        }
    }

    /// What the apiserver serves while it issues with the old issuer.
    fn expect_old(&self) -> ExpectedIssuer<'_> {
        ExpectedIssuer {
            issuer: self.old_issuer(),
            jwks_uri: None,
        }
    }

    /// What the apiserver serves once it issues with the new issuer.
    fn expect_new(&self) -> ExpectedIssuer<'_> {
        ExpectedIssuer {
            issuer: &self.new_issuer().url,
            jwks_uri: Some(&self.new_issuer().jwks_uri),
        }
    }
}

/// Carries out one of the migration's effects; `record` as the state holds it, `kids` the keys
/// the cluster verifies with. `say` gets one line per thing done.
pub fn carry_out(
    plan: &Plan,
    record: Option<&MigrationRecord>,
    kids: &[String],
    effects: &mut dyn MigrationEffects,
    action: &Action,
    say: &mut dyn FnMut(String),
) -> Result<(), AdapterError> {
    let migration = Migration::new(plan).map_err(|e| AdapterError::permanent(e.message))?;
    match action {
        Action::Migrate(step) => perform(&migration, kids, effects, *step, say),
        Action::RestoreFlags { restart } => rollback::restore(&migration, effects, *restart, say),
        Action::AskPersonToRestore => {
            let record = record.ok_or_else(|| AdapterError::permanent("no migration recorded"))?;
            say(rollback::manual_restore_text(&migration, record));
            Ok(())
        }
        Action::CheckRestored => {
            effects.check_cluster(migration.expect_old())?;
            say(format!(
                "rollback: approved: the apiserver issues as {} again",
                migration.old_issuer()
            ));
            rollback::say_done(&migration, say);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Carries out one step.
fn perform(
    migration: &Migration,
    kids: &[String],
    effects: &mut dyn MigrationEffects,
    action: MigrationAction,
    say: &mut dyn FnMut(String),
) -> Result<(), AdapterError> {
    let new_url = &migration.new_issuer().url;
    let old_url = migration.old_issuer();
    match action {
        MigrationAction::Publish => effects.publish(&migration.for_new, kids, say)?,
        MigrationAction::CheckDocuments => {
            let ca_file = migration.section.public_ca_file.as_deref();
            effects.check_documents(&migration.for_new, kids, ca_file)?;
            say(format!(
                "step 2: {new_url} serves the discovery document and the JWKS [{}] anonymously",
                kids.join(", ")
            ));
        }
        MigrationAction::ChangeFlags { change, then_check } => {
            let (step, number) = match change {
                FlagChange::Accept => (migration.accept_step(), 3),
                FlagChange::Add => (migration.add_step(), 3),
                FlagChange::Drop => (migration.drop_step(), 5),
            };
            let backups = edit::backup_dir(migration.plan);
            effects.change_flags(&step, &backups, number, say)?;
            if let Some(issues) = then_check {
                effects.check_cluster(migration.expect(issues))?;
            }
            match change {
                FlagChange::Accept => say(format!(
                    "step 3: this apiserver accepts {new_url} and still issues as {old_url}"
                )),
                FlagChange::Add => {}
                FlagChange::Drop => say(format!("step 5: {old_url} dropped")),
            }
        }
        MigrationAction::RecordAcceptedEverywhere => {
            say(format!(
                "step 3: approved: every apiserver accepts {new_url}"
            ));
        }
        MigrationAction::CheckApproved { step, issues } => {
            effects
                .check_cluster(migration.expect(issues))
                .map_err(not_made)?;
            say(match step {
                ManualStep::Accept => format!(
                    "step 3: approved: every apiserver accepts {new_url}, this one still issues \
                     as {old_url}"
                ),
                ManualStep::Add => format!("step 3: approved: the apiserver issues as {new_url}"),
                ManualStep::Drop | ManualStep::Rollback => {
                    "step 5: approved: the apiserver still issues tokens it accepts".to_string()
                }
            });
        }
        MigrationAction::CheckCluster => {
            effects.check_cluster(migration.expect_new())?;
            say(format!(
                "step 4: the apiserver's discovery document and a new token name {new_url}"
            ));
        }
        MigrationAction::AskPerson(step) => {
            let number = steps::step_number(action);
            let permanent = |e: StepError| AdapterError::permanent(e.message);
            let assumed = migration.assumed_flags();
            let change = match step {
                ManualStep::Accept => {
                    edit::manual_change(&assumed, &[], &migration.accept_step(), number)
                }
                ManualStep::Add => {
                    let steps = migration.steps_to_add();
                    let (add, done) = steps.split_last().expect("the add step is last");
                    edit::manual_change(&assumed, done, add, number)
                }
                ManualStep::Drop | ManualStep::Rollback => edit::manual_change(
                    &assumed,
                    &migration.steps_to_add(),
                    &migration.drop_step(),
                    number,
                ),
            }
            .map_err(permanent)?;
            say(change.render_then(APPROVE));
        }
    }
    Ok(())
}

/// The approval of a manual change the apiserver does not show.
fn not_made(error: AdapterError) -> AdapterError {
    AdapterError {
        kind: error.kind,
        message: format!(
            "approved, but {}; make the change, restart kube-apiserver, then run `keyrot \
             approve` again",
            error.message
        ),
    }
}
