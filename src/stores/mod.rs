//! Object-store targets (S3, Azure Blob, GCS): the client for a target, built through object_store
//! from the plan and each cloud's usual credential chain, and where the two documents go.

pub mod conditional;

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::documents::{DISCOVERY_PATH, JWKS_PATH};
use crate::plan::TargetKind;

/// A target's store and a name for it in messages (`s3://bucket`, never a credential).
pub struct Store {
    pub client: Arc<dyn ObjectStore>,
    pub url: String,
}

impl Store {
    /// `s3://bucket/prefix/openid/v1/jwks` and the like, for messages.
    pub fn object_url(&self, key: &ObjectPath) -> String {
        format!("{}/{key}", self.url)
    }
}

/// object_store refused the target's settings or credential files (before any request).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the client: {detail}")]
pub struct OpenError {
    pub detail: String,
}

/// The store of an S3, Azure or GCS target; `None` for the other kinds.
pub fn open(kind: &TargetKind) -> Option<Result<Store, OpenError>> {
    let built = match kind {
        TargetKind::S3 { bucket, .. } => {
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(&bucket.bucket)
                .with_region(&bucket.region)
                .with_retry(retry())
                .with_client_options(options(bucket.endpoint.as_deref()));
            if let Some(endpoint) = &bucket.endpoint {
                // S3-compatible servers address buckets by path, not by host name.
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            builder.build().map(|s| {
                (
                    Arc::new(s) as Arc<dyn ObjectStore>,
                    format!("s3://{}", bucket.bucket),
                )
            })
        }
        TargetKind::Azure { container, .. } => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_account(&container.account)
                .with_container_name(&container.container)
                .with_retry(retry())
                .with_client_options(options(container.endpoint.as_deref()));
            if let Some(endpoint) = &container.endpoint {
                builder = builder
                    .with_endpoint(endpoint.clone())
                    .with_allow_http(endpoint.starts_with("http:"));
            }
            builder.build().map(|s| {
                let url = format!("azure://{}/{}", container.account, container.container);
                (Arc::new(s) as Arc<dyn ObjectStore>, url)
            })
        }
        TargetKind::Gcs { bucket, .. } => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&bucket.bucket)
                .with_retry(retry())
                .with_client_options(options(bucket.endpoint.as_deref()));
            if let Some(path) = &bucket.service_account_file {
                builder = builder.with_service_account_path(path.to_string_lossy());
            }
            if let Some(endpoint) = &bucket.endpoint {
                builder = builder.with_base_url(endpoint);
            }
            builder.build().map(|s| {
                (
                    Arc::new(s) as Arc<dyn ObjectStore>,
                    format!("gs://{}", bucket.bucket),
                )
            })
        }
        TargetKind::LocalDirectory { .. } | TargetKind::GcpWorkloadIdentityProvider(_) => {
            return None;
        }
    };
    Some(
        built
            .map(|(client, url)| Store { client, url })
            .map_err(|e| OpenError {
                detail: crate::http::redact(&crate::http::chain(&e)),
            }),
    )
}

/// `PREFIX/openid/v1/jwks` and `PREFIX/.well-known/openid-configuration`, in the order they are
/// written. JWKS first: a verifier that reads the new discovery document then finds a JWKS at
/// least as new, holding keys of every algorithm it advertises; the other way round it could
/// follow a document naming an algorithm to a JWKS without a key of it. Keys join the JWKS
/// before they sign and leave after they stopped, so an older discovery document beside a newer
/// JWKS never misleads a verifier about a token it is given.
pub fn document_keys(prefix: &str) -> [ObjectPath; 2] {
    [JWKS_PATH, DISCOVERY_PATH].map(|path| {
        let key = if prefix.is_empty() {
            path.to_string()
        } else {
            format!("{prefix}/{path}")
        };
        ObjectPath::parse(&key).expect("the plan checked the prefix's segments")
    })
}

/// Transient failures are retried a few times within seconds; longer outages are left to the
/// decision core, whose gate polls again and counts a failed attempt at its timeout.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

fn options(endpoint: Option<&str>) -> ClientOptions {
    ClientOptions::new()
        .with_timeout(Duration::from_secs(20))
        .with_connect_timeout(Duration::from_secs(5))
        // The plan allows http only for a loopback endpoint (a test server).
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http:")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_go_under_the_prefix_jwks_first() {
        let [jwks, discovery] = document_keys("clusters/prod");
        assert_eq!(jwks.as_ref(), "clusters/prod/openid/v1/jwks");
        assert_eq!(
            discovery.as_ref(),
            "clusters/prod/.well-known/openid-configuration"
        );
        let [jwks, _] = document_keys("");
        assert_eq!(jwks.as_ref(), "openid/v1/jwks");
    }
}
