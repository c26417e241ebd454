//! A token verifier that behaves like a cloud STS (AWS web identity, Azure and GCP workload
//! identity federation): it knows only the issuer URL and the audience it expects.
//!
//! For each token it fetches `{issuer}/.well-known/openid-configuration` anonymously over HTTPS,
//! insists that the document's `issuer` equals the configured issuer byte for byte, fetches the
//! `jwks_uri` it names, picks the key with the token's kid, checks that the token's alg is the
//! key's and that the signature verifies, then checks `iss`, `aud` and `exp`. Nothing is cached
//! unless asked (`caching_jwks`, which keeps the first JWKS until `forget_jwks`), so by default
//! every call sees what is published at that moment. Each failure names the check that failed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyrot::keys::{Alg, Curve, PublicParams};
use serde::Deserialize;

use crate::jws;

/// Which check a token failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
    #[error("GET {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url}: not a discovery document: {reason}")]
    Discovery { url: String, reason: String },
    #[error("the discovery document names issuer {discovered:?}, not {configured:?}")]
    IssuerMismatch {
        configured: String,
        discovered: String,
    },
    #[error("jwks_uri {0:?} is not an https URL")]
    JwksUriNotHttps(String),
    #[error("{url}: not a JWKS: {reason}")]
    Jwks { url: String, reason: String },
    #[error(transparent)]
    Malformed(#[from] jws::Malformed),
    #[error("the token header has no kid")]
    NoKid,
    #[error("no key with kid {0:?} in the published JWKS")]
    UnknownKid(String),
    #[error("published key {kid:?} cannot be used: {reason}")]
    UnusableKey { kid: String, reason: String },
    #[error("the token says alg {token:?} but key {kid:?} is {key}")]
    AlgMismatch {
        kid: String,
        token: String,
        key: Alg,
    },
    #[error("the signature does not verify with key {0:?}")]
    BadSignature(String),
    #[error("token iss {found:?} is not the issuer {expected:?}")]
    WrongIssuer {
        expected: String,
        found: Option<String>,
    },
    #[error("token aud {found:?} does not contain {expected:?}")]
    WrongAudience {
        expected: String,
        found: Vec<String>,
    },
    #[error("the token has no exp")]
    NoExpiry,
    #[error("the token expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub kid: String,
    pub alg: Alg,
    pub subject: Option<String>,
    pub claims: serde_json::Value,
}

