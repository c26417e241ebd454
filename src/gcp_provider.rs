//! A GCP Workload Identity Federation provider as a target: keyrot uploads the JWKS into the
//! provider's `oidc.jwksJson` (PATCH with updateMask, then the long-running operation), and reads
//! it back from the provider. With jwksJson set, GCP does not fetch the issuer's jwks_uri.

use std::time::Duration;

use object_store::gcp::GoogleCloudStorageBuilder;
use serde_json::json;
use zeroize::Zeroizing;

use crate::http::{self, BodyError, HttpError, Reach};
use crate::plan::{GcpProvider, is_loopback};

/// How long keyrot waits for the update operation; IAM usually finishes within seconds.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
const OPERATION_POLL: Duration = Duration::from_millis(500);

/// Why the provider could not be read or updated; each names the provider or the request.
#[derive(Debug, thiserror::Error)]
pub enum GcpError {
    #[error("{provider}: cannot get Google credentials: {detail}")]
    Credentials { provider: String, detail: String },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{what}: answered {status}: {body}")]
    Status {
        what: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("{what}: the answer is not JSON: {detail}")]
    NotJson { what: String, detail: String },
    #[error("{what}: the answer is neither done nor an operation")]
    NotOperation { what: String },
    #[error("{what}: operation {name} not done after {}s", OPERATION_TIMEOUT.as_secs())]
    Unfinished { what: String, name: String },
    /// The operation ended with a `google.rpc.Status`; its `code` says whether to try again.
    #[error("{what}: the operation failed: {error}")]
    OperationFailed {
        what: String,
        error: serde_json::Value,
    },
    /// The provider holds another JWKS right after keyrot's update: another writer, or IAM has
    /// not caught up yet.
    #[error("GET {url}: after the update, oidc.jwksJson is {stored}, not the uploaded JWKS")]
    NotStored { url: String, stored: String },
}

/// An authorised client of the IAM API for one provider.
pub struct Iam<'a> {
    provider: &'a GcpProvider,
    client: reqwest::Client,
    /// `None` when the credentials say no OAuth (a test server).
    bearer: Option<Bearer>,
}

/// An OAuth access token: wiped when dropped, and its `Debug` shows no part of it. (object_store
/// keeps its own copy in its credential cache, which keyrot cannot wipe.)
struct Bearer(Zeroizing<String>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(redacted)")
    }
}

impl<'a> Iam<'a> {
    /// Credentials as for GCS: the plan's service-account file, else application default
    /// credentials, else the metadata server; the token has the cloud-platform scope.
    pub async fn connect(provider: &'a GcpProvider) -> Result<Iam<'a>, GcpError> {
        let what = |e: &dyn std::error::Error| GcpError::Credentials {
            provider: provider.name.clone(),
            detail: http::chain(e),
        };
        // object_store's GCS builder resolves Google's credential chain; the bucket is unused.
        let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name("unused");
        if let Some(path) = &provider.service_account_file {
            builder = builder.with_service_account_path(path.to_string_lossy());
        }
        let store = builder.build().map_err(|e| what(&e))?;
        let credential = store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| what(&e))?;
        let bearer = Some(&credential.bearer)
            .filter(|b| !b.is_empty())
            .map(|b| Bearer(Zeroizing::new(b.clone())));
        let allow_http = url::Url::parse(&provider.endpoint).is_ok_and(|u| is_loopback(&u))
            && provider.endpoint.starts_with("http:");
        let client = http::client(&Reach {
            allow_http,
            ca_file: None,
        })?;
        Ok(Iam {
            provider,
            client,
            bearer,
        })
    }

    fn url(&self, resource: &str) -> String {
        format!("{}/v1/{resource}", self.provider.endpoint)
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(Bearer(token)) => request.bearer_auth(token.as_str()),
            None => request,
        }
    }

    /// The provider's `oidc.jwksJson`; `None` when it has none (GCP then fetches the jwks_uri).
    pub async fn jwks_json(&self) -> Result<Option<String>, GcpError> {
        let url = self.url(&self.provider.name);
        let answer = self
            .json(&format!("GET {url}"), || {
                self.authorised(self.client.get(&url))
            })
            .await?;
        Ok(answer
            .pointer("/oidc/jwksJson")
            .and_then(|v| v.as_str())
            .map(str::to_string))
    }

    /// PATCHes `oidc.jwksJson` only, waits for the operation, then reads the provider back.
    pub async fn upload(&self, jwks: &str) -> Result<(), GcpError> {
        let url = self.url(&self.provider.name);
        let body = json!({ "oidc": { "jwksJson": jwks } }).to_string();
        // Only this field changes: the provider's other settings are not keyrot's.
        let patch_url = format!("{url}?updateMask=oidc.jwksJson");
        let what = format!("PATCH {patch_url}");
        let mut operation = self
            .json(&what, || {
                self.authorised(self.client.patch(&patch_url))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        let started = tokio::time::Instant::now();
        while operation.get("done").and_then(|d| d.as_bool()) != Some(true) {
            let Some(name) = operation.get("name").and_then(|n| n.as_str()) else {
                return Err(GcpError::NotOperation { what });
            };
            if started.elapsed() > OPERATION_TIMEOUT {
                return Err(GcpError::Unfinished {
                    what,
                    name: name.to_string(),
                });
            }
            tokio::time::sleep(OPERATION_POLL).await;
            let op_url = self.url(name);
            operation = self
                .json(&format!("GET {op_url}"), || {
                    self.authorised(self.client.get(&op_url))
                })
                .await?;
        }
        if let Some(error) = operation.get("error") {
            return Err(GcpError::OperationFailed {
                what,
                error: error.clone(),
            });
        }
        let stored = self.jwks_json().await?;
        if !same_json(stored.as_deref(), jwks) {
            return Err(GcpError::NotStored {
                url,
                stored: stored.unwrap_or_else(|| "absent".to_string()),
            });
        }
        Ok(())
    }

    /// A request whose 2xx answer is a JSON object; other answers name the status and body.
    async fn json(
        &self,
        what: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, GcpError> {
        let response = http::send(what, make).await?;
        let status = response.status();
        let body = http::body(what, response).await?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(GcpError::Status {
                what: what.to_string(),
                status,
                body: text.trim().to_string(),
            });
        }
        serde_json::from_str(&text).map_err(|e| GcpError::NotJson {
            what: what.to_string(),
            detail: e.to_string(),
        })
    }
}

/// Equal as JSON values: IAM may store the document re-serialised.
fn same_json(stored: Option<&str>, uploaded: &str) -> bool {
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    stored
        .and_then(parse)
        .is_some_and(|v| Some(v) == parse(uploaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcp_bearer_token_is_not_printed() {
        let bearer = Bearer(Zeroizing::new("ya29.secret-token".into()));
        let shown = format!("{bearer:?} {:?}", Some(&bearer));
        assert!(!shown.contains("ya29"), "{shown}");
    }

    #[test]
    fn stored_jwks_compares_as_json() {
        let uploaded = r#"{"keys":[{"kid":"a"}]}"#;
        assert!(same_json(
            Some(r#"{ "keys": [ { "kid": "a" } ] }"#),
            uploaded
        ));
        assert!(!same_json(Some(r#"{"keys":[]}"#), uploaded));
        assert!(!same_json(None, uploaded));
    }
}
