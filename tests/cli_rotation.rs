//! The plan-driven commands end to end on a sandbox-like plan in a temporary directory: init,
//! the dry run (which must write nothing), rotate, approve, abort, status and the state lock.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{keyrot, keyrot_ok, read_string};
use sha2::{Digest, Sha256};

/// A plan like the sandbox, with waits of a second or less; `extra` is appended verbatim.
fn sandbox(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let plan = common::sandbox_plan(
        dir.path(),
        "publishSettle: 1s, retireAfter: 1s, gateTimeout: 10s, retryBackoff: 1s, retryBackoffMax: 2s",
    );
    let mut text = std::fs::read_to_string(&plan).unwrap();
    text.push_str(extra);
    std::fs::write(&plan, text).unwrap();
    (dir, plan)
}

/// Every file and directory under `dir`: path -> (mode, SHA-256 of the contents).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let digest = if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            Vec::new()
        } else {
            Sha256::digest(std::fs::read(&path).unwrap()).to_vec()
        };
        out.insert(path, (meta.mode(), digest));
    }
    out
}

fn status_json(plan: &Path) -> serde_json::Value {
    let run = keyrot_ok(["status", "-c", plan.to_str().unwrap(), "--output", "json"]);
    serde_json::from_str(&run.stdout).unwrap()
}

fn bundle_kids(dir: &Path) -> Vec<String> {
    let out = keyrot_ok(["jwks", dir.join("pki/sa.pub").to_str().unwrap()]).stdout;
    keyrot::targets::jwks_kids(out.as_bytes()).unwrap()
}

