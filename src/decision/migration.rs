//! The issuer migration as a kind of change of the decision core: record + plan section +
//! observation + approval + time -> one step, a wait, or done; the rollback likewise. Pure:
//! `decide` calls it, the executor carries the steps out, `apply` records them.
//!
//! Steps, each recorded once done, so a run stopped anywhere continues where it stopped:
//! 1 publish for the new issuer; 2 read the documents back anonymously; 3 (acceptFirst) every
//! apiserver accepts the new issuer, then the flags name it first and kube-apiserver restarts;
//! 4 the cluster issues as the new issuer; 5 after the grace period, drop the old issuer.

use chrono::{DateTime, TimeDelta, Utc};

use super::action::{Action, Decision, Gate};
use super::observed::Observed;
use crate::migration::record::{self, Awaiting, ManualStep, MigrationRecord};
use crate::plan::{FlagSource, IssuerMigration, Plan};
use crate::state::{Rotation, State};

/// The migration the plan asks for and the state records, when they are the same one.
fn in_record<'a>(
    plan: &'a Plan,
    state: &'a State,
) -> Option<(&'a IssuerMigration, &'a MigrationRecord)> {
    let section = plan.issuer_migration.as_ref()?;
    let record = state.issuer_migration.as_ref()?;
    let same = record.old_issuer == plan.issuer.url && record.new_issuer == section.new_issuer.url;
    same.then_some((section, record))
}

/// What the core does next about the plan's issuer migration; `None` when none is under way
/// (none recorded, another one recorded, or every planned step done). `approved`: a person's
/// `keyrot approve` is being acted on.
pub(super) fn next(
    plan: &Plan,
    state: &State,
    observed: &Observed,
    approved: bool,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let (section, record) = in_record(plan, state)?;
    let view = observed.migration.as_ref()?;
    if record.rollback_started_at.is_some() {
        return Some(next_rollback_step(section, record, approved));
    }
    if let (FlagSource::File { .. }, None, Some(problem)) = (
        &section.flags,
        record.flags_changed_at,
        &view.issuer_problem,
    ) {
        return Some(Decision::wait(Gate::MigrationFlags, problem.clone(), None));
    }
    let grace = view.grace.as_ref().map_or(TimeDelta::MAX, |g| g.period);
    let new = &section.new_issuer.url;
    Some(
        match next_migration_step(section, record, approved, grace, now) {
            MigrationDecision::Act(MigrationAction::AskPerson(step))
                if record.awaiting == Some(manual_change(step)) =>
            {
                Decision::wait(
                    Gate::Approval,
                    format!(
                        "step {} waits for the flag change keyrot printed: make it, restart \
                         kube-apiserver, then run `keyrot approve`",
                        step_number(MigrationAction::AskPerson(step))
                    ),
                    None,
                )
            }
            MigrationDecision::Act(action) => Decision::act(Action::Migrate(action)),
            MigrationDecision::Wait {
                why: MigrationWait::EveryApiserverAccepts,
                ..
            } => Decision::wait(
                Gate::Approval,
                format!(
                    "step 3 waits until every apiserver accepts {new} (acceptFirst): run `keyrot \
                 migrate-issuer` on every other control-plane node until it stops here too, \
                 then `keyrot approve` on each node in turn: it makes that node's apiserver \
                 issue as {new}"
                ),
                None,
            ),
            MigrationDecision::Wait {
                why: MigrationWait::Grace,
                until,
                ..
            } => match &view.grace {
                Err(e) => Decision::wait(
                    Gate::MigrationFlags,
                    format!("step 5 cannot tell how long tokens of the old issuer live: {e}"),
                    None,
                ),
                Ok(grace) => {
                    let when = match until {
                        Some(due) => format!("after {}", crate::describe::time(due)),
                        None => "once the grace period is shorter".to_string(),
                    };
                    Decision::wait(
                        Gate::OldIssuerGrace,
                        format!(
                            "step 5 waits for the grace period ({}): {} is dropped {when}",
                            grace.why, plan.issuer.url
                        ),
                        until,
                    )
                }
            },
            MigrationDecision::Done { .. } => return None,
            MigrationDecision::Refused { why, .. } => {
                Decision::wait(Gate::IssuerMigration, why, None)
            }
        },
    )
}

