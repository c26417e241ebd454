//! What `keyrot doctor` saw: plain values, so the findings can be computed and tested without I/O.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::adapters::probe::ServedDiscovery;
use crate::issuer::IssuerFlags;
use crate::plan::Issuer;

/// A value that was read, or why it could not be.
pub type Read<T> = Result<T, String>;

/// Everything one doctor run looked at; a `None` or empty list was not asked for.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// The issuer the plan (or `--issuer`) names.
    pub issuer: Option<Issuer>,
    /// `--service-account-signing-key-file`.
    pub signing: Option<KeyFileSeen>,
    /// Every `--service-account-key-file`, in flag order.
    pub bundle: Option<BundleSeen>,
    /// kube-controller-manager's `--service-account-private-key-file`.
    pub controller_manager: Option<KeyFileSeen>,
    /// The file kube-apiserver's issuer flags live in.
    pub flags: Option<FlagsSeen>,
    pub apiservers: Vec<ApiserverSeen>,
    pub targets: Vec<TargetSeen>,
}

/// A private key file and the kid of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFileSeen {
    pub path: PathBuf,
    pub kid: Read<String>,
}

/// The verification files, read with kube-apiserver's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSeen {
    pub paths: Vec<PathBuf>,
    /// The kids in the order kube-apiserver serves them.
    pub kids: Read<Vec<String>>,
    /// Blocks kube-apiserver skips without a word, one line each.
    pub skipped: Vec<String>,
    /// The latest modification time of the key files (verification and signing).
    pub changed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagsSeen {
    pub path: PathBuf,
    pub flags: Read<IssuerFlags>,
}

/// One apiserver, asked through a kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiserverSeen {
    /// The kubeconfig it was reached through.
    pub name: String,
    /// The kids of its `/openid/v1/jwks`, in order.
    pub jwks: Read<Vec<String>>,
    pub discovery: Read<ServedDiscovery>,
    /// When this node's kube-apiserver process started, when it could be told.
    pub started_at: Read<DateTime<Utc>>,
}

/// One place the documents are published, read as a cloud verifier reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSeen {
    pub name: String,
    /// Where the JWKS was read (a URL, a file, a provider).
    pub at: String,
    /// Its kids in order, or why the documents could not be read (discovery included).
    pub kids: Read<Vec<String>>,
}
