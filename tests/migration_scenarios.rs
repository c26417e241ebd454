//! Issuer migration scenarios for the decision core, without I/O: a record, the plan's section,
//! an approval and a time give the next step; a whole migration is walked by recording each.

mod harness;

use chrono::{DateTime, TimeDelta, Utc};
use keyrot::decision::migration::{
    FlagChange, Issues, MigrationAction as A, MigrationDecision, MigrationWait,
    next_migration_step, record_migration_step,
};
use keyrot::migration::record::{Awaiting, ManualStep, MigrationRecord};
use keyrot::plan::{IssuerMigration, Plan};

const OLD: &str = harness::MIGRATION_OLD;
const NEW: &str = harness::MIGRATION_NEW;

fn plan(flags: &str, extra: &str) -> Plan {
    harness::migration_plan(flags, extra)
}

const FILE: &str = "{ kubeadmManifest: /etc/kubernetes/manifests/kube-apiserver.yaml }";

fn section(plan: &Plan) -> &IssuerMigration {
    plan.issuer_migration.as_ref().unwrap()
}

fn t(hours: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::hours(hours)
}

const GRACE: TimeDelta = TimeDelta::hours(48);

/// Records every step the core asks for, as if each succeeded, until it waits or is done; the
/// steps taken and how it stopped.
fn walk(
    plan: &Plan,
    record: &mut MigrationRecord,
    approved: bool,
    now: DateTime<Utc>,
) -> (Vec<A>, MigrationDecision) {
    let mut taken = Vec::new();
    for _ in 0..20 {
        match next_migration_step(section(plan), record, approved, GRACE, now) {
            MigrationDecision::Act(action) => {
                record_migration_step(record, action, now);
                taken.push(action);
                if matches!(action, A::AskPerson(_)) {
                    // The run stops after printing the change.
                    return (taken, MigrationDecision::Act(action));
                }
            }
            other => return (taken, other),
        }
    }
    panic!("the migration goes round in circles: {taken:?}");
}

#[test]
fn an_edited_flag_file_migration_publishes_checks_changes_and_waits_for_the_grace_period() {
    let plan = plan(FILE, "  dropOldIssuer: true\n");
    let mut record = MigrationRecord::new(OLD, NEW);
    let (taken, stopped) = walk(&plan, &mut record, false, t(0));
    assert_eq!(
        taken,
        [
            A::Publish,
            A::CheckDocuments,
            A::ChangeFlags {
                change: FlagChange::Add,
                then_check: None
            },
            A::CheckCluster,
        ]
    );
    assert_eq!(
        stopped,
        MigrationDecision::Wait {
            step: 5,
            why: MigrationWait::Grace,
            until: Some(t(48)),
        }
    );

    // One second early: still waiting. At the end of the grace period: drop, check, done.
    let early = t(48) - TimeDelta::seconds(1);
    assert!(matches!(
        next_migration_step(section(&plan), &record, false, GRACE, early),
        MigrationDecision::Wait { .. }
    ));
    let (taken, stopped) = walk(&plan, &mut record, false, t(48));
    assert_eq!(
        taken,
        [A::ChangeFlags {
            change: FlagChange::Drop,
            then_check: Some(Issues::New)
        }]
    );
    assert_eq!(
        stopped,
        MigrationDecision::Done {
            old_issuer_kept: false
        }
    );
    assert_eq!(record.old_issuer_dropped_at, Some(t(48)));
}

#[test]
fn a_migration_that_keeps_the_old_issuer_is_done_after_the_cluster_check() {
    let plan = plan(FILE, "  dropOldIssuer: false\n");
    let mut record = MigrationRecord::new(OLD, NEW);
    let (taken, stopped) = walk(&plan, &mut record, false, t(0));
    assert_eq!(taken.last(), Some(&A::CheckCluster));
    assert_eq!(
        stopped,
        MigrationDecision::Done {
            old_issuer_kept: true
        }
    );
}

#[test]
fn accept_first_changes_this_node_then_waits_for_approval_that_every_apiserver_accepts() {
    let plan = plan(FILE, "  acceptFirst: true\n  dropOldIssuer: true\n");
    let mut record = MigrationRecord::new(OLD, NEW);
    let (taken, stopped) = walk(&plan, &mut record, false, t(0));
    assert_eq!(
        taken[2..],
        [A::ChangeFlags {
            change: FlagChange::Accept,
            then_check: Some(Issues::Old)
        }]
    );
    assert_eq!(
        stopped,
        MigrationDecision::Wait {
            step: 3,
            why: MigrationWait::EveryApiserverAccepts,
            until: None
        }
    );
    assert_eq!(record.awaiting, Some(Awaiting::AcceptEverywhere));

    // Run again without approval: the flags are not changed a second time.
    let (again, _) = walk(&plan, &mut record, false, t(1));
    assert!(again.is_empty(), "{again:?}");

    // `keyrot approve`: recorded, then the add step and the cluster check.
    let (taken, _) = walk(&plan, &mut record, true, t(2));
    assert_eq!(
        taken,
        [
            A::RecordAcceptedEverywhere,
            A::ChangeFlags {
                change: FlagChange::Add,
                then_check: None
            },
            A::CheckCluster,
        ]
    );
    assert_eq!(record.accepted_at, Some(t(2)));
    assert_eq!(record.flags_changed_at, Some(t(2)));
}

