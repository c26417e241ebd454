//! `keyrot run`'s loop: act until the core waits, then sleep until its wake-up time, a request, a
//! signal or a watchdog ping; and keep systemd, the metrics and the log up to date.
//!
//! One thread acts; the others only turn the outside world into events on one channel: the
//! signal thread (SIGHUP, SIGTERM, SIGINT), the control socket (manual triggers) and the metrics
//! server, which reads a snapshot the loop refreshes. Sleeping is a `recv_timeout` on that
//! channel, so an idle daemon does not wake between events.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::control::{self, Ask, MigrationAsk, Request};
use super::errors::{ErrorCounts, ErrorKind};
use super::metrics::Snapshot;
use super::notify::Notifier;
use super::refused_state::{self, AfterRefusal};
use super::signals::{self, Signal};
use super::status_line::{acting_line, halted_line, status_line};
use crate::adapters::FailureKind;
use crate::adapters::migration::ClusterEffects;
use crate::decision::{Action, Phase, action_name, backoff, retry_time};
use crate::describe::{describe_action, shorten_kids};
use crate::executor::{ExecError, Pause, StepReport};
use crate::migration::record::{Awaiting, ManualStep, RecordStore};
use crate::migration::{self, Outcome};
use crate::plan::{self, Plan};
use crate::session::{Session, SessionError};

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The signal handlers, the control socket or the metrics endpoint; the message names it.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Signer(#[from] crate::signer::SignerError),
}

/// What wakes the acting thread.
pub enum Event {
    Request(Request),
    Signal(Signal),
}

pub struct Daemon {
    session: Session,
    plan_path: PathBuf,
    events: Receiver<Event>,
    notifier: Notifier,
    snapshot: Arc<Mutex<Snapshot>>,
    errors: ErrorCounts,
    /// One entry per trigger recorded in the state, oldest first: where its outcome goes (`None`
    /// for triggers recorded before this daemon started).
    replies: VecDeque<Option<Sender<String>>>,
    /// Executor runs that failed in a row; spaces the next attempts out.
    failures: u32,
    /// The last wait logged, so a gate polled again is not logged again.
    last_wait: String,
    /// The failure that stopped acting until an event, when one needs a person.
    halted: Option<String>,
    /// Automatic migration steps that failed in a row, and when to try again.
    migration_failures: u32,
    migration_retry_at: Option<DateTime<Utc>>,
    /// The external JWT signer, when the plan has one: serves on its own threads until dropped.
    _signer: Option<crate::signer::Signer>,
}

