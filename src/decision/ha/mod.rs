//! The decision core for HA control planes: ring + this node's observation + time -> the one next
//! step of this node (and, while it leads, of the cluster's rotation). Every node runs the same
//! function; the ring (compare-and-swap) serialises their writes, the Lease picks one leader.
//!
//! Level-triggered like the single-node core: each node derives what its key files and its
//! apiserver should hold from the ring, and asks for the first thing that differs. Barriers
//! (`barrier`) hold every promotion and every removal until all members and all targets are
//! ready. No I/O and no clock reads here.

mod apply;
mod barrier;
mod leader;
mod node;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::action::{Blocked, Gate};
use super::observed::{KeyId, Probed, TargetView};
use crate::ha::ring::{KeyRole, Ring};
use crate::keys::{Alg, GenerateSpec};
use crate::phase::Phase;
use crate::plan::Plan;

pub use apply::{ChangeError, apply};
pub use barrier::{expected_members, promotion_barrier, retire_barrier};
pub use leader::next_due;

/// What the leader would do now, as far as the ring alone says (the targets unread): for
/// `keyrot status` on any node.
pub fn leader_view(
    plan: &Plan,
    ring: &Ring,
    expected: &Expected,
    now: DateTime<Utc>,
) -> HaDecision {
    let local = LocalView {
        bundle: None,
        signing: None,
        public_keys: BTreeMap::new(),
        private_keys: Vec::new(),
        apiserver: Probed::NotConfigured,
        token_kid: Probed::NotConfigured,
        targets: Vec::new(),
    };
    let observed = HaObserved {
        me: "",
        address: None,
        ring: Some(ring),
        expected,
        local: &local,
        leading: None,
    };
    leader::next(plan, ring, &observed, now)
}

/// Which nodes must take part, as the plan says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// `ha.members`: these node names.
    Named(BTreeSet<String>),
    /// `ha.members: endpointSlice`: every apiserver address the `kubernetes` EndpointSlice
    /// lists must belong to a member (or the read failed, and nothing advances).
    Addresses(Result<Vec<String>, String>),
}

/// This node's own files and apiserver, and (while it leads) the targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalView {
    /// The verification bundle's keys in file order; `None`: the file is missing.
    pub bundle: Option<Vec<KeyId>>,
    /// The signing key file's key; `None`: missing.
    pub signing: Option<KeyId>,
    /// The SPKI PEM of every key in the local files and keyrot's private keys, by kid.
    pub public_keys: BTreeMap<String, String>,
    /// keyrot's private key files on this node.
    pub private_keys: Vec<(KeyId, PathBuf)>,
    /// The kids this node's apiserver serves.
    pub apiserver: Probed<Vec<String>>,
    /// The kid of a token this node's apiserver just issued.
    pub token_kid: Probed<String>,
    /// The targets, read back (only while leading; empty otherwise).
    pub targets: Vec<TargetView>,
}

/// Everything one node's decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct HaObserved<'a> {
    /// This node's name.
    pub me: &'a str,
    /// The address this node's apiserver advertises, when the plan names it.
    pub address: Option<&'a str>,
    /// `None`: no ring exists yet.
    pub ring: Option<&'a Ring>,
    pub expected: &'a Expected,
    pub local: &'a LocalView,
    /// The fencing epoch of the Lease this node holds and may still act on; `None` otherwise.
    pub leading: Option<i32>,
}

/// One write of the ring, applied by [`apply`] to the version just read and stored by
/// compare-and-swap (a conflict means: read again, decide again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingChange {
    /// The first node creates the ring, joining it.
    Create(Joining),
    /// A node that is not a member joins.
    Join(Joining),
    /// What this node's apiserver serves and signs with changed.
    Ack {
        serves: Vec<String>,
        signs: Option<String>,
    },
    /// This node's key for the rotation in progress.
    AddNextKey(NewKey),
    /// This node may change its files and restart its apiserver; nobody else may meanwhile.
    TakeTurn,
    /// This node restarted its apiserver in its turn.
    RecordRestart,
    /// This node's apiserver serves and signs as the ring wants: the next node may restart.
    ReleaseTurn {
        serves: Vec<String>,
        signs: Option<String>,
    },
    /// Leader: a rotation begins.
    StartRotation { id: String, cause: String },
    /// Leader: the rotation's gate passed.
    EnterPhase(Phase),
    /// Leader: every target was read back serving `kids`.
    RecordPublished { kids: Vec<String> },
    /// Leader: every member signs with its next key: next keys sign, signing keys retire.
    CompletePromotion,
    /// Leader: the retiring keys' grace is over and nobody signs with them.
    OpenRetire,
    /// Leader: the retiring keys left every bundle and target.
    CompleteRotation,
    /// A person asked for a rotation.
    Request { by: String },
    /// A person removed a node that is gone for good.
    RemoveNode { node: String, by: String },
}