#[test]
fn manual_flags_ask_a_person_at_each_change_and_check_the_apiserver_on_approval() {
    let plan = plan("manual", "  dropOldIssuer: true\n");
    let mut record = MigrationRecord::new(OLD, NEW);
    let (taken, _) = walk(&plan, &mut record, false, t(0));
    assert_eq!(
        taken,
        [A::Publish, A::CheckDocuments, A::AskPerson(ManualStep::Add)]
    );
    assert_eq!(
        record.awaiting,
        Some(Awaiting::ManualChange {
            step: ManualStep::Add
        })
    );

    // Asked again without approval: the same change is printed; nothing is taken as made.
    let (again, _) = walk(&plan, &mut record, false, t(1));
    assert_eq!(again, [A::AskPerson(ManualStep::Add)]);
    assert_eq!(record.flags_changed_at, None);

    let (taken, stopped) = walk(&plan, &mut record, true, t(2));
    assert_eq!(
        taken,
        [
            A::CheckApproved {
                step: ManualStep::Add,
                issues: Issues::New
            },
            A::CheckCluster
        ]
    );
    assert!(matches!(
        stopped,
        MigrationDecision::Wait {
            why: MigrationWait::Grace,
            ..
        }
    ));

    // After the grace period the drop is asked for, and approved.
    let (taken, _) = walk(&plan, &mut record, false, t(50));
    assert_eq!(taken, [A::AskPerson(ManualStep::Drop)]);
    let (taken, stopped) = walk(&plan, &mut record, true, t(51));
    assert_eq!(
        taken,
        [A::CheckApproved {
            step: ManualStep::Drop,
            issues: Issues::New
        }]
    );
    assert_eq!(
        stopped,
        MigrationDecision::Done {
            old_issuer_kept: false
        }
    );
}

#[test]
fn an_approval_for_another_step_changes_nothing() {
    // Waiting for the accept change, an approval never skips to the add step.
    let plan = plan("manual", "  acceptFirst: true\n  dropOldIssuer: true\n");
    let mut record = MigrationRecord::new(OLD, NEW);
    let (taken, _) = walk(&plan, &mut record, false, t(0));
    assert_eq!(taken.last(), Some(&A::AskPerson(ManualStep::Accept)));
    let (taken, _) = walk(&plan, &mut record, true, t(1));
    assert_eq!(
        taken,
        [
            A::CheckApproved {
                step: ManualStep::Accept,
                issues: Issues::Old
            },
            A::AskPerson(ManualStep::Add)
        ],
        "the accept approval leads to asking for the add change, not to making it"
    );
}

#[test]
fn a_migration_being_rolled_back_takes_no_step_forward() {
    let plan = plan(FILE, "  dropOldIssuer: true\n");
    let mut record = MigrationRecord::new(OLD, NEW);
    walk(&plan, &mut record, false, t(0));
    record.rollback_started_at = Some(t(1));
    assert!(matches!(
        next_migration_step(section(&plan), &record, false, GRACE, t(100)),
        MigrationDecision::Refused { step: 0, .. }
    ));
}

#[test]
fn a_grace_period_past_the_end_of_the_calendar_waits_forever() {
    let plan = plan(FILE, "  dropOldIssuer: true\n");
    let mut record = MigrationRecord::new(OLD, NEW);
    walk(&plan, &mut record, false, t(0));
    assert_eq!(
        next_migration_step(section(&plan), &record, false, TimeDelta::MAX, t(1_000_000)),
        MigrationDecision::Wait {
            step: 5,
            why: MigrationWait::Grace,
            until: None
        }
    );
}

#[test]
fn every_step_resumes_where_a_stopped_run_left_it() {
    // Stopping after any number of recorded steps and deciding again from the record gives the
    // same remaining steps as an uninterrupted run (the record is all a run needs).
    let plan = plan(FILE, "  acceptFirst: true\n  dropOldIssuer: true\n");
    let mut whole = MigrationRecord::new(OLD, NEW);
    let (first, _) = walk(&plan, &mut whole, false, t(0));
    for stop_after in 0..first.len() {
        let mut record = MigrationRecord::new(OLD, NEW);
        for action in &first[..stop_after] {
            record_migration_step(&mut record, *action, t(0));
        }
        let (rest, _) = walk(&plan, &mut record, false, t(0));
        assert_eq!(
            rest,
            first[stop_after..],
            "stopped after {stop_after} steps"
        );
    }
}

#[test]
fn no_rotation_starts_while_a_migration_of_the_plans_issuer_is_recorded() {
    use keyrot::decision::migration::blocks_rotation;
    let plan = plan(FILE, "  dropOldIssuer: true\n");
    let mut record = MigrationRecord::new(OLD, NEW);
    let why = blocks_rotation(&plan, &record).expect("a recorded migration blocks rotations");
    assert!(why.contains("under way"), "{why}");

    // Done: rotations wait until the plan names the new issuer.
    walk(&plan, &mut record, false, t(0));
    walk(&plan, &mut record, false, t(48));
    let why = blocks_rotation(&plan, &record).expect("still the old issuer in the plan");
    assert!(why.contains("set issuer.url to it"), "{why}");

    // A record of another issuer's migration is history for this plan.
    let other = MigrationRecord::new("https://older.example", OLD);
    assert_eq!(blocks_rotation(&plan, &other), None);
}
