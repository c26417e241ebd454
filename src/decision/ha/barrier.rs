//! The barriers of an HA rotation (docs/ha.md, invariants 10 and 11): no node promotes a key
//! until every member's apiserver serves every key that will sign and every target serves them
//! (settled); no key leaves any bundle or target until no node signs with it and the token
//! lifetime grace has passed since the last one stopped. A member that does not acknowledge
//! blocks, named, with the time of its last acknowledgement; it is never skipped.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::Expected;
use crate::decision::action::{Blocked, Gate};
use crate::ha::ring::{KeyRole, Ring};
use crate::plan::Plan;

/// The nodes that must take part: the expected ones and every member. `Err` says what is missing
/// (an expected node that never joined, an apiserver address no member has, an unreadable
/// EndpointSlice).
pub fn expected_members(ring: &Ring, expected: &Expected) -> Result<BTreeSet<String>, Blocked> {
    let members: BTreeSet<String> = ring.members.keys().cloned().collect();
    let missing = |reason: String| Blocked {
        gate: Gate::Membership,
        reason,
    };
    match expected {
        Expected::Named(names) => {
            // A node an operator removed stays out until it joins again, whatever the plan says.
            let removed = |n: &String| ring.removals.iter().any(|r| &r.node == n);
            let names: Vec<&String> = names.iter().filter(|n| !removed(n)).collect();
            let absent: Vec<&String> = names
                .iter()
                .copied()
                .filter(|n| !members.contains(*n))
                .collect();
            if !absent.is_empty() {
                return Err(missing(format!(
                    "{} named in ha.members never joined the ring (is keyrot running there?)",
                    list(absent)
                )));
            }
        }
        Expected::Addresses(Err(why)) => {
            return Err(missing(format!(
                "cannot list the apiservers of the kubernetes EndpointSlice: {why}"
            )));
        }
        Expected::Addresses(Ok(addresses)) => {
            let absent: Vec<&String> = addresses
                .iter()
                .filter(|a| {
                    !ring
                        .members
                        .values()
                        .any(|m| m.address.as_deref() == Some(a.as_str()))
                })
                .collect();
            if !absent.is_empty() {
                return Err(missing(format!(
                    "the apiserver at {} (listed by the kubernetes EndpointSlice) has no keyrot member",
                    list(absent)
                )));
            }
        }
    }
    Ok(members)
}

/// May a node sign with its next key now? Every key that will sign (signing and next) must be
/// served by every member's apiserver, and published to every target long enough ago.
pub fn promotion_barrier(
    plan: &Plan,
    ring: &Ring,
    expected: &Expected,
    now: DateTime<Utc>,
) -> Result<(), (Blocked, Option<DateTime<Utc>>)> {
    let members = expected_members(ring, expected).map_err(|b| (b, None))?;
    let will_sign: Vec<String> = ring
        .keys
        .iter()
        .filter(|k| matches!(k.role, KeyRole::Signing | KeyRole::Next))
        .map(|k| k.kid.clone())
        .collect();
    for node in &members {
        let member = &ring.members[node];
        let missing: Vec<&String> = will_sign
            .iter()
            .filter(|kid| !member.ack.serves.contains(kid))
            .collect();
        if !missing.is_empty() {
            return Err((
                Blocked {
                    gate: Gate::MembersServe,
                    reason: format!(
                        "node {node}'s apiserver does not serve {} (its last acknowledgement, at {}, lists [{}])",
                        list(missing),
                        member.ack.since.to_rfc3339(),
                        member.ack.serves.join(", ")
                    ),
                },
                None,
            ));
        }
    }
    let rotation = ring.rotation.as_ref();
    let published = rotation.and_then(|r| r.published.as_ref());
    let Some(published) = published.filter(|p| will_sign.iter().all(|k| p.kids.contains(k))) else {
        return Err((
            Blocked {
                gate: Gate::TargetsServeKeys,
                reason: "the targets were not read back serving every key that will sign".into(),
            },
            None,
        ));
    };
    let settled = published.at + plan.timings.publish_settle;
    if now < settled {
        return Err((
            Blocked {
                gate: Gate::PublishSettle,
                reason: format!(
                    "caches of the old JWKS may live until {}",
                    settled.to_rfc3339()
                ),
            },
            Some(settled),
        ));
    }
    Ok(())
}

/// May the retiring keys leave now? No member signs with one, and `retireAfter` has passed since
/// the last of them stopped signing.
pub fn retire_barrier(
    plan: &Plan,
    ring: &Ring,
    now: DateTime<Utc>,
) -> Result<(), (Blocked, Option<DateTime<Utc>>)> {
    let retiring: Vec<&str> = ring
        .keys
        .iter()
        .filter(|k| k.role == KeyRole::Retiring)
        .map(|k| k.kid.as_str())
        .collect();
    for (node, member) in &ring.members {
        if let Some(kid) = member.ack.signs.as_deref().filter(|k| retiring.contains(k)) {
            return Err((
                Blocked {
                    gate: Gate::NewKeySigns,
                    reason: format!(
                        "node {node}'s apiserver still signs with the retiring key {kid} (acknowledged at {})",
                        member.ack.since.to_rfc3339()
                    ),
                },
                None,
            ));
        }
    }
    let stopped = ring
        .keys
        .iter()
        .filter(|k| k.role == KeyRole::Retiring)
        .map(|k| k.since)
        .max();
    if let Some(stopped) = stopped {
        let due = stopped + plan.timings.retire_after;
        if now < due {
            return Err((
                Blocked {
                    gate: Gate::RetireAfter,
                    reason: format!(
                        "tokens signed by the retiring keys may be in use until {}",
                        due.to_rfc3339()
                    ),
                },
                Some(due),
            ));
        }
    }
    Ok(())
}

fn list(items: Vec<&String>) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
