//! How each ring change rewrites the ring just read: pure, and refusing what the change's
//! writer may not do (a deposed leader's write, a turn another node holds).

use chrono::{DateTime, Utc};

use super::{Joining, RingChange};
use crate::ha::ring::{
    Ack, ClusterRotation, KeyRole, Member, Published, REMOVALS_KEPT, Removal, Request, Ring,
    RingKey, Turn,
};
use crate::phase::Phase;

/// A change the ring as read does not allow: decide again from a fresh read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChangeError(pub String);

/// The ring after `change` by node `me` at `now`. `epoch` is the fencing epoch of the Lease `me`
/// holds, required for the leader's changes. `ring` is `None` only for `Create`.
pub fn apply(
    ring: Option<&Ring>,
    change: &RingChange,
    me: &str,
    epoch: Option<i32>,
    now: DateTime<Utc>,
) -> Result<Ring, ChangeError> {
    let refuse = |why: String| Err(ChangeError(why));
    let mut ring = match (ring, change) {
        (None, RingChange::Create(joining)) => {
            let mut ring = Ring::new(now);
            join(&mut ring, me, joining, now);
            return Ok(ring);
        }
        (Some(_), RingChange::Create(_)) => return refuse("the ring exists already".into()),
        (None, _) => return refuse("there is no ring yet".into()),
        (Some(ring), _) => ring.clone(),
    };
    if change.is_leaders() {
        match epoch {
            Some(epoch) if epoch >= ring.leader_epoch => ring.leader_epoch = epoch,
            Some(epoch) => {
                return refuse(format!(
                    "lease epoch {epoch} is older than the ring's leader epoch {}: this node no longer leads",
                    ring.leader_epoch
                ));
            }
            None => return refuse("only the leader may make this change".into()),
        }
    }
    let member_change = !matches!(
        change,
        RingChange::Join(_) | RingChange::Request { .. } | RingChange::RemoveNode { .. }
    ) && !change.is_leaders();
    if member_change && !ring.members.contains_key(me) {
        return refuse(format!("node {me} is not a member of the ring"));
    }
    match change {
        RingChange::Create(_) => unreachable!("handled above"),
        RingChange::Join(joining) => {
            if ring.members.contains_key(me) {
                return refuse(format!("node {me} is a member already"));
            }
            ring.removals.retain(|r| r.node != me);
            join(&mut ring, me, joining, now);
        }
        RingChange::Ack { serves, signs } => {
            set_ack(&mut ring, me, serves, signs, now);
        }
        RingChange::AddNextKey(key) => {
            if ring.rotation.is_none() {
                return refuse("no rotation is in progress".into());
            }
            if ring.next_key_of(me).is_some() {
                return refuse(format!("node {me} has a next key already"));
            }
            if ring.key(&key.kid).is_some() {
                return refuse(format!("kid {} is in the ring already", key.kid));
            }
            ring.keys.push(RingKey {
                kid: key.kid.clone(),
                alg: key.alg,
                public_key: key.public_key.clone(),
                owners: [me.to_string()].into(),
                role: KeyRole::Next,
                since: now,
            });
        }
        RingChange::TakeTurn => {
            if let Some(turn) = &ring.turn {
                return refuse(format!("node {} has the turn", turn.node));
            }
            ring.turn = Some(Turn {
                node: me.to_string(),
                since: now,
                restarted: None,
            });
        }
        RingChange::RecordRestart => match ring.turn.as_mut() {
            Some(turn) if turn.node == me => turn.restarted = Some(now),
            _ => return refuse(format!("node {me} does not have the turn")),
        },
        RingChange::ReleaseTurn { serves, signs } => {
            if ring.turn.as_ref().is_none_or(|t| t.node != me) {
                return refuse(format!("node {me} does not have the turn"));
            }
            ring.turn = None;
            set_ack(&mut ring, me, serves, signs, now);
        }
        RingChange::StartRotation { id, cause } => {
            if ring.rotation.is_some() {
                return refuse("a rotation is in progress already".into());
            }
            ring.rotation = Some(ClusterRotation {
                id: id.clone(),
                started: now,
                cause: cause.clone(),
                phase: Phase::Generate,
                phase_since: now,
                published: None,
                retire_opened: None,
            });
            ring.request = None;
        }
        RingChange::EnterPhase(phase) => {
            let rotation = rotation_mut(&mut ring)?;
            rotation.phase = *phase;
            rotation.phase_since = now;
        }
        RingChange::RecordPublished { kids } => {
            rotation_mut(&mut ring)?.published = Some(Published {
                kids: kids.clone(),
                at: now,
            });
        }
        RingChange::CompletePromotion => {
            rotation_mut(&mut ring)?;
            for key in &mut ring.keys {
                let role = match key.role {
                    KeyRole::Signing => KeyRole::Retiring,
                    KeyRole::Next => KeyRole::Signing,
                    KeyRole::Retiring => continue,
                };
                key.role = role;
                key.since = now;
            }
            let rotation = rotation_mut(&mut ring)?;
            rotation.phase = Phase::Retire;
            rotation.phase_since = now;
        }
        RingChange::OpenRetire => {
            rotation_mut(&mut ring)?.retire_opened = Some(now);
        }
        RingChange::CompleteRotation => {
            rotation_mut(&mut ring)?;
            ring.keys.retain(|k| k.role != KeyRole::Retiring);
            ring.rotation = None;
            ring.last_completed = Some(now);
        }
        RingChange::Request { by } => {
            if ring.request.is_none() {
                ring.request = Some(Request {
                    by: by.clone(),
                    at: now,
                });
            }
        }
        RingChange::RemoveNode { node, by } => {
            if ring.members.remove(node).is_none() {
                return refuse(format!("node {node} is not a member of the ring"));
            }
            if ring.turn.as_ref().is_some_and(|t| &t.node == node) {
                ring.turn = None;
            }
            // Its keys may have signed tokens still in use: they retire, they do not vanish.
            let mut retired_kids = Vec::new();
            for key in &mut ring.keys {
                if key.owners.remove(node) && key.owners.is_empty() {
                    if key.role != KeyRole::Retiring {
                        key.role = KeyRole::Retiring;
                        key.since = now;
                    }
                    retired_kids.push(key.kid.clone());
                }
            }
            ring.removals.push(Removal {
                node: node.clone(),
                by: by.clone(),
                at: now,
                retired_kids,
            });
            let excess = ring.removals.len().saturating_sub(REMOVALS_KEPT);
            ring.removals.drain(..excess);
        }
    }
    Ok(ring)
}

