//! The issuer migration's next step: record + plan section + approval + time -> one step, a
//! wait, or done. Pure: the runner (`crate::migration::run`) observes, acts and records.
//!
//! Steps, each recorded once done, so a run stopped anywhere continues where it stopped:
//! 1 publish for the new issuer; 2 read the documents back anonymously; 3 (acceptFirst) every
//! apiserver accepts the new issuer, then the flags name it first and kube-apiserver restarts;
//! 4 the cluster issues as the new issuer; 5 after the grace period, drop the old issuer.

use chrono::{DateTime, TimeDelta, Utc};

use crate::migration::record::{self, Awaiting, ManualStep, MigrationRecord};
use crate::plan::{FlagSource, IssuerMigration, Plan};
use crate::state::Rotation;

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

/// Why a request cannot start, judged once when it arrives: an approval when nothing waits for
/// one. (Steps later in the same run consume the approval; that is not a refusal.)
pub fn refuse_migration_request(record: &MigrationRecord, approved: bool) -> Option<&'static str> {
    (approved && record.awaiting.is_none() && record.rollback_started_at.is_none())
        .then_some("nothing in the issuer migration waits for approval")
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

fn manual_change(step: ManualStep) -> Awaiting {
    Awaiting::ManualChange { step }
}
