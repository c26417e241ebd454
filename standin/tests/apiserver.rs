//! The stand-in as kube-apiserver: start-up refusals, the OIDC documents, TokenRequest, TokenReview.

mod common;

use common::{Api, KEY_A, KEY_B, Workdir, decode, fixture_key, repo_data, resign, standin_args};
use keyrot::documents::render_jwks;
use keyrot::keys::load_verification_keys;
use serde_json::json;

const ISSUER: &str = "https://issuer.test";

#[test]
fn refuses_to_start_on_a_bundle_without_keys() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    // A PKCS#1 public key is skipped by kube's reader, so the file yields no key at all.
    std::fs::copy(repo_data("pem/rsa-pkcs1-public.pem"), work.path("sa.pub")).unwrap();
    let refused = common::start_standin(&work, &standin_args(&work, &[ISSUER]))
        .err()
        .unwrap();
    assert!(!refused.status.success());
    let bundle = work.path("sa.pub").display().to_string();
    assert!(refused.stderr.contains(&bundle), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("does not contain any valid RSA or ECDSA public keys"),
        "{}",
        refused.stderr
    );
}

#[test]
fn refuses_to_start_on_an_unreadable_signing_key() {
    let work = Workdir::new();
    work.write_bundle(&[KEY_A]);
    // A public key where the private key should be.
    std::fs::copy(repo_data("pem/rsa-spki-public.pem"), work.path("sa.key")).unwrap();
    let refused = common::start_standin(&work, &standin_args(&work, &[ISSUER]))
        .err()
        .unwrap();
    assert!(!refused.status.success());
    let key = work.path("sa.key").display().to_string();
    assert!(refused.stderr.contains(&key), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("--service-account-signing-key-file")
    );

    std::fs::remove_file(work.path("sa.key")).unwrap();
    let refused = common::start_standin(&work, &standin_args(&work, &[ISSUER]))
        .err()
        .unwrap();
    assert!(refused.stderr.contains(&key), "{}", refused.stderr);
}

#[test]
fn refuses_duplicate_issuers() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let refused = common::start_standin(&work, &standin_args(&work, &[ISSUER, ISSUER]))
        .err()
        .unwrap();
    assert!(
        refused.stderr.contains("more than once"),
        "{}",
        refused.stderr
    );
}

/// Kubernetes' own expected bodies (`openidmetadata_test.go`) for its test keys.
#[tokio::test]
async fn serves_the_oidc_documents_byte_for_byte_as_kubernetes() {
    let work = Workdir::new();
    let kube = |name: &str| {
        repo_data(&format!("kubernetes/{name}"))
            .display()
            .to_string()
    };
    let args: Vec<String> = [
        "--service-account-key-file",
        &kube("rsa-public.pem"),
        "--service-account-key-file",
        &kube("ecdsa-public.pem"),
        "--service-account-signing-key-file",
        &kube("rsa-private.pem"),
        "--service-account-issuer",
        "https://issuer.example.com",
        "--service-account-jwks-uri",
        "https://issuer.example.com/openid/v1/jwks",
        "--tls-dir",
        &work.tls_dir().display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let standin = common::start_standin(&work, &args).unwrap();
    let api = Api::new(&work, &standin);

    let jwks = api.get("/openid/v1/jwks").await;
    assert_eq!(jwks.headers()["content-type"], "application/jwk-set+json");
    assert_eq!(jwks.headers()["cache-control"], "public, max-age=3600");
    let expected = std::fs::read_to_string(repo_data("kubernetes/expected-jwks.json")).unwrap();
    assert_eq!(jwks.text().await.unwrap(), expected);

    let discovery = api.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.headers()["content-type"], "application/json");
    let expected =
        std::fs::read_to_string(repo_data("kubernetes/expected-openid-configuration.json"))
            .unwrap();
    assert_eq!(discovery.text().await.unwrap(), expected);
}

#[tokio::test]
async fn serves_the_jwks_keyrot_renders_and_kubes_default_jwks_uri() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A, KEY_B]);
    let standin = common::start_standin(&work, &standin_args(&work, &[ISSUER])).unwrap();
    let api = Api::new(&work, &standin);

    // `keyrot jwks sa.pub` prints exactly this.
    let keys = load_verification_keys(&[work.path("sa.pub")]).unwrap().keys;
    assert_eq!(api.jwks().await, render_jwks(&keys));

    let discovery: serde_json::Value = api
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], ISSUER);
    assert_eq!(
        discovery["jwks_uri"],
        format!("https://{}/openid/v1/jwks", standin.address)
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES256", "RS256"])
    );
}