impl Daemon {
    /// Takes the state lock, opens the control socket and the metrics endpoint, reads the
    /// state and the cluster once, and tells systemd it is ready. While the state file is
    /// refused, it holds the lock and reports why (`refused_state`) until SIGHUP finds it
    /// repaired; `None`: stopped by a signal before that.
    pub fn start(plan: Plan, plan_path: PathBuf) -> Result<Option<Daemon>, StartError> {
        let (sender, events) = mpsc::channel();
        signals::forward(sender.clone(), Event::Signal)?;
        let mut notifier = Notifier::from_env();
        // Before the state is read, so that a refused state file is reported there too.
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        if let Some(metrics) = plan.metrics {
            let bound = super::metrics_http::serve(metrics.listen, snapshot.clone())?;
            info!("metrics on http://{bound}/metrics");
        }
        let mut errors = ErrorCounts::default();
        let mut control_dir = None;
        let mut signer = None;
        let mut plan = plan;
        let (session, leftovers) = loop {
            match Session::open(plan.clone()) {
                Ok(opened) => break opened,
                Err(SessionError::State(refused)) if refused.is_refused_file() => {
                    let waiting = refused_state::Waiting {
                        plan_path: &plan_path,
                        events: &events,
                        sender: &sender,
                        notifier: &mut notifier,
                        snapshot: &snapshot,
                        errors: &mut errors,
                        control_dir: &mut control_dir,
                        signer: &mut signer,
                    };
                    match refused_state::wait_for_repair(plan, &refused, waiting)? {
                        AfterRefusal::Retry(next) => plan = *next,
                        AfterRefusal::Stop => return Ok(None),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        for path in leftovers.removed {
            info!(
                "removed {}, left by a write that an interrupted keyrot never finished",
                path.display()
            );
        }
        for (dir, e) in leftovers.not_cleaned {
            warn!("cannot remove stale temp files in {}: {e}", dir.display());
        }
        let plan = session.plan();
        refused_state::serve_control(plan, &sender, &mut control_dir)?;
        // Before anything slow: the apiserver waits at most 60 s for its signer.
        if signer.is_none() {
            signer = crate::signer::Signer::start(plan)?;
        }
        info!(
            "keyrot {} running plan {} (cluster {}), state in {}{}",
            env!("CARGO_PKG_VERSION"),
            plan.path.display(),
            plan.cluster,
            plan.state_dir.display(),
            notifier
                .watchdog_interval()
                .map(|w| format!(", watchdog {}ms", w.as_millis()))
                .unwrap_or_default()
        );
        let mut daemon = Daemon {
            replies: (0..session.pending_triggers()).map(|_| None).collect(),
            session,
            plan_path,
            events,
            notifier,
            snapshot,
            errors,
            failures: 0,
            halted: None,
            last_wait: String::new(),
            migration_failures: 0,
            migration_retry_at: None,
            _signer: signer,
        };
        if let Err(e) = daemon.session.observe() {
            error!("{e}");
            daemon.errors.count(ErrorKind::Observe);
        }
        daemon.publish_status();
        daemon.notifier.ready();
        Ok(Some(daemon))
    }

    /// Until SIGTERM or SIGINT.
    pub fn run(mut self) {
        loop {
            if self.migration_due().is_some_and(|due| due <= Utc::now()) {
                self.continue_migration();
            }
            let (wake_at, mut events) = self.act();
            let wake_at = match (wake_at, self.migration_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if events.is_empty() {
                match self.sleep_until(wake_at) {
                    Some(event) => events.push(event),
                    None => continue,
                }
            }
            // Every event may change what the core decides: act again after handling them.
            for event in events {
                if self.handle(event) == Flow::Stop {
                    return self.stop();
                }
            }
        }
    }

    /// Runs the executor until the core waits or an event arrives between two steps. Returns when
    /// to act again (`None`: only on an event) and the events that interrupted it.
    fn act(&mut self) -> (Option<DateTime<Utc>>, Vec<Event>) {
        let mut arrived = Vec::new();
        let Daemon {
            session,
            events,
            notifier,
            errors,
            replies,
            ..
        } = self;
        // Both closures below use these, one at a time.
        let notifier = RefCell::new(notifier);
        // Outcomes of consumed requests, answered only once the step that consumed them is saved:
        // the executor saves after each step, before asking `should_stop` again.
        let outcomes = RefCell::new(Vec::new());
        let mut should_stop = || {
            answer(&mut outcomes.borrow_mut());
            notifier.borrow_mut().ping_if_due();
            arrived.extend(events.try_iter());
            !arrived.is_empty()
        };
        let mut acted = false;
        let mut report = |plan: &Plan, progress: &StepReport| {
            acted = true;
            let (mut notifier, mut outcomes) = (notifier.borrow_mut(), outcomes.borrow_mut());
            on_progress(
                plan,
                progress,
                &mut notifier,
                errors,
                replies,
                &mut outcomes,
            )
        };
        let result = session.run(&mut should_stop, &mut report);
        // The executor saves each step before it returns; only a failed save (logged, and
        // retried with the next pass) can leave an outcome answered before it is on disk.
        answer(&mut outcomes.borrow_mut());
        let stopped = matches!(result, Ok(Pause::Stopped));
        if acted {
            // After steps, the wait that follows is news even when it reads as before.
            self.last_wait.clear();
        }
        let wake_at = match result {
            Ok(Pause::Stopped) => Some(Utc::now()),
            Ok(Pause::Waiting(decision)) => {
                self.failures = 0;
                self.halted = None;
                if let Some(blocked) = decision.blocked_by.first() {
                    let line = format!("waiting [{}] {}", blocked.gate, blocked.reason);
                    if line != self.last_wait {
                        info!("{}", shorten_kids(&line));
                        self.last_wait = line;
                    }
                }
                decision.wake_at
            }
            Err(e) => {
                error!("{e}");
                // The wait that follows a failure is news even when it reads as before it.
                self.last_wait.clear();
                let counted = match &e {
                    SessionError::Exec(ExecError::Observe(_)) | SessionError::Observe(_) => {
                        Some(ErrorKind::Observe)
                    }
                    SessionError::Exec(ExecError::Save(_)) | SessionError::State(_) => {
                        Some(ErrorKind::State)
                    }
                    // Counted when reported as it happened.
                    SessionError::Exec(ExecError::Effect { .. }) => None,
                    _ => Some(ErrorKind::Internal),
                };
                if let Some(kind) = counted {
                    self.errors.count(kind);
                }
                self.retry_after(&e)
            }
        };
        if !stopped {
            self.answer_unconsumed();
        }
        self.publish_status();
        (wake_at, arrived)
    }

    /// When to act again after a failed run: a transient failure after the plan's backoff, one
    /// that needs a person not before an event (a request, SIGHUP) says something changed.
    fn retry_after(&mut self, error: &SessionError) -> Option<DateTime<Utc>> {
        match error.kind() {
            FailureKind::Transient => {
                let plan = self.session.plan();
                let delay = backoff(plan, self.failures);
                let retry_at = retry_time(plan, self.failures, Utc::now());
                self.failures = self.failures.saturating_add(1);
                info!("trying again in {}s", delay.num_seconds());
                Some(retry_at)
            }
            FailureKind::Permanent => {
                self.halted = Some(error.to_string());
                warn!(
                    "not trying again on its own: this needs a person; fix it, then `systemctl \
                     reload keyrot` (or any keyrot request) makes keyrot try again"
                );
                None
            }
        }
    }

    /// Waits for an event until `wake_at`, pinging the watchdog on time; `None` once it is time
    /// to act.
    fn sleep_until(&mut self, wake_at: Option<DateTime<Utc>>) -> Option<Event> {
        loop {
            let now = Utc::now();
            if wake_at.is_some_and(|t| t <= now) {
                return None;
            }
            // A wake-up too far away for the monotonic clock is no wake-up.
            let until_wake = wake_at
                .and_then(|t| Instant::now().checked_add((t - now).to_std().unwrap_or_default()));
            let deadline = [until_wake, self.notifier.next_ping()]
                .into_iter()
                .flatten()
                .min();
            let received = match deadline {
                Some(deadline) => self
                    .events
                    .recv_timeout(deadline.saturating_duration_since(Instant::now())),
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(event) => return Some(event),
                Err(RecvTimeoutError::Timeout) => self.notifier.ping_if_due(),
                // Cannot happen while the signal thread lives; stop rather than spin.
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(Event::Signal(Signal::Shutdown));
                }
            }
        }
    }

    fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Signal(Signal::Shutdown) => return Flow::Stop,
            Event::Signal(Signal::Reload) => self.reload(),
            Event::Request(Request {
                ask: Ask::Migration(ask),
                reply,
            }) => {
                info!("request: {}", Ask::Migration(ask).word());
                let answer = self.migrate(ask).answer();
                let _ = reply.send(answer);
            }
            Event::Request(Request {
                ask: Ask::Trigger { kind, force },
                reply,
            }) => {
                let word = control::request_word(kind);
                if force {
                    warn!("request: {word} --force: the gate the rotation waits on is forced open");
                }
                match self.session.trigger(kind, force) {
                    Ok(()) => {
                        info!("request: {word}");
                        self.replies.push_back(Some(reply));
                    }
                    Err(e) => {
                        error!("cannot record the request {word}: {e:#}");
                        self.errors.count(ErrorKind::State);
                        let _ = reply.send(format!("error: cannot record the request: {e:#}"));
                    }
                }
            }
        }
        Flow::Go
    }

    /// An issuer migration request, carried out here: this process holds the state lock. A
    /// thread runs the steps (a restart and its checks can take up to `gateTimeout`) while this
    /// one keeps the watchdog fed.
    fn migrate(&mut self, ask: MigrationAsk) -> Migrated {
        let plan = self.session.plan().clone();
        if let Some(why) =
            crate::decision::migration::refused_during_rotation(self.session.rotation())
        {
            return Migrated::Refused(why);
        }
        let rollback = match ask {
            MigrationAsk::Run => false,
            MigrationAsk::Rollback => true,
            MigrationAsk::Approve => matches!(
                self.session.recorded().and_then(|r| r.awaiting),
                Some(Awaiting::ManualChange {
                    step: ManualStep::Rollback
                })
            ),
        };
        let lines = Mutex::new(Vec::new());
        let (session, notifier) = (&mut self.session, &mut self.notifier);
        let outcome = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let store: &mut dyn RecordStore = session;
                let mut effects = ClusterEffects::new(&plan);
                let effects = &mut effects;
                let mut say = |line: String| {
                    info!("{line}");
                    lines.lock().expect("no panics holding it").push(line);
                };
                let approved = ask == MigrationAsk::Approve;
                migration::carry_out(&plan, store, effects, rollback, approved, &mut say)
            });
            while !worker.is_finished() {
                notifier.ping_if_due();
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            worker.join().expect("the migration thread does not panic")
        });
        if let Err(e) = &outcome {
            error!("issuer migration: {e}");
            self.errors.count(ErrorKind::IssuerMigration);
        }
        Migrated::Ran {
            outcome,
            lines: lines.into_inner().expect("no panics holding it"),
            rollback,
        }
    }

    /// Step 5 of the plan's migration once its grace period is over (`migration::due`), as a
    /// `keyrot migrate-issuer` would; a failure is retried after the plan's backoff.
    fn continue_migration(&mut self) {
        info!("issuer migration: the grace period is over, continuing");
        let done = matches!(
            self.migrate(MigrationAsk::Run),
            Migrated::Ran {
                outcome: Ok(Outcome::Done),
                ..
            }
        );
        // Anything but done waits before the next try, so a step that cannot finish is never
        // retried in a tight loop.
        if done {
            self.migration_failures = 0;
            self.migration_retry_at = None;
        } else {
            let delay = backoff(self.session.plan(), self.migration_failures);
            let plan = self.session.plan();
            self.migration_retry_at = Some(retry_time(plan, self.migration_failures, Utc::now()));
            self.migration_failures = self.migration_failures.saturating_add(1);
            info!("issuer migration: trying again in {}s", delay.num_seconds());
        }
    }

    /// When the migration continues on its own, retries spaced out.
    fn migration_due(&self) -> Option<DateTime<Utc>> {
        let due = migration::due(self.session.plan(), self.session.recorded())?;
        Some(self.migration_retry_at.map_or(due, |retry| retry.max(due)))
    }

    /// SIGHUP: the plan file again. An invalid plan is reported, problem by problem, and the
    /// running plan stays.
    fn reload(&mut self) {
        self.notifier.reloading();
        let path = &self.plan_path;
        let result = match plan::load(path) {
            Ok(new) => {
                if new.metrics != self.session.plan().metrics {
                    warn!(
                        "{}: metrics changed; the endpoint changes when keyrot restarts",
                        path.display()
                    );
                }
                self.session.replace_plan(new).map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("{e:#}")),
        };
        match result {
            Ok(()) => info!("plan reloaded from {}", path.display()),
            Err(e) => {
                self.errors.count(ErrorKind::PlanReload);
                error!("plan not reloaded, keeping the running plan: {e}");
            }
        }
        self.notifier.ready();
        self.publish_status();
    }

    fn stop(mut self) {
        self.notifier.stopping();
        control::unlink(&self.session.plan().state_dir);
        info!("stopping: state saved after the last step");
    }

    /// Requests the core could not act on yet (a closed gate before them) are told so; they stay
    /// recorded and are acted on later.
    fn answer_unconsumed(&mut self) {
        let why = self
            .session
            .status(Utc::now())
            .map(|s| status_line(&s))
            .unwrap_or_default();
        for reply in self.replies.iter_mut() {
            if let Some(reply) = reply.take() {
                let _ = reply.send(format!("queued: recorded, not acted on yet ({why})"));
            }
        }
    }

    /// The metrics snapshot and systemd's status line, from the last observation.
    fn publish_status(&mut self) {
        let status = self.session.status(Utc::now());
        match (&self.halted, &status) {
            // What systemd shows says why nothing happens until someone acts.
            (Some(failure), _) => self.notifier.status(&halted_line(failure)),
            (None, Some(status)) => self.notifier.status(&status_line(status)),
            (None, None) => {}
        }
        let mut snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        *snapshot = Snapshot {
            status,
            errors: self.errors.clone(),
            canaries: crate::canary::record::read(&self.session.plan().state_dir).targets,
            state_refused: false,
        };
    }
}

