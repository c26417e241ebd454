//! Property tests: random sequences of events (steps, crashes, failures, clock jumps, triggers,
//! lagging apiservers and targets, plan edits) never break the invariants 1-3 of docs/design.md, and once
//! the disturbances stop every rotation completes.

mod harness;

use chrono::{DateTime, TimeDelta, Utc};
use harness::{Harness, plan, probed_plan};
use keyrot::decision::{Action, Gate, Phase, apply, apply_failure, decide, record_intent};
use keyrot::plan::Plan;
use keyrot::state::{Cause, TriggerKind};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

#[derive(Debug, Clone)]
enum Event {
    Step,
    /// The executor carries out the next effect, then dies before recording it.
    CrashAfterEffect,
    /// The next effect fails (disk full, restart command fails, upload refused).
    FailNextEffect,
    Advance(i64),
    ClockBack(i64),
    Trigger(TriggerKind),
    /// While on, restarts do not make the apiserver load new files (probed plans only).
    ApiserverLag(bool),
    /// While on, publications do not reach the target.
    TargetLag(bool),
    /// While on, a restarted apiserver crashes and stops answering (probed plans only).
    CrashOnRestart(bool),
    EditPlan {
        settle_minutes: i64,
        approve_promote: bool,
    },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => Just(Event::Step),
        1 => Just(Event::CrashAfterEffect),
        1 => Just(Event::FailNextEffect),
        3 => (1i64..2000).prop_map(Event::Advance),
        1 => (1i64..120).prop_map(Event::ClockBack),
        2 => prop_oneof![
            Just(TriggerKind::Rotate),
            Just(TriggerKind::Approve),
            Just(TriggerKind::Abort),
            Just(TriggerKind::Rollback)
        ]
        .prop_map(Event::Trigger),
        1 => any::<bool>().prop_map(Event::ApiserverLag),
        1 => any::<bool>().prop_map(Event::TargetLag),
        1 => any::<bool>().prop_map(Event::CrashOnRestart),
        1 => (5i64..40, any::<bool>()).prop_map(|(settle_minutes, approve_promote)| Event::EditPlan {
            settle_minutes,
            approve_promote
        }),
    ]
}

/// A key that stopped signing at `at`, and the targets that listed it then.
struct Stopped {
    kid: String,
    at: DateTime<Utc>,
    targets: Vec<usize>,
}

struct Run {
    h: Harness,
    /// The latest time the clock has shown: a clock set back does not undo time that passed.
    latest: DateTime<Utc>,
    apiserver_lag: bool,
    target_lag: bool,
    crash_on_restart: bool,
    fail_next: bool,
    stopped: Vec<Stopped>,
}

impl Run {
    fn new(plan: Plan) -> Self {
        let h = Harness::new(plan);
        Run {
            latest: h.now,
            h,
            apiserver_lag: false,
            target_lag: false,
            crash_on_restart: false,
            fail_next: false,
            stopped: Vec::new(),
        }
    }

    /// One decision carried out like the executor would, with the disturbances in force.
    fn step(&mut self, crash_after_effect: bool) {
        let h = &mut self.h;
        let decision = decide(&h.plan, &h.state, &h.world.observe(), h.now);
        let mut next_state = h.state.clone();
        for action in &decision.actions {
            let is_effect = action.is_effect();
            if is_effect {
                // The executor persists the intent before acting: it survives a crash.
                record_intent(&mut h.state, action, h.now);
                record_intent(&mut next_state, action, h.now);
            }
            if is_effect && std::mem::take(&mut self.fail_next) {
                apply_failure(&mut h.state, &h.plan, action, "injected failure", h.now);
                return;
            }
            let lagging = (self.apiserver_lag && matches!(action, Action::Restart { .. }))
                || (self.target_lag && matches!(action, Action::Publish { .. }));
            let before = (
                h.world.signing.kid.clone(),
                h.world.apiserver_signing.clone(),
            );
            if !lagging {
                h.world
                    .perform(action)
                    .expect("effects of the core's own plan succeed");
                if self.crash_on_restart && matches!(action, Action::Restart { .. }) {
                    h.world.apiserver_up = false;
                }
            }
            check_promotions(h, &before, &mut self.stopped);
            if is_effect && crash_after_effect {
                return;
            }
            apply(&mut next_state, &h.plan, action, h.now);
            h.log.push(format!("{} {:?}", h.now, action));
        }
        h.state = next_state;
    }

