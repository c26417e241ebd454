//! `keyrot migrate-issuer`: the five steps of an issuer migration, each verified before the next.
//!
//! Which step comes next is the decision core's (`decision::migration`, pure, with scenario
//! tests); this module carries the steps out through [`MigrationEffects`]: 1. publish the new
//! issuer's discovery document and the JWKS of the current keys to every target; 2. read them
//! back anonymously at the new issuer URL; 3. change kube-apiserver's flags (new issuer first,
//! old kept) and restart it; 4. check the apiserver's discovery document and a fresh token name
//! the new issuer; 5. after the grace period, if the plan says so, drop the old issuer, restart,
//! check again. The first failure stops the run and nothing after it is changed. Each finished
//! step is recorded (`record`), so running the command again continues where it stopped; every
//! step is idempotent. A step that needs a person (a manual flag change) waits for `keyrot
//! approve`; `rollback` puts the flags back.

mod edit;
pub mod grace;
mod interlock;
mod preview;
pub mod record;
mod rollback;

use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, Utc};

use crate::adapters::{ExpectedIssuer, MigrationEffects};
use crate::decision::migration::{
    self as steps, FlagChange, Issues, MigrationAction, MigrationDecision, MigrationWait,
};
use crate::issuer::{IssuerFlags, MigrationStep};
use crate::keys::load_verification_keys;
use crate::plan::{FlagSource, Issuer, IssuerMigration, Plan};
use record::{ManualStep, MigrationRecord, RecordStore};

