//! Publication targets: where the issuer documents go, and how keyrot reads them back.

pub mod local_dir;
pub mod public;
pub mod verify;

use std::sync::Arc;

use crate::decision::{Probed, TargetView};
use crate::documents::{DISCOVERY_PATH, JWKS_PATH};
use crate::gcp_provider::{GcpError, Iam};
use crate::http::block_on;
use crate::plan::{Issuer, Target, TargetKind};
use local_dir::LocalDirError;
use public::PublicError;

/// The kids and the discovery document the target serves now, as a cloud verifier would see
/// them: a local directory's files; an object store's documents read anonymously from outside
/// (see `public`); a GCP provider's uploaded jwksJson (it holds no discovery document).
pub fn read_served_view(issuer: &Issuer, target: &Target) -> TargetView {
    fn probed<T>(read: Result<T, Arc<ReadBackError>>) -> Probed<T> {
        match read {
            Ok(value) => Probed::Seen(value),
            Err(why) => Probed::Failed(why.to_string()),
        }
    }
    let served = read_served(issuer, target);
    TargetView {
        name: target.name.clone(),
        kids: probed(served.kids),
        discovery: match served.discovery {
            Some(discovery) => probed(discovery.body),
            None => Probed::NotConfigured,
        },
    }
}

/// Why a target's documents could not be read back; each names the file, URL or provider.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error(transparent)]
    Local(#[from] LocalDirError),
    #[error(transparent)]
    Public(#[from] PublicError),
    #[error(transparent)]
    Gcp(#[from] GcpError),
    #[error("{provider}: oidc.jwksJson: {error}")]
    GcpJwks { provider: String, error: JwksError },
}

/// Where a target's JWKS was read, and its kids or why they could not be read; the same for
/// its discovery document. An object store is read in one go, so when that fails both fields
/// hold the same error (`Arc::ptr_eq` tells), which is reported once.
#[derive(Debug, Clone)]
pub struct Served {
    pub at: String,
    pub kids: Result<Vec<String>, Arc<ReadBackError>>,
    /// `None` for a target that holds no discovery document (a GCP provider).
    pub discovery: Option<ServedDiscovery>,
}

/// A discovery document as read back: where, and its bytes (`None`: nothing there yet).
#[derive(Debug, Clone)]
pub struct ServedDiscovery {
    pub at: String,
    pub body: Result<Option<Vec<u8>>, Arc<ReadBackError>>,
}

pub fn read_served(issuer: &Issuer, target: &Target) -> Served {
    match &target.kind {
        TargetKind::LocalDirectory { path } => Served {
            at: path.join(JWKS_PATH).display().to_string(),
            kids: local_dir::read_served_kids(path).map_err(|e| Arc::new(e.into())),
            discovery: Some(ServedDiscovery {
                at: path.join(DISCOVERY_PATH).display().to_string(),
                body: local_dir::read_document(path, DISCOVERY_PATH)
                    .map_err(|e| Arc::new(e.into())),
            }),
        },
        TargetKind::S3 { objects, .. }
        | TargetKind::Azure { objects, .. }
        | TargetKind::Gcs { objects, .. } => match block_on(public::read(issuer, objects)) {
            Ok(view) => Served {
                at: view.jwks_url,
                kids: Ok(view.kids),
                discovery: Some(ServedDiscovery {
                    at: view.discovery_url,
                    body: Ok(Some(view.discovery)),
                }),
            },
            Err(why) => {
                let why = Arc::new(ReadBackError::from(why));
                let discovery_url = public::join(
                    objects.public.url.as_deref().unwrap_or(&issuer.url),
                    DISCOVERY_PATH,
                );
                Served {
                    at: discovery_url.clone(),
                    kids: Err(Arc::clone(&why)),
                    discovery: Some(ServedDiscovery {
                        at: discovery_url,
                        body: Err(why),
                    }),
                }
            }
        },
        TargetKind::GcpWorkloadIdentityProvider(provider) => Served {
            at: format!("{} (oidc.jwksJson)", provider.name),
            kids: block_on(async {
                match Iam::connect(provider).await?.jwks_json().await? {
                    Some(jwks) => {
                        jwks_kids(jwks.as_bytes()).map_err(|error| ReadBackError::GcpJwks {
                            provider: provider.name.clone(),
                            error,
                        })
                    }
                    None => Ok(Vec::new()),
                }
            })
            .map_err(Arc::new),
            discovery: None,
        },
    }
}

/// Why a document is not a JWKS keyrot can read kids from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS: {detail}")]
    NotJwks { detail: String },
    #[error("key #{index} has no kid")]
    NoKid { index: usize },
}

/// The kids of a JWKS document, in order.
pub fn jwks_kids(body: &[u8]) -> Result<Vec<String>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Jwks {
        keys: Vec<Jwk>,
    }
    #[derive(serde::Deserialize)]
    struct Jwk {
        kid: Option<String>,
    }
    let jwks: Jwks = serde_json::from_slice(body).map_err(|e| JwksError::NotJwks {
        detail: e.to_string(),
    })?;
    jwks.keys
        .into_iter()
        .enumerate()
        .map(|(index, k)| k.kid.ok_or(JwksError::NoKid { index }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kids_in_order_and_refuses_keys_without_one() {
        assert_eq!(
            jwks_kids(br#"{"keys":[{"kid":"b"},{"kid":"a"}]}"#).unwrap(),
            ["b", "a"]
        );
        let no_kid = jwks_kids(br#"{"keys":[{"kty":"RSA"}]}"#).unwrap_err();
        assert_eq!(no_kid, JwksError::NoKid { index: 0 });
        assert_eq!(no_kid.to_string(), "key #0 has no kid");
        assert!(
            jwks_kids(b"<html>")
                .unwrap_err()
                .to_string()
                .starts_with("not a JWKS")
        );
    }
}
