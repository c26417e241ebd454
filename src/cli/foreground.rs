//! Running the executor in this process: the state lock, the real adapters, progress lines, and
//! sleeping until the next gate can pass. `keyrot run` drives the same session from its loop.

use super::out::outln;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use keyrot::adapters::Prober;
use keyrot::adapters::key_files::KeyFilesOnDisk;
use keyrot::adapters::probe::KubeProber;
use keyrot::adapters::publish::TargetsPublisher;
use keyrot::adapters::restart::ProcessRestarter;
use keyrot::atomic_file;
use keyrot::decision::{Action, Blocked, Decision, Gate, Observed};
use keyrot::describe::{describe_action, shorten_kids};
use keyrot::documents::{DISCOVERY_PATH, JWKS_PATH};
use keyrot::executor::{Effects, Io, Pause, Progress, run_until_waiting_or_stopped};
use keyrot::observe::observe;
use keyrot::plan::{Plan, Probe, Restart, TargetKind};
use keyrot::state::{Rotation, State, StateStore, StoreLock, Trigger, TriggerKind};
use keyrot::status::{Status, status};

/// This process holds the state lock and acts.
pub struct Session {
    plan: Plan,
    lock: StoreLock,
    state: State,
    prober: Option<KubeProber>,
    /// The last observation the executor decided on, for the status the daemon reports.
    last_observed: Option<Observed>,
    /// What the decision core said to each trigger consumed in this session, in order.
    outcomes: Vec<String>,
}

