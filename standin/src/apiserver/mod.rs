//! The kube-apiserver stand-in's state: what it read at (re)start and what it keeps across restarts.
//!
//! Like kube-apiserver it reads `--service-account-key-file` and
//! `--service-account-signing-key-file` once per start and never again (nothing is
//! hot-reloaded), refuses to start on a file without keys, and does not check that the signing
//! key's public half is among the verification keys. With `--service-account-signing-endpoint`
//! instead, the keys come from the external signer (`external`) and change without a restart.
//! ServiceAccounts live in etcd in a real cluster, so here they outlive restarts.

pub mod external;
pub(crate) mod objects;
mod routes;
mod service_accounts;
mod tokens;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use keyrot::documents::{DiscoveryDocument, JWKS_PATH, render_jwks};
use keyrot::keys::{SigningKey, VerificationKey, load_verification_keys};

pub use service_accounts::ServiceAccounts;
pub use tokens::{KubernetesClaims, Reviewed, ServiceAccountRef, TokenClaims};

/// The flags that decide what the stand-in reads and serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the keys come from.
    pub keys: KeyFlags,
    /// `--service-account-issuer`: the first issues tokens, all are accepted.
    pub issuers: Vec<String>,
    /// `--service-account-jwks-uri`.
    pub jwks_uri: Option<String>,
    /// `--api-audiences`; `None`: kube defaults it to the issuers.
    pub api_audiences: Option<Vec<String>>,
}

/// `--service-account-key-file` and `--service-account-signing-key-file`, or
/// `--service-account-signing-endpoint` (kube-apiserver refuses both at once).
#[derive(Debug, Clone)]
pub enum KeyFlags {
    Files {
        /// `--service-account-key-file`, in flag order.
        key_files: Vec<PathBuf>,
        /// `--service-account-signing-key-file`.
        signing_key_file: PathBuf,
    },
    SigningEndpoint(PathBuf),
}

