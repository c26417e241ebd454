//! Publication targets: where the issuer documents go, and how keyrot reads them back.

pub mod local_dir;
pub mod public;
pub mod verify;

use crate::decision::Probed;
use crate::gcp_provider::Iam;
use crate::http::block_on;
use crate::plan::{Issuer, Target, TargetKind};

/// The kids the target serves now, as a cloud verifier would see them: a local directory's file;
/// an object store's documents read anonymously from outside (see `public`); a GCP provider's
/// uploaded jwksJson.
pub fn read_served_kids(issuer: &Issuer, target: &Target) -> Probed<Vec<String>> {
    match read_served(issuer, target).kids {
        Ok(kids) => Probed::Seen(kids),
        Err(why) => Probed::Failed(why),
    }
}

/// Where a target's JWKS was read, and its kids or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub at: String,
    pub kids: Result<Vec<String>, String>,
}

pub fn read_served(issuer: &Issuer, target: &Target) -> Served {
    match &target.kind {
        TargetKind::LocalDirectory { path } => Served {
            at: path.join(crate::documents::JWKS_PATH).display().to_string(),
            kids: local_dir::read_served_kids(path),
        },
        TargetKind::S3 { objects, .. }
        | TargetKind::Azure { objects, .. }
        | TargetKind::Gcs { objects, .. } => match block_on(public::read(issuer, objects)) {
            Ok(view) => Served {
                at: view.jwks_url,
                kids: Ok(view.kids),
            },
            Err(why) => Served {
                at: public::join(
                    objects.public.url.as_deref().unwrap_or(&issuer.url),
                    crate::documents::DISCOVERY_PATH,
                ),
                kids: Err(why),
            },
        },
        TargetKind::GcpWorkloadIdentityProvider(provider) => Served {
            at: format!("{} (oidc.jwksJson)", provider.name),
            kids: block_on(async {
                match Iam::connect(provider).await?.jwks_json().await? {
                    Some(jwks) => jwks_kids(jwks.as_bytes())
                        .map_err(|e| format!("{}: oidc.jwksJson: {e}", provider.name)),
                    None => Ok(Vec::new()),
                }
            }),
        },
    }
}

/// The kids of a JWKS document, in order.
pub fn jwks_kids(body: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Jwks {
        keys: Vec<Jwk>,
    }
    #[derive(serde::Deserialize)]
    struct Jwk {
        kid: Option<String>,
    }
    let jwks: Jwks = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    jwks.keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| k.kid.ok_or_else(|| format!("key #{i} has no kid")))
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
        assert_eq!(
            jwks_kids(br#"{"keys":[{"kty":"RSA"}]}"#).unwrap_err(),
            "key #0 has no kid"
        );
        assert!(jwks_kids(b"<html>").unwrap_err().starts_with("not a JWKS"));
    }
}
