//! A standard output whose reader has gone (`keyrot ... | head`): printing stops quietly, the
//! command's own result stands, and work in progress carries on.

mod common;

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use common::daemon::Sandbox;
use common::pem;

/// Runs keyrot with stdout a pipe that was closed before it started: its first write fails.
fn keyrot_into_closed_pipe<I, S>(args: I) -> (Option<i32>, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_keyrot"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .expect("keyrot runs");
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn jwks_into_a_closed_pipe_exits_quietly() {
    let key = pem("rsa-spki-public.pem");
    let (code, stderr) = keyrot_into_closed_pipe(["jwks".as_ref(), key.as_os_str()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn rotate_into_a_closed_pipe_finishes_the_rotation() {
    let sandbox = Sandbox::new(
        "timings: { publishSettle: 1s, retireAfter: 1s, gateTimeout: 10s, retryBackoff: 1s, retryBackoffMax: 2s }\n",
    );
    let before = sandbox.state().keys[0].kid.clone();
    let (code, stderr) = keyrot_into_closed_pipe(["rotate", "-c", sandbox.plan_arg()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let state = sandbox.state();
    assert!(state.rotation.is_none(), "{:?}", state.rotation);
    assert!(state.last_rotation_completed_at.is_some());
    let active: Vec<_> = state
        .keys
        .iter()
        .filter(|k| k.role == keyrot::state::Role::Active)
        .map(|k| k.kid.clone())
        .collect();
    assert_eq!(active.len(), 1);
    assert_ne!(active[0], before, "the new key signs");
}

#[test]
fn every_printing_command_into_a_closed_pipe_exits_with_its_own_result() {
    let sandbox = Sandbox::new("");
    let key = pem("rsa-spki-public.pem").to_str().unwrap().to_string();
    let plan = sandbox.plan_arg();
    let commands: Vec<Vec<&str>> = vec![
        vec!["inspect", &key],
        vec!["discovery", "--issuer", "https://issuer.example.com", &key],
        vec!["validate", "-c", plan],
        vec!["plan", "-c", plan],
        vec!["plan", "-c", plan, "--output", "json"],
        vec!["status", "-c", plan],
        vec!["status", "-c", plan, "--output", "json"],
        vec!["publish", "-c", plan],
        vec!["verify", "-c", plan],
        vec!["help"],
    ];
    for args in commands {
        let (code, stderr) = keyrot_into_closed_pipe(&args);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(code, Some(101), "{args:?}: {stderr}");
        // The same command with a working stdout: the closed pipe does not change the result.
        let normal = common::keyrot(&args);
        assert_eq!(code, normal.code, "{args:?}: {stderr} / {normal:?}");
    }
}