/// How a migration request ended.
enum Migrated {
    /// Not started: a rotation is in progress.
    Refused(String),
    Ran {
        outcome: Result<Outcome, migration::StepError>,
        lines: Vec<String>,
        rollback: bool,
    },
}

impl Migrated {
    /// What `keyrot migrate-issuer` prints, as the control socket carries it.
    fn answer(self) -> String {
        match self {
            Migrated::Refused(why) => format!("exit 1\nerror: {why}"),
            Migrated::Ran {
                outcome,
                lines,
                rollback,
            } => control::migration_answer(outcome, lines, rollback),
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// Logs each step, answers consumed requests, counts failures, and moves the status line along.
fn on_progress(
    plan: &Plan,
    progress: &StepReport,
    notifier: &mut Notifier,
    errors: &mut ErrorCounts,
    replies: &mut VecDeque<Option<Sender<String>>>,
    outcomes: &mut Vec<(Sender<String>, String)>,
) {
    match progress {
        StepReport::Acted { phase, action, .. } => {
            let phase_name = phase.map_or("-", |p| p.as_str());
            match action {
                Action::ConsumeTrigger { kind, outcome } => {
                    info!(
                        phase = phase_name,
                        "{}: {outcome}",
                        control::request_word(*kind)
                    );
                    if let Some(Some(reply)) = replies.pop_front() {
                        outcomes.push((reply, outcome.clone()));
                    }
                }
                Action::GateFailed { gate, reason, .. } => {
                    errors.count(ErrorKind::GateTimeout);
                    warn!(
                        phase = phase_name,
                        "gate {gate} timed out: {}",
                        shorten_kids(reason)
                    );
                }
                _ => {
                    if let Some(text) = describe_action(plan, action) {
                        info!(phase = phase_name, "{}", shorten_kids(&text));
                    }
                }
            }
            match action {
                Action::StartRotation { .. } => {
                    notifier.status(&acting_line(Some(Phase::Generate)))
                }
                Action::EnterPhase { phase } => notifier.status(&acting_line(Some(*phase))),
                _ => {}
            }
        }
        StepReport::Failed {
            phase,
            action,
            error: message,
            ..
        } => {
            errors.count(ErrorKind::Effect);
            error!(
                phase = phase.map_or("-", |p| p.as_str()),
                "{} failed: {message}",
                action_name(action)
            );
        }
    }
}

/// Sends each client the outcome of its request.
fn answer(outcomes: &mut Vec<(Sender<String>, String)>) {
    for (reply, outcome) in outcomes.drain(..) {
        let _ = reply.send(outcome);
    }
}
