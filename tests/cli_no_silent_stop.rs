//! Commands that cannot make progress say so and fail; `status` tells a rotation nothing carries
//! on, and keeps showing the rotation while a key file is broken.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{keyrot, keyrot_ok, sandbox_plan};

/// A sandbox-like plan in a scratch directory; `publish_settle` long enough to catch a rotation
/// in the middle.
fn scratch(publish_settle: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let timings = format!(
        "publishSettle: {publish_settle}, retireAfter: 1s, gateTimeout: 10m, retryBackoff: 1s, \
         retryBackoffMax: 2s"
    );
    let plan = sandbox_plan(dir.path(), &timings);
    (dir, plan)
}

fn status_text(plan: &Path) -> String {
    keyrot_ok(["status", "-c", plan.to_str().unwrap()]).stdout
}

fn status_json(plan: &Path) -> serde_json::Value {
    let run = keyrot_ok(["status", "-c", plan.to_str().unwrap(), "--output", "json"]);
    serde_json::from_str(&run.stdout).unwrap()
}

/// Waits, with a generous bound, until `condition` holds.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `keyrot rotate --foreground` in the background, its output discarded.
fn rotate_in_background(plan: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keyrot"))
        .args(["rotate", "--foreground", "-c", plan.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn rotate_without_key_files_fails_and_leaves_no_request_for_init_to_act_on() {
    let (_dir, plan) = scratch("1s");
    let run = keyrot(["rotate", "-c", plan.to_str().unwrap()]);
    assert!(!run.success, "{run:?}");
    assert!(run.stderr.contains("nothing was done"), "{}", run.stderr);
    assert!(run.stderr.contains("sa.pub is missing"), "{}", run.stderr);

    let init = keyrot_ok(["init", "-c", plan.to_str().unwrap()]);
    assert!(!init.stdout.contains("rotation started"), "{}", init.stdout);
    let status = status_json(&plan);
    assert_eq!(status["rotation"], serde_json::Value::Null, "{status}");
    assert_eq!(status["in_progress"], false, "{status}");
    assert_eq!(status["adopted"], true, "init records the keys it created");
}

#[test]
fn rotate_whose_signing_key_is_not_in_the_bundle_fails() {
    let (dir, plan) = scratch("1s");
    keyrot_ok(["init", "-c", plan.to_str().unwrap()]);
    // A bundle with another key only: nothing is safe to do.
    keyrot_ok([
        "keygen",
        "--alg",
        "ES256",
        "--private",
        dir.path().join("other.key").to_str().unwrap(),
        "--public",
        dir.path().join("other.pub").to_str().unwrap(),
    ]);
    std::fs::copy(dir.path().join("other.pub"), dir.path().join("pki/sa.pub")).unwrap();
    let run = keyrot(["rotate", "-c", plan.to_str().unwrap()]);
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr.contains("is not among the verification keys"),
        "{}",
        run.stderr
    );
}

#[test]
fn status_says_when_nothing_carries_a_rotation_on_and_what_to_run() {
    let (dir, plan) = scratch("10m");
    keyrot_ok(["init", "-c", plan.to_str().unwrap()]);
    let mut rotate = rotate_in_background(&plan);
    wait_for("the rotation to wait for publish-settle", || {
        status_text(&plan).contains("[publish-settle]")
    });
    let text = status_text(&plan);
    assert!(text.contains("carries it on"), "{text}");
    assert!(!text.contains("nothing carries"), "{text}");

    rotate.kill().unwrap();
    rotate.wait().unwrap();
    let text = status_text(&plan);
    assert!(text.contains("nothing carries this rotation on"), "{text}");
    assert!(text.contains("keyrot rotate"), "{text}");
    assert_eq!(status_json(&plan)["lock_holder"], "nobody");

    // A broken key file: status still shows the rotation, and the check that fails.
    std::fs::write(dir.path().join("pki/sa.key"), b"-----BEGIN garbage").unwrap();
    let run = keyrot(["status", "-c", plan.to_str().unwrap()]);
    assert!(run.success, "{run:?}");
    assert!(run.stdout.contains("in phase publish"), "{}", run.stdout);
    assert!(run.stdout.contains("[cluster-keys]"), "{}", run.stdout);
    assert!(run.stdout.contains("sa.key"), "{}", run.stdout);
}

#[test]
fn missing_kubeconfig_is_named_once_in_one_clean_message() {
    let (dir, plan) = scratch("1s");
    let text = std::fs::read_to_string(&plan).unwrap();
    let missing = dir.path().join("admin.kubeconfig");
    std::fs::write(
        &plan,
        text.replace(
            "probe: none",
            &format!("probe: {{ kubeconfig: {} }}", missing.display()),
        ),
    )
    .unwrap();
    let run = keyrot(["rotate", "-c", plan.to_str().unwrap()]);
    assert!(!run.success, "{run:?}");
    let shown = missing.display().to_string();
    assert_eq!(run.stderr.matches(&shown).count(), 1, "{}", run.stderr);
    assert!(!run.stderr.contains("'\""), "{}", run.stderr);
    assert!(run.stderr.contains("No such file"), "{}", run.stderr);
}

#[test]
fn state_file_naming_a_key_it_does_not_list_is_refused_naming_the_field() {
    let (dir, plan) = scratch("10m");
    keyrot_ok(["init", "-c", plan.to_str().unwrap()]);
    let mut rotate = rotate_in_background(&plan);
    wait_for("the rotation to wait for publish-settle", || {
        status_text(&plan).contains("[publish-settle]")
    });
    rotate.kill().unwrap();
    rotate.wait().unwrap();

    let state_path = dir.path().join("state/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["rotation"]["new_kid"] = "not-a-recorded-kid".into();
    let edited = serde_json::to_string_pretty(&state).unwrap();
    std::fs::write(&state_path, &edited).unwrap();

    for command in ["status", "rotate"] {
        let run = keyrot([command, "-c", plan.to_str().unwrap()]);
        assert!(!run.success, "{command}: {run:?}");
        assert!(
            run.stderr
                .contains("rotation.new_kid: not-a-recorded-kid is not in keys"),
            "{command}: {}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(&state_path).unwrap(),
        edited,
        "left as it was"
    );
}
