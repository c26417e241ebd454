//! The ring: the cluster-wide record HA nodes share through one ConfigMap. Public keys, their
//! roles, the members and what each one acknowledged, the rotation in progress, whose turn it is
//! to restart. Never a private key. Read and written whole, by compare-and-swap.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::Alg;
use crate::phase::Phase;

/// The ring's format; a ring of another format is refused, never rewritten.
pub const RING_FORMAT: u32 = 1;

/// How many node removals the ring remembers (the audit trail of `keyrot node remove`).
pub const REMOVALS_KEPT: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ring {
    pub format: u32,
    /// The `leaseTransitions` of the Lease the last leader held when it wrote the ring: a
    /// leader whose epoch is lower was deposed and writes nothing more (fencing).
    pub leader_epoch: i32,
    /// When the first node created the ring: the schedule's anchor before any rotation.
    pub created: DateTime<Utc>,
    /// Every public key any member's apiserver verifies, oldest first (bundle and JWKS order).
    pub keys: Vec<RingKey>,
    /// The control-plane nodes, by node name.
    pub members: BTreeMap<String, Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<ClusterRotation>,
    /// A person asked for a rotation (`keyrot rotate` on any node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    /// The one node allowed to change its files and restart its apiserver now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<Turn>,
    /// When the last rotation completed: the schedule's anchor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed: Option<DateTime<Utc>>,
    /// `keyrot node remove`, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removals: Vec<Removal>,
}

/// A public key of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingKey {
    pub kid: String,
    pub alg: Alg,
    /// The SPKI `PUBLIC KEY` PEM.
    pub public_key: String,
    /// The nodes holding its private key: one, or several for a key they share (kubeadm copies
    /// one `sa.key` to every control-plane node it joins).
    pub owners: BTreeSet<String>,
    pub role: KeyRole,
    /// When it took this role.
    pub since: DateTime<Utc>,
}

/// What a key is for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Its owners' apiservers sign with it.
    Signing,
    /// Generated for the rotation in progress; its owner signs with it once promotion is safe.
    Next,
    /// Nobody signs with it since `since`; it leaves once tokens it signed can have expired.
    Retiring,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Signing => "signing",
            KeyRole::Next => "next",
            KeyRole::Retiring => "retiring",
        }
    }
}

/// One control-plane node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    /// The address its apiserver advertises (as the `kubernetes` EndpointSlice lists it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub joined: DateTime<Utc>,
    /// What the node last saw its own apiserver do.
    pub ack: Ack,
}

/// A node's acknowledgement: what its apiserver serves and signs with, as the node probed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ack {
    /// The kids of its `/openid/v1/jwks`, in order.
    pub serves: Vec<String>,
    /// The kid of a token it just issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signs: Option<String>,
    /// Since when both have been so (written only when they change).
    pub since: DateTime<Utc>,
}

/// The rotation in progress, cluster-wide: the leader advances it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRotation {
    /// Names every node's new private key file (`<id>.key`).
    pub id: String,
    pub started: DateTime<Utc>,
    /// Why: `schedule`, or `requested by NODE`.
    pub cause: String,
    pub phase: Phase,
    pub phase_since: DateTime<Utc>,
    /// The kids every target was read back serving, and when: the publish settle counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Published>,
    /// When the retiring keys' grace was over and no node signed with them: from then on they
    /// leave every bundle, then every target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_opened: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Published {
    pub kids: Vec<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    pub by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Turn {
    pub node: String,
    pub since: DateTime<Utc>,
    /// When the node last restarted its apiserver in this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted: Option<DateTime<Utc>>,
}

/// An operator removed a node that is gone for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Removal {
    pub node: String,
    /// Who ran `keyrot node remove`: the node it ran on and the local user.
    pub by: String,
    pub at: DateTime<Utc>,
    /// The kids that were its own and became retiring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_kids: Vec<String>,
}

/// A ring that cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("the ring's ring.json is not a keyrot ring: {0}")]
    Malformed(String),
    #[error(
        "the ring has format {found}; this keyrot reads format {RING_FORMAT} (upgrade keyrot on every node)"
    )]
    Format { found: u32 },
    #[error("the ring is inconsistent: {0}")]
    Inconsistent(String),
}

impl Ring {
    /// An empty ring created at `now`.
    pub fn new(now: DateTime<Utc>) -> Ring {
        Ring {
            format: RING_FORMAT,
            leader_epoch: 0,
            created: now,
            keys: Vec::new(),
            members: BTreeMap::new(),
            rotation: None,
            request: None,
            turn: None,
            last_completed: None,
            removals: Vec::new(),
        }
    }

    /// Parses and checks `ring.json` as the API returned it.
    pub fn parse(text: &str) -> Result<Ring, RingError> {
        let format: FormatOnly =
            serde_json::from_str(text).map_err(|e| RingError::Malformed(e.to_string()))?;
        if format.format != RING_FORMAT {
            return Err(RingError::Format {
                found: format.format,
            });
        }
        let ring: Ring =
            serde_json::from_str(text).map_err(|e| RingError::Malformed(e.to_string()))?;
        ring.check()?;
        Ok(ring)
    }

    /// The JSON stored as `ring.json`.
    pub fn render(&self) -> String {
        serde_json::to_string_pretty(self).expect("a ring always serializes")
    }

    /// What every writer keeps true; a ring that breaks it was edited by hand or by a bug.
    fn check(&self) -> Result<(), RingError> {
        let mut seen = BTreeSet::new();
        for key in &self.keys {
            if !seen.insert(key.kid.as_str()) {
                return Err(RingError::Inconsistent(format!(
                    "kid {} is listed twice",
                    key.kid
                )));
            }
            let parsed = crate::keys::reader::parse_file(
                std::path::Path::new("ring.json"),
                key.public_key.as_bytes(),
            );
            let kids: Vec<&str> = parsed.keys().map(|k| k.kid()).collect();
            if kids != [key.kid.as_str()] {
                return Err(RingError::Inconsistent(format!(
                    "the public key listed as {} holds [{}]",
                    key.kid,
                    kids.join(", ")
                )));
            }
        }
        for member in self.members.keys() {
            let next = self
                .keys
                .iter()
                .filter(|k| k.role == KeyRole::Next && k.owners.contains(member))
                .count();
            if next > 1 {
                return Err(RingError::Inconsistent(format!(
                    "node {member} owns {next} next keys"
                )));
            }
        }
        Ok(())
    }

    pub fn key(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The key `node` signs with between rotations (and until its next key is promoted).
    pub fn signing_key_of(&self, node: &str) -> Option<&RingKey> {
        self.owned(node, KeyRole::Signing)
    }

    /// The key generated for `node` in the rotation in progress.
    pub fn next_key_of(&self, node: &str) -> Option<&RingKey> {
        self.owned(node, KeyRole::Next)
    }

    fn owned(&self, node: &str, role: KeyRole) -> Option<&RingKey> {
        self.keys
            .iter()
            .find(|k| k.role == role && k.owners.contains(node))
    }

    /// The kids of keys in `role`, in ring order.
    pub fn kids_in(&self, role: KeyRole) -> Vec<String> {
        self.keys
            .iter()
            .filter(|k| k.role == role)
            .map(|k| k.kid.clone())
            .collect()
    }

    pub fn all_kids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }
}

#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}
