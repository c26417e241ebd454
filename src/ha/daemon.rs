//! `keyrot run` on an HA control plane: step this node until it waits, then sleep until the
//! core's wake-up time, a change of the ring (a watch, on a thread of its own), a signal or a
//! watchdog ping. Between rotations that is one long watch: no polling, no Lease.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{error, info, warn};

use super::api::ClusterApi;
use super::kube::KubeClusterApi;
use super::node::{Node, Stepped};
use crate::adapters::FailureKind;
use crate::adapters::probe::KubeProber;
use crate::adapters::restart::ProcessRestarter;
use crate::daemon::notify::Notifier;
use crate::daemon::signals::{self, Signal};
use crate::decision::backoff;
use crate::plan::{Ha, Plan, Probe};

/// The longest watch of the ring (kube-apiserver ends watches after a few minutes anyway).
const WATCH_FOR: Duration = Duration::from_secs(290);
/// How long the loop sleeps with nothing due: only a ring change (the watcher), a signal or the
/// watchdog wakes it before. Not a poll: a safety net for a watch that missed a change.
const IDLE_SLEEP: Duration = Duration::from_secs(24 * 3600);

enum Event {
    Signal(Signal),
    /// The ring changed after the version the main loop last read.
    RingChanged,
}

/// Runs this node until SIGTERM or SIGINT; the Lease is released on the way out.
pub fn run(plan: &Plan, ha: &Ha) -> anyhow::Result<()> {
    let Probe::Kubeconfig {
        path,
        namespace,
        service_account,
        audience,
    } = &plan.probe
    else {
        anyhow::bail!("an ha plan needs a probe (validation refuses one without)");
    };
    // One keyrot per node: a second one would take turns and acknowledge for the same node.
    let _lock = crate::state::StateStore::new(&plan.state_dir).try_lock()?;
    let api = KubeClusterApi::new(&ha.kubeconfig, &ha.namespace, &ha.ring, &ha.lease)?;
    let mut prober = KubeProber::new(path, namespace, service_account, audience)?;
    let mut restarter = ProcessRestarter::new(plan);
    let (events, inbox) = mpsc::channel();
    signals::forward(events.clone(), Event::Signal)?;
    let versions = start_watcher(ha, events)?;
    let mut notifier = Notifier::from_env();
    let mut node = Node::new(plan, ha, &api, &mut prober, &mut restarter);
    info!(
        "keyrot {} on node {} of cluster {}: ring {}/{}, Lease {}",
        env!("CARGO_PKG_VERSION"),
        ha.node_name,
        plan.cluster,
        ha.namespace,
        ha.ring,
        ha.lease
    );
    notifier.ready();
    let mut failures: u32 = 0;
    let mut last_blocked = String::new();
    loop {
        notifier.ping_if_due();
        let sleep = match node.step() {
            Ok(Stepped::Acted(line)) => {
                failures = 0;
                info!("{line}");
                notifier.status(&line);
                Duration::ZERO
            }
            Ok(Stepped::Waiting {
                wake_at,
                blocked,
                ring_version,
                poll,
            }) => {
                failures = 0;
                let line = match blocked.first() {
                    Some(b) => format!("waiting: {}: {}", b.gate, b.reason),
                    None => "idle".to_string(),
                };
                if line != last_blocked {
                    info!("{line}");
                    notifier.status(&line);
                    last_blocked = line;
                }
                if let Some(version) = ring_version {
                    // The watcher watches from the version just read.
                    let _ = versions.send(version);
                }
                let until_wake = wake_at.map(|at| (at - Utc::now()).to_std().unwrap_or_default());
                [until_wake, poll]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(IDLE_SLEEP)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(plan, failures - 1).to_std().unwrap_or_default();
                match e.kind() {
                    FailureKind::Transient => warn!("{e}; trying again in {wait:?}"),
                    FailureKind::Permanent => {
                        error!("{e}; this needs a person; trying again in {wait:?}")
                    }
                }
                notifier.status(&format!("failing: {e}"));
                wait
            }
        };
        if sleep.is_zero() {
            continue;
        }
        match wait(&inbox, sleep, &mut notifier) {
            Some(Signal::Shutdown) => break,
            Some(Signal::Reload) => {
                info!("SIGHUP: an ha plan is read at start only; restart keyrot to apply a change");
            }
            None => {}
        }
    }
    notifier.stopping();
    match node.release_lease() {
        Ok(()) => info!("stopped"),
        Err(e) => warn!("stopping without releasing the Lease (it expires by itself): {e}"),
    }
    Ok(())
}

/// Sleeps up to `sleep`, waking for a signal (returned) or a ring change, and feeding the
/// watchdog meanwhile without stepping (a step reads the API; a ping must not).
fn wait(inbox: &Receiver<Event>, sleep: Duration, notifier: &mut Notifier) -> Option<Signal> {
    let until = Instant::now() + sleep;
    loop {
        notifier.ping_if_due();
        let deadline = notifier.next_ping().map_or(until, |ping| ping.min(until));
        match inbox.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Signal(signal)) => return Some(signal),
            Ok(Event::RingChanged) => return None,
            Err(RecvTimeoutError::Timeout) if Instant::now() >= until => return None,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Some(Signal::Shutdown),
        }
    }
}

/// A thread that watches the ring from each version the main loop sends it and reports a change;
/// it has its own client, so a long watch never holds up the main loop's requests.
fn start_watcher(ha: &Ha, events: Sender<Event>) -> anyhow::Result<Sender<String>> {
    let api = KubeClusterApi::new(&ha.kubeconfig, &ha.namespace, &ha.ring, &ha.lease)?;
    let (versions, inbox) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("ring-watch".into())
        .spawn(move || {
            let Ok(mut version) = inbox.recv() else {
                return;
            };
            loop {
                // The newest version the main loop read.
                while let Ok(newer) = inbox.try_recv() {
                    version = newer;
                }
                match api.watch_ring(&version, WATCH_FOR) {
                    Ok(true) => {
                        if events.send(Event::RingChanged).is_err() {
                            return;
                        }
                        // Wait for the main loop to read the new version before watching again.
                        match inbox.recv() {
                            Ok(newer) => version = newer,
                            Err(_) => return,
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        warn!("watching the ring: {e}");
                        std::thread::sleep(Duration::from_secs(5));
                    }
                }
            }
        })?;
    Ok(versions)
}
