//! The executor against the in-memory cluster, with a clock the test moves: how the change
//! tests drive whole rotations, migrations and switches without I/O.

use std::cell::{Cell, RefCell};

use chrono::{DateTime, Utc};
use keyrot::decision::{Action, Decision, Observed};
use keyrot::executor::{Effects, ExecError, Io, Pause, StepReport, run_until_waiting_or_stopped};
use keyrot::migration::record::MigrationRecord;
use keyrot::observe::ObserveError;
use keyrot::plan::Plan;
use keyrot::simulation::SharedWorld;
use keyrot::state::{State, StateError, Trigger, TriggerKind};

use super::{fresh_world, t0};

/// Runs the executor against the in-memory cluster, with a clock the test moves.
pub struct Engine {
    pub plan: Plan,
    pub state: State,
    pub world: SharedWorld,
    pub now: Cell<DateTime<Utc>>,
    /// What the steps said, in order.
    pub said: RefCell<Vec<String>>,
    /// The core's answers to requests, in order.
    pub answers: RefCell<Vec<String>>,
}

impl Engine {
    /// The plan's cluster with its keys adopted and nothing else done.
    pub fn new(plan: Plan) -> Self {
        let world = SharedWorld::new(fresh_world(&plan));
        let mut engine = Engine {
            plan,
            state: State::default(),
            world,
            now: Cell::new(t0()),
            said: RefCell::new(Vec::new()),
            answers: RefCell::new(Vec::new()),
        };
        engine.run().unwrap();
        assert!(!engine.state.keys.is_empty(), "the keys are adopted");
        engine
    }

    pub fn ask(&mut self, kind: TriggerKind) {
        self.state.triggers.push(Trigger {
            kind,
            requested_at: self.now.get(),
            force: false,
        });
    }

    /// Acts until the core waits.
    pub fn run(&mut self) -> Result<Decision, ExecError> {
        match self.run_stopping_after(usize::MAX)? {
            Pause::Waiting(decision) => Ok(decision),
            Pause::Stopped => unreachable!("never stopped"),
        }
    }

    /// Acts until the core waits, or stops after `steps` decisions carried out: where a crash
    /// between two saved steps leaves the state.
    pub fn run_stopping_after(&mut self, steps: usize) -> Result<Pause, ExecError> {
        let (mut key_files, mut restarter, mut publisher, mut migration, mut key_flags) = (
            self.world.clone(),
            self.world.clone(),
            self.world.clone(),
            self.world.clone(),
            self.world.clone(),
        );
        let mut effects = Effects {
            key_files: &mut key_files,
            restarter: &mut restarter,
            publisher: &mut publisher,
            migration: &mut migration,
            key_flags: &mut key_flags,
        };
        let world = self.world.clone();
        let mut observe =
            move |_: &State| -> Result<Observed, ObserveError> { Ok(world.0.borrow().observe()) };
        let mut save = |_: &State| -> Result<(), StateError> { Ok(()) };
        let (said, answers, clock) = (&self.said, &self.answers, &self.now);
        let mut report = |step: &StepReport| match step {
            StepReport::Said { line, .. } => said.borrow_mut().push(line.clone()),
            StepReport::Acted {
                action: Action::ConsumeTrigger { outcome, .. },
                ..
            } => answers.borrow_mut().push(outcome.clone()),
            _ => {}
        };
        let mut io = Io {
            observe: &mut observe,
            save: &mut save,
            now: &|| clock.get(),
            report: &mut report,
        };
        let mut asked = 0;
        let mut should_stop = || {
            asked += 1;
            asked > steps
        };
        run_until_waiting_or_stopped(
            &self.plan,
            &mut self.state,
            &mut effects,
            &mut io,
            &mut should_stop,
        )
    }

    pub fn record(&self) -> Option<&MigrationRecord> {
        self.state.issuer_migration.as_ref()
    }

    pub fn issuers(&self) -> Vec<String> {
        self.world.0.borrow().issuers.clone()
    }

    pub fn last_answer(&self) -> String {
        self.answers.borrow().last().cloned().unwrap_or_default()
    }
}
