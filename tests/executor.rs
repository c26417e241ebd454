//! The executor against the in-memory adapters: it records intent before every effect, reports
//! progress, counts failed effects as failed attempts, and drives a rotation to its end.

mod harness;

use std::cell::{Cell, RefCell};
use std::path::Path;

use harness::{OLD, fresh_world, plan, t0};
use keyrot::adapters::{AdapterError, FailureKind, KeyFiles, Restarter};
use keyrot::decision::{Action, Observed};
use keyrot::executor::{Effects, ExecError, StepReport, run_until_waiting};
use keyrot::keys::GenerateSpec;
use keyrot::observe::ObserveError;
use keyrot::simulation::SharedWorld;
use keyrot::state::{State, StateError, Trigger, TriggerKind};

/// Key files that fail `write_bundle` a given number of times, then behave.
struct FlakyKeyFiles {
    inner: SharedWorld,
    failures_left: u32,
}

impl KeyFiles for FlakyKeyFiles {
    fn generate(&mut self, path: &Path, spec: GenerateSpec) -> Result<(), AdapterError> {
        self.inner.generate(path, spec)
    }
    fn copy_signing_key(&mut self, to: &Path) -> Result<(), AdapterError> {
        self.inner.copy_signing_key(to)
    }
    fn write_bundle(&mut self, kids: &[String]) -> Result<(), AdapterError> {
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(AdapterError::transient("sa.pub: No space left on device"));
        }
        self.inner.write_bundle(kids)
    }
    fn write_signing_key(&mut self, kid: &str) -> Result<(), AdapterError> {
        self.inner.write_signing_key(kid)
    }
    fn destroy_private_key(&mut self, path: &Path) -> Result<(), AdapterError> {
        self.inner.destroy_private_key(path)
    }
}

struct Run {
    world: SharedWorld,
    state: State,
    clock: Cell<chrono::DateTime<chrono::Utc>>,
    saved: RefCell<Vec<State>>,
    progress: RefCell<Vec<StepReport>>,
}

impl Run {
    fn new() -> Self {
        let plan = plan();
        let mut state = State::default();
        state.triggers.push(Trigger {
            kind: TriggerKind::Rotate,
            requested_at: t0(),
            force: false,
        });
        Run {
            world: SharedWorld::new(fresh_world(&plan)),
            state,
            clock: Cell::new(t0()),
            saved: RefCell::new(Vec::new()),
            progress: RefCell::new(Vec::new()),
        }
    }