/// A verifier for one issuer and one audience.
#[derive(Debug, Clone)]
pub struct Sts {
    issuer: String,
    audience: String,
    http: reqwest::Client,
    /// With [`Sts::caching_jwks`]: the JWKS fetched first, used until [`Sts::forget_jwks`], as
    /// a cloud that caches an issuer's keys for an undocumented time does.
    jwks_cache: Option<Arc<Mutex<Option<bytes::Bytes>>>>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl Sts {
    /// Trusts only the CA certificates in `ca_pem` (the test CA), as an STS trusts public CAs.
    pub fn new(issuer: &str, audience: &str, ca_pem: &[u8]) -> Result<Self, StsError> {
        let client_error = |e: reqwest::Error| StsError::Client(keyrot::http::chain(&e));
        let ca = reqwest::Certificate::from_pem(ca_pem).map_err(client_error)?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(client_error)?;
        Ok(Self {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            http,
            jwks_cache: None,
        })
    }

    /// Keeps the first JWKS it fetches until told to forget it.
    pub fn caching_jwks(mut self) -> Self {
        self.jwks_cache = Some(Arc::default());
        self
    }

    /// Fetches the JWKS now, to be cached (with [`Sts::caching_jwks`]) as it is at this moment.
    pub async fn prime_jwks(&self) -> Result<(), StsError> {
        let jwks_uri = self.discover().await?;
        self.jwks(&jwks_uri).await.map(drop)
    }

    /// The next token makes it fetch the JWKS again: the cache's refresh.
    pub fn forget_jwks(&self) {
        if let Some(cache) = &self.jwks_cache {
            *cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// The issuer and audience it trusts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Verifies `token` against what the issuer publishes now.
    pub async fn verify(&self, token: &str) -> Result<Verified, StsError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs() as i64;
        self.verify_at(token, now).await
    }

    /// Verifies `token` as if the time were `now` (Unix seconds).
    pub async fn verify_at(&self, token: &str, now: i64) -> Result<Verified, StsError> {
        let parsed = jws::parse(token)?;
        let kid = parsed.header.kid.clone().ok_or(StsError::NoKid)?;
        let jwks_uri = self.discover().await?;
        let jwk = self.fetch_key(&jwks_uri, &kid).await?;
        let (alg, params) = key_of(&jwk).map_err(|reason| StsError::UnusableKey {
            kid: kid.clone(),
            reason,
        })?;
        if parsed.header.alg != alg.as_str() {
            return Err(StsError::AlgMismatch {
                kid,
                token: parsed.header.alg,
                key: alg,
            });
        }
        if !parsed.verifies_with(alg, &params) {
            return Err(StsError::BadSignature(kid));
        }
        self.check_claims(&parsed, now)?;
        Ok(Verified {
            kid,
            alg,
            subject: parsed.str_claim("sub").map(str::to_string),
            claims: parsed.claims,
        })
    }

    /// The jwks_uri of the issuer's discovery document, once its issuer is ours exactly.
    async fn discover(&self) -> Result<String, StsError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let discovery: Discovery =
            serde_json::from_slice(&body).map_err(|e| StsError::Discovery {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if discovery.issuer != self.issuer {
            return Err(StsError::IssuerMismatch {
                configured: self.issuer.clone(),
                discovered: discovery.issuer,
            });
        }
        if !discovery.jwks_uri.starts_with("https://") {
            return Err(StsError::JwksUriNotHttps(discovery.jwks_uri));
        }
        Ok(discovery.jwks_uri)
    }

    /// The JWKS: the cached one when it caches and has one, else fetched (and then cached).
    async fn jwks(&self, jwks_uri: &str) -> Result<bytes::Bytes, StsError> {
        let cached = self
            .jwks_cache
            .as_ref()
            .and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).clone());
        if let Some(body) = cached {
            return Ok(body);
        }
        let body = self.get(jwks_uri).await?;
        if let Some(cache) = &self.jwks_cache {
            *cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(body.clone());
        }
        Ok(body)
    }

    async fn fetch_key(&self, jwks_uri: &str, kid: &str) -> Result<Jwk, StsError> {
        let body = self.jwks(jwks_uri).await?;
        let jwks: Jwks = serde_json::from_slice(&body).map_err(|e| StsError::Jwks {
            url: jwks_uri.to_string(),
            reason: e.to_string(),
        })?;
        jwks.keys
            .into_iter()
            .find(|jwk| jwk.kid.as_deref() == Some(kid))
            .ok_or_else(|| StsError::UnknownKid(kid.to_string()))
    }

    async fn get(&self, url: &str) -> Result<bytes::Bytes, StsError> {
        let fetch_error = |reason: String| StsError::Fetch {
            url: url.to_string(),
            reason,
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fetch_error(keyrot::http::chain(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(fetch_error(format!("status {}", response.status())));
        }
        response
            .bytes()
            .await
            .map_err(|e| fetch_error(keyrot::http::chain(&e)))
    }

    fn check_claims(&self, parsed: &jws::Parsed, now: i64) -> Result<(), StsError> {
        let iss = parsed.str_claim("iss");
        if iss != Some(self.issuer.as_str()) {
            return Err(StsError::WrongIssuer {
                expected: self.issuer.clone(),
                found: iss.map(str::to_string),
            });
        }
        let audiences = parsed.audiences();
        if !audiences.contains(&self.audience) {
            return Err(StsError::WrongAudience {
                expected: self.audience.clone(),
                found: audiences,
            });
        }
        let exp = parsed.time_claim("exp").ok_or(StsError::NoExpiry)?;
        if now >= exp {
            return Err(StsError::Expired { exp, now });
        }
        Ok(())
    }
}

/// The algorithm and public parameters of a JWK, checked as a verifier would before trusting it.
fn key_of(jwk: &Jwk) -> Result<(Alg, PublicParams), String> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(format!("use is {:?}, not \"sig\"", jwk.use_));
    }
    let field = |name: &str, value: &Option<String>| -> Result<Vec<u8>, String> {
        let value = value.as_deref().ok_or(format!("no {name}"))?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|e| format!("{name} is not base64url: {e}"))
    };
    let (alg, params) = match jwk.kty.as_str() {
        "RSA" => (
            Alg::RS256,
            PublicParams::Rsa {
                n: field("n", &jwk.n)?,
                e: field("e", &jwk.e)?,
            },
        ),
        "EC" => {
            let (curve, alg) = match jwk.crv.as_deref() {
                Some("P-256") => (Curve::P256, Alg::ES256),
                Some("P-384") => (Curve::P384, Alg::ES384),
                Some("P-521") => (Curve::P521, Alg::ES512),
                other => return Err(format!("unsupported crv {other:?}")),
            };
            let (x, y) = (field("x", &jwk.x)?, field("y", &jwk.y)?);
            if x.len() != curve.coordinate_len() || y.len() != curve.coordinate_len() {
                return Err(format!("x or y is not {} bytes", curve.coordinate_len()));
            }
            (alg, PublicParams::Ec { curve, x, y })
        }
        other => return Err(format!("unsupported kty {other:?}")),
    };
    match jwk.alg.as_deref() {
        Some(named) if named != alg.as_str() => Err(format!("alg {named:?} but the key is {alg}")),
        _ => Ok((alg, params)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(json: serde_json::Value) -> Jwk {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ec_keys_need_full_length_coordinates() {
        let x = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let short = URL_SAFE_NO_PAD.encode([1u8; 31]);
        let good = jwk(serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": x}));
        assert_eq!(key_of(&good).unwrap().0, Alg::ES256);
        let bad = jwk(serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": short}));
        assert!(key_of(&bad).unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn a_jwk_alg_that_contradicts_the_key_is_refused() {
        let rsa = jwk(serde_json::json!({"kty": "RSA", "alg": "ES256", "n": "AQAB", "e": "AQAB"}));
        assert!(key_of(&rsa).unwrap_err().contains("ES256"));
        let enc = jwk(serde_json::json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}));
        assert!(key_of(&enc).unwrap_err().contains("use"));
        let unknown = jwk(serde_json::json!({"kty": "OKP"}));
        assert!(key_of(&unknown).unwrap_err().contains("OKP"));
    }
}
