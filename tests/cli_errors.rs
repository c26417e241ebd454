//! Inputs kube-apiserver would refuse: unusable key files and issuers it will not serve.

mod common;

use std::path::{Path, PathBuf};

use common::{keyrot, keyrot_ok, kube, pem, read_string};
use keyrot::documents::{DiscoveryDocument, IssuerError};
use keyrot::keys::load_verification_keys;

const ISSUER: &str = "https://issuer.example.com";

/// Bad key files, each in its own temporary directory, with what stderr must say.
fn bad_files(dir: &Path) -> Vec<(&'static str, PathBuf, &'static str)> {
    let good = read_string(&pem("rsa-spki-public.pem"));
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cut = good.len() / 2;
    let wrong_base64 = good.replacen("MII", "M*I", 1);
    assert_ne!(wrong_base64, good);
    let no_keys = "does not contain any valid RSA or ECDSA public keys";
    vec![
        ("empty file", write("empty.pem", ""), no_keys),
        (
            "text without PEM",
            write("text.pem", "just words\n"),
            no_keys,
        ),
        (
            "truncated PEM",
            write("truncated.pem", &good[..cut]),
            no_keys,
        ),
        (
            "wrong base64",
            write("wrong-base64.pem", &wrong_base64),
            no_keys,
        ),
        ("missing file", dir.join("missing.pem"), "cannot read"),
        ("directory", dir.to_path_buf(), "cannot read"),
    ]
}

#[test]
fn jwks_and_discovery_refuse_bad_key_files_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("keys");
    std::fs::create_dir(&sub).unwrap();
    for (what, path, message) in bad_files(&sub) {
        let jwks = keyrot(["jwks".into(), path.clone()]);
        let discovery = keyrot([
            "discovery".into(),
            "--issuer".into(),
            ISSUER.into(),
            path.clone(),
        ]);
        for (command, run) in [("jwks", jwks), ("discovery", discovery)] {
            assert!(!run.success, "{command} {what}: {run:?}");
            assert_eq!(run.code, Some(1), "{command} {what}");
            assert_eq!(run.stdout, "", "{command} {what}");
            assert!(
                run.stderr.contains(&path.display().to_string()),
                "{command} {what}: {}",
                run.stderr
            );
            assert!(
                run.stderr.contains(message),
                "{command} {what}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_bad_file_fails_the_run_even_after_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let run = keyrot(["jwks".into(), kube("rsa-public.pem"), empty.clone()]);
    assert!(!run.success);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains(&empty.display().to_string()));
    assert!(load_verification_keys(&[kube("rsa-public.pem"), empty]).is_err());
}

#[test]
fn inspect_fails_on_bad_files_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("keys");
    std::fs::create_dir(&sub).unwrap();
    for (what, path, _) in bad_files(&sub) {
        let run = keyrot(["inspect".into(), path.clone()]);
        assert!(!run.success, "{what}: {run:?}");
        let output = format!("{}{}", run.stdout, run.stderr);
        assert!(
            output.contains(&path.display().to_string()),
            "{what}: {output}"
        );
    }
}

#[test]
fn truncated_block_after_a_good_key_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let good = read_string(&pem("ec-p256-spki-public.pem"));
    let other = read_string(&pem("rsa-spki-public.pem"));
    let path = dir.path().join("bundle.pem");
    std::fs::write(&path, format!("{good}{}", &other[..other.len() / 2])).unwrap();
    let run = keyrot_ok(["jwks".into(), path.clone()]);
    assert_eq!(
        common::jwks_kids(&run.stdout),
        common::kids_of("ec-p256-spki-public.pem")
    );
    assert!(run.stderr.starts_with("warning: "), "{}", run.stderr);
    assert!(run.stderr.contains(&path.display().to_string()));
}

fn discovery(issuer: &str, jwks_uri: Option<&str>) -> common::Run {
    let mut args: Vec<PathBuf> = vec!["discovery".into(), "--issuer".into(), issuer.into()];
    if let Some(uri) = jwks_uri {
        args.extend(["--jwks-uri".into(), uri.into()]);
    }
    args.extend([kube("rsa-public.pem"), kube("ecdsa-public.pem")]);
    keyrot(args)
}

