//! One node's part: acknowledge what its apiserver does, add its key for the rotation, and, in
//! its turn, make its key files what the ring wants and restart its apiserver, one node at a
//! time; destroy its private keys the ring no longer lists.

use chrono::{DateTime, Utc};

use super::barrier::promotion_barrier;
use super::{HaDecision, HaObserved, HaStep, NewKey, NodeEffect, RingChange, desired_bundle};
use crate::decision::action::Gate;
use crate::decision::key_path_for_rotation;
use crate::decision::observed::Probed;
use crate::ha::ring::{KeyRole, Ring};
use crate::phase::Phase;
use crate::plan::Plan;

/// An acknowledgement to write: what this node's apiserver serves and signs with differs from
/// what the ring says (nothing while the apiserver does not answer).
pub fn changed_ack(ring: &Ring, observed: &HaObserved) -> Option<RingChange> {
    let (serves, signs) = seen(observed)?;
    let ack = &ring.members.get(observed.me)?.ack;
    (ack.serves != serves || ack.signs != signs).then_some(RingChange::Ack { serves, signs })
}

fn seen(observed: &HaObserved) -> Option<(Vec<String>, Option<String>)> {
    let Probed::Seen(serves) = &observed.local.apiserver else {
        return None;
    };
    let signs = match &observed.local.token_kid {
        Probed::Seen(kid) => Some(kid.clone()),
        _ => None,
    };
    Some((serves.clone(), signs))
}

pub fn next(plan: &Plan, ring: &Ring, observed: &HaObserved, now: DateTime<Utc>) -> HaDecision {
    let me = observed.me;
    if let Some(step) = add_next_key(plan, ring, observed) {
        return step;
    }
    let want_bundle = desired_bundle(ring);
    // A promotion the barrier holds back leaves the signing key as it is, never the bundle:
    // staging the keys the barrier waits for is what opens it.
    let (want_signing, held_back) = match desired_signing(plan, ring, observed, now) {
        Ok(kid) => (kid, HaDecision::default()),
        Err((held_back, current)) => match current {
            Some(kid) => (kid, held_back),
            None => return held_back,
        },
    };
    let local = observed.local;
    let bundle_kids: Vec<&str> = local
        .bundle
        .iter()
        .flatten()
        .map(|k| k.kid.as_str())
        .collect();
    let files_right = bundle_kids == want_bundle
        && local.signing.as_ref().map(|k| k.kid.as_str()) == Some(want_signing.as_str());
    // `Err`: the apiserver does not answer the probe (restarting, down, or the probe's rights).
    let apiserver_right = match (&local.apiserver, &local.token_kid) {
        (Probed::Seen(serves), Probed::Seen(signs)) => {
            Ok(same_set(serves, &want_bundle) && *signs == want_signing)
        }
        (Probed::NotConfigured, _) => Ok(true),
        (Probed::Failed(why), _) | (_, Probed::Failed(why)) => Err(why.clone()),
        (Probed::Seen(_), Probed::NotConfigured) => Err("no token was requested".into()),
    };
    let my_turn = ring.turn.as_ref().is_some_and(|t| t.node == me);
    if files_right
        && !my_turn
        && let Err(why) = &apiserver_right
    {
        // Its files are right: a restart would not make it answer. Look again later, without
        // taking anyone's turn.
        return held_back.and(HaDecision::blocked(
            Gate::ApiserverServesBundle,
            format!("this node's apiserver does not answer the probe: {why}"),
            Some(now + plan.timings.retry_backoff),
        ));
    }
    if files_right && apiserver_right == Ok(true) {
        if my_turn && let Some((serves, signs)) = seen(observed) {
            return HaDecision::step(HaStep::Ring(RingChange::ReleaseTurn { serves, signs }));
        }
        let idle = destroy_retired(ring, observed);
        return match idle.step {
            Some(_) => idle,
            None => held_back.and(idle),
        };
    }
    match &ring.turn {
        None => return HaDecision::step(HaStep::Ring(RingChange::TakeTurn)),
        Some(turn) if turn.node != me => {
            return held_back.and(HaDecision::blocked(
                Gate::RestartTurn,
                format!(
                    "node {} is restarting its apiserver (its turn since {})",
                    turn.node,
                    turn.since.to_rfc3339()
                ),
                None,
            ));
        }
        Some(_) => {}
    }
    let signs_now = local.signing.as_ref().map(|k| k.kid.as_str());
    if bundle_kids != want_bundle {
        // Never a bundle without the key the signing file names (invariant 1): that key changes
        // first, when the current bundle verifies the one it changes to.
        let keeps_signing_key = signs_now.is_none_or(|kid| want_bundle.iter().any(|k| k == kid));
        if keeps_signing_key {
            return HaDecision::step(HaStep::Node(NodeEffect::WriteBundle { kids: want_bundle }));
        }
        if signs_now != Some(want_signing.as_str()) && bundle_kids.contains(&want_signing.as_str())
        {
            return HaDecision::step(HaStep::Node(NodeEffect::WriteSigningKey {
                kid: want_signing,
            }));
        }
        return held_back.and(HaDecision::blocked(
            Gate::ClusterKeys,
            format!(
                "the bundle [{}] would not verify {}, the key the signing file names: not written",
                want_bundle.join(", "),
                signs_now.unwrap_or_default()
            ),
            None,
        ));
    }
    if signs_now != Some(want_signing.as_str()) {
        return HaDecision::step(HaStep::Node(NodeEffect::WriteSigningKey {
            kid: want_signing,
        }));
    }
    let turn = ring.turn.as_ref().expect("this node's turn");
    match turn.restarted {
        Some(at) if now < at + plan.timings.gate_timeout => HaDecision::blocked(
            Gate::ApiserverServesBundle,
            format!(
                "waiting for this node's apiserver to serve [{}] and sign with {want_signing} after its restart at {}",
                want_bundle.join(", "),
                at.to_rfc3339()
            ),
            Some(at + plan.timings.gate_timeout),
        ),
        // Not restarted in this turn yet, or it did not come back as expected in time: restart.
        Some(_) | None => HaDecision::step(HaStep::Node(NodeEffect::Restart)),
    }
}

