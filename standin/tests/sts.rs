//! The STS-like verifier against documents served by `oidc-static-server`, as a cloud sees them.

mod common;

use std::path::Path;

use common::{Api, KEY_A, KEY_B, Process, Workdir, fixture_key, resign, standin_args};
use serde_json::json;
use standin::sts::{Sts, StsError};

const AUDIENCE: &str = "sts.test";

/// A static server, an issuer under it (`/tenant`), and a stand-in issuing for it.
struct World {
    work: Workdir,
    issuer: String,
    api: Api,
    _static: Process,
    _standin: Process,
}

impl World {
    fn public_dir(&self) -> std::path::PathBuf {
        self.work.path("public/tenant")
    }

    /// Copies the stand-in's documents to the public directory, as keyrot's local target does.
    async fn publish(&self) {
        let jwks = self.api.jwks().await;
        let discovery = self
            .api
            .get("/.well-known/openid-configuration")
            .await
            .text()
            .await
            .unwrap();
        write(&self.public_dir().join("openid/v1/jwks"), &jwks);
        write(
            &self.public_dir().join(".well-known/openid-configuration"),
            &discovery,
        );
    }

    fn sts(&self, issuer: &str) -> Sts {
        Sts::new(issuer, AUDIENCE, &self.work.ca_pem()).unwrap()
    }

    async fn token(&self) -> String {
        let response = self
            .api
            .token_request(json!({"audiences": [AUDIENCE]}))
            .await;
        response["status"]["token"].as_str().unwrap().to_string()
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

async fn world(signing: &str, bundle: &[&str]) -> World {
    let work = Workdir::new();
    std::fs::create_dir_all(work.path("public")).unwrap();
    let static_args: Vec<String> = [
        "--dir",
        &work.path("public").display().to_string(),
        "--tls-dir",
        &work.tls_dir().display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let static_server = Process::start(
        env!("CARGO_BIN_EXE_oidc-static-server"),
        &static_args,
        work.path("static.log"),
    )
    .unwrap();
    let issuer = format!("{}/tenant", static_server.url());

    work.write_signing_key(signing);
    work.write_bundle(bundle);
    let mut args = standin_args(&work, &[&issuer]);
    args.extend([
        "--service-account-jwks-uri".to_string(),
        format!("{issuer}/openid/v1/jwks"),
    ]);
    let standin = common::start_standin(&work, &args).unwrap();
    let api = Api::new(&work, &standin);
    World {
        work,
        issuer,
        api,
        _static: static_server,
        _standin: standin,
    }
}

#[tokio::test]
async fn accepts_a_token_whose_key_is_published() {
    let world = world(KEY_A, &[KEY_A]).await;
    world.publish().await;
    let verified = world
        .sts(&world.issuer)
        .verify(&world.token().await)
        .await
        .unwrap();
    assert_eq!(verified.kid, fixture_key(KEY_A).public().kid());
    assert_eq!(
        verified.subject.as_deref(),
        Some("system:serviceaccount:default:default")
    );
}

#[tokio::test]
async fn the_static_server_uses_kubes_content_types() {
    let world = world(KEY_A, &[KEY_A]).await;
    world.publish().await;
    let http = common::https_client(&world.work);
    let get = |path: &str| http.get(format!("{}{path}", world.issuer)).send();
    let jwks = get("/openid/v1/jwks").await.unwrap();
    assert_eq!(jwks.headers()["content-type"], "application/jwk-set+json");
    let discovery = get("/.well-known/openid-configuration").await.unwrap();
    assert_eq!(discovery.headers()["content-type"], "application/json");
    assert_eq!(get("/nothing").await.unwrap().status(), 404);
}

/// Promoting before publishing is exactly what breaks clouds: the kid is unknown upstream.
#[tokio::test]
async fn rejects_a_kid_the_published_jwks_lacks() {
    let world = world(KEY_B, &[KEY_A, KEY_B]).await;
    write(
        &world.public_dir().join(".well-known/openid-configuration"),
        &world
            .api
            .get("/.well-known/openid-configuration")
            .await
            .text()
            .await
            .unwrap(),
    );
    let only_a = keyrot::documents::render_jwks(&[fixture_key(KEY_A).public().clone()]);
    write(&world.public_dir().join("openid/v1/jwks"), &only_a);

    let token = world.token().await;
    let error = world.sts(&world.issuer).verify(&token).await.unwrap_err();
    let kid_b = fixture_key(KEY_B).public().kid().to_string();
    assert_eq!(error, StsError::UnknownKid(kid_b));

    world.publish().await;
    world.sts(&world.issuer).verify(&token).await.unwrap();
}

#[tokio::test]
async fn rejects_a_token_from_another_issuer() {
    let world = world(KEY_A, &[KEY_A]).await;
    world.publish().await;
    let token = world.token().await;
    let foreign = resign(&token, &fixture_key(KEY_A), |c| {
        c["iss"] = json!("https://elsewhere.test")
    });
    let error = world.sts(&world.issuer).verify(&foreign).await.unwrap_err();
    assert_eq!(
        error,
        StsError::WrongIssuer {
            expected: world.issuer.clone(),
            found: Some("https://elsewhere.test".into()),
        }
    );
}

/// A discovery document must name the very issuer it was fetched for, trailing slash included.
#[tokio::test]
async fn rejects_discovery_that_names_another_issuer() {
    let world = world(KEY_A, &[KEY_A]).await;
    world.publish().await;
    let token = world.token().await;
    let with_slash = format!("{}/", world.issuer);
    let error = world.sts(&with_slash).verify(&token).await.unwrap_err();
    assert_eq!(
        error,
        StsError::IssuerMismatch {
            configured: with_slash,
            discovered: world.issuer.clone(),
        }
    );
}

#[tokio::test]
async fn rejects_a_tampered_signature() {
    let world = world(KEY_A, &[KEY_A]).await;
    world.publish().await;
    let token = common::tamper_signature(&world.token().await);
    let error = world.sts(&world.issuer).verify(&token).await.unwrap_err();
    assert_eq!(
        error,
        StsError::BadSignature(fixture_key(KEY_A).public().kid().to_string())
    );
}

#[tokio::test]
async fn rejects_the_wrong_audience_and_expired_tokens() {
    let world = world(KEY_A, &[KEY_A]).await;
    world.publish().await;
    let sts = world.sts(&world.issuer);
    let for_kube = world.api.token().await;
    assert!(matches!(
        sts.verify(&for_kube).await.unwrap_err(),
        StsError::WrongAudience { expected, .. } if expected == AUDIENCE
    ));

    let token = world.token().await;
    let exp = common::decode(&token).1["exp"].as_i64().unwrap();
    assert_eq!(
        sts.verify_at(&token, exp).await.unwrap_err(),
        StsError::Expired { exp, now: exp }
    );
    sts.verify_at(&token, exp - 1).await.unwrap();
}

#[tokio::test]
async fn says_which_fetch_failed() {
    let world = world(KEY_A, &[KEY_A]).await;
    let error = world
        .sts(&world.issuer)
        .verify(&world.token().await)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StsError::Fetch { url, reason }
            if url.ends_with("/tenant/.well-known/openid-configuration") && reason.contains("404")),
        "{error:?}"
    );
}
