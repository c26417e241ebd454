//! The discovery document of `/.well-known/openid-configuration` and kube's issuer URL rules.
//!
//! Member order and values follow `pkg/serviceaccount/openidmetadata.go`: issuer, jwks_uri,
//! response_types_supported ["id_token"], subject_types_supported ["public"], and
//! id_token_signing_alg_values_supported, the sorted, de-duplicated algs of the JWKS.

use std::collections::BTreeSet;

use serde::Serialize;

use super::JWKS_PATH;
use super::go_json::escape_like_go;
use crate::keys::{Alg, VerificationKey};

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
        Ok(Self::for_algs(
            issuer,
            jwks_uri,
            keys.iter().map(|k| k.alg()),
        ))
    }

    /// The document for keys of these algorithms, for an issuer and jwks_uri already validated
    /// (a loaded plan's): what the decision core expects a target to serve, without the keys.
    pub fn for_algs(issuer: &str, jwks_uri: &str, algs: impl IntoIterator<Item = Alg>) -> Self {
        let algs: BTreeSet<&'static str> = algs.into_iter().map(Alg::as_str).collect();
        Self {
            issuer: issuer.to_string(),
            jwks_uri: jwks_uri.to_string(),
            response_types_supported: ["id_token"],
            subject_types_supported: ["public"],
            id_token_signing_alg_values_supported: algs.into_iter().collect(),
        }
    }

    /// The body kube-apiserver serves.
    pub fn render(&self) -> String {
        escape_like_go(serde_json::to_string(self).expect("discovery serialisation cannot fail"))
    }
}

/// What differs between a discovery document as `served` and the one keyrot renders
/// (`expected`), member by member; `None` when they are the same.
///
/// Both are compared as parsed JSON, not byte for byte: verifiers parse the document, so member
/// order and whitespace change nothing for them, while a front that re-serialises it (a CDN
/// transform, a hand-published copy holding the same members) would otherwise keep the
/// read-back gate closed over a difference no verifier can see. Every member and every value
/// still counts: a stale `id_token_signing_alg_values_supported` or an extra member differs.
pub fn differences(expected: &str, served: &[u8]) -> Option<String> {
    use serde_json::{Map, Value};
    let expected: Map<String, Value> =
        serde_json::from_str(expected).expect("keyrot renders a JSON object");
    let served: Map<String, Value> = match serde_json::from_slice(served) {
        Ok(served) => served,
        Err(e) => return Some(format!("not a JSON object: {e}")),
    };
    let mut parts = Vec::new();
    for (member, want) in &expected {
        match served.get(member) {
            None => parts.push(format!("{member} is missing, expected {want}")),
            Some(got) if got != want => parts.push(format!("{member} is {got}, expected {want}")),
            Some(_) => {}
        }
    }
    for (member, got) in &served {
        if !expected.contains_key(member) {
            parts.push(format!("{member} ({got}) is not expected"));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(algs: &[Alg]) -> String {
        DiscoveryDocument::for_algs(
            "https://a.example",
            "https://a.example/openid/v1/jwks",
            algs.iter().copied(),
        )
        .render()
    }

    #[test]
    fn differences_name_each_member_and_ignore_layout() {
        let both = rendered(&[Alg::RS256, Alg::ES256]);
        assert_eq!(differences(&both, both.as_bytes()), None);
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&both).unwrap(),
        )
        .unwrap();
        assert_eq!(differences(&both, pretty.as_bytes()), None);
        assert_eq!(
            differences(&both, rendered(&[Alg::ES256]).as_bytes()).unwrap(),
            r#"id_token_signing_alg_values_supported is ["ES256"], expected ["ES256","RS256"]"#
        );
        let extra = both.replacen('{', r#"{"claims_supported":["sub"],"#, 1);
        assert_eq!(
            differences(&both, extra.as_bytes()).unwrap(),
            r#"claims_supported (["sub"]) is not expected"#
        );
        let missing = r#"{"issuer":"https://a.example"}"#;
        assert!(
            differences(&both, missing.as_bytes()).unwrap().contains(
                r#"; jwks_uri is missing, expected "https://a.example/openid/v1/jwks"; "#
            )
        );
        assert!(
            differences(&both, b"<html>")
                .unwrap()
                .starts_with("not a JSON object")
        );
    }

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
