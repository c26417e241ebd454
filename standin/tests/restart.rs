//! Simulated kube-apiserver restarts (SIGHUP): the files are read again, and only then.

mod common;

use std::time::Duration;

use common::{Api, KEY_A, KEY_B, Workdir, decode, fixture_key, standin_args};

const ISSUER: &str = "https://issuer.test";

/// The phases of a rotation, each followed by a restart, as keyrot drives them.
#[tokio::test]
async fn a_rotation_across_restarts_keeps_old_tokens_until_their_key_leaves_the_bundle() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let standin = common::start_standin(&work, &standin_args(&work, &[ISSUER])).unwrap();
    let api = Api::new(&work, &standin);
    let (kid_a, kid_b) = (
        fixture_key(KEY_A).public().kid().to_string(),
        fixture_key(KEY_B).public().kid().to_string(),
    );
    let old_token = api.token().await;
    assert_eq!(decode(&old_token).0["kid"], kid_a);

    // Nothing is hot-reloaded: a new bundle means nothing until the restart.
    work.write_bundle(&[KEY_A, KEY_B]);
    assert!(!api.jwks().await.contains(&kid_b));

    // Stage: B is verifiable, A still signs.
    api.restart(&standin).await;
    let jwks = api.jwks().await;
    assert!(jwks.contains(&kid_a) && jwks.contains(&kid_b), "{jwks}");
    assert_eq!(decode(&api.token().await).0["kid"], kid_a);

    // Promote: B signs; tokens signed by A still pass review.
    work.write_signing_key(KEY_B);
    api.restart(&standin).await;
    let new_token = api.token().await;
    assert_eq!(decode(&new_token).0["kid"], kid_b);
    assert_eq!(decode(&new_token).0["alg"], "ES256");
    assert_eq!(api.review(&old_token, &[]).await["authenticated"], true);
    assert_eq!(api.review(&new_token, &[]).await["authenticated"], true);

    // Retire: A leaves the bundle; its tokens die with it.
    work.write_bundle(&[KEY_B]);
    api.restart(&standin).await;
    assert!(!api.jwks().await.contains(&kid_a));
    let rejected = api.review(&old_token, &[]).await;
    assert_eq!(rejected.get("authenticated"), None);
    let error = rejected["error"].as_str().unwrap();
    assert!(error.contains("no verification key with kid"), "{error}");
    assert!(error.contains(&kid_a), "{error}");
    assert_eq!(api.review(&new_token, &[]).await["authenticated"], true);
}

/// ServiceAccounts live in etcd in a real cluster: a restart keeps them, and their tokens.
#[tokio::test]
async fn service_accounts_outlive_a_restart() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let standin = common::start_standin(&work, &standin_args(&work, &[ISSUER])).unwrap();
    let api = Api::new(&work, &standin);
    let account = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "probe"}});
    let created = api
        .post("/api/v1/namespaces/keyrot/serviceaccounts", &account)
        .await;
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();

    api.restart(&standin).await;
    let found: serde_json::Value = api
        .get("/api/v1/namespaces/keyrot/serviceaccounts/probe")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["metadata"]["uid"], created["metadata"]["uid"]);
}

#[tokio::test]
async fn the_restart_window_refuses_connections_for_the_restart_delay() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let mut args = standin_args(&work, &[ISSUER]);
    args.extend(["--restart-delay".to_string(), "600ms".to_string()]);
    let standin = common::start_standin(&work, &args).unwrap();
    let api = Api::new(&work, &standin);
    assert!(!standin.refuses_connections());

    standin.send_hangup();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !standin.refuses_connections() {
        assert!(std::time::Instant::now() < deadline, "never went down");
    }
    let down_at = std::time::Instant::now();
    api.wait_ready(&standin).await;
    let down_for = down_at.elapsed();
    assert!(
        down_for >= Duration::from_millis(400),
        "down for only {down_for:?}"
    );
    assert!(
        standin.stderr().contains("restarted"),
        "{}",
        standin.stderr()
    );
}

/// A real apiserver whose files became unusable crash-loops; the stand-in stays down.
#[tokio::test]
async fn a_restart_onto_unusable_files_stays_down_and_names_the_file() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let mut standin = common::start_standin(&work, &standin_args(&work, &[ISSUER])).unwrap();
    let api = Api::new(&work, &standin);
    api.wait_ready(&standin).await;

    std::fs::write(work.path("sa.pub"), "").unwrap();
    standin.send_hangup();
    let status = standin.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(!status.success());
    let stderr = standin.stderr();
    assert!(
        stderr.contains(&work.path("sa.pub").display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("restart failed"), "{stderr}");
    assert!(standin.refuses_connections());
}