impl RingChange {
    /// Whether only the leader may make it (fenced by its epoch).
    pub fn is_leaders(&self) -> bool {
        matches!(
            self,
            RingChange::StartRotation { .. }
                | RingChange::EnterPhase(_)
                | RingChange::RecordPublished { .. }
                | RingChange::CompletePromotion
                | RingChange::OpenRetire
                | RingChange::CompleteRotation
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            RingChange::Create(_) => "create-ring",
            RingChange::Join(_) => "join",
            RingChange::Ack { .. } => "acknowledge",
            RingChange::AddNextKey(_) => "add-next-key",
            RingChange::TakeTurn => "take-turn",
            RingChange::RecordRestart => "record-restart",
            RingChange::ReleaseTurn { .. } => "release-turn",
            RingChange::StartRotation { .. } => "start-rotation",
            RingChange::EnterPhase(_) => "enter-phase",
            RingChange::RecordPublished { .. } => "record-published",
            RingChange::CompletePromotion => "complete-promotion",
            RingChange::OpenRetire => "open-retire",
            RingChange::CompleteRotation => "complete-rotation",
            RingChange::Request { .. } => "request",
            RingChange::RemoveNode { .. } => "remove-node",
        }
    }
}

/// A node joining: its address and the keys its files hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joining {
    pub address: Option<String>,
    /// The signing key first, then the bundle's other keys.
    pub keys: Vec<NewKey>,
}

/// A public key entering the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub kid: String,
    pub alg: Alg,
    pub public_key: String,
    pub role: KeyRole,
}

/// A change of this node's own files or apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEffect {
    /// Create this node's key for the rotation at `path` (0600).
    GenerateKey { path: PathBuf, spec: GenerateSpec },
    /// The bundle holds exactly these ring keys, in this order.
    WriteBundle { kids: Vec<String> },
    /// The signing key file holds this node's private key `kid`.
    WriteSigningKey { kid: String },
    /// Restart this node's apiserver so it reads its key files.
    Restart,
    /// Destroy this node's private key of a key the ring no longer lists.
    DestroyPrivateKey { kid: String, path: PathBuf },
}

/// The one step to take now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaStep {
    Ring(RingChange),
    Node(NodeEffect),
    /// Leader: every target serves the documents of these ring keys, in this order.
    Publish {
        kids: Vec<String>,
    },
}

/// What to do now, when to look again, and what holds things up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HaDecision {
    pub step: Option<HaStep>,
    /// When deciding again could give another answer with no change of the ring.
    pub wake_at: Option<DateTime<Utc>>,
    pub blocked_by: Vec<Blocked>,
    /// Whether there is leader work (a rotation in progress, requested or due): the Lease is
    /// wanted. Between rotations nobody holds it.
    pub leader_work: bool,
}

impl HaDecision {
    fn step(step: HaStep) -> HaDecision {
        HaDecision {
            step: Some(step),
            ..HaDecision::default()
        }
    }

    fn blocked(
        gate: Gate,
        reason: impl Into<String>,
        wake_at: Option<DateTime<Utc>>,
    ) -> HaDecision {
        HaDecision {
            step: None,
            wake_at,
            blocked_by: vec![Blocked {
                gate,
                reason: reason.into(),
            }],
            leader_work: false,
        }
    }

