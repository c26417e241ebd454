//! The canary token: a short-lived JWT signed with the rotation's new key, shaped as the clouds
//! expect a Kubernetes ServiceAccount token (header alg, kid and typ; iss, sub, aud, iat, nbf, exp).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::json;
use zeroize::Zeroizing;

use crate::keys::{SignError, SigningKey};
use crate::plan::Canary;

/// How long a canary token is valid: long enough for one exchange and its retries, short enough
/// that a copy of it is worth little. Every cloud refuses an expired token.
pub const LIFETIME_SECONDS: i64 = 300;

/// A canary token for `canary`, issued by `issuer`, signed by `key` at `now`. The token is a
/// bearer credential for the canary's (powerless) trust, so its text is wiped when dropped.
pub fn sign(
    issuer: &str,
    canary: &Canary,
    key: &SigningKey,
    now: DateTime<Utc>,
) -> Result<Zeroizing<String>, SignError> {
    let header = json!({
        "alg": key.public().alg().as_str(),
        "kid": key.public().kid(),
        "typ": "JWT",
    });
    let issued = now.timestamp();
    let claims = json!({
        "iss": issuer,
        "sub": canary.subject,
        "aud": canary.audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + LIFETIME_SECONDS,
        "jti": jti(),
    });
    let signing_input = format!("{}.{}", encode(&header), encode(&claims));
    let signature = key.sign_jws(signing_input.as_bytes())?;
    Ok(Zeroizing::new(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    )))
}

fn encode(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A random token id, so that no two canaries are the same token (GCP and Entra may refuse a
/// replayed assertion).
fn jti() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
