//! The leader's part: start a rotation when it is due or asked for, advance its phases when their
//! gates pass, publish the upstream documents. Only the node holding the Lease runs it, and each
//! of its ring writes carries its fencing epoch.

use chrono::{DateTime, Utc};

use super::barrier::{expected_members, promotion_barrier, retire_barrier};
use super::{HaDecision, HaObserved, HaStep, RingChange, desired_bundle};
use crate::decision::action::{Blocked, Gate};
use crate::decision::observed::Probed;
use crate::ha::ring::{KeyRole, Ring};
use crate::phase::Phase;
use crate::plan::Plan;

/// When the next scheduled rotation starts: the schedule after the last completed rotation (or
/// the ring's creation). The same on every node, so none needs to poll.
pub fn next_due(plan: &Plan, ring: &Ring) -> Option<DateTime<Utc>> {
    let anchor = ring.last_completed.unwrap_or(ring.created);
    plan.schedule.as_ref()?.next_after(anchor)
}

pub fn next(plan: &Plan, ring: &Ring, observed: &HaObserved, now: DateTime<Utc>) -> HaDecision {
    let Some(rotation) = &ring.rotation else {
        return match (&ring.request, next_due(plan, ring)) {
            (Some(request), _) => start(format!("requested by {}", request.by), now),
            (None, Some(due)) if due <= now => start("schedule".into(), now),
            (None, due) => HaDecision {
                wake_at: due,
                ..HaDecision::default()
            },
        };
    };
    let members = match expected_members(ring, observed.expected) {
        Ok(members) => members,
        Err(blocked) => return wait(blocked, None),
    };
    match rotation.phase {
        Phase::Generate => {
            let missing: Vec<&String> = members
                .iter()
                .filter(|n| ring.next_key_of(n).is_none())
                .collect();
            match missing.is_empty() {
                true => enter(Phase::Stage),
                false => wait(
                    Blocked {
                        gate: Gate::MembersGenerate,
                        reason: format!("waiting for the new key of {}", names(&missing)),
                    },
                    None,
                ),
            }
        }
        Phase::Stage => match members_serve(ring, &members, &desired_bundle(ring)) {
            Some(blocked) => wait(blocked, None),
            None => enter(Phase::Publish),
        },
        Phase::Publish => {
            if let Some(step) = publication(ring, observed) {
                return step;
            }
            match promotion_barrier(plan, ring, observed.expected, now) {
                Ok(()) => enter(Phase::Promote),
                Err((blocked, wake)) => wait(blocked, wake),
            }
        }
        Phase::Promote => {
            if let Some(step) = publication(ring, observed) {
                return step;
            }
            let behind: Vec<String> = members
                .iter()
                .filter(|n| {
                    let next = ring.next_key_of(n).map(|k| k.kid.as_str());
                    next.is_none() || ring.members[*n].ack.signs.as_deref() != next
                })
                .map(|n| {
                    let signs = ring.members[n]
                        .ack
                        .signs
                        .as_deref()
                        .unwrap_or("nothing seen");
                    format!("{n} (signs with {signs})")
                })
                .collect();
            match behind.is_empty() {
                true => HaDecision::step(HaStep::Ring(RingChange::CompletePromotion)),
                false => wait(
                    Blocked {
                        gate: Gate::MembersSign,
                        reason: format!(
                            "waiting for every node to sign with its new key: {}",
                            behind.join(", ")
                        ),
                    },
                    None,
                ),
            }
        }
        Phase::Retire => {
            if rotation.retire_opened.is_none() {
                return match retire_barrier(plan, ring, now) {
                    Ok(()) => HaDecision::step(HaStep::Ring(RingChange::OpenRetire)),
                    Err((blocked, wake)) => wait(blocked, wake),
                };
            }
            let remaining = desired_bundle(ring);
            if let Some(blocked) = members_drop(ring, &members) {
                return wait(blocked, None);
            }
            if let Some(step) = publish_if_needed(observed, &remaining) {
                return step;
            }
            HaDecision::step(HaStep::Ring(RingChange::CompleteRotation))
        }
    }
}

fn start(cause: String, now: DateTime<Utc>) -> HaDecision {
    HaDecision::step(HaStep::Ring(RingChange::StartRotation {
        id: now.format("%Y%m%dT%H%M%S%.3fZ").to_string(),
        cause,
    }))
}

fn enter(phase: Phase) -> HaDecision {
    HaDecision::step(HaStep::Ring(RingChange::EnterPhase(phase)))
}

fn wait(blocked: Blocked, wake_at: Option<DateTime<Utc>>) -> HaDecision {
    HaDecision {
        step: None,
        wake_at,
        blocked_by: vec![blocked],
        leader_work: false,
    }
}

/// The first member whose apiserver does not serve all of `kids`, as a closed gate.
fn members_serve(
    ring: &Ring,
    members: &std::collections::BTreeSet<String>,
    kids: &[String],
) -> Option<Blocked> {
    members.iter().find_map(|node| {
        let ack = &ring.members[node].ack;
        let missing: Vec<&String> = kids.iter().filter(|k| !ack.serves.contains(k)).collect();
        (!missing.is_empty()).then(|| Blocked {
            gate: Gate::MembersServe,
            reason: format!(
                "node {node}'s apiserver does not serve {} yet (last acknowledged at {})",
                names(&missing),
                ack.since.to_rfc3339()
            ),
        })
    })
}

/// The first member whose apiserver still serves a retiring key.
fn members_drop(ring: &Ring, members: &std::collections::BTreeSet<String>) -> Option<Blocked> {
    let retiring = ring.kids_in(KeyRole::Retiring);
    members.iter().find_map(|node| {
        let ack = &ring.members[node].ack;
        let kept: Vec<&String> = ack.serves.iter().filter(|k| retiring.contains(k)).collect();
        (!kept.is_empty()).then(|| Blocked {
            gate: Gate::MembersServe,
            reason: format!(
                "node {node}'s apiserver still serves the retiring {} (last acknowledged at {})",
                names(&kept),
                ack.since.to_rfc3339()
            ),
        })
    })
}

/// Before promotion: every target serves every ring key, read back; then the record says so.
fn publication(ring: &Ring, observed: &HaObserved) -> Option<HaDecision> {
    let kids = desired_bundle(ring);
    if let Some(step) = publish_if_needed(observed, &kids) {
        return Some(step);
    }
    let recorded = ring.rotation.as_ref()?.published.as_ref();
    (recorded.map(|p| &p.kids) != Some(&kids))
        .then(|| HaDecision::step(HaStep::Ring(RingChange::RecordPublished { kids })))
}

/// A publication when any target does not serve exactly `kids` (or could not be read).
fn publish_if_needed(observed: &HaObserved, kids: &[String]) -> Option<HaDecision> {
    let stale = observed
        .local
        .targets
        .iter()
        .any(|t| !matches!(&t.kids, Probed::Seen(served) if served == kids));
    stale.then(|| {
        HaDecision::step(HaStep::Publish {
            kids: kids.to_vec(),
        })
    })
}

fn names(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
