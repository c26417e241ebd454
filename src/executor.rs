//! Carries out the decision core's actions through the adapters: observe, decide, record the
//! intent, act, record the outcome, and again, until the core has nothing to do right now.
//!
//! Every action is idempotent and every decision starts from a fresh observation, so the loop can
//! be killed at any instruction and started again (invariant 6).

use chrono::{DateTime, Utc};

use crate::adapters::{
    AdapterError, FailureKind, KeyFiles, KeyFlagEffects, MigrationEffects, Publisher, Restarter,
    io_failure_kind,
};
use crate::decision::{
    Action, Decision, Observed, Phase, apply, apply_failure, decide, record_intent,
};
use crate::observe::ObserveError;
use crate::plan::Plan;
use crate::state::{State, StateError};

/// The adapters the executor acts through.
pub struct Effects<'a> {
    pub key_files: &'a mut dyn KeyFiles,
    pub restarter: &'a mut dyn Restarter,
    pub publisher: &'a mut dyn Publisher,
    /// The issuer migration's targets, flag file, restart and checks.
    pub migration: &'a mut dyn MigrationEffects,
    /// The switch between key files and keyrot's signer.
    pub key_flags: &'a mut dyn KeyFlagEffects,
}

/// What the executor reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepReport {
    Acted {
        at: DateTime<Utc>,
        phase: Option<Phase>,
        action: Action,
    },
    Failed {
        at: DateTime<Utc>,
        phase: Option<Phase>,
        action: Action,
        error: String,
    },
    /// A line an effect had to say: what an issuer migration step did, or the change it asks a
    /// person to make.
    Said { at: DateTime<Utc>, line: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot observe the cluster: {0}")]
    Observe(#[from] ObserveError),
    #[error("cannot record keyrot's state: {0}")]
    Save(#[from] StateError),
    #[error("{action} failed: {error}")]
    Effect {
        action: &'static str,
        error: AdapterError,
    },
    #[error("the decision core asked for more than {0} steps without waiting; stopping")]
    Runaway(usize),
}

impl ExecError {
    /// Whether retrying can help before a person acts: what the daemon's backoff follows.
    pub fn kind(&self) -> FailureKind {
        match self {
            ExecError::Observe(ObserveError::PrivateKeyDir { error, .. }) => {
                io_failure_kind(error.kind())
            }
            ExecError::Observe(ObserveError::Canary(error)) => error.kind(),
            // Key files that do not parse, or a damaged migration record, stay so.
            ExecError::Observe(_) => FailureKind::Permanent,
            ExecError::Save(StateError::Io { error, .. }) => io_failure_kind(error.kind()),
            // Another keyrot holds the lock: it may stop.
            ExecError::Save(StateError::Locked { .. }) => FailureKind::Transient,
            ExecError::Save(_) => FailureKind::Permanent,
            ExecError::Effect { error, .. } => error.kind,
            // A core that goes round in circles does so again.
            ExecError::Runaway(_) => FailureKind::Permanent,
        }
    }
}

/// Steps one call may take before concluding the core goes round in circles.
const MAX_STEPS: usize = 1000;

/// How the executor reads and records: fresh observations, persistence, the clock, progress.
pub struct Io<'a> {
    /// Reads the world afresh; the state says what is in flight (which canary is due).
    pub observe: &'a mut dyn FnMut(&State) -> Result<Observed, ObserveError>,
    /// Persists the state; called before every effect and after every change.
    pub save: &'a mut dyn FnMut(&State) -> Result<(), StateError>,
    pub now: &'a dyn Fn() -> DateTime<Utc>,
    pub report: &'a mut dyn FnMut(&StepReport),
}

/// Why the executor returned without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pause {
    /// The core waits: nothing to do before `wake_at` or an event.
    Waiting(Decision),
    /// `should_stop` said so between two steps; everything done so far is saved.
    Stopped,
}

