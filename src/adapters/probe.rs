//! The real prober: asks the apiserver, through the Kubernetes API and a kubeconfig, which keys it
//! serves and which key signs a freshly requested token.
//!
//! kube retries only 429/503/504; an apiserver that is restarting refuses connections, which is
//! reported as `Probed::Failed` with the whole error chain, and the gate asks again later.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, PostParams};

use super::{AdapterError, Prober};
use crate::decision::Probed;
use crate::http::chain;
use crate::targets::{JwksError, jwks_kids};

/// Probe tokens live ten minutes, the shortest TokenRequest allows.
const PROBE_TOKEN_SECONDS: i64 = 600;

/// Why the apiserver's answer is not known, or not what a probe can use.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{}", chain(.0))]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Request(#[from] http::Error),
    #[error("not a discovery document: {detail}")]
    NotDiscovery { detail: String },
    #[error(transparent)]
    Jwks(#[from] JwksError),
    #[error("TokenRequest answered without a token")]
    NoToken,
    #[error("the cluster rejects its own new token: {reason}")]
    Rejected { reason: String },
    #[error(
        "/metrics has no {name}: is --service-account-signing-endpoint set, and may the probe \
         read /metrics (docs/probe-rbac.yaml)?"
    )]
    NoMetric { name: String },
    #[error("/metrics gives {name} the value {value:?}, not a number")]
    BadMetric { name: String, value: String },
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Why a token's kid or issuer cannot be read from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token {part} is not base64url: {detail}")]
    NotBase64 { part: &'static str, detail: String },
    #[error("token {part} is not JSON: {detail}")]
    NotJson { part: &'static str, detail: String },
    #[error("token header has no kid")]
    NoKid,
    #[error("token has no iss")]
    NoIssuer,
}

pub struct KubeProber {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    namespace: String,
    service_account: String,
    audience: String,
}

impl KubeProber {
    pub fn new(
        kubeconfig: &Path,
        namespace: &str,
        service_account: &str,
        audience: &str,
    ) -> Result<Self, AdapterError> {
        let (runtime, client) = super::kube_client::connect(kubeconfig, "probe")?;
        Ok(KubeProber {
            runtime,
            client,
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            audience: audience.to_string(),
        })
    }

    /// The body of a GET of `path` on the apiserver.
    async fn get_text(&self, path: &str) -> Result<String, ProbeError> {
        let request = http::Request::get(path).body(Vec::new())?;
        Ok(self.client.request_text(request).await?)
    }

    async fn served_kids(&self) -> Result<Vec<String>, ProbeError> {
        Ok(jwks_kids(
            self.get_text("/openid/v1/jwks").await?.as_bytes(),
        )?)
    }

    /// The `issuer` and `jwks_uri` of the apiserver's own discovery document.
    async fn served_discovery(&self) -> Result<ServedDiscovery, ProbeError> {
        let body = self.get_text("/.well-known/openid-configuration").await?;
        serde_json::from_str(&body).map_err(|e| ProbeError::NotDiscovery {
            detail: e.to_string(),
        })
    }

    /// The apiserver's discovery document, now.
    pub fn discovery(&mut self) -> Result<ServedDiscovery, ProbeError> {
        self.runtime.block_on(self.served_discovery())
    }

    /// The `iss` of a token the apiserver issues now (and accepts through TokenReview).
    pub fn token_issuer(&mut self) -> Result<String, ProbeError> {
        let token = self.runtime.block_on(self.reviewed_token())?;
        Ok(token_issuer(&token)?)
    }

    async fn signing_kid(&self) -> Result<String, ProbeError> {
        Ok(token_kid(&self.reviewed_token().await?)?)
    }

    /// Requests a token for the probe ServiceAccount (created if missing), checks the cluster
    /// accepts it through TokenReview, and returns it.
    async fn reviewed_token(&self) -> Result<String, ProbeError> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        if accounts.get_opt(&self.service_account).await?.is_none() {
            let account = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(self.service_account.clone()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            };
            accounts.create(&PostParams::default(), &account).await?;
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![self.audience.clone()],
                expiration_seconds: Some(PROBE_TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let issued = accounts
            .create_token_request(&self.service_account, &PostParams::default(), &request)
            .await?;
        let token = issued.status.map(|s| s.token).ok_or(ProbeError::NoToken)?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.clone()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = reviews.create(&PostParams::default(), &review).await?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(ProbeError::Rejected {
                reason: status.error.unwrap_or_else(|| "no reason given".into()),
            });
        }
        Ok(token)
    }
}

impl Prober for KubeProber {
    fn apiserver_kids(&mut self) -> Probed<Vec<String>> {
        probed(self.runtime.block_on(self.served_kids()))
    }

    fn token_kid(&mut self) -> Probed<String> {
        probed(self.runtime.block_on(self.signing_kid()))
    }

    fn apiserver_key_set_at(&mut self) -> Probed<f64> {
        let metrics = self.runtime.block_on(self.get_text("/metrics"));
        probed(metrics.and_then(|text| gauge(&text, KEY_SET_GAUGE)))
    }
}

/// kube-apiserver's gauge of the external signer's key set it holds (KEP-740's monitoring).
const KEY_SET_GAUGE: &str = "apiserver_externaljwt_fetch_keys_data_timestamp";

/// The value of the gauge `name` in Prometheus' text format (the first sample, labels or not).
fn gauge(text: &str, name: &str) -> Result<f64, ProbeError> {
    let missing = || ProbeError::NoMetric {
        name: name.to_string(),
    };
    let sample = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .ok_or_else(missing)?;
    let value = sample.rsplit(' ').next().unwrap_or_default();
    value.parse::<f64>().map_err(|_| ProbeError::BadMetric {
        name: name.to_string(),
        value: value.to_string(),
    })
}

fn probed<T>(result: Result<T, ProbeError>) -> Probed<T> {
    match result {
        Ok(value) => Probed::Seen(value),
        Err(why) => Probed::Failed(why.to_string()),
    }
}

/// The kid in a JWT's header.
pub fn token_kid(token: &str) -> Result<String, TokenError> {
    #[derive(serde::Deserialize)]
    struct Header {
        kid: Option<String>,
    }
    let header: Header = token_part(token, 0, "header")?;
    header.kid.ok_or(TokenError::NoKid)
}

/// The JSON of a token's `index`th part, base64url-decoded; `part` names it in messages.
fn token_part<T: serde::de::DeserializeOwned>(
    token: &str,
    index: usize,
    part: &'static str,
) -> Result<T, TokenError> {
    let text = token.split('.').nth(index).unwrap_or_default();
    let json = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| TokenError::NotBase64 {
            part,
            detail: e.to_string(),
        })?;
    serde_json::from_slice(&json).map_err(|e| TokenError::NotJson {
        part,
        detail: e.to_string(),
    })
}