/// The rollback's next step, once it started: put the flags back (and restart), or with
/// `flags: manual` ask a person and check what they did; then the record goes.
fn next_rollback_step(
    section: &IssuerMigration,
    record: &MigrationRecord,
    approved: bool,
) -> Decision {
    if let FlagSource::File { .. } = section.flags {
        return Decision::act(Action::RestoreFlags {
            restart: record.rollback_restarts.unwrap_or(true),
        });
    }
    let waiting = record.awaiting == Some(manual_change(ManualStep::Rollback));
    match (waiting, approved) {
        (true, true) => Decision::act(Action::CheckRestored),
        (true, false) => Decision::wait(
            Gate::Approval,
            "the rollback waits for the flag change keyrot printed: make it, restart \
             kube-apiserver, then run `keyrot approve`",
            None,
        ),
        (false, _) if flags_asked(record) => Decision::act(Action::AskPersonToRestore),
        (false, _) => Decision::act(Action::ForgetMigration),
    }
}

/// Whether keyrot asked a person for any flag change (`flags: manual`).
fn flags_asked(record: &MigrationRecord) -> bool {
    record.old_issuer_dropped_at.is_some()
        || record.flags_changed_at.is_some()
        || record.accepted_at.is_some()
        || matches!(record.awaiting, Some(Awaiting::ManualChange { .. }))
}

/// Whether the flags may differ from the original: a step changed them, or a rollback started.
pub fn flags_touched(record: &MigrationRecord) -> bool {
    record.flags_changed_at.is_some()
        || record.accepted_at.is_some()
        || record.awaiting == Some(Awaiting::AcceptEverywhere)
        || record.rollback_started_at.is_some()
}

/// How the core answers `keyrot migrate-issuer`: the actions with which it accepts it, and the
/// outcome; or why not.
pub(super) fn on_migrate_request(
    plan: &Plan,
    state: &State,
    observed: &Observed,
) -> Result<(Vec<Action>, String), String> {
    let Some(section) = plan.issuer_migration.as_ref() else {
        return Err("the plan has no issuerMigration section: nothing to migrate".into());
    };
    if let Some(why) = refused_during_rotation(state.rotation.as_ref()) {
        return Err(why);
    }
    if let Some(why) = super::switch::blocks_other_changes(state) {
        return Err(why);
    }
    // A plan naming another issuer than the flags would migrate from the wrong one: refused
    // before anything is recorded.
    let issuer_problem = observed
        .migration
        .as_ref()
        .and_then(|v| v.issuer_problem.clone());
    match &state.issuer_migration {
        None if issuer_problem.is_some() => Err(issuer_problem.unwrap_or_default()),
        None => Ok((
            vec![Action::StartMigration {
                old_issuer: plan.issuer.url.clone(),
                new_issuer: section.new_issuer.url.clone(),
            }],
            "issuer migration started".into(),
        )),
        Some(found) if in_record(plan, state).is_none() => Err(other_migration(plan, found)),
        Some(found) if found.rollback_started_at.is_some() => Err(
            "this migration is being rolled back: finish with `keyrot migrate-issuer --rollback`"
                .into(),
        ),
        Some(_) => Ok((Vec::new(), "continuing the issuer migration".into())),
    }
}

/// How the core answers `keyrot migrate-issuer --rollback`.
pub(super) fn on_rollback_request(
    plan: &Plan,
    state: &State,
    observed: &Observed,
) -> Result<(Vec<Action>, String), String> {
    let nothing = || {
        format!(
            "no issuer migration is recorded in {}: nothing to roll back",
            record::path(&plan.state_dir).display()
        )
    };
    if plan.issuer_migration.is_none() {
        return Err("the plan has no issuerMigration section: nothing to roll back".into());
    }
    let Some(found) = &state.issuer_migration else {
        return Err(nothing());
    };
    if in_record(plan, state).is_none() {
        return Err(other_migration(plan, found));
    }
    if found.rollback_started_at.is_some() {
        return Ok((
            Vec::new(),
            "continuing the issuer migration's rollback".into(),
        ));
    }
    let backup = observed
        .migration
        .as_ref()
        .is_some_and(|v| v.original_backup);
    // A backup means the file was edited, even when a crash kept the step unrecorded.
    let restart = flags_touched(found) || backup;
    Ok((
        vec![Action::StartMigrationRollback { restart }],
        "issuer migration rollback started".into(),
    ))
}

/// Whether `keyrot approve` is for the issuer migration: it waits for a person.
pub(super) fn awaits_person(plan: &Plan, state: &State) -> bool {
    in_record(plan, state).is_some_and(|(_, r)| r.awaiting.is_some())
}

fn other_migration(plan: &Plan, found: &MigrationRecord) -> String {
    format!(
        "{} records a migration from {} to {}, not this plan's; finish or remove it first",
        record::path(&plan.state_dir).display(),
        found.old_issuer,
        found.new_issuer
    )
}

/// A flag change of the migration, in the order the steps make them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    /// The new issuer accepted, the old one still issuing (acceptFirst).
    Accept,
    /// The new issuer first: it issues, the old one is still accepted.
    Add,
    /// Only the new issuer.
    Drop,
}

