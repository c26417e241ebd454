//! A keyrot process that holds the state lock and acts: the plan, the state, the real adapters
//! and the last observation. The foreground commands and the daemon drive the same session.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::adapters::key_files::KeyFilesOnDisk;
use crate::adapters::key_flags::FlagFileSwitch;
use crate::adapters::migration::ClusterEffects;
use crate::adapters::probe::KubeProber;
use crate::adapters::publish::TargetsPublisher;
use crate::adapters::restart::ProcessRestarter;
use crate::adapters::{AdapterError, FailureKind, Prober};
use crate::atomic_file;
use crate::decision::{Action, Blocked, Gate, Observed};
use crate::documents::{DISCOVERY_PATH, JWKS_PATH};
use crate::executor::{Effects, ExecError, Io, Pause, StepReport, run_until_waiting_or_stopped};
use crate::migration::record::MigrationRecord;
use crate::migration::{Outcome, RequestError, ending, is_rollback};
use crate::observe::{ObserveError, observe};
use crate::plan::{Plan, Probe, Restart, TargetKind};
use crate::state::{Rotation, State, StateError, StateStore, StoreLock, Trigger, TriggerKind};
use crate::status::{Status, status};

/// Why a session could not open or act.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Probe(#[from] AdapterError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(
        "{plan}: stateDir changed from {old} to {new}; a running keyrot keeps its state \
         directory: restart it"
    )]
    StateDirChanged {
        plan: PathBuf,
        old: PathBuf,
        new: PathBuf,
    },
}

impl SessionError {
    /// Whether trying again can help before a person acts.
    pub fn kind(&self) -> FailureKind {
        match self {
            SessionError::Exec(e) => e.kind(),
            SessionError::Probe(e) => e.kind,
            SessionError::State(StateError::Locked { .. }) => FailureKind::Transient,
            SessionError::State(_)
            | SessionError::Observe(_)
            | SessionError::StateDirChanged { .. } => FailureKind::Permanent,
        }
    }
}

/// What opening a session found left behind by a keyrot killed in the middle of a write.
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Temp files removed.
    pub removed: Vec<PathBuf>,
    /// Directories that could not be cleaned, and why: housekeeping only, nothing is wrong.
    pub not_cleaned: Vec<(PathBuf, std::io::Error)>,
}

