//! TokenRequest and TokenReview: minting service-account tokens and judging them as kube does.
//!
//! Tokens carry the header `{alg, kid}` and the claims kube-apiserver writes for a token bound to
//! nothing but its ServiceAccount (`pkg/serviceaccount/claims.go`). A review accepts a token when
//! its issuer is one of `--service-account-issuer`, a loaded key with its kid verifies the
//! signature, it is within its lifetime (with go-jose's one-minute leeway), its ServiceAccount
//! still exists with the same uid, and one of its audiences is one the review asks for (by
//! default the API audiences, which default to the issuers).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::json;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyrot::keys::VerificationKey;

use super::objects::{
    bad_request, internal, invalid, not_found, object, parse_body, timestamp, uuid,
};
use super::{Apiserver, Keys};
use crate::jws;

pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// go-jose's `DefaultLeeway`, which kube's claim validation uses for exp and nbf.
const LEEWAY_SECONDS: i64 = 60;

/// The claims of a service-account token; members in go-jose's order (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    pub nbf: i64,
    pub sub: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ServiceAccountRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountRef {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestSpec {
    audiences: Option<Vec<String>>,
    expiration_seconds: Option<i64>,
    bound_object_ref: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    #[serde(default)]
    spec: TokenRequestSpec,
}

#[derive(Debug, Default, Deserialize)]
struct TokenReviewSpec {
    #[serde(default)]
    token: String,
    audiences: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct TokenReview {
    #[serde(default)]
    spec: TokenReviewSpec,
}

/// Who an accepted token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub jti: String,
    /// The token's audiences that the review asked for.
    pub audiences: Vec<String>,
}

impl Apiserver {
    /// `POST /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token`.
    pub(super) fn token_request(
        &self,
        namespace: &str,
        name: &str,
        body: &[u8],
        now: i64,
    ) -> Response<Full<Bytes>> {
        let request: TokenRequest = match parse_body(body) {
            Ok(request) => request,
            Err(why) => return bad_request(why),
        };
        if request.spec.bound_object_ref.is_some() {
            return bad_request("the kube-apiserver stand-in does not bind tokens to objects");
        }
        let seconds = request
            .spec
            .expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        if let Some(why) = expiration_problem(seconds) {
            return invalid(format!(
                "TokenRequest.authentication.k8s.io {name:?} is invalid: \
                 spec.expirationSeconds: Invalid value: {seconds}: {why}"
            ));
        }
        let Some(uid) = self.accounts.uid(namespace, name, now) else {
            return not_found(format!("serviceaccounts {name:?} not found"));
        };
        let audiences = match request.spec.audiences {
            Some(audiences) if !audiences.is_empty() => audiences,
            _ => self.api_audiences().to_vec(),
        };
        let claims = TokenClaims {
            aud: audiences.clone(),
            exp: now + seconds,
            iat: now,
            iss: self.issuer().to_string(),
            jti: uuid(),
            kubernetes: KubernetesClaims {
                namespace: namespace.to_string(),
                serviceaccount: ServiceAccountRef {
                    name: name.to_string(),
                    uid,
                },
            },
            nbf: now,
            sub: format!("system:serviceaccount:{namespace}:{name}"),
        };
        let token = match &self.keys {
            Keys::Files { signing, .. } => jws::sign(&claims, signing).map_err(|e| e.to_string()),
            // kube hands the claims to the signer and assembles the token from its answer.
            Keys::Signer(signer) => serde_json::to_vec(&claims)
                .map_err(|e| e.to_string())
                .and_then(|json| signer.sign(&URL_SAFE_NO_PAD.encode(json))),
        };
        let token = match token {
            Ok(token) => token,
            Err(e) => return internal(e),
        };
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"audiences": audiences, "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": timestamp(claims.exp)},
        });
        object(StatusCode::CREATED, &body)
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
    pub(super) fn token_review(&self, body: &[u8], now: i64) -> Response<Full<Bytes>> {
        let review: TokenReview = match parse_body(body) {
            Ok(review) => review,
            Err(why) => return bad_request(why),
        };
        if review.spec.token.is_empty() {
            return bad_request("token is required for TokenReview in authentication");
        }
        let asked = review.spec.audiences.clone().unwrap_or_default();
        let status = match self.review(&review.spec.token, &asked, now) {
            Ok(user) => json!({
                "authenticated": true,
                "user": {
                    "username": format!("system:serviceaccount:{}:{}", user.namespace, user.name),
                    "uid": user.uid,
                    "groups": [
                        "system:serviceaccounts",
                        format!("system:serviceaccounts:{}", user.namespace),
                        "system:authenticated",
                    ],
                    "extra": {
                        "authentication.kubernetes.io/credential-id": [format!("JTI={}", user.jti)],
                    },
                },
                "audiences": user.audiences,
            }),
            // kube leaves `authenticated` out when false (omitempty).
            Err(why) => json!({"user": {}, "error": format!("[invalid bearer token, {why}]")}),
        };
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": {"token": review.spec.token, "audiences": review.spec.audiences},
            "status": status,
        });
        object(StatusCode::CREATED, &body)
    }

    /// Judges a token as the apiserver's service-account authenticator would. `audiences` are
    /// those the review asks for; empty means the API audiences.
    pub fn review(&self, token: &str, audiences: &[String], now: i64) -> Result<Reviewed, String> {
        let parsed = jws::parse(token).map_err(|e| e.to_string())?;
        let issuer = parsed.str_claim("iss").unwrap_or_default();
        if !self.issuers.iter().any(|accepted| accepted == issuer) {
            return Err(format!("token issuer {issuer:?} is not accepted"));
        }
        let kid = parsed.header.kid.as_deref();
        let named = |keys: &[(String, VerificationKey)]| -> Vec<VerificationKey> {
            keys.iter()
                .filter(|(listed, _)| kid.is_none_or(|kid| listed == kid))
                .map(|(_, key)| key.clone())
                .collect()
        };
        let mut candidates = named(&self.keys());
        // With a signer, an unknown kid makes one FetchKeys first, as kube's key cache does.
        if candidates.is_empty()
            && let Keys::Signer(signer) = &self.keys
            && signer.fetch_now().is_ok()
        {
            candidates = named(&self.keys());
        }
        if candidates.is_empty() {
            return Err(format!("no verification key with kid {kid:?}"));
        }
        if !candidates
            .iter()
            .any(|key| parsed.verifies_with(key.alg(), key.params()))
        {
            return Err("token signature is invalid".into());
        }
        check_lifetime(&parsed, now)?;
        let claims: TokenClaims = serde_json::from_value(parsed.claims.clone())
            .map_err(|e| format!("token claims are not a service account's: {e}"))?;
        let account = &claims.kubernetes.serviceaccount;
        let namespace = &claims.kubernetes.namespace;
        match self.accounts.uid(namespace, &account.name, now) {
            None => return Err(format!("serviceaccounts {:?} not found", account.name)),
            Some(uid) if uid != account.uid => {
                return Err(format!(
                    "service account UID ({uid}) does not match claim ({})",
                    account.uid
                ));
            }
            Some(_) => {}
        }
        let wanted = if audiences.is_empty() {
            self.api_audiences()
        } else {
            audiences
        };
        let matched: Vec<String> = claims
            .aud
            .iter()
            .filter(|aud| wanted.contains(aud))
            .cloned()
            .collect();
        if matched.is_empty() {
            return Err(format!(
                "token audiences {:?} is invalid for the target audiences {wanted:?}",
                claims.aud
            ));
        }
        Ok(Reviewed {
            namespace: namespace.clone(),
            name: account.name.clone(),
            uid: account.uid.clone(),
            jti: claims.jti,
            audiences: matched,
        })
    }
}