/// Acts until the core waits; returns that waiting decision.
///
/// `save` persists the state (called before every effect and after every change); `observe` reads
/// the world afresh; `now` is the clock.
pub fn run_until_waiting(
    plan: &Plan,
    state: &mut State,
    effects: &mut Effects<'_>,
    observe: &mut dyn FnMut() -> Result<Observed, ObserveError>,
    save: &mut dyn FnMut(&State) -> Result<(), StateError>,
    now: &dyn Fn() -> DateTime<Utc>,
    report: &mut dyn FnMut(&StepReport),
) -> Result<Decision, ExecError> {
    let mut observe = |_: &State| observe();
    let mut io = Io {
        observe: &mut observe,
        save,
        now,
        report,
    };
    match run_until_waiting_or_stopped(plan, state, effects, &mut io, &mut || false)? {
        Pause::Waiting(decision) => Ok(decision),
        Pause::Stopped => unreachable!("should_stop never says stop here"),
    }
}

/// As [`run_until_waiting`], and asks `should_stop` before each step (never inside one): a daemon
/// uses it to finish the current atomic step and then attend to a signal or a request.
pub fn run_until_waiting_or_stopped(
    plan: &Plan,
    state: &mut State,
    effects: &mut Effects<'_>,
    io: &mut Io<'_>,
    should_stop: &mut dyn FnMut() -> bool,
) -> Result<Pause, ExecError> {
    for _ in 0..MAX_STEPS {
        if should_stop() {
            return Ok(Pause::Stopped);
        }
        let observed = (io.observe)(state)?;
        let at = (io.now)();
        let decision = decide(plan, state, &observed, at);
        if decision.actions.is_empty() {
            return Ok(Pause::Waiting(decision));
        }
        for action in &decision.actions {
            let phase = state.rotation.as_ref().map(|r| r.phase);
            if action.is_effect() {
                record_intent(state, action, at);
                (io.save)(state)?;
                let report = &mut *io.report;
                let mut say = |line: String| report(&StepReport::Said { at, line });
                let result = perform(plan, state, &observed, effects, action, at, &mut say);
                if let Err(error) = result {
                    (io.report)(&StepReport::Failed {
                        at,
                        phase,
                        action: action.clone(),
                        error: error.to_string(),
                    });
                    if state.rotation.is_none() {
                        return Err(ExecError::Effect {
                            action: crate::decision::action_name(action),
                            error,
                        });
                    }
                    apply_failure(state, plan, action, &error.message, at);
                    (io.save)(state)?;
                    break;
                }
            }
            apply(state, plan, action, at);
            (io.report)(&StepReport::Acted {
                at,
                phase,
                action: action.clone(),
            });
        }
        (io.save)(state)?;
    }
    Err(ExecError::Runaway(MAX_STEPS))
}

fn perform(
    plan: &Plan,
    state: &State,
    observed: &Observed,
    effects: &mut Effects<'_>,
    action: &Action,
    at: DateTime<Utc>,
    say: &mut dyn FnMut(String),
) -> Result<(), AdapterError> {
    match action {
        Action::Migrate(_)
        | Action::RestoreFlags { .. }
        | Action::AskPersonToRestore
        | Action::CheckRestored => crate::migration::carry_out(
            plan,
            state.issuer_migration.as_ref(),
            &observed.verification_kids(),
            effects.migration,
            action,
            say,
        ),
        Action::Adopt {
            copy_signing_key_to,
            ..
        } => effects.key_files.copy_signing_key(copy_signing_key_to),
        Action::GenerateKey { path, spec } => effects.key_files.generate(path, *spec),
        Action::WriteBundle { kids } => effects.key_files.write_bundle(kids),
        Action::WriteSigningKey { kid } => effects.key_files.write_signing_key(kid),
        Action::Restart {
            controller_manager, ..
        } => effects.restarter.restart(
            &at.format("%Y%m%dT%H%M%S%.3fZ").to_string(),
            *controller_manager,
        ),
        Action::Publish { kids } => effects.publisher.publish(kids),
        Action::SwitchKeyFlags { to } => effects.key_flags.switch_key_flags(*to, say),
        Action::DestroyPrivateKey { path, .. } => effects.key_files.destroy_private_key(path),
        _ => Ok(()),
    }
}
