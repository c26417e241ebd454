//! The issuer migration as a change of the one engine, without I/O: table-style decisions of
//! `decide` (state + observation + time -> action or gate), and whole migrations, approvals,
//! rollbacks from every step and rotations asked for meanwhile, carried out by the executor
//! against the in-memory cluster.

mod harness;

use chrono::{DateTime, TimeDelta, Utc};
use harness::engine::Engine;
use harness::{fresh_world, t0};
use keyrot::decision::{Action, Decision, action_name, decide};
use keyrot::executor::Pause;
use keyrot::migration::record::MigrationRecord;
use keyrot::plan::Plan;
use keyrot::state::{Trigger, TriggerKind};

const OLD: &str = harness::MIGRATION_OLD;
const NEW: &str = harness::MIGRATION_NEW;
const GRACE: TimeDelta = TimeDelta::hours(48);
const MANIFEST: &str = "{ kubeadmManifest: /etc/kubernetes/manifests/kube-apiserver.yaml }";

fn plan(flags: &str, extra: &str) -> Plan {
    harness::migration_plan(flags, extra)
}

/// A decision in a few words: the actions' names (a request's answer in brackets), or the
/// first closed gate and when the core looks again.
fn summary(decision: &Decision) -> String {
    if decision.actions.is_empty() {
        let gate = decision.blocked_by.first().map(|b| b.gate.to_string());
        return format!(
            "wait {} until {:?}",
            gate.unwrap_or_default(),
            decision.wake_at
        );
    }
    decision
        .actions
        .iter()
        .map(|action| match action {
            Action::ConsumeTrigger { outcome, .. } => {
                let word = outcome.split(':').next().unwrap_or_default();
                format!("answer({word})")
            }
            other => action_name(other).to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn at(hours: i64) -> DateTime<Utc> {
    t0() + TimeDelta::hours(hours)
}

/// The record after the steps up to `done`, all at `at(0)`: "new", "published", "verified",
/// "changed" (flags), "checked" (cluster), "dropped".
fn record_after(done: &str) -> MigrationRecord {
    let order = [
        "new",
        "published",
        "verified",
        "changed",
        "checked",
        "dropped",
    ];
    let reached = order.iter().position(|s| *s == done).expect("a known step");
    let mut record = MigrationRecord::new(OLD, NEW);
    let t = Some(at(0));
    let fields = [
        &mut record.published_at,
        &mut record.verified_at,
        &mut record.flags_changed_at,
        &mut record.cluster_verified_at,
        &mut record.old_issuer_dropped_at,
    ];
    for field in fields.into_iter().take(reached) {
        *field = t;
    }
    record
}

#[test]
fn table_state_observation_and_time_give_the_next_step_of_an_issuer_migration() {
    struct Row {
        name: &'static str,
        record: Option<&'static str>,
        request: Option<TriggerKind>,
        rotation: bool,
        flags_issue_as: Option<&'static str>,
        backup: bool,
        rollback_started: bool,
        hours: i64,
        expect: &'static str,
    }
    let row = |name, record, expect| Row {
        name,
        record,
        request: None,
        rotation: false,
        flags_issue_as: None,
        backup: false,
        rollback_started: false,
        hours: 1,
        expect,
    };
    use TriggerKind::{MigrateIssuer, RollbackIssuerMigration, Rotate};
    let grace_over = at(48);
    let rows = [
        Row {
            request: Some(MigrateIssuer),
            ..row(
                "a request starts a migration",
                None,
                "start-issuer-migration, answer(issuer migration started)",
            )
        },
        Row {
            request: Some(MigrateIssuer),
            flags_issue_as: Some("https://other.example"),
            ..row(
                "a request is refused when the flags issue as another issuer",
                None,
                "answer(refused)",
            )
        },
        Row {
            request: Some(MigrateIssuer),
            rotation: true,
            ..row(
                "a request is refused while a rotation is in record",
                None,
                "answer(refused)",
            )
        },
        row(
            "step 1 publishes",
            Some("new"),
            "step 1 (publish for the new issuer)",
        ),
        row(
            "step 2 reads back",
            Some("published"),
            "step 2 (verify the new issuer's documents)",
        ),
        row(
            "step 3 changes the flags",
            Some("verified"),
            "step 3 (change the flags and restart)",
        ),
        Row {
            flags_issue_as: Some("https://other.example"),
            ..row(
                "step 3 waits while the flags name another issuer",
                Some("verified"),
                "wait migration-flags until None",
            )
        },
        row(
            "step 4 checks the cluster",
            Some("changed"),
            "step 4 (verify the cluster)",
        ),
        row(
            "step 5 waits for the grace period",
            Some("checked"),
            "wait old-issuer-grace until Some(2026-03-03T12:00:00Z)",
        ),
        Row {
            hours: 48,
            ..row(
                "step 5 drops the old issuer once the grace period is over",
                Some("checked"),
                "step 5 (drop the old issuer)",
            )
        },
        row(
            "a finished migration holds rotations until the plan names the new issuer",
            Some("dropped"),
            "wait issuer-migration until None",
        ),
        Row {
            request: Some(Rotate),
            ..row(
                "a rotation asked for during a migration is refused",
                Some("changed"),
                "answer(refused)",
            )
        },
        Row {
            request: Some(RollbackIssuerMigration),
            ..row(
                "a rollback after the flags changed restarts once they are back",
                Some("changed"),
                "start-issuer-migration-rollback, answer(issuer migration rollback started)",
            )
        },
        Row {
            rollback_started: true,
            ..row(
                "a started rollback puts the flags back",
                Some("changed"),
                "step 9 (roll back)",
            )
        },
        Row {
            rollback_started: true,
            hours: 48,
            ..row(
                "a started rollback never drops the old issuer",
                Some("checked"),
                "step 9 (roll back)",
            )
        },
        Row {
            request: Some(RollbackIssuerMigration),
            ..row(
                "a rollback with nothing recorded is refused",
                None,
                "answer(refused)",
            )
        },
        Row {
            request: Some(MigrateIssuer),
            rollback_started: true,
            ..row(
                "a request to go on during a rollback is refused",
                Some("published"),
                "answer(refused)",
            )
        },
    ];
    let plan = plan(MANIFEST, "  dropOldIssuer: true\n");
    let adopted = Engine::new(plan.clone()).state;
    let mut rotating = Engine::new(plan.clone());
    rotating.ask(Rotate);
    rotating.run_stopping_after(2).unwrap();
    let rotation = rotating.state.rotation.clone();
    assert!(rotation.is_some(), "a rotation is in record");
    for row in rows {
        let mut state = adopted.clone();
        state.issuer_migration = row.record.map(record_after);
        if row.rollback_started
            && let Some(record) = state.issuer_migration.as_mut()
        {
            record.rollback_started_at = Some(at(1));
            record.rollback_restarts = Some(true);
        }
        if row.rotation {
            state.rotation = rotation.clone();
        }
        if let Some(kind) = row.request {
            state.triggers.push(Trigger {
                kind,
                requested_at: at(0),
                force: false,
            });
        }
        let mut world = fresh_world(&plan);
        if let Some(issuer) = row.flags_issue_as {
            world.issuers = vec![issuer.into()];
        }
        if row.backup {
            world.issuers_backup = Some(vec![OLD.into()]);
        }
        let now = if row.hours == 48 {
            grace_over
        } else {
            at(row.hours)
        };
        let decision = decide(&plan, &state, &world.observe(), now);
        assert_eq!(summary(&decision), row.expect, "{}", row.name);
    }
}

#[test]
fn a_whole_migration_publishes_changes_the_flags_waits_out_the_grace_and_drops_the_old_issuer() {
    let mut engine = Engine::new(plan(MANIFEST, "  dropOldIssuer: true\n"));
    engine.ask(TriggerKind::MigrateIssuer);
    let waiting = engine.run().unwrap();
    assert_eq!(engine.last_answer(), "issuer migration started");
    assert_eq!(engine.issuers(), [NEW, OLD], "both issuers are accepted");
    let documents = engine.world.0.borrow().new_issuer_documents.clone();
    assert_eq!(documents, Some((NEW.into(), vec![harness::OLD.into()])));
    assert_eq!(
        summary(&waiting),
        format!("wait old-issuer-grace until {:?}", Some(at(48)))
    );

    // The daemon wakes at the end of the grace period and carries on by itself.
    engine.now.set(waiting.wake_at.unwrap());
    let done = engine.run().unwrap();
    assert_eq!(engine.issuers(), [NEW]);
    let record = engine.record().unwrap();
    assert_eq!(record.old_issuer_dropped_at, Some(at(48)));
    assert_eq!(done.wake_at, None, "nothing more to do: {done:?}");
}

#[test]
fn a_rollback_from_every_step_brings_the_old_issuer_back_and_forgets_the_migration() {
    let plan = plan(MANIFEST, "  dropOldIssuer: true\n");
    // Stopped after 0, 1, 2, ... decisions carried out, until the migration reaches its grace
    // period on its own; rolled back from there.
    let mut stops = 0;
    for stop_after in 0.. {
        let mut engine = Engine::new(plan.clone());
        engine.ask(TriggerKind::MigrateIssuer);
        let reached_grace = matches!(
            engine.run_stopping_after(stop_after).unwrap(),
            Pause::Waiting(_)
        );
        engine.ask(TriggerKind::RollbackIssuerMigration);
        engine.run().unwrap();
        let case = format!("rolled back after {stop_after} steps");
        assert_eq!(engine.record(), None, "{case}");
        assert_eq!(engine.issuers(), [OLD], "{case}");
        assert_eq!(engine.world.0.borrow().issuers_backup, None, "{case}");
        // With the migration gone, keys rotate again.
        engine.ask(TriggerKind::Rotate);
        engine.run().unwrap();
        assert!(engine.state.rotation.is_some(), "{case}: a rotation starts");
        stops += 1;
        if reached_grace {
            break;
        }
    }
    assert!(
        stops >= 5,
        "start, publish, read back, flags, cluster check: {stops}"
    );
}

#[test]
fn manual_flags_wait_for_a_person_and_an_approval_of_a_change_not_made_is_refused() {
    let mut engine = Engine::new(plan("manual", "  dropOldIssuer: true\n"));
    engine.ask(TriggerKind::MigrateIssuer);
    let waiting = engine.run().unwrap();
    assert_eq!(summary(&waiting), "wait approval until None");
    let said = engine.said.borrow().join("\n");
    assert!(
        said.contains(NEW) && said.contains("keyrot approve"),
        "{said}"
    );

    // Approved, but the apiserver still issues as the old issuer: the step fails, nothing recorded.
    engine.ask(TriggerKind::Approve);
    let error = engine.run().unwrap_err().to_string();
    assert!(error.contains("approved, but"), "{error}");
    assert_eq!(engine.record().unwrap().flags_changed_at, None);

    // The person makes the change; the next approval checks it and the grace period starts.
    engine.world.0.borrow_mut().issuers = vec![NEW.into(), OLD.into()];
    engine.ask(TriggerKind::Approve);
    let waiting = engine.run().unwrap();
    assert_eq!(
        engine.last_answer(),
        "approved: the issuer migration goes on"
    );
    assert!(engine.record().unwrap().cluster_verified_at.is_some());
    assert_eq!(
        summary(&waiting),
        format!(
            "wait old-issuer-grace until {:?}",
            Some(engine.now.get() + GRACE)
        )
    );
}

#[test]
fn a_rotation_asked_for_during_a_migration_is_refused_and_the_migration_goes_on() {
    let mut engine = Engine::new(plan(MANIFEST, "  dropOldIssuer: true\n"));
    engine.ask(TriggerKind::MigrateIssuer);
    // Stopped after publishing: the rotation request arrives while the migration is under way.
    engine.run_stopping_after(2).unwrap();
    engine.ask(TriggerKind::Rotate);
    engine.run().unwrap();
    let refusal = engine
        .answers
        .borrow()
        .iter()
        .find(|a| a.starts_with("refused"))
        .cloned()
        .expect("the rotation request is answered");
    assert!(refusal.contains("issuer migration"), "{refusal}");
    assert!(engine.state.rotation.is_none());
    assert_eq!(
        engine.issuers(),
        [NEW, OLD],
        "the migration went on to its grace period"
    );
}

#[test]
fn a_failed_step_is_recorded_as_a_failed_attempt_and_redone_once_the_world_allows() {
    let mut engine = Engine::new(plan(MANIFEST, "  dropOldIssuer: true\n"));
    engine.ask(TriggerKind::MigrateIssuer);
    // Step 4's check fails: the apiserver came back issuing as the old issuer.
    engine.run_stopping_after(4).unwrap();
    assert!(engine.record().unwrap().flags_changed_at.is_some());
    engine.world.0.borrow_mut().issuers = vec![OLD.into()];
    let error = engine.run().unwrap_err().to_string();
    assert!(
        error.starts_with("step 4 (verify the cluster) failed"),
        "{error}"
    );
    assert_eq!(engine.record().unwrap().cluster_verified_at, None);
    // Fixed: the next run redoes the check and goes on.
    engine.world.0.borrow_mut().issuers = vec![NEW.into(), OLD.into()];
    engine.run().unwrap();
    assert!(engine.record().unwrap().cluster_verified_at.is_some());
}
