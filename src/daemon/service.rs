//! `keyrot run`'s loop: act until the core waits, then sleep until its wake-up time, a request, a
//! signal or a watchdog ping; and keep systemd, the metrics and the log up to date.
//!
//! One thread acts; the others only turn the outside world into events on one channel: the
//! signal thread (SIGHUP, SIGTERM, SIGINT), the control socket (manual triggers) and the metrics
//! server, which reads a snapshot the loop refreshes. Sleeping is a `recv_timeout` on that
//! channel, so an idle daemon does not wake between events.

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
use crate::decision::{Action, Phase, action_name, backoff, retry_time};
use crate::describe::{describe_action, shorten_kids};
use crate::executor::{ExecError, Pause, StepReport};
use crate::migration::{self, RequestError};
use crate::plan::{self, Plan};
use crate::session::{Session, SessionError, consumed_outcome};
use crate::state::TriggerKind;

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
    /// The `keyrot migrate-issuer` (or its rollback, or approval) being carried out: answered
    /// with everything it did once the core waits.
    migration_request: Option<MigrationRequest>,
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
            migration_request: None,
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
            let (wake_at, mut events) = self.act();
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
        let Daemon {
            session,
            events,
            notifier,
            errors,
            replies,
            migration_request,
            ..
        } = self;
        // Shared by the acting thread and this one, which keeps the watchdog fed while a step
        // runs: one step (a restart and its checks) can take up to `gateTimeout`.
        let notifier = Mutex::new(notifier);
        // Outcomes of consumed requests, answered only once the step that consumed them is saved:
        // the executor saves after each step, before asking `should_stop` again.
        let outcomes = Mutex::new(Vec::new());
        let (result, arrived, acted) = std::thread::scope(|scope| {
            let (done, finished) = mpsc::channel::<()>();
            let (notifier, outcomes) = (&notifier, &outcomes);
            let worker = scope.spawn(move || {
                let mut arrived = Vec::new();
                let mut should_stop = || {
                    answer(&mut lock(outcomes));
                    lock(notifier).ping_if_due();
                    arrived.extend(events.try_iter());
                    !arrived.is_empty()
                };
                let mut acted = false;
                let mut report = |plan: &Plan, progress: &StepReport| {
                    acted = true;
                    if let Some(request) = migration_request.as_mut() {
                        request.hear(progress);
                    }
                    on_progress(
                        plan,
                        progress,
                        &mut lock(notifier),
                        errors,
                        replies,
                        &mut lock(outcomes),
                    )
                };
                let result = session.run(&mut should_stop, &mut report);
                let _ = done.send(());
                (result, arrived, acted)
            });
            loop {
                let next_ping = lock(notifier).next_ping();
                let wait = next_ping.map(|t| t.saturating_duration_since(Instant::now()));
                let received = match wait {
                    Some(wait) => finished.recv_timeout(wait),
                    None => finished.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match received {
                    Err(RecvTimeoutError::Timeout) => lock(notifier).ping_if_due(),
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            worker.join().expect("the acting thread does not panic")
        });
        // The executor saves each step before it returns; only a failed save (logged, and
        // retried with the next pass) can leave an outcome answered before it is on disk.
        answer(&mut lock(&outcomes));
        let stopped = matches!(result, Ok(Pause::Stopped));
        if acted {
            // After steps, the wait that follows is news even when it reads as before.
            self.last_wait.clear();
        }
        let wake_at = match &result {
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
                let counted = match e {
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
                self.retry_after(e)
            }
        };
        if !stopped {
            self.answer_migration_request(&result);
            self.answer_unconsumed();
        }
        self.publish_status();
        (wake_at, arrived)
    }

    /// A migration request, once the core waits (or a step failed): what it did and how it
    /// ended go to the client. One the core never acted on is taken back, as in the foreground.
    fn answer_migration_request(&mut self, result: &Result<Pause, SessionError>) {
        let Some(request) = self.migration_request.take() else {
            return;
        };
        if request.consumed.is_none() {
            match self.session.withdraw(request.kind) {
                Ok(Some(i)) => {
                    self.replies.remove(i);
                }
                Ok(None) => {}
                Err(e) => error!("cannot take back the request: {e}"),
            }
        }
        let switching = matches!(
            request.kind,
            TriggerKind::UseSigner | TriggerKind::UseKeyFiles
        );
        let ended = match result {
            Err(e) => Err(RequestError::Failed(e.to_string())),
            Ok(Pause::Stopped) => unreachable!("answered only once the core waits"),
            Ok(Pause::Waiting(decision)) if switching => {
                let recorded = self.session.signer_switch().is_some();
                let polling = decision.wake_at.is_some();
                if recorded
                    && polling
                    && request.consumed.is_some()
                    && Instant::now() < request.answer_by
                {
                    self.migration_request = Some(request);
                    return;
                }
                migration::switch_ending(request.consumed.as_deref(), recorded, decision)
            }
            Ok(Pause::Waiting(decision)) => migration::ending(
                self.session.plan(),
                request.consumed.as_deref(),
                self.session.recorded(),
                decision,
                request.rollback,
            ),
        };
        // A failed step was counted as it was reported; a refusal is the client's to read.
        if let Err(e) = &ended {
            error!("{}: {e}", control::request_word(request.kind));
        }
        let done = match request.kind {
            TriggerKind::UseSigner => Some("kube-apiserver takes its keys from keyrot's signer"),
            TriggerKind::UseKeyFiles => Some("kube-apiserver takes its keys from its key files"),
            _ if request.rollback => None,
            _ => Some("issuer migration done"),
        };
        let answer = control::migration_answer(ended, request.lines, done);
        let _ = request.reply.send(answer);
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
            }) => self.record_migration_request(ask, reply),
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

    /// A migration request: recorded as a trigger like any other, carried out by the next
    /// `act`, answered once the core waits.
    fn record_migration_request(&mut self, ask: MigrationAsk, reply: Sender<String>) {
        info!("request: {}", Ask::Migration(ask).word());
        if self.migration_request.is_some() {
            let busy = "another issuer migration request is being carried out; try again when it \
                        has ended";
            let _ = reply.send(format!("exit 1\nerror: {busy}"));
            return;
        }
        let kind = ask.kind();
        let rollback = migration::is_rollback(kind, self.session.recorded());
        if let Err(e) = self.session.trigger(kind, false) {
            error!(
                "cannot record the request {}: {e:#}",
                Ask::Migration(ask).word()
            );
            self.errors.count(ErrorKind::State);
            let _ = reply.send(format!("exit 1\nerror: cannot record the request: {e:#}"));
            return;
        }
        // Its place among the pending requests: answered below, not with the core's outcome.
        self.replies.push_back(None);
        // A switch waits for the restarted apiserver: answered once it passes, or says what it
        // waits for after gateTimeout (the daemon goes on).
        let patience = self
            .session
            .plan()
            .timings
            .gate_timeout
            .to_std()
            .unwrap_or_default();
        self.migration_request = Some(MigrationRequest {
            reply,
            kind,
            rollback,
            lines: Vec::new(),
            consumed: None,
            answer_by: Instant::now() + patience,
        });
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

/// A migration request being carried out.
struct MigrationRequest {
    reply: Sender<String>,
    kind: TriggerKind,
    rollback: bool,
    /// What the steps said, as `keyrot migrate-issuer` prints it in the foreground.
    lines: Vec<String>,
    /// The core's answer to the request, once it consumed it.
    consumed: Option<String>,
    /// A switch still waiting (the apiserver restarting) is answered with what it waits for
    /// from then on.
    answer_by: Instant,
}

impl MigrationRequest {
    fn hear(&mut self, progress: &StepReport) {
        if let StepReport::Said { line, .. } = progress {
            self.lines.push(line.clone());
        }
        if self.consumed.is_none()
            && let Some(outcome) = consumed_outcome(progress, self.kind)
        {
            self.consumed = Some(outcome.to_string());
        }
    }
}

/// What `shared` guards, whichever thread last held it.
fn lock<'a, T>(shared: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
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
        StepReport::Said { line, .. } => info!("{line}"),
        StepReport::Failed {
            phase,
            action,
            error: message,
            ..
        } => {
            errors.count(match action.is_issuer_migration() {
                true => ErrorKind::IssuerMigration,
                false => ErrorKind::Effect,
            });
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