/// Which issuer the apiserver must issue as when checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issues {
    Old,
    New,
}

/// One step for the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationAction {
    /// Step 1: every target serves the new issuer's documents for the current keys.
    Publish,
    /// Step 2: the documents read back anonymously at the new issuer URL.
    CheckDocuments,
    /// An editor changes the flag file and kube-apiserver restarts; `then_check`: the apiserver
    /// must issue as that issuer afterwards.
    ChangeFlags {
        change: FlagChange,
        then_check: Option<Issues>,
    },
    /// A person made the change keyrot printed and approved it: the apiserver must show it.
    CheckApproved { step: ManualStep, issues: Issues },
    /// Step 4: the apiserver's discovery document and a new token name the new issuer.
    CheckCluster,
    /// With `flags: manual`: print the change for a person and wait for `keyrot approve`.
    AskPerson(ManualStep),
    /// A person approved that every other apiserver accepts the new issuer (acceptFirst).
    RecordAcceptedEverywhere,
}

/// What the migration does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationDecision {
    Act(MigrationAction),
    /// Nothing to do until a person approves or `until` (the end of the grace period).
    Wait {
        step: u8,
        why: MigrationWait,
        until: Option<DateTime<Utc>>,
    },
    /// Every planned step is done; `old_issuer_kept`: the plan keeps the old issuer accepted.
    Done {
        old_issuer_kept: bool,
    },
    /// The request cannot be carried out; the step it belongs to, and why.
    Refused {
        step: u8,
        why: &'static str,
    },
}

/// Why the migration waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationWait {
    /// acceptFirst: until a person says every apiserver accepts the new issuer.
    EveryApiserverAccepts,
    /// The grace period after the flag change is not over (or ends past the calendar).
    Grace,
}

/// The step that comes next for `record`. `approved`: `keyrot approve` asked to go on;
/// `grace`: the grace period (it depends on the apiserver's flags, read by the caller).
pub fn next_migration_step(
    section: &IssuerMigration,
    record: &MigrationRecord,
    approved: bool,
    grace: TimeDelta,
    now: DateTime<Utc>,
) -> MigrationDecision {
    use MigrationAction as A;
    if record.rollback_started_at.is_some() {
        return MigrationDecision::Refused {
            step: 0,
            why: "this migration is being rolled back: finish with `keyrot migrate-issuer \
                  --rollback`",
        };
    }
    let manual = matches!(section.flags, FlagSource::Manual);
    let approved_manual = |step| approved && record.awaiting == Some(manual_change(step));
    if record.published_at.is_none() {
        return MigrationDecision::Act(A::Publish);
    }
    if record.verified_at.is_none() {
        return MigrationDecision::Act(A::CheckDocuments);
    }
    if section.accept_first && record.accepted_at.is_none() {
        return MigrationDecision::Act(match manual {
            true if approved_manual(ManualStep::Accept) => A::CheckApproved {
                step: ManualStep::Accept,
                issues: Issues::Old,
            },
            true => A::AskPerson(ManualStep::Accept),
            false if record.awaiting != Some(Awaiting::AcceptEverywhere) => A::ChangeFlags {
                change: FlagChange::Accept,
                then_check: Some(Issues::Old),
            },
            false if approved => A::RecordAcceptedEverywhere,
            false => {
                return MigrationDecision::Wait {
                    step: 3,
                    why: MigrationWait::EveryApiserverAccepts,
                    until: None,
                };
            }
        });
    }
    if record.flags_changed_at.is_none() {
        return MigrationDecision::Act(match manual {
            true if approved_manual(ManualStep::Add) => A::CheckApproved {
                step: ManualStep::Add,
                issues: Issues::New,
            },
            true => A::AskPerson(ManualStep::Add),
            false => A::ChangeFlags {
                change: FlagChange::Add,
                then_check: None,
            },
        });
    }
    if record.cluster_verified_at.is_none() {
        return MigrationDecision::Act(A::CheckCluster);
    }
    if !section.drop_old_issuer {
        return MigrationDecision::Done {
            old_issuer_kept: true,
        };
    }
    if record.old_issuer_dropped_at.is_some() {
        return MigrationDecision::Done {
            old_issuer_kept: false,
        };
    }
    let changed = record.flags_changed_at.expect("checked above");
    // A grace period that ends past the end of the calendar never ends.
    let due = changed.checked_add_signed(grace);
    if due.is_none_or(|due| now < due) {
        return MigrationDecision::Wait {
            step: 5,
            why: MigrationWait::Grace,
            until: due,
        };
    }
    MigrationDecision::Act(match manual {
        true if approved_manual(ManualStep::Drop) => A::CheckApproved {
            step: ManualStep::Drop,
            issues: Issues::New,
        },
        true => A::AskPerson(ManualStep::Drop),
        false => A::ChangeFlags {
            change: FlagChange::Drop,
            then_check: Some(Issues::New),
        },
    })
}