    fn apply_event(&mut self, event: &Event) {
        match event {
            Event::Step => self.step(false),
            Event::CrashAfterEffect => self.step(true),
            Event::FailNextEffect => self.fail_next = true,
            Event::Advance(minutes) => {
                self.h.now += TimeDelta::minutes(*minutes);
                self.latest = self.latest.max(self.h.now);
            }
            Event::ClockBack(minutes) => self.h.now -= TimeDelta::minutes(*minutes),
            Event::Trigger(kind) => self.h.trigger(*kind),
            Event::ApiserverLag(on) => self.apiserver_lag = *on && self.h.world.probed,
            Event::TargetLag(on) => self.target_lag = *on,
            Event::CrashOnRestart(on) => self.crash_on_restart = *on && self.h.world.probed,
            Event::EditPlan {
                settle_minutes,
                approve_promote,
            } => {
                self.h.plan.timings.publish_settle = TimeDelta::minutes(*settle_minutes);
                if *approve_promote {
                    self.h.plan.approvals.insert(Phase::Promote);
                } else {
                    self.h.plan.approvals.remove(&Phase::Promote);
                }
            }
        }
        self.check_invariants();
    }

    fn check_invariants(&self) {
        // Every state the core reaches passes the rules a state file is checked against on load.
        if let Err(e) = keyrot::state::check(&self.h.state) {
            panic!(
                "the core reached a state it would refuse to load: {e}\n{:?}",
                self.h.log
            );
        }
        let w = &self.h.world;
        let verification: Vec<&str> = w
            .bundle
            .iter()
            .chain(&w.extra)
            .map(|k| k.kid.as_str())
            .collect();
        // Invariant 1: what signs is verifiable, in the files and in the running apiserver.
        assert!(
            verification.contains(&w.signing.kid.as_str()),
            "signing file key {} not in the bundle {verification:?}\n{:#?}",
            w.signing.kid,
            self.h.log
        );
        assert!(
            w.apiserver_bundle.contains(&w.apiserver_signing),
            "apiserver signs with a key it does not verify"
        );
        // Invariant 3: a key that signed stays verifiable and published for retire_after.
        for stopped in &self.stopped {
            if self.latest < stopped.at + self.h.plan.timings.retire_after {
                assert!(
                    verification.contains(&stopped.kid.as_str()),
                    "{} left the bundle early (stopped {}, latest {}, now {})\n{:#?}\n{:?}",
                    stopped.kid,
                    stopped.at,
                    self.latest,
                    self.h.now,
                    self.h.log,
                    self.h.state.rotation
                );
                assert!(
                    w.apiserver_bundle.contains(&stopped.kid),
                    "{} left the apiserver early",
                    stopped.kid
                );
                for &t in &stopped.targets {
                    assert!(
                        w.targets[t].1.contains(&stopped.kid),
                        "{} left target {t} early",
                        stopped.kid
                    );
                }
            }
        }
    }

    /// Settles with every disturbance removed and every phase approved; the rotation must end.
    fn finish(&mut self) {
        self.apiserver_lag = false;
        self.target_lag = false;
        self.crash_on_restart = false;
        self.fail_next = false;
        for _ in 0..2000 {
            for _ in 0..20 {
                self.step(false);
                self.check_invariants();
            }
            let decision = decide(
                &self.h.plan,
                &self.h.state,
                &self.h.world.observe(),
                self.h.now,
            );
            // With keepNextKey a rotation is always recorded: at rest it keeps the next key
            // ready, waiting for the schedule or `keyrot rotate`.
            let next_key_ready = self.h.state.rotation.as_ref().is_some_and(|r| {
                r.cause == Cause::NextKey
                    && decision.blocked_by.iter().any(|b| b.gate == Gate::Schedule)
            });
            let at_rest = self.h.state.rotation.is_none() || next_key_ready;
            if at_rest && self.h.state.triggers.is_empty() {
                return;
            }
            if decision.blocked_by.iter().any(|b| b.gate == Gate::Approval) {
                self.h.trigger(TriggerKind::Approve);
            } else if let Some(wake) = decision.wake_at {
                self.h.now = self.h.now.max(wake);
                self.latest = self.latest.max(self.h.now);
            }
        }
        let decision = decide(
            &self.h.plan,
            &self.h.state,
            &self.h.world.observe(),
            self.h.now,
        );
        panic!(
            "the rotation never completed: {:?}\n{decision:?}\nworld {:?}\nnow {}",
            self.h.state.rotation, self.h.world, self.h.now
        );
    }
}