#[test]
fn the_dry_run_writes_nothing_before_or_after_init() {
    let (dir, plan) = sandbox("");
    let plan = plan.to_str().unwrap();
    let before = snapshot(dir.path());
    let run = keyrot(["plan", "-c", plan]);
    assert!(!run.success, "no keys yet: the dry run says it is blocked");
    assert!(run.stdout.contains("keyrot init"), "{}", run.stdout);
    assert_eq!(snapshot(dir.path()), before, "no state dir, no lock file");

    keyrot_ok(["init", "-c", plan]);
    let before = snapshot(dir.path());
    let text = keyrot_ok(["plan", "-c", plan]).stdout;
    let json = keyrot_ok([
        "plan",
        "-c",
        plan,
        "--output",
        "json",
        "--at",
        "2030-01-01T00:00:00Z",
    ])
    .stdout;
    assert_eq!(snapshot(dir.path()), before, "the dry run changed files");

    assert!(text.contains("wait [publish-settle]"), "{text}");
    assert!(text.contains("wait [retire-after]"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["starts_at"], "2030-01-01T00:00:00Z");
    assert_eq!(json["blocked"], serde_json::Value::Null);
    assert_eq!(
        json["before"]["verification_bundle"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn init_creates_a_key_set_once_and_rotate_replaces_it_everywhere() {
    let (dir, plan_path) = sandbox("");
    let plan = plan_path.to_str().unwrap();
    let init = keyrot_ok(["init", "-c", plan]);
    let first = init
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("kid "))
        .unwrap()
        .to_string();
    assert_eq!(bundle_kids(dir.path()), std::slice::from_ref(&first));
    let key_mode = std::fs::metadata(dir.path().join("pki/sa.key"))
        .unwrap()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);

    let again = keyrot(["init", "-c", plan]);
    assert!(
        !again.success && again.stderr.contains("already exists"),
        "{again:?}"
    );

    let rotate = keyrot_ok(["rotate", "-c", plan]);
    assert!(
        rotate.stdout.contains("rotation complete"),
        "{}",
        rotate.stdout
    );
    let status = status_json(&plan_path);
    let keys = status["keys"].as_array().unwrap();
    let active: Vec<&str> = keys
        .iter()
        .filter(|k| k["role"] == "active")
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(active.len(), 1);
    assert_ne!(active[0], first);
    assert!(
        keys.iter()
            .any(|k| k["kid"] == first.as_str() && k["role"] == "retired")
    );
    assert_eq!(status["phase"], serde_json::Value::Null);
    assert_eq!(bundle_kids(dir.path()), [active[0]]);

    // What was published is what kube-apiserver would serve for the new bundle.
    let jwks = keyrot_ok(["jwks", dir.path().join("pki/sa.pub").to_str().unwrap()]).stdout;
    assert_eq!(
        read_string(&dir.path().join("www/openid/v1/jwks")) + "\n",
        jwks
    );
    let discovery = read_string(&dir.path().join("www/.well-known/openid-configuration"));
    assert!(discovery.starts_with(r#"{"issuer":"https://issuer.example.com/test","jwks_uri":"https://issuer.example.com/test/openid/v1/jwks""#));
    // Only the new key's private copy is left in keyrot's directory.
    let private: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .collect();
    assert_eq!(private.len(), 1);
}

#[test]
fn a_phase_held_for_approval_stops_the_foreground_run_until_approved() {
    let (dir, plan_path) = sandbox("approvals: [promote]\n");
    let plan = plan_path.to_str().unwrap();
    keyrot_ok(["init", "-c", plan]);
    let first = bundle_kids(dir.path());
    let rotate = keyrot_ok(["rotate", "-c", plan]);
    assert!(rotate.stdout.contains("[approval]"), "{}", rotate.stdout);
    let status = status_json(&plan_path);
    assert_eq!(status["phase"], "promote");
    assert_eq!(status["blocked_by"][0]["gate"], "approval");
    assert_eq!(bundle_kids(dir.path()).len(), 2);

    keyrot_ok(["approve", "-c", plan]);
    let after = bundle_kids(dir.path());
    assert_eq!(after.len(), 1);
    assert_ne!(after, first);
}

#[test]
fn abort_before_promotion_leaves_the_old_key_signing_and_alone_in_the_bundle() {
    let (dir, plan_path) = sandbox("approvals: [promote]\n");
    let plan = plan_path.to_str().unwrap();
    keyrot_ok(["init", "-c", plan]);
    let first = bundle_kids(dir.path());
    let signing_before = std::fs::read(dir.path().join("pki/sa.key")).unwrap();
    keyrot_ok(["rotate", "-c", plan]);
    let abort = keyrot_ok(["abort", "-c", plan]);
    assert!(
        abort.stdout.contains("rotation aborted"),
        "{}",
        abort.stdout
    );
    assert_eq!(bundle_kids(dir.path()), first);
    assert_eq!(
        std::fs::read(dir.path().join("pki/sa.key")).unwrap(),
        signing_before
    );
    let published = read_string(&dir.path().join("www/openid/v1/jwks"));
    assert_eq!(
        keyrot::targets::jwks_kids(published.as_bytes()).unwrap(),
        first
    );
    assert_eq!(status_json(&plan_path)["phase"], serde_json::Value::Null);
}

#[test]
fn a_second_keyrot_cannot_act_while_one_holds_the_lock() {
    let (dir, plan_path) = sandbox("");
    let plan = plan_path.to_str().unwrap();
    keyrot_ok(["init", "-c", plan]);
    let _held = keyrot::state::StateStore::new(dir.path().join("state"))
        .try_lock()
        .unwrap();
    let run = keyrot(["rotate", "-c", plan]);
    assert!(!run.success);
    assert!(run.stderr.contains("holds the lock"), "{}", run.stderr);
    // Reading still works.
    status_json(&plan_path);
}

#[test]
fn a_bad_plan_is_refused_with_its_location_and_nothing_is_written() {
    let (dir, plan_path) = sandbox("keepRetired: many\n");
    let before = snapshot(dir.path());
    let run = keyrot(["rotate", "-c", plan_path.to_str().unwrap()]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("plan.yaml:") && run.stderr.contains("keepRetired"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn temp_files_that_interrupted_writes_left_are_removed_by_the_next_run() {
    let (dir, plan_path) = sandbox("");
    let plan = plan_path.to_str().unwrap();
    keyrot_ok(["init", "-c", plan]);
    // What a keyrot killed inside an atomic write leaves, in each directory keyrot writes to.
    let stale: Vec<PathBuf> = ["state", "keys", "pki", "www/openid/v1", "www/.well-known"]
        .iter()
        .map(|d| dir.path().join(d).join(".keyrot-AbC123.tmp"))
        .collect();
    for path in &stale {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "cut short").unwrap();
    }
    let unrelated = dir.path().join("pki/.keep");
    std::fs::write(&unrelated, "not keyrot's").unwrap();

    let run = keyrot_ok(["rotate", "-c", plan]);
    for path in &stale {
        assert!(!path.exists(), "{} is still there", path.display());
        let said = format!("removed {}", path.display());
        assert!(run.stdout.contains(&said), "{}", run.stdout);
    }
    assert!(unrelated.exists());
}