    /// Runs until the core waits; returns the waiting decision's wake-up time.
    fn run(
        &mut self,
        key_files: &mut dyn KeyFiles,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ExecError> {
        let mut restarter = self.world.clone();
        self.run_with(key_files, &mut restarter)
    }

    /// [`Run::run`] with a restarter of the test's own.
    fn run_with(
        &mut self,
        key_files: &mut dyn KeyFiles,
        restarter: &mut dyn Restarter,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ExecError> {
        let plan = plan();
        let (mut publisher, mut migration, mut key_flags) =
            (self.world.clone(), self.world.clone(), self.world.clone());
        let mut effects = Effects {
            key_files,
            restarter,
            publisher: &mut publisher,
            migration: &mut migration,
            key_flags: &mut key_flags,
        };
        let world = self.world.clone();
        let mut observe =
            move || -> Result<Observed, ObserveError> { Ok(world.0.borrow().observe()) };
        let saved = &self.saved;
        let mut save = |s: &State| -> Result<(), StateError> {
            saved.borrow_mut().push(s.clone());
            Ok(())
        };
        let clock = &self.clock;
        let progress = &self.progress;
        let decision = run_until_waiting(
            &plan,
            &mut self.state,
            &mut effects,
            &mut observe,
            &mut save,
            &|| clock.get(),
            &mut |p| progress.borrow_mut().push(p.clone()),
        )?;
        Ok(decision.wake_at)
    }

    fn run_to_completion(&mut self, key_files: &mut dyn KeyFiles) {
        for _ in 0..20 {
            let wake = self.run(key_files).unwrap();
            if self.state.rotation.is_none() && self.state.triggers.is_empty() {
                return;
            }
            self.clock
                .set(wake.expect("a rotation in progress always has a wake-up time here"));
        }
        panic!("the rotation did not complete: {:?}", self.state.rotation);
    }
}

#[test]
fn drives_a_rotation_to_its_end_recording_intent_before_every_effect() {
    let mut run = Run::new();
    let mut key_files = run.world.clone();
    run.run_to_completion(&mut key_files);

    let world = run.world.0.borrow();
    assert_eq!(world.bundle.len(), 1);
    assert_ne!(world.signing.kid, OLD);
    assert!(run.state.last_rotation_completed_at.is_some());

    // Every effect of a rotation was preceded by a save carrying its intent time.
    let saved = run.saved.borrow();
    let progress = run.progress.borrow();
    let effects: Vec<&StepReport> = progress
        .iter()
        .filter(
            |p| matches!(p, StepReport::Acted { action, phase: Some(_), .. } if action.is_effect()),
        )
        .collect();
    assert!(effects.len() >= 8, "{effects:?}");
    for effect in effects {
        let StepReport::Acted { at, .. } = effect else {
            unreachable!()
        };
        assert!(
            saved
                .iter()
                .any(|s| s.rotation.as_ref().and_then(|r| r.last_effect_at) == Some(*at)),
            "no intent saved before the effect at {at}"
        );
    }
}

#[test]
fn a_failed_effect_is_reported_counted_and_retried_after_backoff() {
    let mut run = Run::new();
    let mut key_files = FlakyKeyFiles {
        inner: run.world.clone(),
        failures_left: 1,
    };
    let wake = run.run(&mut key_files).unwrap().unwrap();

    let rotation = run.state.rotation.clone().unwrap();
    assert_eq!(rotation.attempts, 1);
    assert_eq!(rotation.retry_at, Some(wake));
    assert!(
        rotation
            .last_error
            .as_deref()
            .unwrap()
            .contains("No space left on device")
    );
    assert!(run.progress.borrow().iter().any(|p| matches!(
        p,
        StepReport::Failed { action: Action::WriteBundle { .. }, error, .. } if error.contains("No space")
    )));
    assert_eq!(run.world.0.borrow().bundle.len(), 1, "nothing was staged");

    run.clock.set(wake);
    run.run_to_completion(&mut key_files);
    assert!(run.state.last_rotation_completed_at.is_some());
}

/// A restart command that always fails, as `kill $(cat PIDFILE)` does once the apiserver is gone.
#[derive(Default)]
struct BrokenRestart {
    calls: u32,
}

impl Restarter for BrokenRestart {
    fn restart(&mut self, _tag: &str, _controller_manager: bool) -> Result<(), AdapterError> {
        self.calls += 1;
        Err(AdapterError::transient("kill: No such process"))
    }
}

/// Regression: after a failed restart the fallback puts the previous bundle back and restarts;
/// when that restart failed as well, the core asked for it again at once, and the executor ran
/// the restart command a thousand times in a row before giving up with a runaway error.
#[test]
fn a_fallback_whose_restart_fails_waits_for_the_retry_instead_of_restarting_again_at_once() {
    let mut run = Run::new();
    let mut key_files = run.world.clone();
    let mut restarter = BrokenRestart::default();
    let wake = run
        .run_with(&mut key_files, &mut restarter)
        .expect("waits instead of running away")
        .expect("a retry time");

    // The stage's restart, then the fallback's: once each.
    assert_eq!(restarter.calls, 2);
    let rotation = run.state.rotation.clone().unwrap();
    assert_eq!(rotation.attempts, 2);
    assert_eq!(rotation.retry_at, Some(wake));
    assert!(
        rotation
            .last_error
            .as_deref()
            .unwrap()
            .contains("No such process")
    );
    let world = run.world.0.borrow();
    let bundle: Vec<&str> = world.bundle.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(bundle, [OLD], "the previous bundle is back");
    drop(world);

    // Until the retry nothing more is tried; once restarts work again the rotation completes.
    run.clock.set(wake - chrono::TimeDelta::milliseconds(1));
    run.run_with(&mut key_files, &mut restarter).unwrap();
    assert_eq!(restarter.calls, 2);
    run.clock.set(wake);
    run.run_to_completion(&mut key_files);
    assert!(run.state.last_rotation_completed_at.is_some());
}

#[test]
fn a_failure_outside_a_rotation_is_returned_as_an_error() {
    struct NoCopy(SharedWorld);
    impl KeyFiles for NoCopy {
        fn generate(&mut self, p: &Path, s: GenerateSpec) -> Result<(), AdapterError> {
            self.0.generate(p, s)
        }
        fn copy_signing_key(&mut self, _: &Path) -> Result<(), AdapterError> {
            Err(AdapterError::permanent(
                "/var/lib/keyrot/keys: Permission denied",
            ))
        }
        fn write_bundle(&mut self, k: &[String]) -> Result<(), AdapterError> {
            self.0.write_bundle(k)
        }
        fn write_signing_key(&mut self, k: &str) -> Result<(), AdapterError> {
            self.0.write_signing_key(k)
        }
        fn destroy_private_key(&mut self, p: &Path) -> Result<(), AdapterError> {
            self.0.destroy_private_key(p)
        }
    }
    let mut run = Run::new();
    let mut key_files = NoCopy(run.world.clone());
    let err = run.run(&mut key_files).unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Effect {
                action: "adopt",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Permission denied"));
    assert_eq!(
        err.kind(),
        FailureKind::Permanent,
        "the adapter's kind reaches the daemon's backoff"
    );
    assert!(run.state.keys.is_empty(), "nothing recorded as adopted");
}

#[test]
fn should_stop_is_asked_between_steps_and_a_stopped_run_resumes_where_it_left_off() {
    use keyrot::executor::{Io, Pause, run_until_waiting_or_stopped};

    let mut run = Run::new();
    let plan = plan();
    let world = run.world.clone();
    let (mut key_files, mut restarter, mut publisher, mut migration, mut key_flags) = (
        world.clone(),
        world.clone(),
        world.clone(),
        world.clone(),
        world.clone(),
    );
    let mut effects = Effects {
        key_files: &mut key_files,
        restarter: &mut restarter,
        publisher: &mut publisher,
        migration: &mut migration,
        key_flags: &mut key_flags,
    };
    let observed_world = world.clone();
    let mut observe = move |_: &State| -> Result<Observed, ObserveError> {
        Ok(observed_world.0.borrow().observe())
    };
    let saves = Cell::new(0usize);
    let mut save = |_: &State| -> Result<(), StateError> {
        saves.set(saves.get() + 1);
        Ok(())
    };
    let acted = Cell::new(0usize);
    let mut report = |p: &StepReport| {
        if matches!(p, StepReport::Acted { .. }) {
            acted.set(acted.get() + 1);
        }
    };
    let clock = t0();
    let now = || clock;
    let mut io = Io {
        observe: &mut observe,
        save: &mut save,
        now: &now,
        report: &mut report,
    };

    // Stop before the third step: two steps were taken and saved, nothing more.
    let mut asked = 0;
    let pause =
        run_until_waiting_or_stopped(&plan, &mut run.state, &mut effects, &mut io, &mut || {
            asked += 1;
            asked > 2
        })
        .unwrap();
    assert_eq!(pause, Pause::Stopped);
    assert_eq!(asked, 3);
    let acted_before_stop = acted.get();
    assert!(
        acted_before_stop >= 2,
        "two steps took at least two actions"
    );
    let state_at_stop = run.state.clone();

    // Asked to stop at once: nothing happens at all.
    let pause =
        run_until_waiting_or_stopped(&plan, &mut run.state, &mut effects, &mut io, &mut || true)
            .unwrap();
    assert_eq!(pause, Pause::Stopped);
    assert_eq!(run.state, state_at_stop);
    assert_eq!(acted.get(), acted_before_stop);

    // Without a stop the same state carries on until the core waits.
    let pause =
        run_until_waiting_or_stopped(&plan, &mut run.state, &mut effects, &mut io, &mut || false)
            .unwrap();
    let Pause::Waiting(decision) = pause else {
        panic!("expected a wait, got {pause:?}")
    };
    assert!(decision.actions.is_empty());
    assert!(acted.get() > acted_before_stop);
    assert!(run.state.rotation.is_some(), "the rotation is under way");
}
