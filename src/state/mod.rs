//! keyrot's recorded state: the key ring and the rotation in progress. The file format and the
//! lock live in `store`.

mod check;
mod store;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::Alg;
use crate::phase::Phase;

pub use check::{Inconsistency, check};
pub use store::{Holder, LEGACY_MIGRATION_FILE, StateError, StateStore, StoreLock};

/// The state file format this build writes and reads. Newer files are refused, never downgraded.
pub const STATE_VERSION: u32 = 2;

/// Everything keyrot remembers between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// Every key keyrot knows, oldest first.
    pub keys: Vec<KeyRecord>,
    pub rotation: Option<Rotation>,
    /// Requests from `keyrot rotate/approve/abort/rollback` not yet acted on, oldest first.
    pub triggers: Vec<Trigger>,
    /// When keyrot first recorded this cluster's keys (the schedule counts from here at first).
    pub adopted_at: Option<DateTime<Utc>>,
    pub last_rotation_started_at: Option<DateTime<Utc>>,
    pub last_rotation_completed_at: Option<DateTime<Utc>>,
    /// The issuer migration in record (format 2; before, `issuer-migration.json` beside this
    /// file, imported on the first locked open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_migration: Option<crate::migration::record::MigrationRecord>,
    /// A switch of kube-apiserver between its key files and keyrot's signer
    /// (`keyrot switch-signer`), from the request until the apiserver is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_switch: Option<SignerSwitchRecord>,
}

/// A switch of where kube-apiserver takes its keys from, in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerSwitchRecord {
    pub to: crate::issuer::key_flags::KeyMode,
    pub requested_at: DateTime<Utc>,
    /// When the flag file was changed (and kube-apiserver restarted); then it is checked.
    #[serde(default)]
    pub flags_changed_at: Option<DateTime<Utc>>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            keys: Vec::new(),
            rotation: None,
            triggers: Vec::new(),
            adopted_at: None,
            last_rotation_started_at: None,
            last_rotation_completed_at: None,
            issuer_migration: None,
            signer_switch: None,
        }
    }
}

/// A key in the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub kid: String,
    pub alg: Alg,
    pub role: Role,
    /// keyrot's copy of the private key, when keyrot holds one (generated, or adopted signing key).
    pub private_key: Option<PathBuf>,
    /// Every role the key has had, with the time it took it, oldest first.
    pub history: Vec<RoleChange>,
}

impl KeyRecord {
    /// When the key took `role`, if it ever did.
    pub fn entered(&self, role: Role) -> Option<DateTime<Utc>> {
        self.history
            .iter()
            .rev()
            .find(|c| c.role == role)
            .map(|c| c.at)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub role: Role,
    pub at: DateTime<Utc>,
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Generated, not yet in the verification bundle.
    Next,
    /// In the verification bundle; the apiserver accepts it.
    Staged,
    /// Staged and confirmed in every published JWKS.
    Published,
    /// Signs new tokens.
    Active,
    /// Stopped signing; still verifiable until retire_after has passed.
    Retiring,
    /// Gone from the bundle and every target; its private key destroyed.
    Retired,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Next => "next",
            Role::Staged => "staged",
            Role::Published => "published",
            Role::Active => "active",
            Role::Retiring => "retiring",
            Role::Retired => "retired",
        }
    }
}

/// The rotation in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// Unique and stable: names the new key's file and the restart annotation.
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// What started it.
    pub cause: Cause,
    /// The key that signed when the rotation began.
    pub old_kid: String,
    /// The key being rolled out, once generated.
    pub new_kid: Option<String>,
    pub phase: Phase,
    pub phase_started_at: DateTime<Utc>,
    /// True once a person asked to go back to the old key; the rotation then runs old <- new.
    pub rolled_back: bool,
    /// True from the moment keyrot set out to write the new key into a signing key file (recorded
    /// before the write): from then on the new key may have signed, and abort is refused.
    #[serde(default)]
    pub new_key_may_sign: bool,
    /// True once a person aborted before promotion; the new key (now `old_kid`) is being removed.
    #[serde(default)]
    pub aborted: bool,
    /// Phases a person approved (for phases the plan holds for approval).
    pub approved: Vec<Phase>,
    /// Gates of the current phase a person forced open (`keyrot approve --force`).
    #[serde(default)]
    pub forced: Vec<crate::decision::Gate>,
    /// When each gate of the current phase was last evaluated, and how it went.
    pub gates: Vec<GateRecord>,
    /// Failed attempts of the current phase; drives the backoff.
    pub attempts: u32,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// What the apiserver was last restarted with: restarts are needed only when files differ.
    pub apiserver_loaded: Option<Loaded>,
    /// The key files the apiserver last passed a gate with: what it gets back when it does not
    /// come back after a change.
    #[serde(default)]
    pub last_good: Option<Loaded>,
    /// Set when the apiserver did not come back: until `retry_at` the files are put back to this.
    #[serde(default)]
    pub fallback: Option<Loaded>,
    /// What was last published to the targets, so a slow read-back does not cause republishing.
    #[serde(default)]
    pub published: Option<Published>,
    /// When every target was first confirmed to serve the current documents (publish settle).
    pub published_confirmed_at: Option<DateTime<Utc>>,
    /// The latest time an effect of this rotation was started, recorded before the effect
    /// (invariant 6). Only ever moves forward, so a clock set back cannot shorten a wait.
    #[serde(default)]
    pub last_effect_at: Option<DateTime<Utc>>,
    /// When the new key started signing (retire_after counts from here).
    pub promoted_at: Option<DateTime<Utc>>,
}

/// The key files a component was restarted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Loaded {
    pub bundle: Vec<String>,
    pub signing: Option<String>,
    pub at: DateTime<Utc>,
}

/// The JWKS keys last written to every target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    pub kids: Vec<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateRecord {
    pub gate: String,
    pub passed: bool,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    Schedule,
    Manual,
    /// `keepNextKey`: started as soon as the last rotation completed, to stage and publish the
    /// next key; it promotes when the schedule (or `keyrot rotate`) releases it.
    #[serde(rename = "next-key")]
    NextKey,
}

/// A person's request, recorded until the decision core acts on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub kind: TriggerKind,
    pub requested_at: DateTime<Utc>,
    /// Pass a closed gate: only where a person explicitly asked, logged loudly.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    Rotate,
    Approve,
    Abort,
    Rollback,
    /// Start (or continue) the plan's issuer migration.
    #[serde(rename = "migrate-issuer")]
    MigrateIssuer,
    /// Put the issuer migration's flag changes back and forget it.
    #[serde(rename = "rollback-issuer-migration")]
    RollbackIssuerMigration,
    /// Switch kube-apiserver to keyrot's external signer (`keyrot switch-signer`).
    #[serde(rename = "use-signer")]
    UseSigner,
    /// Switch it back to its key files (`keyrot switch-signer --back`).
    #[serde(rename = "use-key-files")]
    UseKeyFiles,
}
