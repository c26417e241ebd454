//! Compact JWS tokens: signing one with a keyrot signing key, taking one apart, checking a signature.
//!
//! Signatures are checked with aws-lc, an implementation independent of the RustCrypto code
//! that signs, so a signing bug cannot hide behind a matching verification bug.

use aws_lc_rs::signature::{self as verify_api, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyrot::keys::{Alg, PublicParams, SignError, SigningKey};
use serde::{Deserialize, Serialize};

/// The protected header kube-apiserver writes: only `alg` and `kid` (go-jose sorts the members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// `header.payload.signature`, signed by `key` with its algorithm and kid.
pub fn sign(claims: &impl Serialize, key: &SigningKey) -> Result<String, SignError> {
    let header = Header {
        alg: key.public().alg().as_str().to_string(),
        kid: Some(key.public().kid().to_string()),
    };
    let signing_input = format!("{}.{}", encode_json(&header), encode_json(claims));
    let signature = key.sign_jws(signing_input.as_bytes())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

fn encode_json(value: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("JWS parts serialise to JSON"))
}

/// A token taken apart, not yet verified.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub header: Header,
    pub claims: serde_json::Value,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed JWT: {0}")]
pub struct Malformed(pub String);

/// Splits and decodes a compact JWS; the claims must be a JSON object.
pub fn parse(token: &str) -> Result<Parsed, Malformed> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(Malformed(format!("{} parts, not 3", parts.len())));
    };
    let decode = |what: &str, part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| Malformed(format!("{what} is not base64url: {e}")))
    };
    let header: Header = serde_json::from_slice(&decode("header", header)?)
        .map_err(|e| Malformed(format!("header: {e}")))?;
    let claims: serde_json::Value = serde_json::from_slice(&decode("payload", payload)?)
        .map_err(|e| Malformed(format!("payload: {e}")))?;
    if !claims.is_object() {
        return Err(Malformed("payload is not a JSON object".into()));
    }
    Ok(Parsed {
        header,
        claims,
        signing_input: format!("{}.{}", parts[0], parts[1]),
        signature: decode("signature", signature)?,
    })
}

impl Parsed {
    /// A string claim, if present.
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name)?.as_str()
    }

    /// A numeric date claim (`exp`, `nbf`, `iat`) in whole seconds, if present.
    pub fn time_claim(&self, name: &str) -> Option<i64> {
        let value = self.claims.get(name)?;
        value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))
    }

    /// `aud` as a list: RFC 7519 allows a single string or an array of strings.
    pub fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            Some(serde_json::Value::Array(many)) => many
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the signature verifies under a key with algorithm `alg` and parameters `params`.
    /// The header's `alg` must name that algorithm, so a token cannot pick a weaker one.
    pub fn verifies_with(&self, alg: Alg, params: &PublicParams) -> bool {
        self.header.alg == alg.as_str()
            && verify(alg, params, self.signing_input.as_bytes(), &self.signature)
    }
}

fn verify(alg: Alg, params: &PublicParams, message: &[u8], signature: &[u8]) -> bool {
    match (alg, params) {
        (Alg::RS256, PublicParams::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(&verify_api::RSA_PKCS1_2048_8192_SHA256, message, signature)
            .is_ok(),
        (Alg::ES256 | Alg::ES384 | Alg::ES512, PublicParams::Ec { x, y, .. }) => {
            let algorithm = match alg {
                Alg::ES256 => &verify_api::ECDSA_P256_SHA256_FIXED,
                Alg::ES384 => &verify_api::ECDSA_P384_SHA384_FIXED,
                _ => &verify_api::ECDSA_P521_SHA512_FIXED,
            };
            let point = [&[0x04][..], x, y].concat();
            UnparsedPublicKey::new(algorithm, point)
                .verify(message, signature)
                .is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use keyrot::keys::GenerateSpec;
    use serde_json::json;

    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate(GenerateSpec::P256).unwrap()
    }

    #[test]
    fn a_signed_token_parses_back_and_verifies() {
        let key = key();
        let token = sign(&json!({"iss": "https://a.example", "aud": "x"}), &key).unwrap();
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.header.alg, "ES256");
        assert_eq!(parsed.header.kid.as_deref(), Some(key.public().kid()));
        assert_eq!(parsed.str_claim("iss"), Some("https://a.example"));
        assert_eq!(parsed.audiences(), ["x"]);
        assert!(parsed.verifies_with(Alg::ES256, key.public().params()));
        assert!(!parsed.verifies_with(Alg::ES256, super::tests::key().public().params()));
    }

    #[test]
    fn the_header_holds_only_alg_and_kid() {
        let token = sign(&json!({}), &key()).unwrap();
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        let mut members: Vec<&str> = header
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        members.sort();
        assert_eq!(members, ["alg", "kid"]);
    }

    #[test]
    fn a_header_naming_another_algorithm_fails() {
        let key = key();
        let mut parsed = parse(&sign(&json!({}), &key).unwrap()).unwrap();
        parsed.header.alg = "ES384".into();
        assert!(!parsed.verifies_with(Alg::ES256, key.public().params()));
    }

    #[test]
    fn malformed_tokens_say_why() {
        assert_eq!(
            parse("a.b").unwrap_err(),
            Malformed("2 parts, not 3".into())
        );
        assert!(parse("!.e30.AA").unwrap_err().0.contains("header"));
        assert!(
            parse("eyJhbGciOiJFUzI1NiJ9.W10.AA")
                .unwrap_err()
                .0
                .contains("not a JSON object")
        );
    }
}
