//! The decision core's output: actions to carry out, and why nothing else can happen yet.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::Phase;
use super::migration::MigrationAction;
use crate::issuer::key_flags::KeyMode;
use crate::keys::{Alg, GenerateSpec};
use crate::state::{Cause, Role, TriggerKind};

/// One step. Effects are idempotent "make it so" requests; state-only actions change the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// First use: record the keys found in the configured files, changing nothing. The signing
    /// key is copied to `copy_signing_key_to` so a rollback can sign with it again.
    Adopt {
        keys: Vec<AdoptedKey>,
        copy_signing_key_to: PathBuf,
    },
    /// Act on (or refuse) the oldest pending trigger.
    ConsumeTrigger { kind: TriggerKind, outcome: String },
    /// Begin a rotation of `old_kid`; `bundle` is the verification bundle it starts from (what
    /// the apiserver gets back if it does not come back after the first change).
    StartRotation {
        id: String,
        cause: Cause,
        old_kid: String,
        bundle: Vec<String>,
    },
    /// A person released the phase held for approval.
    Approve { phase: Phase },
    /// A person explicitly passed the gate the rotation waits on (`keyrot approve --force`).
    ForceGate { gate: Gate },
    /// Before promotion: drop the new key (it never signed).
    Abort,
    /// After promotion: sign with the old key again; the new key then retires after retire_after.
    Rollback,
    /// Effect: create the rotation's key pair at `path` (0600).
    GenerateKey { path: PathBuf, spec: GenerateSpec },
    /// Record the generated key's kid (read back from its file).
    RecordNewKey {
        kid: String,
        alg: Alg,
        path: PathBuf,
    },
    /// Effect: the verification bundle holds exactly these keys, in this order.
    WriteBundle { kids: Vec<String> },
    /// Effect: the signing key file (and kube-controller-manager's) holds this key.
    WriteSigningKey { kid: String },
    /// Effect: restart the apiserver so it loads these files, and kube-controller-manager too
    /// when `controller_manager` (its key file may have changed since it last started); recorded
    /// once done.
    Restart {
        bundle: Vec<String>,
        signing: Option<String>,
        controller_manager: bool,
    },
    /// Effect: every target serves the documents for these keys, in this order.
    Publish { kids: Vec<String> },
    /// Every target was read back serving the expected keys: publish settle counts from now.
    ConfirmPublished,
    /// The gate of the current phase passed: move on.
    EnterPhase { phase: Phase },
    /// A gate stayed closed past its timeout: count the attempt and retry later.
    /// With `fall_back`, the apiserver is not answering: until the retry it gets the last key
    /// files it passed a gate with.
    GateFailed {
        gate: Gate,
        reason: String,
        retry_at: DateTime<Utc>,
        fall_back: bool,
    },
    /// Effect: destroy keyrot's copy of a retired key's private key.
    DestroyPrivateKey { kid: String, path: PathBuf },
    /// The old key is gone everywhere: the rotation is complete.
    CompleteRotation,
    /// A person asked to rotate while the next key is kept ready (`keepNextKey`): the rotation
    /// promotes it without waiting for the schedule.
    ReleaseNextKey,
    /// A person asked for the plan's issuer migration and none is recorded: record one.
    StartMigration {
        old_issuer: String,
        new_issuer: String,
    },
    /// Effect: one step of the issuer migration ([`super::migration`]), recorded once done.
    Migrate(MigrationAction),
    /// A person asked to roll the issuer migration back: from now on only the rollback goes
    /// on. With `restart`, the flags may have changed, so kube-apiserver restarts once they are
    /// back.
    StartMigrationRollback { restart: bool },
    /// Effect: the flag file gets its bytes from before the migration back; with `restart`
    /// kube-apiserver restarts and must issue as the old issuer again. The record then goes.
    RestoreFlags { restart: bool },
    /// Effect (`flags: manual`): tell a person how to put the flags back.
    AskPersonToRestore,
    /// Effect (`flags: manual`): a person put the flags back; the apiserver must issue as the
    /// old issuer again. The record then goes.
    CheckRestored,
    /// Nothing the migration changed needs undoing: the record goes.
    ForgetMigration,
    /// A person asked to switch kube-apiserver to `to`: record it (replacing a switch the other
    /// way, which this one rolls back).
    StartSignerSwitch { to: KeyMode },
    /// Effect: the flag file (and kubeadm's patches) give kube-apiserver `to`; it restarts.
    SwitchKeyFlags { to: KeyMode },
    /// The apiserver takes its keys as the flags say: the switch is done.
    CompleteSignerSwitch,
}

impl Action {
    /// True for actions that change the world (files, processes, targets); the others only
    /// change keyrot's record.
    pub fn is_effect(&self) -> bool {
        matches!(
            self,
            Action::Adopt { .. }
                | Action::GenerateKey { .. }
                | Action::WriteBundle { .. }
                | Action::WriteSigningKey { .. }
                | Action::Restart { .. }
                | Action::Publish { .. }
                | Action::DestroyPrivateKey { .. }
                | Action::Migrate(_)
                | Action::RestoreFlags { .. }
                | Action::AskPersonToRestore
                | Action::CheckRestored
                | Action::SwitchKeyFlags { .. }
        )
    }

