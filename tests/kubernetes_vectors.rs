//! Kubernetes' own test vectors: keyrot's JWKS and discovery bodies equal kube-apiserver's bytes.

mod common;

use std::path::PathBuf;

use common::{keyrot, keyrot_ok, kube, openssl_kid, read_string};
use keyrot::documents::{DiscoveryDocument, default_jwks_uri, render_jwks};
use keyrot::keys::load_verification_keys;
use keyrot::keys::reader::read_file;

const ISSUER: &str = "https://issuer.example.com";

fn expected_jwks() -> String {
    read_string(&kube("expected-jwks.json"))
}

fn expected_discovery() -> String {
    read_string(&kube("expected-openid-configuration.json"))
}

fn paths(names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|n| kube(n)).collect()
}

#[test]
fn jwks_from_public_keys_is_kubes_body() {
    let run = keyrot_ok([
        "jwks".into(),
        kube("rsa-public.pem"),
        kube("ecdsa-public.pem"),
    ]);
    assert_eq!(run.stdout, expected_jwks() + "\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn jwks_from_private_keys_publishes_only_the_public_halves() {
    let run = keyrot_ok([
        "jwks".into(),
        kube("rsa-private.pem"),
        kube("ecdsa-private.pem"),
    ]);
    assert_eq!(run.stdout, expected_jwks() + "\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn discovery_from_public_keys_is_kubes_body() {
    let run = keyrot_ok([
        "discovery".into(),
        "--issuer".into(),
        ISSUER.into(),
        kube("rsa-public.pem"),
        kube("ecdsa-public.pem"),
    ]);
    assert_eq!(run.stdout, expected_discovery() + "\n");
}

#[test]
fn discovery_from_private_keys_is_kubes_body() {
    let run = keyrot_ok([
        "discovery".into(),
        "--issuer".into(),
        ISSUER.into(),
        kube("rsa-private.pem"),
        kube("ecdsa-private.pem"),
    ]);
    assert_eq!(run.stdout, expected_discovery() + "\n");
}

#[test]
fn discovery_with_explicit_jwks_uri_is_kubes_body() {
    let run = keyrot_ok([
        "discovery".into(),
        "--issuer".into(),
        ISSUER.into(),
        "--jwks-uri".into(),
        "https://issuer.example.com/openid/v1/jwks".into(),
        kube("rsa-public.pem"),
        kube("ecdsa-public.pem"),
    ]);
    assert_eq!(run.stdout, expected_discovery() + "\n");
}

/// `TestNewOpenIDMetadata`, case "valid inputs, IP addresses instead of domains": the issuer
/// `https://192.0.2.1:80` with jwks_uri `https://192.0.2.1:80/openid/v1/jwks`.
#[test]
fn discovery_for_an_ip_address_issuer_is_kubes_body() {
    let want = r#"{"issuer":"https://192.0.2.1:80","jwks_uri":"https://192.0.2.1:80/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["ES256","RS256"]}"#;
    let run = keyrot_ok([
        "discovery".into(),
        "--issuer".into(),
        "https://192.0.2.1:80".into(),
        kube("rsa-public.pem"),
        kube("ecdsa-public.pem"),
    ]);
    assert_eq!(run.stdout, format!("{want}\n"));
}

#[test]
fn library_renders_kubes_jwks_from_public_and_private_keys() {
    for names in [
        ["rsa-public.pem", "ecdsa-public.pem"],
        ["rsa-private.pem", "ecdsa-private.pem"],
    ] {
        let loaded = load_verification_keys(&paths(&names)).unwrap();
        assert_eq!(render_jwks(&loaded.keys), expected_jwks(), "{names:?}");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}

#[test]
fn library_renders_kubes_discovery_document() {
    let loaded = load_verification_keys(&paths(&["rsa-public.pem", "ecdsa-public.pem"])).unwrap();
    let jwks_uri = default_jwks_uri(ISSUER);
    assert_eq!(jwks_uri, "https://issuer.example.com/openid/v1/jwks");
    let doc = DiscoveryDocument::new(ISSUER, &jwks_uri, &loaded.keys).unwrap();
    assert_eq!(doc.render(), expected_discovery());
}

#[test]
fn kid_of_kubes_rsa_key_is_the_stable_one() {
    // Pinned by kube's TestKeyIDStability; also what openssl computes.
    let report = read_file(&kube("rsa-public.pem")).unwrap();
    let kids: Vec<_> = report.keys().map(|k| k.kid().to_string()).collect();
    assert_eq!(kids, ["JHJehTTTZlsspKHT-GaJxK7Kd1NQgZJu3fyK6K_QDYU"]);
    assert_eq!(kids[0], openssl_kid(&kube("rsa-public.pem"), true));
}

#[test]
fn ecdsa_private_key_with_params_reads_as_exactly_one_key() {
    let path = kube("ecdsa-private-with-params.pem");
    let report = read_file(&path).unwrap();
    let keys: Vec<_> = report.keys().collect();
    assert_eq!(keys.len(), 1, "{report:?}");
    assert_eq!(keys[0].kid(), openssl_kid(&path, false));
    assert_eq!(keys[0].alg().as_str(), "ES256");
    // The EC PARAMETERS block is expected next to the key, so it is not warned about.
    assert_eq!(report.warnings().count(), 0);

    let run = keyrot_ok(["jwks".into(), path.clone()]);
    assert_eq!(common::jwks_kids(&run.stdout), [openssl_kid(&path, false)]);
    assert_eq!(run.stderr, "");
}

#[test]
fn other_public_key_has_its_own_kid_and_comes_in_file_order() {
    let other = kube("other-public.pem");
    let run = keyrot_ok([
        "jwks".into(),
        other.clone(),
        kube("rsa-public.pem"),
        other.clone(),
    ]);
    let other_kid = openssl_kid(&other, true);
    assert_ne!(other_kid, "JHJehTTTZlsspKHT-GaJxK7Kd1NQgZJu3fyK6K_QDYU");
    assert_eq!(
        common::jwks_kids(&run.stdout),
        [
            other_kid.as_str(),
            "JHJehTTTZlsspKHT-GaJxK7Kd1NQgZJu3fyK6K_QDYU",
            other_kid.as_str()
        ]
    );
}

#[test]
fn expected_bodies_have_no_trailing_newline_so_the_cli_adds_exactly_one() {
    // Guards the comparisons above: the vectors are the bare response bodies.
    assert!(!expected_jwks().ends_with('\n'));
    assert!(!expected_discovery().ends_with('\n'));
    let run = keyrot(["jwks".into(), kube("rsa-public.pem")]);
    assert!(run.stdout.ends_with("}\n") && !run.stdout.ends_with("\n\n"));
}
