//! What keyrot saw of the world just before deciding: files, probes, published documents.

use std::path::PathBuf;

use crate::issuer::key_flags::KeyMode;
use crate::keys::Alg;
use crate::migration::grace::{Grace, GraceError};

/// A key by kid and algorithm: all the decision core needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId {
    pub kid: String,
    pub alg: Alg,
}

/// The result of asking something outside keyrot's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed<T> {
    /// The plan configures no way to ask (probe: none).
    NotConfigured,
    /// Asked, and the question failed (connection refused, bad answer, ...).
    Failed(String),
    Seen(T),
}

/// One publication target's public documents, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetView {
    pub name: String,
    /// The kids of the JWKS the target serves, in order (empty when it serves nothing yet).
    pub kids: Probed<Vec<String>>,
    /// The discovery document it serves, byte for byte as read (`None`: nothing there yet).
    /// `NotConfigured` when the target holds none (a GCP provider is given the JWKS alone) or
    /// was not read back, which `kids` then says too.
    pub discovery: Probed<Option<Vec<u8>>>,
}

/// What a target's relying party said to the last canary token exchanged with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryResult {
    /// The plan sets no canary for the target.
    NotConfigured,
    /// No canary was exchanged with it yet.
    NotTried,
    /// It exchanged a token signed by `kid` for credentials (discarded at once).
    Accepted { kid: String },
    /// It refused a token signed by `kid`, or could not be asked: `error` is its own text.
    Refused { kid: String, error: String },
}

/// One target's canary result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryView {
    pub target: String,
    pub result: CanaryResult,
}

/// The world as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Keys in the verification bundle keyrot manages, in file order; `None` if the file is missing.
    pub bundle: Option<Vec<KeyId>>,
    /// Keys in the plan's extra verification files (never written).
    pub extra: Vec<KeyId>,
    /// The key in the signing key file; `None` if the file is missing.
    pub signing: Option<KeyId>,
    /// The key in kube-controller-manager's private key file, when the plan names one.
    pub controller_manager_signing: Option<KeyId>,
    /// keyrot's private key files: each key and its path.
    pub private_keys: Vec<(KeyId, PathBuf)>,
    /// `*.key` files in keyrot's directory it set aside (unreadable, damaged, symlinked), each
    /// "path: reason": shown, never used.
    pub unusable_private_keys: Vec<String>,
    /// The kids the apiserver serves at /openid/v1/jwks.
    pub apiserver: Probed<Vec<String>>,
    /// The kid in the header of a freshly requested token.
    pub token_kid: Probed<String>,
    pub targets: Vec<TargetView>,
    /// The last canary exchange with each target's relying party, in the plan's target order.
    pub canaries: Vec<CanaryView>,
    /// What the plan's issuer migration depends on; `None` when the plan has none.
    pub migration: Option<MigrationView>,
    /// With a `signer.switch` section: where the flag file has kube-apiserver take its keys from,
    /// and whether keyrot's signer serves the key files' set.
    pub key_mode: Option<KeyModeView>,
    /// In signer mode (`restart: externalSigner`): when the key set keyrot's signer serves was
    /// made, and when the one the apiserver last fetched was; `None` in file mode.
    pub key_sets: Option<KeySetStamps>,
}

/// What a switch between key files and the signer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyModeView {
    /// Where the flag file has kube-apiserver take its keys from, or why it cannot be read.
    pub flags: Result<KeyMode, String>,
    /// Whether keyrot's signer serves the key files' set and signs with the signing key (read
    /// only while a switch is recorded; `Ok` otherwise).
    pub signer_serves: Result<(), String>,
}

/// Two data_timestamps of the external signer's key set, in milliseconds since the epoch (the
/// gauge is a float of seconds; whole milliseconds compare exactly): the apiserver holds the
/// signer's current set once its stamp is at least the signer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetStamps {
    /// FetchKeys' `data_timestamp` from keyrot's signer.
    pub signer: Probed<i64>,
    /// The apiserver's `apiserver_externaljwt_fetch_keys_data_timestamp`.
    pub apiserver: Probed<i64>,
}

/// Seconds since the epoch, as the gauge and FetchKeys give them, in whole milliseconds.
pub fn stamp_millis(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

/// What keyrot read for the plan's issuer migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationView {
    /// Why the flag file does not run the plan's issuer, if it does not (`flags: manual`:
    /// never). Before the flags change the migration must not start from another issuer.
    pub issuer_problem: Option<String>,
    /// How long the old issuer stays accepted, or why the flags that bound it cannot be read.
    pub grace: Result<Grace, GraceError>,
    /// The editors still hold the flag file's bytes from before the migration: a step edited it.
    pub original_backup: bool,
}

impl Observed {
    pub fn bundle_kids(&self) -> Vec<String> {
        self.bundle
            .iter()
            .flatten()
            .map(|k| k.kid.clone())
            .collect()
    }

    pub fn signing_kid(&self) -> Option<&str> {
        self.signing.as_ref().map(|k| k.kid.as_str())
    }

    pub fn private_key(&self, kid: &str) -> Option<&(KeyId, PathBuf)> {
        self.private_keys.iter().find(|(k, _)| k.kid == kid)
    }

    /// The keys the cluster verifies with as its files list them, bundle first: what the
    /// issuer documents list, as kube-apiserver's JWKS does.
    pub fn verification_kids(&self) -> Vec<String> {
        self.bundle
            .iter()
            .flatten()
            .chain(&self.extra)
            .map(|k| k.kid.clone())
            .collect()
    }

    pub fn private_key_at(&self, path: &std::path::Path) -> Option<&KeyId> {
        self.private_keys
            .iter()
            .find(|(_, p)| p == path)
            .map(|(k, _)| k)
    }
}
