//! The phases of one rotation, in order (docs/design.md describes each and its gate). Shared by
//! the plan, the state and the decision core, so none of them depends on another for it.

use serde::{Deserialize, Serialize};

/// A phase of a rotation. Each waits for its gate before the next begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The new key pair is created in keyrot's private key directory.
    Generate,
    /// The new public key joins the verification bundle; the apiserver restarts and serves it.
    Stage,
    /// The JWKS with the new key goes to every target and is read back; caches settle.
    Publish,
    /// The signing key file becomes the new key; new tokens carry its kid.
    Promote,
    /// After `retire_after`, the old key leaves the bundle and every target; its private key is destroyed.
    Retire,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Generate,
        Phase::Stage,
        Phase::Publish,
        Phase::Promote,
        Phase::Retire,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Generate => "generate",
            Phase::Stage => "stage",
            Phase::Publish => "publish",
            Phase::Promote => "promote",
            Phase::Retire => "retire",
        }
    }

    /// The phase after this one, or `None` after retire (the rotation is complete).
    pub fn next(self) -> Option<Phase> {
        let i = Phase::ALL.iter().position(|p| *p == self)?;
        Phase::ALL.get(i + 1).copied()
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown phase {s:?}: expected one of generate, stage, publish, promote, retire"
                )
            })
    }
}