/// Invariant 2, and bookkeeping for invariant 3: checked at the moment a signing key changes.
fn check_promotions(h: &Harness, before: &(String, String), stopped: &mut Vec<Stopped>) {
    let w = &h.world;
    if w.signing.kid != before.0 {
        for (name, kids, _) in &w.targets {
            assert!(
                kids.contains(&w.signing.kid),
                "{} signs before target {name} serves it",
                w.signing.kid
            );
        }
    }
    if w.apiserver_signing != before.1 {
        let targets = (0..w.targets.len())
            .filter(|&t| w.targets[t].1.contains(&before.1))
            .collect();
        stopped.push(Stopped {
            kid: before.1.clone(),
            at: h.now,
            targets,
        });
    }
}

fn run(plan: Plan, events: &[Event]) {
    let mut run = Run::new(plan);
    for event in events {
        run.apply_event(event);
    }
    run.finish();
    let w = &run.h.world;
    if run.h.state.last_rotation_completed_at.is_some() {
        for (name, kids, _) in &w.targets {
            assert!(
                kids.contains(&w.signing.kid),
                "after completion target {name} lacks the signing key"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/decision_invariants.proptest-regressions"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_without_a_probe(events in prop::collection::vec(event(), 1..250)) {
        run(plan(), &events);
    }

    #[test]
    fn invariants_hold_with_a_probe_and_a_lagging_apiserver(events in prop::collection::vec(event(), 1..250)) {
        run(probed_plan(), &events);
    }

    #[test]
    fn invariants_hold_keeping_the_next_key_ready(events in prop::collection::vec(event(), 1..250)) {
        run(Plan { keep_next_key: true, ..probed_plan() }, &events);
    }
}

/// Found by the property test above: a rollback while the old key was leaving the bundle, then
/// a failed restart, fell back to the retirement's files (the new key alone) after the signing
/// file already named the old key again.
#[test]
fn a_failed_restart_after_a_rollback_during_retirement_never_leaves_the_signing_key_unverifiable() {
    use Event::*;
    let events = [
        Step,
        Step,
        Step,
        Step,
        Step,
        Step,
        Step,
        Step,
        Step,
        Trigger(TriggerKind::Rotate),
        Advance(10),
        Step,
        Step,
        Step,
        Step,
        Step,
        Advance(264),
        Advance(479),
        Step,
        Advance(1),
        Step,
        Advance(696),
        Step,
        Step,
        TargetLag(true),
        Step,
        Step,
        Advance(10),
        Step,
        Step,
        FailNextEffect,
        Step,
        Advance(1),
        Step,
        Step,
        Advance(1),
        Step,
        Step,
        FailNextEffect,
        Step,
        Step,
        Trigger(TriggerKind::Rollback),
        Step,
        Step,
        FailNextEffect,
        Step,
        Step,
    ];
    run(
        Plan {
            keep_next_key: true,
            ..probed_plan()
        },
        &events,
    );
}

#[test]
fn a_clock_set_back_after_promotion_does_not_shorten_retire_after() {
    use Event::*;
    run(
        plan(),
        &[
            Step,
            Step,
            Trigger(TriggerKind::Rotate),
            Step,
            Step,
            Advance(1),
            Step,
            Step,
            Step,
            Step,
            Step,
            Step,
            Step,
            Advance(10),
            Step,
            Step,
            Step,
            ClockBack(1),
        ],
    );
}
#[test]
fn an_abort_while_the_apiserver_lags_completes_once_it_recovers() {
    use Event::*;
    run(
        probed_plan(),
        &[
            Step,
            Trigger(TriggerKind::Rotate),
            Step,
            Step,
            TargetLag(false),
            Step,
            Step,
            Step,
            Step,
            ApiserverLag(true),
            Step,
            Step,
            Trigger(TriggerKind::Abort),
            Step,
            Step,
            ClockBack(40),
            Step,
        ],
    );
}

/// A restart whose record was lost in a crash, then the clock set back: retire_after must still
/// count from that restart (the intent recorded before it), with and without a probe.
#[test]
fn a_lost_restart_record_and_a_clock_set_back_do_not_shorten_retire_after() {
    use Event::*;
    use TriggerKind::Rotate;
    let events = [
        Step,
        Trigger(Rotate),
        Step,
        Step,
        Step,
        Trigger(Rotate),
        Step,
        Step,
        Step,
        Step,
        Step,
        FailNextEffect,
        Step,
        Step,
        Advance(10),
        Step,
        Step,
        Step,
        Step,
        ClockBack(1),
        Step,
        Step,
        Step,
        Step,
        Step,
        Step,
        Step,
        Step,
        Advance(2),
        Step,
        Trigger(Rotate),
        Step,
        CrashAfterEffect,
        ClockBack(1),
    ];
    run(plan(), &events);
    run(probed_plan(), &events);
}
