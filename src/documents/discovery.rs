//! The discovery document of `/.well-known/openid-configuration` and kube's issuer URL rules.
//!
//! Member order and values follow `pkg/serviceaccount/openidmetadata.go`: issuer, jwks_uri,
//! response_types_supported ["id_token"], subject_types_supported ["public"], and
//! id_token_signing_alg_values_supported, the sorted, de-duplicated algs of the JWKS.

use std::collections::BTreeSet;

use serde::Serialize;

use super::JWKS_PATH;
use super::go_json::escape_like_go;
use crate::keys::VerificationKey;

/// Why an issuer or jwks_uri would make kube-apiserver refuse to serve the documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    #[error("{what} {url:?} is not a URL: {reason}")]
    NotAUrl {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("{what} {url:?} must use the https scheme")]
    NotHttps { what: &'static str, url: String },
    #[error("issuer URL {0:?} may not include a query")]
    Query(String),
    #[error("issuer URL {0:?} may not include a fragment")]
    Fragment(String),
}

/// kube's rules for `--service-account-issuer` when it serves discovery: https, no query, no
/// fragment. The string itself is kept byte for byte: verifiers compare `iss` exactly.
pub fn validate_issuer(issuer: &str) -> Result<(), IssuerError> {
    let url = parse("issuer URL", issuer)?;
    if url.query().is_some_and(|q| !q.is_empty()) {
        return Err(IssuerError::Query(issuer.to_string()));
    }
    if url.fragment().is_some_and(|f| !f.is_empty()) {
        return Err(IssuerError::Fragment(issuer.to_string()));
    }
    Ok(())
}

/// kube's rule for `--service-account-jwks-uri`: https.
pub fn validate_jwks_uri(jwks_uri: &str) -> Result<(), IssuerError> {
    parse("jwks_uri", jwks_uri).map(drop)
}

fn parse(what: &'static str, value: &str) -> Result<url::Url, IssuerError> {
    let url = url::Url::parse(value).map_err(|e| IssuerError::NotAUrl {
        what,
        url: value.to_string(),
        reason: e.to_string(),
    })?;
    if url.scheme() != "https" {
        return Err(IssuerError::NotHttps {
            what,
            url: value.to_string(),
        });
    }
    Ok(url)
}

/// The issuer joined with `openid/v1/jwks` by exactly one slash.
///
/// kube-apiserver's own default is built from its external address instead; for an issuer hosted
/// outside the cluster the JWKS must live under the issuer, so that is keyrot's default.
pub fn default_jwks_uri(issuer: &str) -> String {
    format!("{}/{JWKS_PATH}", issuer.trim_end_matches('/'))
}

/// A validated discovery document, ready to render.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
    response_types_supported: [&'static str; 1],
    subject_types_supported: [&'static str; 1],
    id_token_signing_alg_values_supported: Vec<&'static str>,
}

impl DiscoveryDocument {
    pub fn new(
        issuer: &str,
        jwks_uri: &str,
        keys: &[VerificationKey],
    ) -> Result<Self, IssuerError> {
        validate_issuer(issuer)?;
        validate_jwks_uri(jwks_uri)?;
        let algs: BTreeSet<&'static str> = keys.iter().map(|k| k.alg().as_str()).collect();
        Ok(Self {
            issuer: issuer.to_string(),
            jwks_uri: jwks_uri.to_string(),
            response_types_supported: ["id_token"],
            subject_types_supported: ["public"],
            id_token_signing_alg_values_supported: algs.into_iter().collect(),
        })
    }

    /// The body kube-apiserver serves.
    pub fn render(&self) -> String {
        escape_like_go(serde_json::to_string(self).expect("discovery serialisation cannot fail"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_rules_match_kube() {
        assert!(validate_issuer("https://issuer.example.com").is_ok());
        assert!(validate_issuer("https://issuer.example.com/path/").is_ok());
        assert!(matches!(
            validate_issuer("http://issuer.example.com"),
            Err(IssuerError::NotHttps { .. })
        ));
        assert!(matches!(
            validate_issuer("https://a.example/?x=1"),
            Err(IssuerError::Query(_))
        ));
        assert!(matches!(
            validate_issuer("https://a.example/#frag"),
            Err(IssuerError::Fragment(_))
        ));
        assert!(matches!(
            validate_issuer("issuer.example.com"),
            Err(IssuerError::NotAUrl { .. })
        ));
        assert!(matches!(
            validate_jwks_uri("http://a.example/jwks"),
            Err(IssuerError::NotHttps { .. })
        ));
    }

    #[test]
    fn default_jwks_uri_joins_with_one_slash() {
        assert_eq!(
            default_jwks_uri("https://a.example"),
            "https://a.example/openid/v1/jwks"
        );
        assert_eq!(
            default_jwks_uri("https://a.example/x/"),
            "https://a.example/x/openid/v1/jwks"
        );
    }
}
