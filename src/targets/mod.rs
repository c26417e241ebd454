//! Publication targets: where the issuer documents go, and how keyrot reads them back.

pub mod local_dir;

use crate::decision::Probed;
use crate::plan::{Target, TargetKind};

/// The kids the target serves now, as a cloud verifier would see them.
pub fn read_served_kids(target: &Target) -> Probed<Vec<String>> {
    match &target.kind {
        TargetKind::LocalDirectory { path } => match local_dir::read_served_kids(path) {
            Ok(kids) => Probed::Seen(kids),
            Err(why) => Probed::Failed(why),
        },
    }
}

/// The kids of a JWKS document, in order.
pub fn jwks_kids(body: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Jwks {
        keys: Vec<Jwk>,
    }
    #[derive(serde::Deserialize)]
    struct Jwk {
        kid: Option<String>,
    }
    let jwks: Jwks = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    jwks.keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| k.kid.ok_or_else(|| format!("key #{i} has no kid")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kids_in_order_and_refuses_keys_without_one() {
        assert_eq!(
            jwks_kids(br#"{"keys":[{"kid":"b"},{"kid":"a"}]}"#).unwrap(),
            ["b", "a"]
        );
        assert_eq!(
            jwks_kids(br#"{"keys":[{"kty":"RSA"}]}"#).unwrap_err(),
            "key #0 has no kid"
        );
        assert!(jwks_kids(b"<html>").unwrap_err().starts_with("not a JWKS"));
    }
}
