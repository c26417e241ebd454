//! While the state file is refused (corrupt, inconsistent, from a newer keyrot): `keyrot run`
//! holds the lock and keeps answering (requests, scrapes and systemd get why) until SIGHUP
//! finds the file repaired.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::control::{self, Ask};
use super::errors::{ErrorCounts, ErrorKind};
use super::metrics::Snapshot;
use super::notify::Notifier;
use super::service::{Event, StartError};
use super::signals::Signal;
use crate::plan::{self, Plan};
use crate::session::SessionError;
use crate::signer::Signer;
use crate::state::{StateError, StateStore};

/// How the wait ended.
pub enum AfterRefusal {
    /// SIGHUP: open the state again, with this plan (reloaded if it is valid).
    Retry(Box<Plan>),
    /// SIGTERM or SIGINT.
    Stop,
}

/// What the daemon has set up before it reads its state.
pub struct Waiting<'a> {
    pub plan_path: &'a Path,
    pub events: &'a Receiver<Event>,
    pub sender: &'a Sender<Event>,
    pub notifier: &'a mut Notifier,
    pub snapshot: &'a Mutex<Snapshot>,
    pub errors: &'a mut ErrorCounts,
    /// The state directory whose control socket is served, if one is.
    pub control_dir: &'a mut Option<PathBuf>,
    /// The external JWT signer, once started: the apiserver cannot mint tokens without it,
    /// whatever keyrot's state file holds.
    pub signer: &'a mut Option<Signer>,
}

/// Holds the lock and answers everything with `refused` until a signal.
pub fn wait_for_repair(
    plan: Plan,
    refused: &StateError,
    waiting: Waiting,
) -> Result<AfterRefusal, StartError> {
    // Held so that no other keyrot acts on the directory while this one reports it.
    let _lock = StateStore::new(&plan.state_dir)
        .try_lock()
        .map_err(SessionError::from)?;
    serve_control(&plan, waiting.sender, waiting.control_dir)?;
    // The signer reads the key files, not the state: it serves while the state is repaired.
    if waiting.signer.is_none() {
        *waiting.signer = Signer::start(&plan)?;
    }
    waiting.errors.count(ErrorKind::State);
    error!("{refused}");
    warn!(
        "not acting until the state file is repaired or moved away; then `systemctl reload \
         keyrot` (SIGHUP) reads it again"
    );
    let why = format!("state file refused: {refused}");
    waiting.notifier.status(&why);
    waiting.notifier.ready();
    {
        let mut snapshot = waiting.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        snapshot.errors = waiting.errors.clone();
        snapshot.state_refused = true;
    }
    loop {
        let wait = waiting
            .notifier
            .next_ping()
            .map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(Instant::now())
            });
        match waiting.events.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => waiting.notifier.ping_if_due(),
            Err(RecvTimeoutError::Disconnected) | Ok(Event::Signal(Signal::Shutdown)) => {
                waiting.notifier.stopping();
                return Ok(AfterRefusal::Stop);
            }
            Ok(Event::Signal(Signal::Reload)) => {
                waiting.notifier.reloading();
                let plan = match plan::load(waiting.plan_path) {
                    Ok(new) => {
                        info!("plan reloaded from {}", waiting.plan_path.display());
                        new
                    }
                    Err(e) => {
                        waiting.errors.count(ErrorKind::PlanReload);
                        error!("plan not reloaded, keeping the running plan: {e:#}");
                        plan
                    }
                };
                info!("reading the state file again");
                return Ok(AfterRefusal::Retry(Box::new(plan)));
            }
            Ok(Event::Request(request)) => {
                let answer = match request.ask {
                    Ask::Migration(_) => format!("exit 1\nerror: {why}"),
                    Ask::Trigger { .. } => format!("error: {why}"),
                };
                let _ = request.reply.send(answer);
            }
        }
    }
}

/// The control socket for `plan`'s state directory, bound once per directory. Only the lock
/// holder may replace a socket file left behind.
pub fn serve_control(
    plan: &Plan,
    sender: &Sender<Event>,
    control_dir: &mut Option<PathBuf>,
) -> std::io::Result<()> {
    if control_dir.as_deref() == Some(plan.state_dir.as_path()) {
        return Ok(());
    }
    control::serve(
        control::bind(&plan.state_dir)?,
        sender.clone(),
        Event::Request,
    )?;
    *control_dir = Some(plan.state_dir.clone());
    Ok(())
}