    /// Waits of both, the earlier wake-up.
    fn and(mut self, other: HaDecision) -> HaDecision {
        self.blocked_by.extend(other.blocked_by);
        self.wake_at = match (self.wake_at, other.wake_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.leader_work |= other.leader_work;
        self
    }
}

/// The next step of node `observed.me`.
pub fn decide(plan: &Plan, observed: &HaObserved, now: DateTime<Utc>) -> HaDecision {
    let local = observed.local;
    let (Some(bundle), Some(signing)) = (&local.bundle, &local.signing) else {
        let which = match local.bundle {
            None => ("verification key file", &plan.apiserver.verification_bundle),
            Some(_) => ("signing key file", &plan.apiserver.signing_key_file),
        };
        return HaDecision::blocked(
            Gate::ClusterKeys,
            format!("{} {} is missing", which.0, which.1.display()),
            None,
        );
    };
    let Some(ring) = observed.ring else {
        return joining(observed, bundle, signing).map_or_else(
            |why| HaDecision::blocked(Gate::ClusterKeys, why, None),
            |j| HaDecision::step(HaStep::Ring(RingChange::Create(j))),
        );
    };
    if !ring.members.contains_key(observed.me) {
        return joining(observed, bundle, signing).map_or_else(
            |why| HaDecision::blocked(Gate::ClusterKeys, why, None),
            |j| HaDecision::step(HaStep::Ring(RingChange::Join(j))),
        );
    }
    // What the leader would do now. The Lease is wanted only while that is a step: between
    // rotations, and while a rotation waits (for the settle, retireAfter, a member), nobody
    // holds it and nobody renews it; a change of the ring or the wake-up time starts it again.
    let led = leader::next(plan, ring, observed, now);
    let leader_work = led.step.is_some();
    if let Some(ack) = node::changed_ack(ring, observed) {
        return HaDecision {
            leader_work,
            ..HaDecision::step(HaStep::Ring(ack))
        };
    }
    let mut decision = HaDecision {
        leader_work,
        ..HaDecision::default()
    };
    match observed.leading {
        Some(epoch) if epoch < ring.leader_epoch => {
            // A newer leader wrote the ring: this node's Lease is stale, whatever it believes.
            decision = decision.and(HaDecision::blocked(
                Gate::Leader,
                format!(
                    "this node's lease epoch {epoch} is older than the ring's {}: another node leads",
                    ring.leader_epoch
                ),
                None,
            ));
        }
        Some(_) if leader_work => {
            return HaDecision { leader_work, ..led };
        }
        _ => {}
    }
    if !leader_work {
        decision = decision.and(led);
    }
    let mine = node::next(plan, ring, observed, now);
    if mine.step.is_some() {
        return HaDecision {
            leader_work,
            ..mine
        };
    }
    decision.and(mine)
}

/// This node's keys as it joins: its signing key (shared with the members that have the same
/// one) and the other keys its bundle holds, which keep being verified until they retire.
fn joining(observed: &HaObserved, bundle: &[KeyId], signing: &KeyId) -> Result<Joining, String> {
    let pem = |kid: &str| {
        observed
            .local
            .public_keys
            .get(kid)
            .cloned()
            .ok_or_else(|| format!("no public key known for kid {kid}"))
    };
    let mut keys = vec![NewKey {
        kid: signing.kid.clone(),
        alg: signing.alg,
        public_key: pem(&signing.kid)?,
        role: KeyRole::Signing,
    }];
    for key in bundle.iter().filter(|k| k.kid != signing.kid) {
        keys.push(NewKey {
            kid: key.kid.clone(),
            alg: key.alg,
            public_key: pem(&key.kid)?,
            role: KeyRole::Retiring,
        });
    }
    Ok(Joining {
        address: observed.address.map(str::to_string),
        keys,
    })
}

/// The keys every member's bundle holds now, in ring order: all of them, but the new keys
/// while they are still being generated (each node restarts once for all of them, in stage),
/// and the retiring ones once their removal is open.
pub fn desired_bundle(ring: &Ring) -> Vec<String> {
    let rotation = ring.rotation.as_ref();
    let generating = rotation.is_some_and(|r| r.phase == Phase::Generate);
    let removing = rotation.is_some_and(|r| r.retire_opened.is_some());
    ring.keys
        .iter()
        .filter(|k| !(generating && k.role == KeyRole::Next))
        .filter(|k| !(removing && k.role == KeyRole::Retiring))
        .map(|k| k.kid.clone())
        .collect()
}