#[tokio::test]
async fn tokens_carry_the_signing_kid_and_kubes_claims() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let issuers = [ISSUER, "https://old-issuer.test"];
    let standin = common::start_standin(&work, &standin_args(&work, &issuers)).unwrap();
    let api = Api::new(&work, &standin);

    let response = api.token_request(json!({"expirationSeconds": 600})).await;
    assert_eq!(response["kind"], "TokenRequest");
    let token = response["status"]["token"].as_str().unwrap();
    let (header, claims) = decode(token);
    let key = fixture_key(KEY_A);
    assert_eq!(header, json!({"alg": "RS256", "kid": key.public().kid()}));
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(claims["aud"], json!(issuers));
    assert_eq!(claims["kubernetes.io"]["namespace"], "default");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "default");
    let exp = claims["exp"].as_i64().unwrap();
    assert_eq!(exp - claims["iat"].as_i64().unwrap(), 600);
    assert_eq!(claims["nbf"], claims["iat"]);
    let expires = chrono::DateTime::from_timestamp(exp, 0).unwrap();
    assert_eq!(
        response["status"]["expirationTimestamp"],
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );

    let default = api.token_request(json!({})).await;
    let (_, claims) = decode(default["status"]["token"].as_str().unwrap());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
}

#[tokio::test]
async fn token_requests_are_validated_like_kubes() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let standin = common::start_standin(&work, &standin_args(&work, &[ISSUER])).unwrap();
    let api = Api::new(&work, &standin);
    let body = |spec| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});

    let short = api
        .post(
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            &body(json!({"expirationSeconds": 599})),
        )
        .await;
    assert_eq!(short.status(), 422);
    let status: serde_json::Value = short.json().await.unwrap();
    assert_eq!(status["reason"], "Invalid");

    let missing = api
        .post(
            "/api/v1/namespaces/default/serviceaccounts/nobody/token",
            &body(json!({})),
        )
        .await;
    assert_eq!(missing.status(), 404);

    let anonymous = api
        .http
        .post(format!(
            "{}/api/v1/namespaces/default/serviceaccounts/default/token",
            api.base
        ))
        .body(body(json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn token_review_accepts_only_what_kube_would() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let standin = common::start_standin(&work, &standin_args(&work, &[ISSUER])).unwrap();
    let api = Api::new(&work, &standin);
    let token = api.token().await;

    let accepted = api.review(&token, &[]).await;
    assert_eq!(accepted["authenticated"], true, "{accepted}");
    assert_eq!(
        accepted["user"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(accepted["audiences"], json!([ISSUER]));

    let key = fixture_key(KEY_A);
    let other = resign(&token, &key, |c| c["iss"] = json!("https://elsewhere.test"));
    let expired = resign(&token, &key, |c| c["exp"] = json!(1_000_000_000));
    let cases = [
        (other, "not accepted"),
        (expired, "has expired"),
        (common::tamper_signature(&token), "signature is invalid"),
        (
            standin::jws::sign(&decode(&token).1, &fixture_key(KEY_B)).unwrap(),
            "no verification key with kid",
        ),
    ];
    for (token, why) in cases {
        let rejected = api.review(&token, &[]).await;
        // kube leaves `authenticated` out when it is false.
        assert_eq!(rejected.get("authenticated"), None, "{rejected}");
        let error = rejected["error"].as_str().unwrap();
        assert!(error.contains(why), "{error} should say {why}");
    }

    let elsewhere = api.review(&token, &["sts.test"]).await;
    assert!(elsewhere["error"].as_str().unwrap().contains("audiences"));
    let for_sts = api.token_request(json!({"audiences": ["sts.test"]})).await;
    let for_sts = for_sts["status"]["token"].as_str().unwrap();
    assert_eq!(
        api.review(for_sts, &["sts.test"]).await["authenticated"],
        true
    );
    assert_eq!(api.review(for_sts, &[]).await.get("authenticated"), None);
}

/// kube does not check that the signing key is in the bundle; the cluster then rejects its own
/// tokens. keyrot must catch this, so the stand-in must reproduce it.
#[tokio::test]
async fn starts_with_a_signing_key_missing_from_the_bundle_and_rejects_its_tokens() {
    let work = Workdir::new();
    work.write_signing_key(KEY_B);
    work.write_bundle(&[KEY_A]);
    let standin = common::start_standin(&work, &standin_args(&work, &[ISSUER])).unwrap();
    let api = Api::new(&work, &standin);
    let token = api.token().await;
    assert_eq!(decode(&token).0["kid"], fixture_key(KEY_B).public().kid());
    let review = api.review(&token, &[]).await;
    assert_eq!(review.get("authenticated"), None);
}
