//! The kube-apiserver stand-in's state: what it read at (re)start and what it keeps across restarts.
//!
//! Like kube-apiserver it reads `--service-account-key-file` and
//! `--service-account-signing-key-file` once per start and never again (nothing is
//! hot-reloaded), refuses to start on a file without keys, and does not check that the signing
//! key's public half is among the verification keys. ServiceAccounts live in etcd in a real
//! cluster, so here they outlive restarts.

mod objects;
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
    /// `--service-account-key-file`, in flag order.
    pub key_files: Vec<PathBuf>,
    /// `--service-account-signing-key-file`.
    pub signing_key_file: PathBuf,
    /// `--service-account-issuer`: the first issues tokens, all are accepted.
    pub issuers: Vec<String>,
    /// `--service-account-jwks-uri`.
    pub jwks_uri: Option<String>,
    /// `--api-audiences`; `None`: kube defaults it to the issuers.
    pub api_audiences: Option<Vec<String>>,
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
}

/// One run of the stand-in, between two restarts.
pub struct Apiserver {
    issuers: Vec<String>,
    api_audiences: Vec<String>,
    keys: Vec<VerificationKey>,
    signing: SigningKey,
    /// The two discovery bodies, or None when kube would not serve them (invalid issuer URL).
    documents: Option<Documents>,
    accounts: Arc<ServiceAccounts>,
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
        let loaded = load_verification_keys(&config.key_files)?;
        for warning in &loaded.warnings {
            eprintln!("warning: {warning}");
        }
        let signing = SigningKey::from_pem_file(&config.signing_key_file)?;
        let jwks_uri = config
            .jwks_uri
            .clone()
            .unwrap_or_else(|| format!("https://{external}/{JWKS_PATH}"));
        let documents = match DiscoveryDocument::new(&config.issuers[0], &jwks_uri, &loaded.keys) {
            Ok(discovery) => Some(Documents {
                jwks: render_jwks(&loaded.keys),
                discovery: discovery.render(),
            }),
            Err(e) => {
                // kube-apiserver only logs this and leaves both endpoints out.
                eprintln!("not serving the OIDC discovery endpoints: {e}");
                None
            }
        };
        Ok(Self {
            issuers: config.issuers.clone(),
            api_audiences: config
                .api_audiences
                .clone()
                .unwrap_or_else(|| config.issuers.clone()),
            keys: loaded.keys,
            signing,
            documents,
            accounts,
        })
    }

    /// The verification keys, in flag and file order.
    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
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
