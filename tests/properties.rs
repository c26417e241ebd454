//! Property tests of the key reader: random P-256 keys, garbage between blocks, file sequences.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{fixture_files, jwks_kids, kids_of, pem, read_string};
use der::Encode;
use elliptic_curve::sec1::ToSec1Point;
use keyrot::documents::render_jwks;
use keyrot::keys::load_verification_keys;
use keyrot::keys::reader::parse_file;
use p256::pkcs8::EncodePublicKey;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const CASES: u32 = 64;

/// Single-block fixtures that hold a key, with the oracle's kid, read once.
fn key_pool() -> &'static [(String, String, String)] {
    static POOL: OnceLock<Vec<(String, String, String)>> = OnceLock::new();
    POOL.get_or_init(|| {
        fixture_files()
            .into_iter()
            .filter(|f| !f.starts_with("mixed"))
            .filter_map(|f| {
                let kids = kids_of(f);
                (kids.len() == 1).then(|| (f.to_string(), kids[0].clone(), read_string(&pem(f))))
            })
            .collect()
    })
}

/// The kids `parse_file` reads from `text`.
fn kids_read(text: &str) -> Vec<String> {
    parse_file(Path::new("generated.pem"), text.as_bytes())
        .keys()
        .map(|k| k.kid().to_string())
        .collect()
}

/// base64url(SHA-256(DER)), computed here from the `p256` crate's own SPKI encoding.
fn kid_of_der(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// A valid P-256 secret key, from random bytes.
fn p256_secret() -> impl Strategy<Value = p256::SecretKey> {
    any::<[u8; 32]>().prop_filter_map("scalar in range", |bytes| {
        p256::SecretKey::from_slice(&bytes).ok()
    })
}

/// Text that Go's PEM decoder cannot mistake for the start of a block.
fn garbage() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        "[ -~\t]{0,30}",
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("-----".to_string()),
        Just("-----END PUBLIC KEY-----".to_string()),
        Just("END ".to_string()),
        Just("BEGIN ".to_string()),
        Just("Proc-Type: 4,ENCRYPTED".to_string()),
        Just("MIIBIjANBgkqhkiG9w0BAQEFAAOC".to_string()),
        Just("====".to_string()),
    ];
    prop::collection::vec(fragment, 0..8)
        .prop_map(|parts| parts.concat())
        .prop_filter("no BEGIN marker", |text| !text.contains("-----BEGIN"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn sec1_p256_key_has_the_kid_and_point_of_its_public_key(secret in p256_secret()) {
        let sec1 = secret.to_sec1_pem(der::pem::LineEnding::LF).unwrap();
        let public = secret.public_key();
        let spki_der = public.to_public_key_der().unwrap();
        let spki_pem = public.to_public_key_pem(der::pem::LineEnding::LF).unwrap();

        let from_sec1 = parse_file(Path::new("sec1.pem"), sec1.as_bytes());
        let keys: Vec<_> = from_sec1.keys().collect();
        prop_assert_eq!(keys.len(), 1);
        let from_spki = kids_read(&spki_pem);
        prop_assert_eq!(&from_spki, &[keys[0].kid().to_string()]);
        prop_assert_eq!(keys[0].kid(), kid_of_der(spki_der.as_bytes()));

        let jwks: serde_json::Value = serde_json::from_str(&render_jwks(&[keys[0].clone()])).unwrap();
        let jwk = &jwks["keys"][0];
        let point = public.to_sec1_point(false);
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        prop_assert_eq!(x.as_slice(), point.x().unwrap().as_slice());
        prop_assert_eq!(y.as_slice(), point.y().unwrap().as_slice());
        prop_assert_eq!(&jwk["crv"], "P-256");
        prop_assert_eq!(&jwk["alg"], "ES256");
    }

    /// Go pads a SEC1 private key shorter than the curve order back to full length
    /// (`x509.ParseECPrivateKey`), so encoders that drop leading zero bytes still work.
    #[test]
    fn sec1_p256_key_with_leading_zeros_dropped_is_the_same_key(
        secret in p256_secret(),
        zeros in 1usize..=8,
    ) {
        let mut scalar = secret.to_bytes().to_vec();
        scalar[..zeros].fill(0);
        let Ok(secret) = p256::SecretKey::from_slice(&scalar) else {
            return Ok(()); // A zero scalar: not a key.
        };
        let der = sec1::EcPrivateKey {
            private_key: &scalar[zeros..],
            parameters: Some(sec1::EcParameters::NamedCurve(
                der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"),
            )),
            public_key: None,
        }
        .to_der()
        .unwrap();
        let text = pem::encode(&pem::Pem::new("EC PRIVATE KEY", der));
        let spki_der = secret.public_key().to_public_key_der().unwrap();
        prop_assert_eq!(kids_read(&text), vec![kid_of_der(spki_der.as_bytes())]);
    }

    #[test]
    fn garbage_between_blocks_changes_nothing(
        picks in prop::collection::vec(0usize..1000, 1..6),
        gaps in prop::collection::vec(garbage(), 7),
        crlf in any::<bool>(),
    ) {
        let pool = key_pool();
        let blocks: Vec<&(String, String, String)> =
            picks.iter().map(|i| &pool[i % pool.len()]).collect();
        let clean: String = blocks.iter().map(|b| b.2.as_str()).collect();
        let mut dirty = String::new();
        for (block, gap) in blocks.iter().zip(&gaps) {
            if !gap.is_empty() {
                dirty.push_str(gap);
                dirty.push('\n');
            }
            dirty.push_str(&block.2);
        }
        dirty.push_str(&gaps[6]);
        let (clean, dirty) = if crlf {
            (clean.replace('\n', "\r\n"), dirty.replace('\n', "\r\n"))
        } else {
            (clean, dirty)
        };
        let want: Vec<String> = blocks.iter().map(|b| b.1.clone()).collect();
        prop_assert_eq!(kids_read(&clean), want.clone());
        prop_assert_eq!(kids_read(&dirty), want);
    }

    #[test]
    fn jwks_keeps_file_order_and_duplicates(picks in prop::collection::vec(0usize..1000, 1..10)) {
        let pool = key_pool();
        let chosen: Vec<&(String, String, String)> =
            picks.iter().map(|i| &pool[i % pool.len()]).collect();
        let paths: Vec<PathBuf> = chosen.iter().map(|c| pem(&c.0)).collect();
        let loaded = load_verification_keys(&paths).unwrap();
        let want: Vec<String> = chosen.iter().map(|c| c.1.clone()).collect();
        prop_assert_eq!(jwks_kids(&render_jwks(&loaded.keys)), want);
    }
}

#[test]
fn the_pool_holds_every_algorithm() {
    let pool = key_pool();
    assert!(pool.len() >= 10, "{}", pool.len());
    let algs: std::collections::BTreeSet<String> = common::expected_rows()
        .iter()
        .filter(|r| pool.iter().any(|p| p.0 == r.file))
        .filter_map(|r| match &r.outcome {
            common::ExpectedOutcome::Key { alg, .. } => Some(alg.clone()),
            common::ExpectedOutcome::Skip { .. } => None,
        })
        .collect();
    assert_eq!(algs.len(), 4, "{algs:?}");
}