fn rotation_mut(ring: &mut Ring) -> Result<&mut ClusterRotation, ChangeError> {
    ring.rotation
        .as_mut()
        .ok_or_else(|| ChangeError("no rotation is in progress".into()))
}

fn set_ack(
    ring: &mut Ring,
    me: &str,
    serves: &[String],
    signs: &Option<String>,
    now: DateTime<Utc>,
) {
    if let Some(member) = ring.members.get_mut(me)
        && (member.ack.serves != serves || member.ack.signs != *signs)
    {
        member.ack = Ack {
            serves: serves.to_vec(),
            signs: signs.clone(),
            since: now,
        };
    }
}

/// Adds `me` with its keys: a key the ring has gains an owner (a shared key), a new one enters
/// with the role the joiner gives it.
fn join(ring: &mut Ring, me: &str, joining: &Joining, now: DateTime<Utc>) {
    for key in &joining.keys {
        match ring.keys.iter_mut().find(|k| k.kid == key.kid) {
            // The joiner's apiserver signs with it: whatever its role was, it signs again (a
            // node joined with an old shared key), so every member must verify it.
            Some(known) if key.role == KeyRole::Signing => {
                known.owners.insert(me.to_string());
                if known.role == KeyRole::Retiring {
                    known.role = KeyRole::Signing;
                    known.since = now;
                }
            }
            Some(_) => {}
            None => ring.keys.push(RingKey {
                kid: key.kid.clone(),
                alg: key.alg,
                public_key: key.public_key.clone(),
                owners: match key.role {
                    KeyRole::Signing => [me.to_string()].into(),
                    _ => Default::default(),
                },
                role: key.role,
                since: now,
            }),
        }
    }
    ring.members.insert(
        me.to_string(),
        Member {
            address: joining.address.clone(),
            joined: now,
            ack: Ack {
                serves: Vec::new(),
                signs: None,
                since: now,
            },
        },
    );
}