pub use interlock::{awaiting, due};
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

    /// The record of this migration (`found`, as the store or the state file holds it); refused
    /// when it records another one.
    fn record_of(&self, found: Option<MigrationRecord>) -> Result<MigrationRecord, StepError> {
        match found {
            Some(found)
                if found.new_issuer != self.new_issuer().url
                    || found.old_issuer != self.old_issuer() =>
            {
                Err(failed(
                    0,
                    format!(
                        "{} records a migration from {} to {}, not this plan's; finish or remove \
                         it first",
                        record::path(&self.plan.state_dir).display(),
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

    /// The record as the state file holds it, read without the lock (the dry run).
    fn record_read(&self) -> Result<MigrationRecord, StepError> {
        let found = record::read(&self.plan.state_dir).map_err(|e| failed(0, e.to_string()))?;
        self.record_of(found)
    }

    fn save(
        &self,
        store: &mut dyn RecordStore,
        record: &MigrationRecord,
        step: u8,
    ) -> Result<(), StepError> {
        store
            .keep(Some(record.clone()))
            .map_err(|e| failed(step, e.to_string()))
    }
}

/// Runs the steps not done yet, in order, as the decision core names them
/// ([`crate::decision::migration`]). The caller holds the state lock. With `approved`
/// (`keyrot approve`), the step waiting for a person goes on. `say` gets one line per thing
/// done.
pub fn run(
    plan: &Plan,
    store: &mut dyn RecordStore,
    effects: &mut dyn MigrationEffects,
    now: impl Fn() -> DateTime<Utc>,
    approved: bool,
    say: &mut dyn FnMut(String),
) -> Result<Outcome, StepError> {
    let migration = &Migration::new(plan)?;
    let mut record = migration.record_of(store.recorded())?;
    if let Some(why) = steps::refuse_migration_request(&record, approved) {
        return Err(failed(0, why));
    }
    let new_url = migration.new_issuer().url.clone();
    // Checked before anything is published: a plan naming another issuer than the cluster's
    // would migrate from the wrong one.
    if record.flags_changed_at.is_none()
        && let FlagSource::File { path, file } = &migration.section.flags
    {
        edit::check_current_issuer(path, file, migration.old_issuer(), &new_url)?;
    }
    // Only step 5 needs it, and only there may reading it fail the migration.
    let grace = match migration.section.drop_old_issuer {
        true => Some(grace::for_section(migration.section)),
        false => None,
    };
    loop {
        let grace_period = match &grace {
            Some(Ok(g)) => g.period,
            _ => TimeDelta::MAX,
        };
        let decision =
            steps::next_migration_step(migration.section, &record, approved, grace_period, now());
        let action = match decision {
            MigrationDecision::Act(action) => action,
            MigrationDecision::Done { old_issuer_kept } => {
                if old_issuer_kept {
                    say(format!(
                        "step 5: skipped: {} stays accepted (dropOldIssuer: false)",
                        migration.old_issuer()
                    ));
                }
                return Ok(Outcome::Done);
            }
            MigrationDecision::Refused { step, why } => return Err(failed(step, why)),
            MigrationDecision::Wait {
                why: MigrationWait::EveryApiserverAccepts,
                ..
            } => {
                return Ok(Outcome::Waiting(format!(
                    "step 3 waits until every apiserver accepts {new_url} (acceptFirst): run \
                     `keyrot migrate-issuer` on every other control-plane node until it stops \
                     here too, then `keyrot approve` on each node in turn: it makes that \
                     node's apiserver issue as {new_url}"
                )));
            }
            MigrationDecision::Wait {
                why: MigrationWait::Grace,
                until,
                ..
            } => {
                let grace = match grace.as_ref() {
                    Some(Ok(g)) => g,
                    Some(Err(e)) => return Err(failed(5, e.clone())),
                    None => unreachable!("the core waits for a grace period only to drop"),
                };
                let when = match until {
                    Some(due) => format!("again after {}", crate::describe::time(due)),
                    None => "again once the grace period is shorter".to_string(),
                };
                return Ok(Outcome::Waiting(format!(
                    "step 5 waits for the grace period ({}): run `keyrot migrate-issuer` {when} \
                     to drop {}",
                    grace.why,
                    migration.old_issuer()
                )));
            }
        };
        if let Some(waiting) = perform(migration, effects, action, say)? {
            steps::record_migration_step(&mut record, action, now());
            migration.save(store, &record, steps::step_number(action))?;
            return Ok(Outcome::Waiting(waiting));
        }
        steps::record_migration_step(&mut record, action, now());
        migration.save(store, &record, steps::step_number(action))?;
    }
}

/// Carries out one step; `Some(text)`: it asked a person for something, and the run stops.
fn perform(
    migration: &Migration,
    effects: &mut dyn MigrationEffects,
    action: MigrationAction,
    say: &mut dyn FnMut(String),
) -> Result<Option<String>, StepError> {
    let new_url = &migration.new_issuer().url;
    let old_url = migration.old_issuer();
    match action {
        MigrationAction::Publish => effects
            .publish(&migration.for_new, &migration.kids, say)
            .map_err(|e| failed(1, e.message))?,
        MigrationAction::CheckDocuments => {
            let ca_file = migration.section.public_ca_file.as_deref();
            effects
                .check_documents(&migration.for_new, &migration.kids, ca_file)
                .map_err(|e| failed(2, e.message))?;
            say(format!(
                "step 2: {new_url} serves the discovery document and the JWKS [{}] anonymously",
                migration.kids.join(", ")
            ));
        }
        MigrationAction::ChangeFlags { change, then_check } => {
            let (step, number) = match change {
                FlagChange::Accept => (migration.accept_step(), 3),
                FlagChange::Add => (migration.add_step(), 3),
                FlagChange::Drop => (migration.drop_step(), 5),
            };
            let backups = edit::backup_dir(migration.plan);
            effects
                .change_flags(&step, &backups, number, say)
                .map_err(|e| failed(number, e.message))?;
            if let Some(issues) = then_check {
                effects
                    .check_cluster(migration.expect(issues))
                    .map_err(|e| failed(number, e.message))?;
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
            let number = steps::step_number(action);
            effects
                .check_cluster(migration.expect(issues))
                .map_err(|e| not_made(failed(number, e.message)))?;
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
            effects
                .check_cluster(migration.expect_new())
                .map_err(|e| failed(4, e.message))?;
            say(format!(
                "step 4: the apiserver's discovery document and a new token name {new_url}"
            ));
        }
        MigrationAction::AskPerson(step) => {
            let number = steps::step_number(action);
            let assumed = migration.assumed_flags();
            let change = match step {
                ManualStep::Accept => {
                    edit::manual_change(&assumed, &[], &migration.accept_step(), number)?
                }
                ManualStep::Add => {
                    let steps = migration.steps_to_add();
                    let (add, done) = steps.split_last().expect("the add step is last");
                    edit::manual_change(&assumed, done, add, number)?
                }
                ManualStep::Drop | ManualStep::Rollback => edit::manual_change(
                    &assumed,
                    &migration.steps_to_add(),
                    &migration.drop_step(),
                    number,
                )?,
            };
            return Ok(Some(change.render_then(APPROVE)));
        }
    }
    Ok(None)
}

/// [`run`], or with `rollback` [`rollback`]: what `keyrot migrate-issuer [--rollback]` and
/// `keyrot approve` carry out.
pub fn carry_out(
    plan: &Plan,
    store: &mut dyn RecordStore,
    effects: &mut dyn MigrationEffects,
    rollback: bool,
    approved: bool,
    say: &mut dyn FnMut(String),
) -> Result<Outcome, StepError> {
    match rollback {
        true => self::rollback(plan, store, effects, Utc::now, approved, say),
        false => run(plan, store, effects, Utc::now, approved, say),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::AdapterError;
    use crate::keys::{GenerateSpec, SigningKey};

    /// Stand-ins for the world that count what was done and fail where told to.
    #[derive(Default)]
    struct Fake {
        done: Vec<String>,
        fail: Option<&'static str>,
    }

    impl Fake {
        fn did(&mut self, what: &'static str) -> Result<(), AdapterError> {
            if self.fail == Some(what) {
                return Err(AdapterError::transient(format!("{what} failed")));
            }
            self.done.push(what.to_string());
            Ok(())
        }
    }

    impl MigrationEffects for Fake {
        fn publish(
            &mut self,
            _: &Plan,
            _: &[String],
            _: &mut dyn FnMut(String),
        ) -> Result<(), AdapterError> {
            self.did("publish")
        }
        fn preview_publish(&mut self, _: &Plan, _: &[String]) -> Result<String, AdapterError> {
            Ok(String::new())
        }
        fn check_documents(
            &mut self,
            _: &Plan,
            _: &[String],
            _: Option<&std::path::Path>,
        ) -> Result<(), AdapterError> {
            self.did("documents")
        }
        fn change_flags(
            &mut self,
            step: &MigrationStep,
            _: &std::path::Path,
            _: u8,
            _: &mut dyn FnMut(String),
        ) -> Result<(), AdapterError> {
            self.did(step.tag())
        }
        fn restart(&mut self, _: &str) -> Result<(), AdapterError> {
            self.did("restart")
        }
        fn check_cluster(&mut self, expected: ExpectedIssuer) -> Result<(), AdapterError> {
            self.did(match expected.jwks_uri {
                None => "issues-old",
                Some(_) => "issues-new",
            })
        }
    }

    /// The record kept in memory, as the state would keep it.
    #[derive(Default)]
    struct Memory(Option<MigrationRecord>);

    impl RecordStore for Memory {
        fn recorded(&self) -> Option<MigrationRecord> {
            self.0.clone()
        }
        fn keep(
            &mut self,
            record: Option<MigrationRecord>,
        ) -> Result<(), crate::state::StateError> {
            self.0 = record;
            Ok(())
        }
    }

    /// A plan whose migration edits no real file (manual flags), with a key file in `dir`.
    fn plan(dir: &std::path::Path) -> Plan {
        let key = SigningKey::generate(GenerateSpec::P256).unwrap();
        std::fs::write(dir.join("sa.pub"), key.public().to_spki_pem()).unwrap();
        let text = format!(
            "cluster: c\nflavour: custom\ntestPlan: true\nstateDir: {d}/state\n\
             privateKeyDir: {d}/keys\n\
             apiserver:\n  verificationKeyFile: {d}/sa.pub\n  signingKeyFile: {d}/sa.key\n  \
             restart: none\nprobe: none\nissuer: {{ url: \"https://old.example\" }}\n\
             targets: [{{ name: web, localDirectory: {d}/www }}]\n\
             issuerMigration: {{ newIssuer: \"https://new.example\", flags: manual }}\n",
            d = dir.display()
        );
        std::fs::create_dir(dir.join("state")).unwrap();
        crate::plan::parse(&dir.join("plan.yaml"), &text).unwrap()
    }

    #[test]
    fn a_failed_step_stops_the_run_and_the_next_run_starts_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let mut store = Memory::default();
        let now = || DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut fake = Fake {
            fail: Some("documents"),
            ..Fake::default()
        };
        let error = run(&plan, &mut store, &mut fake, now, false, &mut |_| {}).unwrap_err();
        assert_eq!(
            (error.step, error.message.as_str()),
            (2, "documents failed")
        );
        assert_eq!(fake.done, ["publish"], "nothing after the failed step");
        let record = store.0.clone().unwrap();
        assert!(record.published_at.is_some() && record.verified_at.is_none());

        // Again, with the documents served: publishing is not repeated, and the manual add
        // change is asked for.
        let mut fake = Fake::default();
        let outcome = run(&plan, &mut store, &mut fake, now, false, &mut |_| {}).unwrap();
        assert_eq!(fake.done, ["documents"]);
        let Outcome::Waiting(text) = outcome else {
            panic!("waits for a person: {outcome:?}")
        };
        assert!(text.contains("https://new.example"), "{text}");
        assert!(text.contains("keyrot approve"), "{text}");

        // Approved, but the apiserver does not show the change: refused, nothing recorded.
        let mut fake = Fake {
            fail: Some("issues-new"),
            ..Fake::default()
        };
        let error = run(&plan, &mut store, &mut fake, now, true, &mut |_| {}).unwrap_err();
        assert!(
            error.message.starts_with("approved, but"),
            "{}",
            error.message
        );
        assert_eq!(store.0.clone().unwrap().flags_changed_at, None);

        // Approved and shown: recorded, then the cluster check, and done (the old issuer stays).
        let mut fake = Fake::default();
        let outcome = run(&plan, &mut store, &mut fake, now, true, &mut |_| {}).unwrap();
        assert_eq!(outcome, Outcome::Done);
        assert_eq!(fake.done, ["issues-new", "issues-new"]);
        assert!(store.0.clone().unwrap().cluster_verified_at.is_some());
    }
}
