//! The dry run: the decision core driven against an in-memory copy of the observed cluster, so a
//! person sees every step, its earliest time and the gate it waits for before anything happens.

mod text;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::decision::{Action, Gate, Observed, Phase, apply, decide};
use crate::describe::describe_action;
use crate::plan::Plan;
use crate::simulation::World;
use crate::state::{State, Trigger, TriggerKind};

pub use text::{render_request_text, render_text};

/// The coming rotation as a timeline, with the keys before and after.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub plan: String,
    pub cluster: String,
    pub starts_at: DateTime<Utc>,
    /// Assumptions the simulation made (a trigger it pretended, approvals it granted).
    pub notes: Vec<String>,
    pub before: Keys,
    pub after: Keys,
    pub timeline: Vec<Step>,
    /// Set when the rotation cannot run at all (missing or broken key files).
    pub blocked: Option<String>,
}

/// Which kids are where.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Keys {
    pub verification_bundle: Vec<String>,
    pub signing: String,
    /// The JWKS kids each target serves, by target name.
    pub targets: Vec<TargetKeys>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TargetKeys {
    pub target: String,
    pub kids: Vec<String>,
}

/// One line of the timeline: an action keyrot takes, or a wait for a gate.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub at: DateTime<Utc>,
    pub phase: Option<Phase>,
    #[serde(flatten)]
    pub what: StepKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StepKind {
    /// `changes` is true for steps that change files, processes or targets; `detail` is what
    /// the step would write, where the caller can render it (documents, flag diffs).
    Action {
        action: String,
        description: String,
        changes: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Wait {
        gate: Gate,
        reason: String,
        until: Option<DateTime<Utc>>,
    },
}

/// The most steps a rotation can take; more means the core is going round in circles.
const MAX_STEPS: usize = 500;

/// Simulates the coming rotation from `observed` and the recorded `state` (none on first use).
pub fn simulate(
    plan: &Plan,
    state: Option<&State>,
    observed: &Observed,
    at: DateTime<Utc>,
) -> DryRun {
    simulate_change(plan, state, observed, at, None, &mut |_| None)
}

/// Simulates what a request of `kind` sets going (the issuer migration's `MigrateIssuer` and
/// `RollbackIssuerMigration`, the switch's `UseSigner` and `UseKeyFiles`), through the same
/// core, until the change is done or rolled back. `detail` renders what an action would write,
/// if anything.
pub fn simulate_request(
    plan: &Plan,
    state: Option<&State>,
    observed: &Observed,
    at: DateTime<Utc>,
    kind: TriggerKind,
    detail: &mut dyn FnMut(&Action) -> Option<String>,
) -> DryRun {
    simulate_change(plan, state, observed, at, Some(kind), detail)
}

/// What a request of `kind` to the plan's issuer migration would do, each step with what it
/// would write (`effects` renders what each target would get).
pub fn simulate_migration(
    plan: &Plan,
    state: Option<&State>,
    observed: &Observed,
    at: DateTime<Utc>,
    kind: TriggerKind,
    effects: &mut dyn crate::adapters::MigrationEffects,
) -> DryRun {
    let kids = observed.verification_kids();
    let mut details = crate::migration::Details::new(plan, effects, kids);
    let mut detail = |action: &Action| match &mut details {
        Ok(details) => details
            .of(action)
            .unwrap_or_else(|e| Some(format!("cannot show what it writes: {e}\n"))),
        // No migration in the plan: the core refuses the request, and nothing is shown.
        Err(_) => None,
    };
    simulate_request(plan, state, observed, at, kind, &mut detail)
}

/// The core driven against the in-memory cluster: the coming rotation (`request`: `None`), or
/// what a request to the issuer migration sets going.
fn simulate_change(
    plan: &Plan,
    state: Option<&State>,
    observed: &Observed,
    at: DateTime<Utc>,
    request: Option<TriggerKind>,
    detail: &mut dyn FnMut(&Action) -> Option<String>,
) -> DryRun {
    let mut run = DryRun {
        plan: plan.path.display().to_string(),
        cluster: plan.cluster.clone(),
        starts_at: at,
        notes: Vec::new(),
        before: Keys::from_observed(observed),
        after: Keys::from_observed(observed),
        timeline: Vec::new(),
        blocked: None,
    };
    let Some(mut world) = World::from_observed(plan, observed) else {
        run.blocked = Some(
            decide(plan, &State::default(), observed, at).blocked_by[0]
                .reason
                .clone(),
        );
        return run;
    };
    let mut state = state.cloned().unwrap_or_default();
    let mut now = at;
    let mut triggered = false;
    // A request to the issuer migration, and whether the core answered it yet.
    let mut answered = false;
    if let Some(kind) = request {
        state.triggers.push(Trigger {
            kind,
            requested_at: now,
            force: false,
        });
        triggered = true;
    }
    let mut shown_canaries: Option<String> = None;
    for _ in 0..MAX_STEPS {
        if let Some(kid) = crate::decision::canary_due(plan, &state, now) {
            // Each exchange is a step of its own, shown once per key: the gate passes at once
            // in the simulation, whose relying parties accept any key their target serves.
            if shown_canaries.as_deref() != Some(kid) {
                let phase = state.rotation.as_ref().map(|r| r.phase);
                for target in &plan.targets {
                    if let Some(canary) = &target.canary {
                        let step = StepKind::Action {
                            action: "exchange-canary".to_string(),
                            description: crate::describe::describe_canary(
                                &target.name,
                                canary,
                                kid,
                            ),
                            changes: false,
                            detail: None,
                        };
                        run.push(now, phase, step);
                    }
                }
                shown_canaries = Some(kid.to_string());
            }
            world.exchange_canaries(kid);
        }
        let decision = decide(plan, &state, &world.observe(), now);
        let phase = state.rotation.as_ref().map(|r| r.phase);
        if !decision.actions.is_empty() {
            for action in &decision.actions {
                if let Err(why) = world.perform(action) {
                    run.blocked = Some(why.to_string());
                    return run.finish(&world);
                }
                let detail = detail(action);
                apply(&mut state, plan, action, now);
                if let Some(description) = describe_action(plan, action) {
                    run.push(
                        now,
                        phase,
                        StepKind::Action {
                            action: crate::decision::action_name(action).to_string(),
                            description,
                            changes: action.is_effect(),
                            detail,
                        },
                    );
                }
                match (request, action) {
                    (None, Action::CompleteRotation) => return run.finish(&world),
                    (Some(kind), Action::ConsumeTrigger { kind: k, outcome }) if *k == kind => {
                        if let Some(why) = outcome.strip_prefix("refused: ") {
                            run.blocked = Some(why.to_string());
                            return run.finish(&world);
                        }
                        answered = true;
                    }
                    _ => {}
                }
            }
            if let Some(kind) = request
                && answered
                && migration_settled(plan, &state, kind)
            {
                // What holds the next change, if anything (a finished migration holds rotations
                // until the plan names the new issuer).
                let next = decide(plan, &state, &world.observe(), now);
                if let Some(b) = next.blocked_by.first().filter(|b| b.gate != Gate::Schedule) {
                    run.push(now, None, wait(b.gate, &b.reason, next.wake_at));
                }
                return run.finish(&world);
            }
            continue;
        }
        let Some(blocked) = decision.blocked_by.first() else {
            break;
        };
        match blocked.gate {
            Gate::ClusterKeys => {
                run.blocked = Some(blocked.reason.clone());
                return run.finish(&world);
            }
            Gate::Approval => {
                run.push(now, phase, wait(blocked.gate, &blocked.reason, None));
                run.notes.push(match phase {
                    Some(phase) => format!("assumed `keyrot approve` for phase {phase}"),
                    None => "assumed the change asked for, then `keyrot approve`".to_string(),
                });
                state.triggers.push(Trigger {
                    kind: TriggerKind::Approve,
                    requested_at: now,
                    force: false,
                });
            }
            Gate::Schedule if decision.wake_at.is_none() && !triggered => {
                run.notes
                    .push("no schedule: assumed `keyrot rotate` now".into());
                state.triggers.push(Trigger {
                    kind: TriggerKind::Rotate,
                    requested_at: now,
                    force: false,
                });
                triggered = true;
            }
            _ => {
                let Some(until) = decision.wake_at else { break };
                run.push(now, phase, wait(blocked.gate, &blocked.reason, Some(until)));
                now = now.max(until);
            }
        }
    }
    let change = match request {
        None => "rotation",
        Some(TriggerKind::UseSigner | TriggerKind::UseKeyFiles) => "switch",
        Some(_) => "issuer migration",
    };
    run.blocked = Some(format!(
        "the {change} does not complete in the simulation; please report this plan"
    ));
    run.finish(&world)
}

/// Whether what a request of `kind` set going is over: the switch checked, the migration done,
/// or rolled back.
fn migration_settled(plan: &Plan, state: &State, kind: TriggerKind) -> bool {
    match (kind, &state.issuer_migration) {
        (TriggerKind::UseSigner | TriggerKind::UseKeyFiles, _) => state.signer_switch.is_none(),
        (TriggerKind::RollbackIssuerMigration, record) => record.is_none(),
        (_, Some(record)) => crate::migration::ending::finished(plan, record),
        (_, None) => false,
    }
}

fn wait(gate: Gate, reason: &str, until: Option<DateTime<Utc>>) -> StepKind {
    StepKind::Wait {
        gate,
        reason: reason.to_string(),
        until,
    }
}

impl DryRun {
    fn push(&mut self, at: DateTime<Utc>, phase: Option<Phase>, what: StepKind) {
        self.timeline.push(Step { at, phase, what });
    }

    fn finish(mut self, world: &World) -> DryRun {
        self.after = Keys::from_world(world);
        self
    }
}

impl Keys {
    fn from_observed(observed: &Observed) -> Keys {
        Keys {
            verification_bundle: observed.bundle_kids(),
            signing: observed.signing_kid().unwrap_or_default().to_string(),
            targets: observed
                .targets
                .iter()
                .map(|t| TargetKeys {
                    target: t.name.clone(),
                    kids: match &t.kids {
                        crate::decision::Probed::Seen(kids) => kids.clone(),
                        _ => Vec::new(),
                    },
                })
                .collect(),
        }
    }

    fn from_world(world: &World) -> Keys {
        Keys {
            verification_bundle: world.bundle.iter().map(|k| k.kid.clone()).collect(),
            signing: world.signing.kid.clone(),
            targets: world
                .targets
                .iter()
                .map(|(target, kids, _)| TargetKeys {
                    target: target.clone(),
                    kids: kids.clone(),
                })
                .collect(),
        }
    }
}
