//! Manual triggers against a running `keyrot run`, through its control socket, and the
//! foreground fallback when no daemon listens.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Sandbox, wait_for_completed_rotation};

const WAITS: &str = "timings: { publishSettle: 1s, retireAfter: 1s, gateTimeout: 10s, retryBackoff: 1s, retryBackoffMax: 2s }\n";

#[test]
fn rotate_is_acted_on_by_the_running_daemon() {
    let sandbox = Sandbox::new(WAITS);
    let daemon = sandbox.start(&[]);
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(5));

    let asked = Instant::now();
    let rotate = common::keyrot(["rotate", "-c", sandbox.plan_arg()]);
    let latency = asked.elapsed();
    // The answer itself shows the daemon acted; the latency is a figure, not an assertion.
    println!("keyrot rotate answered by the daemon in {latency:?}");
    assert!(rotate.success, "{rotate:?}");
    assert_eq!(
        rotate.stdout.trim(),
        "rotate: rotation started (by the running keyrot daemon)"
    );
    // The answer comes once the rotation was started: the state already shows it.
    let state = sandbox.state();
    assert!(state.rotation.is_some() || state.last_rotation_completed_at.is_some());
    wait_for_completed_rotation(&sandbox, &daemon, Duration::from_secs(20));

    // A request the core refuses fails the command, with the core's reason.
    let abort = common::keyrot(["abort", "-c", sandbox.plan_arg()]);
    assert_eq!(abort.code, Some(1));
    assert_eq!(
        abort.stdout.trim(),
        "abort: refused: no rotation is in progress (by the running keyrot daemon)"
    );
    daemon.stop();
}

#[test]
fn a_phase_held_for_approval_is_released_through_the_daemon() {
    let sandbox = Sandbox::new(&format!("{WAITS}approvals: [promote]\n"));
    let daemon = sandbox.start(&[]);
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(5));
    common::keyrot_ok(["rotate", "-c", sandbox.plan_arg()]);
    daemon.wait_for_log("waiting [approval]", Duration::from_secs(10));
    assert_eq!(
        sandbox.state().rotation.unwrap().phase,
        keyrot::decision::Phase::Promote
    );
    let approve = common::keyrot_ok(["approve", "-c", sandbox.plan_arg()]);
    assert_eq!(
        approve.stdout.trim(),
        "approve: phase promote approved (by the running keyrot daemon)"
    );
    wait_for_completed_rotation(&sandbox, &daemon, Duration::from_secs(20));
    daemon.stop();
}

#[test]
fn without_a_daemon_a_stale_socket_file_falls_back_to_the_foreground() {
    let sandbox = Sandbox::new(WAITS);
    // A daemon killed with SIGKILL leaves its socket file behind, with nobody listening.
    drop(std::os::unix::net::UnixListener::bind(sandbox.state_dir().join("keyrot.sock")).unwrap());
    let rotate = common::keyrot_ok(["rotate", "-c", sandbox.plan_arg()]);
    assert!(
        rotate.stdout.contains("rotation complete"),
        "{}",
        rotate.stdout
    );
    assert!(!rotate.stdout.contains("daemon"), "{}", rotate.stdout);
}

#[test]
fn foreground_requested_while_a_daemon_runs_meets_the_lock() {
    let sandbox = Sandbox::new(WAITS);
    let daemon = sandbox.start(&[]);
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(5));
    let rotate = common::keyrot(["rotate", "--foreground", "-c", sandbox.plan_arg()]);
    assert!(!rotate.success);
    assert!(
        rotate.stderr.contains("holds the lock"),
        "{}",
        rotate.stderr
    );
    assert!(sandbox.state().rotation.is_none());
    daemon.stop();
}
