//! `keyrot doctor` against the kube-apiserver stand-in and the published issuer: a healthy
//! cluster, and each failure it knows, one test per failure, named after it.

mod e2e;

use std::time::Duration;

use e2e::{CallError, Settings, World, run_keyrot};
use serde_json::Value;

/// The doctor's JSON report for the world's plan, and its exit code.
fn doctor(world: &World, extra: &[&str]) -> (i32, Value) {
    let ca = world.path("tls/ca.crt").display().to_string();
    let pid = std::fs::read_to_string(world.path("standin.pid")).unwrap();
    let mut args = vec![
        "doctor",
        "--json",
        "--ca-file",
        &ca,
        "--apiserver-process",
        pid.trim(),
    ];
    args.extend(extra);
    let run = world.keyrot(&args);
    println!("{}{}", run.stdout, run.stderr);
    let report = serde_json::from_str(&run.stdout).expect("a JSON report");
    (run.code.expect("an exit code"), report)
}

/// The findings of `check` that are not ok.
fn failing<'a>(report: &'a Value, check: &str) -> Vec<&'a Value> {
    findings(report, check)
        .into_iter()
        .filter(|f| f["status"] != "ok")
        .collect()
}

fn findings<'a>(report: &'a Value, check: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

/// Every check that found something, by name.
fn failing_checks(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] != "ok")
        .map(|f| f["check"].as_str().unwrap().to_string())
        .collect()
}

/// A fresh ES256 key pair in the world's directory: (private, public).
fn new_key_pair(world: &World, name: &str) -> (String, String) {
    let private = world.path(&format!("{name}.key")).display().to_string();
    let public = world.path(&format!("{name}.pub")).display().to_string();
    let run = run_keyrot(&[
        "keygen",
        "--alg",
        "ES256",
        "--private",
        &private,
        "--public",
        &public,
    ]);
    assert!(run.success, "{run:?}");
    (private, public)
}

#[test]
fn healthy_cluster_passes_every_check() {
    let world = World::start(Settings::default());
    let (code, report) = doctor(&world, &[]);
    assert_eq!(report["verdict"], "healthy", "{report:#}");
    assert_eq!(code, 0);
    for check in [
        "signing-key-in-bundle",
        "apiserver-keys",
        "apiserver-issuer",
    ] {
        assert_eq!(findings(&report, check).len(), 1, "{check}: {report:#}");
    }
    // The target directory's file, and the issuer URL read anonymously over HTTPS.
    assert_eq!(findings(&report, "target-keys").len(), 2, "{report:#}");
}

#[test]
fn healthy_after_a_rotation() {
    let world = World::start(Settings::default());
    let before = world.signing_kid();
    let rotate = world.keyrot(&["rotate"]);
    assert!(rotate.success, "{rotate:?}");
    assert_ne!(world.signing_kid(), before, "the rotation changed nothing");
    let (code, report) = doctor(&world, &[]);
    assert_eq!(report["verdict"], "healthy", "{report:#}");
    assert_eq!(code, 0);
    let signing = findings(&report, "signing-key-in-bundle");
    assert!(
        signing[0]["detail"]
            .as_str()
            .unwrap()
            .contains(&world.signing_kid()),
        "{report:#}"
    );
}

#[test]
fn kid_missing_from_the_bundle() {
    let world = World::start(Settings::default());
    let (private, _) = new_key_pair(&world, "stray");
    std::fs::copy(&private, world.path("pki/sa.key")).unwrap();
    let (code, report) = doctor(&world, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        failing_checks(&report),
        ["signing-key-in-bundle"],
        "{report:#}"
    );
    let finding = failing(&report, "signing-key-in-bundle")[0];
    assert!(
        finding["detail"]
            .as_str()
            .unwrap()
            .contains("rejects itself"),
        "{finding:#}"
    );
    assert!(finding["fix"].as_str().unwrap().contains("openssl pkey"));
}

#[test]
fn apiserver_serving_stale_keys() {
    let world = World::start(Settings::default());
    // A key appended to the bundle and published, but kube-apiserver was not restarted.
    let (_, public) = new_key_pair(&world, "next");
    let mut bundle = std::fs::read_to_string(world.path("pki/sa.pub")).unwrap();
    bundle.push_str(&std::fs::read_to_string(&public).unwrap());
    std::fs::write(world.path("pki/sa.pub"), bundle).unwrap();
    let publish = world.keyrot(&["publish"]);
    assert!(publish.success, "{publish:?}");

    let (code, report) = doctor(&world, &[]);
    assert_eq!(code, 1);
    assert_eq!(failing_checks(&report), ["apiserver-keys"], "{report:#}");
    let detail = failing(&report, "apiserver-keys")[0]["detail"]
        .as_str()
        .unwrap();
    assert!(detail.contains("missing"), "{detail}");
    assert!(
        detail.contains("not restarted since the key files changed"),
        "{detail}"
    );
}

