//! The JWKS body of `/openid/v1/jwks`.
//!
//! kube-apiserver marshals go-jose `JSONWebKey`s: members `use, kty, kid, alg, n, e` for RSA and
//! `use, kty, kid, crv, alg, x, y` for EC, no whitespace, keys in flag/file order with
//! duplicates kept (`pkg/serviceaccount/openidmetadata.go`). Struct field order fixes the
//! member order here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::go_json::escape_like_go;
use crate::keys::{PublicParams, VerificationKey};

#[derive(Serialize)]
#[serde(untagged)]
enum Jwk<'a> {
    Rsa {
        #[serde(rename = "use")]
        use_: &'static str,
        kty: &'static str,
        kid: &'a str,
        alg: &'static str,
        n: String,
        e: String,
    },
    Ec {
        #[serde(rename = "use")]
        use_: &'static str,
        kty: &'static str,
        kid: &'a str,
        crv: &'static str,
        alg: &'static str,
        x: String,
        y: String,
    },
}

#[derive(Serialize)]
struct Jwks<'a> {
    keys: Vec<Jwk<'a>>,
}

fn jwk(key: &VerificationKey) -> Jwk<'_> {
    let alg = key.alg().as_str();
    match key.params() {
        PublicParams::Rsa { n, e } => Jwk::Rsa {
            use_: "sig",
            kty: "RSA",
            kid: key.kid(),
            alg,
            n: URL_SAFE_NO_PAD.encode(n),
            e: URL_SAFE_NO_PAD.encode(e),
        },
        PublicParams::Ec { curve, x, y } => Jwk::Ec {
            use_: "sig",
            kty: "EC",
            kid: key.kid(),
            crv: curve.jwk_name(),
            alg,
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        },
    }
}

/// `{"keys":[...]}` for `keys` in the given order, byte for byte as kube-apiserver serves it.
pub fn render_jwks(keys: &[VerificationKey]) -> String {
    let doc = Jwks {
        keys: keys.iter().map(jwk).collect(),
    };
    escape_like_go(serde_json::to_string(&doc).expect("JWKS serialisation cannot fail"))
}