/// In a rotation before its promotion completed: this node's key for it, generated first.
fn add_next_key(plan: &Plan, ring: &Ring, observed: &HaObserved) -> Option<HaDecision> {
    let rotation = ring.rotation.as_ref()?;
    if rotation.phase == Phase::Retire || ring.next_key_of(observed.me).is_some() {
        return None;
    }
    let path = key_path_for_rotation(plan, &rotation.id);
    let generated = observed.local.private_keys.iter().find(|(_, p)| *p == path);
    Some(HaDecision::step(match generated {
        None => HaStep::Node(NodeEffect::GenerateKey {
            path,
            spec: plan.key,
        }),
        Some((key, _)) => match observed.local.public_keys.get(&key.kid) {
            Some(pem) => HaStep::Ring(RingChange::AddNextKey(NewKey {
                kid: key.kid.clone(),
                alg: key.alg,
                public_key: pem.clone(),
                role: KeyRole::Next,
            })),
            None => return None,
        },
    }))
}

/// The key this node's signing file holds now: its next key once the promotion barrier passed
/// (and for good once it signs with it), its signing key otherwise. `Err`: why not the next
/// key, with the signing key to keep meanwhile, if the ring lists one.
fn desired_signing(
    plan: &Plan,
    ring: &Ring,
    observed: &HaObserved,
    now: DateTime<Utc>,
) -> Result<String, (HaDecision, Option<String>)> {
    let me = observed.me;
    let current = ring.signing_key_of(me).map(|k| k.kid.clone());
    let no_signing_key = || {
        HaDecision::blocked(
            Gate::ClusterKeys,
            format!("the ring lists no signing key of node {me}"),
            None,
        )
    };
    let Some(next) = ring.next_key_of(me) else {
        return current.ok_or_else(|| (no_signing_key(), None));
    };
    let promoted = observed.local.signing.as_ref().map(|k| k.kid.as_str()) == Some(&next.kid);
    let promoting = ring
        .rotation
        .as_ref()
        .is_some_and(|r| r.phase == Phase::Promote);
    if promoted {
        return Ok(next.kid.clone());
    }
    if promoting {
        return match promotion_barrier(plan, ring, observed.expected, now) {
            Ok(()) => Ok(next.kid.clone()),
            Err((blocked, wake)) => Err((
                HaDecision {
                    step: None,
                    wake_at: wake,
                    blocked_by: vec![blocked],
                    leader_work: false,
                },
                current,
            )),
        };
    }
    current.ok_or_else(|| (no_signing_key(), None))
}

/// Between rotations: this node's private keys the ring no longer lists are destroyed.
fn destroy_retired(ring: &Ring, observed: &HaObserved) -> HaDecision {
    if ring.rotation.is_some() {
        return HaDecision::default();
    }
    let signing = observed.local.signing.as_ref().map(|k| k.kid.as_str());
    let orphan = observed
        .local
        .private_keys
        .iter()
        .find(|(key, _)| ring.key(&key.kid).is_none() && Some(key.kid.as_str()) != signing);
    match orphan {
        Some((key, path)) => HaDecision::step(HaStep::Node(NodeEffect::DestroyPrivateKey {
            kid: key.kid.clone(),
            path: path.clone(),
        })),
        None => HaDecision::default(),
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}