// One change at a time: a rotation and an issuer migration never run together.

/// Why no key rotation may start while `recorded` exists, if it concerns the plan's issuer.
///
/// From step 1 on the targets serve the new issuer's discovery document; a rotation with the
/// plan's issuer would publish the old one's over it, and change the keys under a migration
/// that checked them. Once the plan names the new issuer, the record is history.
pub fn blocks_rotation(plan: &Plan, recorded: &MigrationRecord) -> Option<String> {
    if recorded.old_issuer != plan.issuer.url {
        return None;
    }
    let path = record::path(&plan.state_dir);
    let finished = recorded.old_issuer_dropped_at.is_some()
        || (recorded.cluster_verified_at.is_some()
            && plan
                .issuer_migration
                .as_ref()
                .is_some_and(|m| !m.drop_old_issuer));
    Some(if finished {
        format!(
            "the issuer migration to {} is done ({}): set issuer.url to it and remove \
             issuerMigration before keys rotate again",
            recorded.new_issuer,
            path.display()
        )
    } else {
        format!(
            "the issuer migration from {} to {} is under way ({}): finish it or roll it back \
             before keys rotate",
            recorded.old_issuer,
            recorded.new_issuer,
            path.display()
        )
    })
}

/// Why a migration may not start now: a key rotation is in record. A rotation changes the
/// keys the migration publishes and checks.
pub fn refused_during_rotation(rotation: Option<&Rotation>) -> Option<String> {
    rotation.map(|r| {
        format!(
            "key rotation {} is in record (phase {}): let it finish (or abort it) before \
             changing the issuer",
            r.id, r.phase
        )
    })
}

/// What `action` done at `now` changes in the record.
pub fn record_migration_step(
    record: &mut MigrationRecord,
    action: MigrationAction,
    now: DateTime<Utc>,
) {
    use MigrationAction as A;
    match action {
        A::Publish => record.published_at = Some(now),
        A::CheckDocuments => record.verified_at = Some(now),
        A::ChangeFlags {
            change: FlagChange::Accept,
            ..
        } => record.awaiting = Some(Awaiting::AcceptEverywhere),
        A::RecordAcceptedEverywhere
        | A::CheckApproved {
            step: ManualStep::Accept,
            ..
        } => {
            record.accepted_at = Some(now);
            record.awaiting = None;
        }
        A::ChangeFlags {
            change: FlagChange::Add,
            ..
        }
        | A::CheckApproved {
            step: ManualStep::Add,
            ..
        } => {
            record.flags_changed_at = Some(now);
            record.awaiting = None;
        }
        A::CheckCluster => record.cluster_verified_at = Some(now),
        A::ChangeFlags {
            change: FlagChange::Drop,
            ..
        }
        | A::CheckApproved {
            step: ManualStep::Drop,
            ..
        } => {
            record.old_issuer_dropped_at = Some(now);
            record.awaiting = None;
        }
        A::AskPerson(step) => record.awaiting = Some(manual_change(step)),
        // A rollback is recorded by the rollback itself.
        A::CheckApproved {
            step: ManualStep::Rollback,
            ..
        } => {}
    }
}

/// The step number each action belongs to, as the messages name it.
pub fn step_number(action: MigrationAction) -> u8 {
    use MigrationAction as A;
    match action {
        A::Publish => 1,
        A::CheckDocuments => 2,
        A::ChangeFlags {
            change: FlagChange::Drop,
            ..
        }
        | A::CheckApproved {
            step: ManualStep::Drop,
            ..
        }
        | A::AskPerson(ManualStep::Drop) => 5,
        A::CheckCluster => 4,
        A::CheckApproved {
            step: ManualStep::Rollback,
            ..
        }
        | A::AskPerson(ManualStep::Rollback) => 9,
        _ => 3,
    }
}

/// The step as errors name it: "step 2 (verify the new issuer's documents)".
pub fn step_name(action: MigrationAction) -> &'static str {
    match step_number(action) {
        1 => "step 1 (publish for the new issuer)",
        2 => "step 2 (verify the new issuer's documents)",
        3 => "step 3 (change the flags and restart)",
        4 => "step 4 (verify the cluster)",
        5 => "step 5 (drop the old issuer)",
        _ => "step 9 (roll back)",
    }
}

fn manual_change(step: ManualStep) -> Awaiting {
    Awaiting::ManualChange { step }
}