#[test]
fn discovery_refuses_issuers_kube_would_not_serve() {
    // The error cases of kube's TestNewOpenIDMetadata, with what keyrot must say.
    let cases = [
        ("http://issuer.example.com", "must use the https scheme"),
        ("issuer.example.com", "is not a URL"),
        ("issuer", "is not a URL"),
        (
            "https://issuer.example.com?foo=bar",
            "may not include a query",
        ),
        (
            "https://issuer.example.com#baz",
            "may not include a fragment",
        ),
        (
            "https://issuer.example.com?foo=bar#baz",
            "may not include a query",
        ),
    ];
    for (issuer, message) in cases {
        let run = discovery(issuer, Some("https://issuer.example.com/openid/v1/jwks"));
        assert!(!run.success, "{issuer}: {run:?}");
        assert_eq!(run.stdout, "", "{issuer}");
        assert!(run.stderr.contains(message), "{issuer}: {}", run.stderr);
        assert!(run.stderr.contains(issuer), "{issuer}: {}", run.stderr);
    }
}

#[test]
fn discovery_refuses_jwks_uris_kube_would_not_serve() {
    for (uri, message) in [
        (
            "http://issuer.example.com/openid/v1/jwks",
            "must use the https scheme",
        ),
        ("issuer.example.com/openid/v1/jwks", "is not a URL"),
    ] {
        let run = discovery(ISSUER, Some(uri));
        assert!(!run.success, "{uri}: {run:?}");
        assert_eq!(run.stdout, "");
        assert!(run.stderr.contains("jwks_uri"), "{uri}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{uri}: {}", run.stderr);
    }
}

#[test]
fn an_http_issuer_is_refused_with_the_default_jwks_uri_too() {
    let run = discovery("http://issuer.example.com", None);
    assert!(!run.success);
    assert!(run.stderr.contains("https"), "{}", run.stderr);
}

#[test]
fn library_refuses_the_same_issuers() {
    let keys = load_verification_keys(&[kube("rsa-public.pem")])
        .unwrap()
        .keys;
    let jwks = "https://issuer.example.com/openid/v1/jwks";
    let err = |issuer: &str| DiscoveryDocument::new(issuer, jwks, &keys).unwrap_err();
    assert!(matches!(
        err("http://issuer.example.com"),
        IssuerError::NotHttps { .. }
    ));
    assert!(matches!(
        err("https://issuer.example.com?foo=bar"),
        IssuerError::Query(_)
    ));
    assert!(matches!(
        err("https://issuer.example.com#baz"),
        IssuerError::Fragment(_)
    ));
    assert!(matches!(err("issuer"), IssuerError::NotAUrl { .. }));
}

/// The discovery body kube serves for `ISSUER` with the given algs, built from kube's vector.
fn kube_discovery_with_algs(algs: &str) -> String {
    let vector = read_string(&kube("expected-openid-configuration.json"));
    let kube_algs = r#""id_token_signing_alg_values_supported":["ES256","RS256"]"#;
    assert!(vector.contains(kube_algs));
    vector.replace(
        kube_algs,
        &format!(r#""id_token_signing_alg_values_supported":{algs}"#),
    )
}

#[test]
fn signing_algs_are_sorted_and_deduplicated() {
    let files = [
        "rsa-spki-public.pem",
        "ec-p384-spki-public.pem",
        "rsa-certificate.pem",
    ];
    let mut args: Vec<PathBuf> = vec!["discovery".into(), "--issuer".into(), ISSUER.into()];
    args.extend(files.iter().map(|f| pem(f)));
    let run = keyrot_ok(args);
    assert_eq!(
        run.stdout,
        kube_discovery_with_algs(r#"["ES384","RS256"]"#) + "\n"
    );

    let paths: Vec<PathBuf> = files.iter().map(|f| pem(f)).collect();
    let keys = load_verification_keys(&paths).unwrap().keys;
    assert_eq!(keys.len(), 3);
    let doc =
        DiscoveryDocument::new(ISSUER, "https://issuer.example.com/openid/v1/jwks", &keys).unwrap();
    assert_eq!(
        doc.render(),
        kube_discovery_with_algs(r#"["ES384","RS256"]"#)
    );
}

#[test]
fn all_four_algs_appear_once_each_in_order() {
    let mut args: Vec<PathBuf> = vec!["discovery".into(), "--issuer".into(), ISSUER.into()];
    args.push(pem("mixed.pem")); // RS256, ES384, ES256, ES256, RS256
    args.push(pem("ec-p521-sec1-private.pem"));
    let run = keyrot_ok(args);
    assert_eq!(
        run.stdout,
        kube_discovery_with_algs(r#"["ES256","ES384","ES512","RS256"]"#) + "\n"
    );
}