#[test]
fn upstream_stale() {
    let world = World::start(Settings::default());
    // The target still serves a JWKS of another key (an older publication).
    let (_, public) = new_key_pair(&world, "old");
    let jwks = run_keyrot(&["jwks", &public]);
    assert!(jwks.success, "{jwks:?}");
    std::fs::write(world.path("www/e2e/openid/v1/jwks"), jwks.stdout.trim_end()).unwrap();

    let (code, report) = doctor(&world, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        failing_checks(&report),
        ["target-keys", "target-keys"],
        "{report:#}"
    );
    for finding in failing(&report, "target-keys") {
        let detail = finding["detail"].as_str().unwrap();
        assert!(
            detail.contains("missing") && detail.contains("not expected"),
            "{detail}"
        );
        assert!(finding["fix"].as_str().unwrap().contains("keyrot publish"));
    }
}

#[test]
fn http_issuer() {
    let world = World::start(Settings {
        kubeadm_manifest: true,
        ..Settings::default()
    });
    let manifest = world.path("manifests/kube-apiserver.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let http = text.replace(
        "--service-account-issuer=https://",
        "--service-account-issuer=http://",
    );
    assert_ne!(text, http);
    std::fs::write(&manifest, http).unwrap();
    // Restarted on the http issuer, the stand-in (as kube-apiserver) stops serving the documents.
    let pid = std::fs::read_to_string(world.path("standin.pid")).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !matches!(world.served_jwks(), Err(CallError::Answered(_))) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stand-in kept serving the JWKS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let manifest = manifest.display().to_string();
    let (code, report) = doctor(
        &world,
        &["--flags-file", &manifest, "--flags-format", "kubeadm"],
    );
    assert_eq!(code, 1);
    let flags = failing(&report, "issuer-flags");
    assert_eq!(flags.len(), 1, "{report:#}");
    let detail = flags[0]["detail"].as_str().unwrap();
    assert!(detail.contains("must use the https scheme"), "{detail}");
    assert!(flags[0]["fix"].as_str().unwrap().contains("migrate-issuer"));
    assert_eq!(
        failing(&report, "apiserver-keys")[0]["status"],
        "unreachable"
    );
}

#[test]
fn unreachable_second_apiserver() {
    let world = World::start(Settings::default());
    let other = world.path("other-node.yaml");
    let kubeconfig = std::fs::read_to_string(world.path("kubeconfig.yaml")).unwrap();
    let dead = kubeconfig.replace(&world.standin_url(), "https://127.0.0.1:1");
    std::fs::write(&other, dead).unwrap();
    let other = other.display().to_string();
    let (code, report) = doctor(&world, &["--kubeconfig", &other]);
    assert_eq!(code, 1);
    let apiservers = findings(&report, "apiserver-keys");
    assert_eq!(apiservers.len(), 2, "{report:#}");
    assert_eq!(apiservers[0]["status"], "ok");
    assert_eq!(apiservers[1]["status"], "unreachable");
    assert_eq!(apiservers[1]["subject"], other.as_str());
}

#[test]
fn without_a_plan_the_files_are_named_by_flags() {
    let world = World::start(Settings::default());
    let path = |p: &str| world.path(p).display().to_string();
    let run = run_keyrot(&[
        "doctor",
        "--signing-key-file",
        &path("pki/sa.key"),
        "--verification-key-file",
        &path("pki/sa.pub"),
        "--kubeconfig",
        &path("kubeconfig.yaml"),
        "--issuer",
        &world.issuer,
        "--public-url",
        &world.issuer,
        "--ca-file",
        &path("tls/ca.crt"),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("healthy: "), "{}", run.stdout);
}

#[test]
fn invalid_plan_cannot_be_checked() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, "cluster: x\nflavour: nonsense\n").unwrap();
    let run = run_keyrot(&["doctor", "-c", &plan.display().to_string()]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stdout.is_empty());
}

#[test]
fn nothing_reachable_cannot_be_checked() {
    let run = run_keyrot(&[
        "doctor",
        "--signing-key-file",
        "/nonexistent/sa.key",
        "--verification-key-file",
        "/nonexistent/sa.pub",
    ]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stdout.contains("cannot check"), "{}", run.stdout);
}