/// Why kube-apiserver would not start with these flags and files.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--service-account-issuer is required")]
    NoIssuer,
    #[error("--service-account-issuer may not be empty")]
    EmptyIssuer,
    #[error("--service-account-issuer {0:?} is given more than once")]
    DuplicateIssuer(String),
    #[error("--service-account-key-file: {0}")]
    KeyFile(#[from] keyrot::keys::reader::KeyFileError),
    #[error("--service-account-signing-key-file: {0}")]
    SigningKey(#[from] keyrot::keys::signing::SigningKeyError),
    #[error("--service-account-signing-endpoint: {0}")]
    Signer(String),
}

/// One run of the stand-in, between two restarts.
pub struct Apiserver {
    issuers: Vec<String>,
    api_audiences: Vec<String>,
    jwks_uri: String,
    keys: Keys,
    accounts: Arc<ServiceAccounts>,
}

/// Where this run's keys come from.
enum Keys {
    /// Read from the key files at start.
    Files {
        keys: Vec<VerificationKey>,
        /// Boxed: a private key is large beside the signer's handle.
        signing: Box<SigningKey>,
        /// The two discovery bodies, or None when kube would not serve them (invalid issuer).
        documents: Option<Documents>,
    },
    /// The external signer's current set.
    Signer(external::ExternalSigner),
}

struct Documents {
    jwks: String,
    discovery: String,
}

impl Apiserver {
    /// Reads the key files as kube-apiserver does at start. `external` is the address clients
    /// reach, from which kube derives the default jwks_uri.
    pub fn start(
        config: &Config,
        external: SocketAddr,
        accounts: Arc<ServiceAccounts>,
    ) -> Result<Self, StartError> {
        check_issuers(&config.issuers)?;
        let jwks_uri = config
            .jwks_uri
            .clone()
            .unwrap_or_else(|| format!("https://{external}/{JWKS_PATH}"));
        let keys = match &config.keys {
            KeyFlags::Files {
                key_files,
                signing_key_file,
            } => {
                let loaded = load_verification_keys(key_files)?;
                for warning in &loaded.warnings {
                    eprintln!("warning: {warning}");
                }
                let signing = Box::new(SigningKey::from_pem_file(signing_key_file)?);
                let documents = documents(&config.issuers[0], &jwks_uri, &loaded.keys);
                Keys::Files {
                    keys: loaded.keys,
                    signing,
                    documents,
                }
            }
            KeyFlags::SigningEndpoint(socket) => {
                let signer = external::ExternalSigner::start(socket).map_err(StartError::Signer)?;
                Keys::Signer(signer)
            }
        };
        Ok(Self {
            issuers: config.issuers.clone(),
            api_audiences: config
                .api_audiences
                .clone()
                .unwrap_or_else(|| config.issuers.clone()),
            jwks_uri,
            keys,
            accounts,
        })
    }

    /// The verification keys with the kid tokens name, in the order the apiserver holds them:
    /// the files' (flag and file order) or the signer's set as last fetched.
    pub fn keys(&self) -> Vec<(String, VerificationKey)> {
        match &self.keys {
            Keys::Files { keys, .. } => keys
                .iter()
                .map(|k| (k.kid().to_string(), k.clone()))
                .collect(),
            Keys::Signer(signer) => signer
                .key_set()
                .keys
                .into_iter()
                .map(|listed| (listed.kid, listed.key))
                .collect(),
        }
    }

    /// What this run signs with, for the log: the signing key file's kid, or the signer.
    pub fn describe_keys(&self) -> String {
        match &self.keys {
            Keys::Files { keys, signing, .. } => format!(
                "{} verification keys, signing with kid {}",
                keys.len(),
                signing.public().kid()
            ),
            Keys::Signer(signer) => format!(
                "{} keys from the external signer",
                signer.key_set().keys.len()
            ),
        }
    }

    /// The data_timestamp of the signer's set the apiserver holds, in seconds since the epoch.
    fn signer_data_timestamp(&self) -> Option<f64> {
        match &self.keys {
            Keys::Files { .. } => None,
            Keys::Signer(signer) => Some(signer.key_set().data_timestamp),
        }
    }

    /// The JWKS and discovery document as served now; `None` when kube would not serve them.
    fn documents_now(&self) -> Option<Documents> {
        match &self.keys {
            Keys::Files { documents, .. } => documents.as_ref().map(|d| Documents {
                jwks: d.jwks.clone(),
                discovery: d.discovery.clone(),
            }),
            // Verify-only keys are left out of discovery, as kube leaves them out.
            Keys::Signer(signer) => {
                let published: Vec<VerificationKey> = signer
                    .key_set()
                    .keys
                    .into_iter()
                    .filter(|listed| !listed.excluded)
                    .map(|listed| listed.key)
                    .collect();
                documents(&self.issuers[0], &self.jwks_uri, &published)
            }
        }
    }

    /// The issuer of new tokens.
    pub fn issuer(&self) -> &str {
        &self.issuers[0]
    }

    /// `--api-audiences`, or the issuers when it is not set, as kube defaults it.
    fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }
}

/// The two documents kube renders for `keys`, or `None` (logged) when the issuer is not a URL
/// kube serves discovery for.
fn documents(issuer: &str, jwks_uri: &str, keys: &[VerificationKey]) -> Option<Documents> {
    match DiscoveryDocument::new(issuer, jwks_uri, keys) {
        Ok(discovery) => Some(Documents {
            jwks: render_jwks(keys),
            discovery: discovery.render(),
        }),
        Err(e) => {
            // kube-apiserver only logs this and leaves both endpoints out.
            eprintln!("not serving the OIDC discovery endpoints: {e}");
            None
        }
    }
}

fn check_issuers(issuers: &[String]) -> Result<(), StartError> {
    if issuers.is_empty() {
        return Err(StartError::NoIssuer);
    }
    let mut seen = HashSet::new();
    for issuer in issuers {
        if issuer.is_empty() {
            return Err(StartError::EmptyIssuer);
        }
        if !seen.insert(issuer) {
            return Err(StartError::DuplicateIssuer(issuer.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_must_be_present_non_empty_and_distinct() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(check_issuers(&[]), Err(StartError::NoIssuer)));
        assert!(matches!(
            check_issuers(&s(&["https://a", ""])),
            Err(StartError::EmptyIssuer)
        ));
        assert!(matches!(
            check_issuers(&s(&["https://a", "https://b", "https://a"])),
            Err(StartError::DuplicateIssuer(i)) if i == "https://a"
        ));
        assert!(check_issuers(&s(&["https://a", "https://b"])).is_ok());
    }
}
