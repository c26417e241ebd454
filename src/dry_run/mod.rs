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

pub use text::render_text;

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
    /// `changes` is true for steps that change files, processes or targets.
    Action {
        action: String,
        description: String,
        changes: bool,
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
                apply(&mut state, plan, action, now);
                if let Some(description) = describe_action(plan, action) {
                    run.push(
                        now,
                        phase,
                        StepKind::Action {
                            action: crate::decision::action_name(action).to_string(),
                            description,
                            changes: action.is_effect(),
                        },
                    );
                }
                if *action == Action::CompleteRotation {
                    return run.finish(&world);
                }
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
                run.notes.push(format!(
                    "assumed `keyrot approve` for phase {}",
                    phase.map_or("-", |p| p.as_str())
                ));
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
    run.blocked =
        Some("the rotation does not complete in the simulation; please report this plan".into());
    run.finish(&world)
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