    /// True for the issuer migration's actions (and its rollback's).
    pub fn is_issuer_migration(&self) -> bool {
        matches!(
            self,
            Action::StartMigration { .. }
                | Action::Migrate(_)
                | Action::StartMigrationRollback { .. }
                | Action::RestoreFlags { .. }
                | Action::AskPersonToRestore
                | Action::CheckRestored
                | Action::ForgetMigration
        )
    }
}

/// A key found at adoption, with the role keyrot gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedKey {
    pub kid: String,
    pub alg: Alg,
    pub role: Role,
}

/// The named checks a rotation waits on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// The cluster's files are usable as they are (present, signing key verifiable).
    ClusterKeys,
    /// A person must approve the phase.
    Approval,
    /// The last attempt failed; waiting for the retry time.
    Backoff,
    /// The apiserver serves the verification keys of the bundle.
    ApiserverServesBundle,
    /// Every target serves exactly the expected keys.
    TargetsServeKeys,
    /// Caches that held the old JWKS have expired.
    PublishSettle,
    /// Every relying party with a canary accepted a token signed by the new key.
    RelyingPartiesAccept,
    /// New tokens carry the new key's kid.
    NewKeySigns,
    /// Tokens of the old key may still be in use.
    RetireAfter,
    /// The next scheduled rotation is not due yet.
    Schedule,
    /// An issuer migration is recorded for the plan's issuer: no rotation starts.
    IssuerMigration,
    /// The migration's flag file runs the plan's issuer (checked before the flags change).
    MigrationFlags,
    /// The old issuer is dropped only once tokens issued under it can have expired.
    OldIssuerGrace,
    /// kube-apiserver is switched to keyrot's signer only once it serves the key files' set.
    SignerServes,
    /// After a switch, the apiserver must take its keys as the flags say: it serves the key
    /// files' keys and a new token is signed with the signing key.
    ApiserverSwitched,
    /// HA: every expected node is a member of the ring (and every apiserver the `kubernetes`
    /// EndpointSlice lists belongs to one).
    Membership,
    /// HA: every member added its key for the rotation.
    MembersGenerate,
    /// HA: every member's apiserver serves the keys its bundle must hold.
    MembersServe,
    /// HA: every member's apiserver signs with its new key.
    MembersSign,
    /// HA: another node is restarting its apiserver; one at a time.
    RestartTurn,
    /// HA: this node's Lease is older than the ring's leader epoch.
    Leader,
}

impl Gate {
    pub const ALL: [Gate; 21] = [
        Gate::ClusterKeys,
        Gate::Approval,
        Gate::Backoff,
        Gate::ApiserverServesBundle,
        Gate::TargetsServeKeys,
        Gate::PublishSettle,
        Gate::RelyingPartiesAccept,
        Gate::NewKeySigns,
        Gate::RetireAfter,
        Gate::Schedule,
        Gate::IssuerMigration,
        Gate::MigrationFlags,
        Gate::OldIssuerGrace,
        Gate::SignerServes,
        Gate::ApiserverSwitched,
        Gate::Membership,
        Gate::MembersGenerate,
        Gate::MembersServe,
        Gate::MembersSign,
        Gate::RestartTurn,
        Gate::Leader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Gate::ClusterKeys => "cluster-keys",
            Gate::Approval => "approval",
            Gate::Backoff => "backoff",
            Gate::ApiserverServesBundle => "apiserver-serves-bundle",
            Gate::TargetsServeKeys => "targets-serve-keys",
            Gate::PublishSettle => "publish-settle",
            Gate::RelyingPartiesAccept => "relying-parties-accept",
            Gate::NewKeySigns => "new-key-signs",
            Gate::RetireAfter => "retire-after",
            Gate::Schedule => "schedule",
            Gate::IssuerMigration => "issuer-migration",
            Gate::MigrationFlags => "migration-flags",
            Gate::OldIssuerGrace => "old-issuer-grace",
            Gate::SignerServes => "signer-serves",
            Gate::ApiserverSwitched => "apiserver-switched",
            Gate::Membership => "membership",
            Gate::MembersGenerate => "members-generate",
            Gate::MembersServe => "members-serve",
            Gate::MembersSign => "members-sign",
            Gate::RestartTurn => "restart-turn",
            Gate::Leader => "leader",
        }
    }
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A closed gate and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub gate: Gate,
    pub reason: String,
}

/// What to do now, when to look again, and what holds things up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// In order; usually one. Empty when waiting.
    pub actions: Vec<Action>,
    /// When deciding again could give a different answer without any event (`None`: only an
    /// event such as a trigger can change anything).
    pub wake_at: Option<DateTime<Utc>>,
    pub blocked_by: Vec<Blocked>,
}

impl Decision {
    pub(super) fn act(action: Action) -> Self {
        Decision {
            actions: vec![action],
            ..Decision::default()
        }
    }

    pub(super) fn wait(
        gate: Gate,
        reason: impl Into<String>,
        wake_at: Option<DateTime<Utc>>,
    ) -> Self {
        Decision {
            actions: Vec::new(),
            wake_at,
            blocked_by: vec![Blocked {
                gate,
                reason: reason.into(),
            }],
        }
    }
}