fn expiration_problem(seconds: i64) -> Option<&'static str> {
    if seconds < MIN_EXPIRATION_SECONDS {
        Some("may not specify a duration less than 10 minutes")
    } else if seconds > MAX_EXPIRATION_SECONDS {
        Some("may not specify a duration larger than 2^32 seconds")
    } else {
        None
    }
}

/// The messages of kube's `pkg/serviceaccount/claims.go`.
fn check_lifetime(parsed: &jws::Parsed, now: i64) -> Result<(), String> {
    if parsed
        .time_claim("exp")
        .is_some_and(|exp| now > exp + LEEWAY_SECONDS)
    {
        return Err("service account token has expired".into());
    }
    if parsed
        .time_claim("nbf")
        .is_some_and(|nbf| now < nbf - LEEWAY_SECONDS)
    {
        return Err("service account token is not valid yet".into());
    }
    if parsed
        .time_claim("iat")
        .is_some_and(|iat| now < iat - LEEWAY_SECONDS)
    {
        return Err("service account token is issued in the future".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_bounds_are_kubes() {
        assert_eq!(expiration_problem(600), None);
        assert_eq!(expiration_problem(1 << 32), None);
        assert!(expiration_problem(599).unwrap().contains("10 minutes"));
        assert!(expiration_problem((1 << 32) + 1).unwrap().contains("2^32"));
    }

    #[test]
    fn lifetime_allows_one_minute_of_leeway_and_no_more() {
        let key = keyrot::keys::SigningKey::generate(keyrot::keys::GenerateSpec::P256).unwrap();
        let token = jws::sign(&json!({"exp": 1000, "nbf": 500, "iat": 500}), &key).unwrap();
        let parsed = jws::parse(&token).unwrap();
        assert_eq!(check_lifetime(&parsed, 1060), Ok(()));
        assert_eq!(
            check_lifetime(&parsed, 1061),
            Err("service account token has expired".into())
        );
        assert_eq!(check_lifetime(&parsed, 440), Ok(()));
        assert_eq!(
            check_lifetime(&parsed, 439),
            Err("service account token is not valid yet".into())
        );
    }
}
