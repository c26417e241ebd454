//! The ExternalJWTSigner service, the same answers in package v1 and in package v1alpha1.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::error;

use super::keyset::KeySet;
use super::proto::{v1, v1alpha1};
use crate::plan::Signer as Settings;

/// What both packages' services read: the set being served (replaced whole on a reload, so a
/// request sees one set from start to end) and the plan's settings.
pub struct Shared {
    current: RwLock<Arc<KeySet>>,
    refresh_hint: Duration,
    rotation_refresh_hint: Duration,
    max_token_expiration: Duration,
}

impl Shared {
    pub fn new(set: KeySet, settings: &Settings) -> Shared {
        Shared {
            current: RwLock::new(Arc::new(set)),
            refresh_hint: settings.refresh_hint,
            rotation_refresh_hint: settings.rotation_refresh_hint,
            max_token_expiration: settings.max_token_expiration,
        }
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn replace(&self, set: KeySet) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(set);
    }

    fn sign(&self, claims: &str) -> Result<(String, String), Status> {
        // kube sends the payload segment as is; anything else is a caller's bug, refused before
        // it is signed.
        let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if claims.is_empty() || !claims.bytes().all(base64url) {
            return Err(Status::invalid_argument(
                "claims must be the JWT payload in base64url without padding",
            ));
        }
        let set = self.current();
        set.sign(claims).map_err(|e| {
            error!("signer: signing with {} failed: {e}", set.active_kid());
            // The message reaches whoever requested the token: say nothing about the key.
            Status::internal("signing failed")
        })
    }

    fn refresh_hint_seconds(&self, set: &KeySet) -> i64 {
        let hint = match set.rotating {
            true => self.rotation_refresh_hint,
            false => self.refresh_hint,
        };
        hint.as_secs() as i64
    }
}

/// One service value answers for both packages.
#[derive(Clone)]
pub struct Service(pub Arc<Shared>);

/// The two packages' messages are the same apart from their module: one implementation, written
/// once, for each.
macro_rules! serve_package {
    ($package:ident) => {
        #[tonic::async_trait]
        impl $package::external_jwt_signer_server::ExternalJwtSigner for Service {
            async fn sign(
                &self,
                request: Request<$package::SignJwtRequest>,
            ) -> Result<Response<$package::SignJwtResponse>, Status> {
                let (header, signature) = self.0.sign(&request.get_ref().claims)?;
                Ok(Response::new($package::SignJwtResponse {
                    header,
                    signature,
                }))
            }

            async fn fetch_keys(
                &self,
                _request: Request<$package::FetchKeysRequest>,
            ) -> Result<Response<$package::FetchKeysResponse>, Status> {
                let set = self.0.current();
                Ok(Response::new($package::FetchKeysResponse {
                    keys: set
                        .keys
                        .iter()
                        .map(|key| $package::Key {
                            key_id: key.kid.clone(),
                            key: key.spki_der.clone(),
                            exclude_from_oidc_discovery: key.verify_only,
                        })
                        .collect(),
                    data_timestamp: Some(set.data_timestamp.into()),
                    refresh_hint_seconds: self.0.refresh_hint_seconds(&set),
                }))
            }

            async fn metadata(
                &self,
                _request: Request<$package::MetadataRequest>,
            ) -> Result<Response<$package::MetadataResponse>, Status> {
                Ok(Response::new($package::MetadataResponse {
                    max_token_expiration_seconds: self.0.max_token_expiration.as_secs() as i64,
                }))
            }
        }
    };
}

serve_package!(v1);
serve_package!(v1alpha1);