impl Session {
    /// Takes the lock at once, or says who holds it.
    pub fn open(plan: Plan) -> anyhow::Result<Self> {
        let lock = StateStore::new(&plan.state_dir).try_lock()?;
        remove_stale_temp_files(&plan);
        let state = lock.load()?.unwrap_or_default();
        let prober = prober(&plan)?;
        Ok(Session {
            plan,
            lock,
            state,
            prober,
            last_observed: None,
            outcomes: Vec::new(),
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Acts on `plan` from now on. The state directory cannot change: this session holds the
    /// lock of the old one.
    pub fn replace_plan(&mut self, plan: Plan) -> anyhow::Result<()> {
        if plan.state_dir != self.plan.state_dir {
            anyhow::bail!(
                "{}: stateDir changed from {} to {}; a running keyrot keeps its state directory: restart it",
                plan.path.display(),
                self.plan.state_dir.display(),
                plan.state_dir.display()
            );
        }
        self.prober = prober(&plan)?;
        self.plan = plan;
        Ok(())
    }

    pub fn trigger(&mut self, kind: TriggerKind, force: bool) -> anyhow::Result<()> {
        self.state.triggers.push(Trigger {
            kind,
            requested_at: Utc::now(),
            force,
        });
        self.lock.save(&self.state)?;
        Ok(())
    }

    /// Triggers recorded and not yet acted on.
    /// The rotation in progress.
    pub fn rotation(&self) -> Option<&Rotation> {
        self.state.rotation.as_ref()
    }

    pub fn pending_triggers(&self) -> usize {
        self.state.triggers.len()
    }

    /// The outcomes of the triggers consumed so far (`rotation started`, `refused: ...`).
    pub fn outcomes(&self) -> &[String] {
        &self.outcomes
    }

    /// Reads the world once, as the executor will; for the daemon's start.
    pub fn observe(&mut self) -> anyhow::Result<()> {
        let plan = &self.plan;
        let observed = observe(plan, self.prober.as_mut().map(|p| p as &mut dyn Prober))?;
        self.last_observed = Some(observed);
        Ok(())
    }

    /// The status as of the last observation; `None` before the first.
    pub fn status(&self, now: DateTime<Utc>) -> Option<Status> {
        let observed = self.last_observed.as_ref()?;
        Some(status(&self.plan, Some(&self.state), observed, now))
    }

    /// Acts until the core waits or `should_stop` says so between steps.
    pub fn run(
        &mut self,
        should_stop: &mut dyn FnMut() -> bool,
        report: &mut dyn FnMut(&Plan, &Progress),
    ) -> anyhow::Result<Pause> {
        let plan = &self.plan;
        let (mut key_files, mut restarter, mut publisher) = (
            KeyFilesOnDisk::new(plan),
            ProcessRestarter::new(plan),
            TargetsPublisher::new(plan),
        );
        let mut effects = Effects {
            key_files: &mut key_files,
            restarter: &mut restarter,
            publisher: &mut publisher,
        };
        let lock = &self.lock;
        let prober = &mut self.prober;
        let last_observed = &mut self.last_observed;
        let outcomes = &mut self.outcomes;
        let mut observe_now = || {
            let observed = observe(plan, prober.as_mut().map(|p| p as &mut dyn Prober))
                .map_err(|e| e.to_string())?;
            *last_observed = Some(observed.clone());
            Ok(observed)
        };
        let mut save = |s: &State| lock.save(s).map_err(|e| e.to_string());
        let mut on_progress = |p: &Progress| {
            if let Progress::Acted {
                action: Action::ConsumeTrigger { outcome, .. },
                ..
            } = p
            {
                outcomes.push(outcome.clone());
            }
            report(plan, p)
        };
        let mut io = Io {
            observe: &mut observe_now,
            save: &mut save,
            now: &Utc::now,
            report: &mut on_progress,
        };
        let pause = run_until_waiting_or_stopped(
            plan,
            &mut self.state,
            &mut effects,
            &mut io,
            should_stop,
        )?;
        Ok(pause)
    }

    /// Acts until the core waits, printing progress lines; returns that decision.
    pub fn run_until_waiting(&mut self) -> anyhow::Result<Decision> {
        match self.run(&mut || false, &mut print_progress)? {
            Pause::Waiting(decision) => Ok(decision),
            Pause::Stopped => unreachable!("never asked to stop"),
        }
    }

    /// Acts and sleeps through timed waits until the rotation completes, waits for a person, or
    /// waits on something no timer changes (a missing key file, say); says which.
    pub fn run_to_rest(&mut self) -> anyhow::Result<Rest> {
        loop {
            let decision = self.run_until_waiting()?;
            let blocked = decision.blocked_by.first();
            if let Some(b) = blocked {
                let reason = shorten_kids(&b.reason);
                outln!(
                    "{}  waiting  [{}] {reason}",
                    Utc::now().format("%H:%M:%S"),
                    b.gate
                );
            }
            let rotating = self.state.rotation.is_some() || !self.state.triggers.is_empty();
            match (rotating, blocked, decision.wake_at) {
                (false, _, _) => return Ok(Rest::Done),
                (true, Some(b), _) if b.gate == Gate::Approval => return Ok(Rest::AwaitsApproval),
                (true, Some(b), None) => return Ok(Rest::Stuck(b.clone())),
                (true, None, None) => return Ok(Rest::Done),
                (true, _, Some(wake)) => {
                    let pause = (wake - Utc::now()).to_std().unwrap_or_default();
                    std::thread::sleep(pause);
                }
            }
        }
    }

    /// Records the keys the files hold when keyrot has none recorded yet, and nothing else: no
    /// request is consumed and no rotation starts, even one that is due.
    pub fn adopt_only(&mut self) -> anyhow::Result<()> {
        let adopted = std::cell::Cell::new(false);
        let mut report = |plan: &Plan, progress: &Progress| {
            if let Progress::Acted {
                action: Action::Adopt { .. },
                ..
            } = progress
            {
                adopted.set(true);
            }
            print_progress(plan, progress);
        };
        self.run(&mut || adopted.get(), &mut report)?;
        Ok(())
    }

    /// Takes back the last request of `kind` recorded in this session, if no step consumed it yet.
    /// Returns whether it was still pending.
    pub fn withdraw(&mut self, kind: TriggerKind) -> anyhow::Result<bool> {
        let Some(i) = self.state.triggers.iter().rposition(|t| t.kind == kind) else {
            return Ok(false);
        };
        self.state.triggers.remove(i);
        self.lock.save(&self.state)?;
        Ok(true)
    }
}

/// Why [`Session::run_to_rest`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rest {
    /// Nothing is in progress (the rotation completed, or none was started).
    Done,
    /// A phase waits for `keyrot approve`.
    AwaitsApproval,
    /// The rotation (or the request) waits on a gate that only a change by a person opens.
    Stuck(Blocked),
}

fn prober(plan: &Plan) -> anyhow::Result<Option<KubeProber>> {
    Ok(match &plan.probe {
        Probe::None => None,
        Probe::Kubeconfig {
            path,
            namespace,
            service_account,
            audience,
        } => Some(KubeProber::new(path, namespace, service_account, audience)?),
    })
}

/// Every directory keyrot writes files into.
fn written_directories(plan: &Plan) -> Vec<PathBuf> {
    let parent = |path: &Path| path.parent().map(Path::to_path_buf);
    let mut files = vec![
        plan.apiserver.verification_bundle.clone(),
        plan.apiserver.signing_key_file.clone(),
    ];
    let mut restarts = vec![&plan.apiserver.restart];
    if let Some(cm) = &plan.controller_manager {
        files.push(cm.private_key_file.clone());
        restarts.push(&cm.restart);
    }
    for restart in restarts {
        if let Restart::StaticPod { manifest } = restart {
            files.push(manifest.clone());
        }
    }
    for target in &plan.targets {
        if let TargetKind::LocalDirectory { path } = &target.kind {
            files.extend([path.join(JWKS_PATH), path.join(DISCOVERY_PATH)]);
        }
    }
    let mut dirs = vec![plan.state_dir.clone(), plan.private_key_dir.clone()];
    dirs.extend(files.iter().filter_map(|f| parent(f)));
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Removes what writes cut short by a killed keyrot left behind: this process holds the lock, so
/// no write of keyrot's is in progress. Housekeeping only: a failure is a warning.
fn remove_stale_temp_files(plan: &Plan) {
    for dir in written_directories(plan) {
        match atomic_file::remove_stale_temp_files(&dir) {
            Ok(removed) => {
                for path in removed {
                    outln!(
                        "{}  -        removed {}, left by a write that an interrupted keyrot never finished",
                        Utc::now().format("%H:%M:%S"),
                        path.display()
                    );
                }
            }
            Err(e) => eprintln!(
                "warning: cannot remove stale temp files in {}: {e}",
                dir.display()
            ),
        }
    }
}

fn print_progress(plan: &Plan, progress: &Progress) {
    match progress {
        Progress::Acted { at, phase, action } => {
            let shown = action.is_effect()
                || matches!(action, Action::EnterPhase { .. } | Action::CompleteRotation);
            if let (true, Some(text)) = (shown, describe_action(plan, action)) {
                let text = shorten_kids(&text);
                outln!(
                    "{}  {:<8} {text}",
                    at.format("%H:%M:%S"),
                    phase.map_or("-", |p| p.as_str())
                );
            }
            if let Action::ConsumeTrigger { kind, outcome } = action {
                outln!("{}  {:<8} {kind:?}: {outcome}", at.format("%H:%M:%S"), "-");
            }
            // A timed-out gate is a failed attempt: say so, and why the files change next.
            if let Action::GateFailed {
                gate,
                reason,
                retry_at,
                fall_back,
            } = action
            {
                let fallback = if *fall_back {
                    "; until then the apiserver gets its last good key files back"
                } else {
                    ""
                };
                eprintln!(
                    "{}  {:<8} FAILED gate {gate} (closed for longer than gateTimeout): {}; \
                     retry at {}{fallback}",
                    at.format("%H:%M:%S"),
                    phase.map_or("-", |p| p.as_str()),
                    shorten_kids(reason),
                    keyrot::describe::time(*retry_at)
                );
            }
        }
        Progress::Failed {
            at,
            phase,
            action,
            error,
        } => {
            eprintln!(
                "{}  {:<8} FAILED {}: {error}",
                at.format("%H:%M:%S"),
                phase.map_or("-", |p| p.as_str()),
                keyrot::decision::action_name(action)
            );
        }
    }
}