/// What the apiserver's discovery document says about its issuer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ServedDiscovery {
    pub issuer: String,
    pub jwks_uri: String,
}

/// The `iss` claim of a JWT (read, not verified: the apiserver reviewed the token already).
pub fn token_issuer(token: &str) -> Result<String, TokenError> {
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: Option<String>,
    }
    let claims: Claims = token_part(token, 1, "payload")?;
    claims.iss.ok_or(TokenError::NoIssuer)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_key_set_gauge_as_kube_apiserver_exposes_it() {
        let text = "# HELP apiserver_externaljwt_fetch_keys_data_timestamp Unix Timestamp\n\
                    # TYPE apiserver_externaljwt_fetch_keys_data_timestamp gauge\n\
                    apiserver_externaljwt_fetch_keys_data_timestamp_other 1\n\
                    apiserver_externaljwt_fetch_keys_data_timestamp 1.7654321234567e+09\n";
        let value = gauge(text, KEY_SET_GAUGE).unwrap();
        assert_eq!(value, 1_765_432_123.456_7);
        let labelled = "apiserver_externaljwt_fetch_keys_data_timestamp{a=\"b\"} 12.5\n";
        assert_eq!(gauge(labelled, KEY_SET_GAUGE).unwrap(), 12.5);
        assert!(matches!(
            gauge("process_cpu_seconds_total 3\n", KEY_SET_GAUGE),
            Err(ProbeError::NoMetric { .. })
        ));
        assert!(matches!(
            gauge(
                "apiserver_externaljwt_fetch_keys_data_timestamp NaNo\n",
                KEY_SET_GAUGE
            ),
            Err(ProbeError::BadMetric { .. })
        ));
    }

    use super::*;

    #[test]
    fn reads_the_kid_from_a_token_header() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"abc"}"#);
        assert_eq!(token_kid(&format!("{header}.e30.sig")).unwrap(), "abc");
        let no_kid = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        assert_eq!(
            token_kid(&format!("{no_kid}.e30.sig")).unwrap_err(),
            TokenError::NoKid
        );
        assert_eq!(TokenError::NoKid.to_string(), "token header has no kid",);
        let garbled = token_kid("%%%.e30.sig").unwrap_err();
        assert!(
            garbled
                .to_string()
                .starts_with("token header is not base64url"),
            "{garbled}"
        );
    }

    #[test]
    fn reads_the_issuer_from_a_token_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://new.example","sub":"x"}"#);
        assert_eq!(
            token_issuer(&format!("e30.{payload}.sig")).unwrap(),
            "https://new.example"
        );
        assert_eq!(
            token_issuer("e30.e30.sig").unwrap_err().to_string(),
            "token has no iss"
        );
    }
}