/// This process holds the lock and acts.
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
    /// Takes the lock at once (or says who holds it), removes what interrupted writes left
    /// behind, and reads the state.
    pub fn open(plan: Plan) -> Result<(Self, Leftovers), SessionError> {
        let lock = StateStore::new(&plan.state_dir).try_lock()?;
        let leftovers = remove_stale_temp_files(&plan);
        let state = lock.load()?.unwrap_or_default();
        lock.retire_legacy_migration_file(&state)?;
        let prober = prober(&plan)?;
        let session = Session {
            plan,
            lock,
            state,
            prober,
            last_observed: None,
            outcomes: Vec::new(),
        };
        Ok((session, leftovers))
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Acts on `plan` from now on. The state directory cannot change: this session holds the
    /// lock of the old one.
    pub fn replace_plan(&mut self, plan: Plan) -> Result<(), SessionError> {
        if plan.state_dir != self.plan.state_dir {
            return Err(SessionError::StateDirChanged {
                plan: plan.path.clone(),
                old: self.plan.state_dir.clone(),
                new: plan.state_dir.clone(),
            });
        }
        self.prober = prober(&plan)?;
        self.plan = plan;
        Ok(())
    }

    /// Records a request, to be acted on by the next run.
    pub fn trigger(&mut self, kind: TriggerKind, force: bool) -> Result<(), SessionError> {
        self.state.triggers.push(Trigger {
            kind,
            requested_at: Utc::now(),
            force,
        });
        self.lock.save(&self.state)?;
        Ok(())
    }

    /// The rotation in progress.
    /// The switch between key files and the signer in record.
    pub fn signer_switch(&self) -> Option<&crate::state::SignerSwitchRecord> {
        self.state.signer_switch.as_ref()
    }

    pub fn rotation(&self) -> Option<&Rotation> {
        self.state.rotation.as_ref()
    }

    /// Whether a rotation is in progress or a request waits to be acted on.
    pub fn busy(&self) -> bool {
        self.state.rotation.is_some() || !self.state.triggers.is_empty()
    }

    /// Triggers recorded and not yet acted on.
    pub fn pending_triggers(&self) -> usize {
        self.state.triggers.len()
    }

    /// The outcomes of the triggers consumed so far (`rotation started`, `refused: ...`).
    pub fn outcomes(&self) -> &[String] {
        &self.outcomes
    }

    /// Reads the world once, as the executor will; for the daemon's start.
    pub fn observe(&mut self) -> Result<(), SessionError> {
        let plan = &self.plan;
        let prober = self.prober.as_mut().map(|p| p as &mut dyn Prober);
        let observed = observe(plan, prober, &self.state)?;
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
        report: &mut dyn FnMut(&Plan, &StepReport),
    ) -> Result<Pause, SessionError> {
        let plan = &self.plan;
        let (mut key_files, mut restarter, mut publisher, mut migration, mut key_flags) = (
            KeyFilesOnDisk::new(plan),
            ProcessRestarter::new(plan),
            TargetsPublisher::new(plan),
            ClusterEffects::new(plan),
            FlagFileSwitch::new(plan),
        );
        let mut effects = Effects {
            key_files: &mut key_files,
            restarter: &mut restarter,
            publisher: &mut publisher,
            migration: &mut migration,
            key_flags: &mut key_flags,
        };
        let lock = &self.lock;
        let prober = &mut self.prober;
        let last_observed = &mut self.last_observed;
        let outcomes = &mut self.outcomes;
        let mut observe_now = |state: &State| {
            // The canaries are exchanged first, so this observation carries their answers.
            if let Some(kid) = crate::decision::canary_due(plan, state, Utc::now()) {
                crate::canary::exchange_due(plan, kid, Utc::now())?;
            }
            let prober = prober.as_mut().map(|p| p as &mut dyn Prober);
            let observed = observe(plan, prober, state)?;
            *last_observed = Some(observed.clone());
            Ok(observed)
        };
        let mut save = |s: &State| lock.save(s);
        let mut on_report = |p: &StepReport| {
            if let StepReport::Acted {
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
            report: &mut on_report,
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

    /// Acts and sleeps through timed waits until the rotation completes, waits for a person, or
    /// waits on something no timer changes (a missing key file, say); says which. `on_wait`
    /// hears each wait before it is slept through or returned.
    pub fn run_to_rest(
        &mut self,
        report: &mut dyn FnMut(&Plan, &StepReport),
        on_wait: &mut dyn FnMut(&Blocked),
    ) -> Result<Rest, SessionError> {
        loop {
            let decision = match self.run(&mut || false, report)? {
                Pause::Waiting(decision) => decision,
                Pause::Stopped => unreachable!("never asked to stop"),
            };
            let blocked = decision.blocked_by.first();
            if let Some(b) = blocked {
                on_wait(b);
            }
            match (self.busy(), blocked, decision.wake_at) {
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

    /// The issuer migration in record.
    pub fn recorded(&self) -> Option<&MigrationRecord> {
        self.state.issuer_migration.as_ref()
    }

    /// Records a request to the issuer migration (`MigrateIssuer`, `RollbackIssuerMigration`,
    /// or the `Approve` of a step waiting for a person) and acts until the core waits: how it
    /// ended. A request the core did not act on is taken back: nobody would be there to see it
    /// acted on later.
    pub fn migration_request(
        &mut self,
        kind: TriggerKind,
        report: &mut dyn FnMut(&Plan, &StepReport),
    ) -> Result<Outcome, RequestError> {
        let failed = |e: SessionError| RequestError::Failed(e.to_string());
        let rollback = is_rollback(kind, self.recorded());
        self.trigger(kind, false).map_err(failed)?;
        let mut consumed = None;
        let mut on_report = |plan: &Plan, step: &StepReport| {
            if let Some(outcome) = consumed_outcome(step, kind) {
                consumed = Some(outcome.to_string());
            }
            report(plan, step)
        };
        let result = self.run(&mut || false, &mut on_report);
        if consumed.is_none() {
            self.withdraw(kind).map_err(failed)?;
        }
        match result.map_err(failed)? {
            Pause::Stopped => unreachable!("never asked to stop"),
            Pause::Waiting(decision) => ending(
                &self.plan,
                consumed.as_deref(),
                self.recorded(),
                &decision,
                rollback,
            ),
        }
    }

    /// Takes back the last request of `kind` recorded in this session, if no step consumed it yet.
    /// Returns where it was among the pending requests, oldest first (`None`: not pending).
    pub fn withdraw(&mut self, kind: TriggerKind) -> Result<Option<usize>, SessionError> {
        let Some(i) = self.state.triggers.iter().rposition(|t| t.kind == kind) else {
            return Ok(None);
        };
        self.state.triggers.remove(i);
        self.lock.save(&self.state)?;
        Ok(Some(i))
    }
}

/// The core's answer to a request of `kind`, when `step` consumed one.
pub fn consumed_outcome(step: &StepReport, kind: TriggerKind) -> Option<&str> {
    match step {
        StepReport::Acted {
            action: Action::ConsumeTrigger { kind: k, outcome },
            ..
        } if *k == kind => Some(outcome),
        _ => None,
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

fn prober(plan: &Plan) -> Result<Option<KubeProber>, AdapterError> {
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
/// no write of keyrot's is in progress.
fn remove_stale_temp_files(plan: &Plan) -> Leftovers {
    let mut leftovers = Leftovers::default();
    for dir in written_directories(plan) {
        match atomic_file::remove_stale_temp_files(&dir) {
            Ok(removed) => leftovers.removed.extend(removed),
            Err(e) => leftovers.not_cleaned.push((dir, e)),
        }
    }
    leftovers
}
