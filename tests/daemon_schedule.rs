//! `keyrot run` on its schedule: a rotation fires at its cron time and completes; one daemon per
//! state directory.

mod common;

use std::time::Duration;

use common::daemon::{Sandbox, cron_in, wait_for_completed_rotation};

const WAITS: &str = "timings: { publishSettle: 1s, retireAfter: 1s, gateTimeout: 10s, retryBackoff: 1s, retryBackoffMax: 2s }\n";

#[test]
fn a_scheduled_rotation_fires_at_its_cron_time_and_completes() {
    let sandbox = Sandbox::new(WAITS);
    let first_kid = sandbox.state().keys[0].kid.clone();
    let (cron, due) = cron_in(Duration::from_secs(3));
    sandbox.write_plan(&format!("{WAITS}schedule: {{ cron: \"{cron}\" }}\n"));
    let daemon = sandbox.start(&[]);
    daemon.wait_for_log(
        "waiting [schedule] next scheduled rotation at",
        Duration::from_secs(5),
    );
    assert!(
        sandbox.state().last_rotation_started_at.is_none(),
        "nothing before its time"
    );

    let state = wait_for_completed_rotation(&sandbox, &daemon, Duration::from_secs(20));
    let started = state.last_rotation_started_at.unwrap();
    let late = started - due;
    println!(
        "scheduled for {due}, started {started} ({} ms late)",
        late.num_milliseconds()
    );
    // Not late: the rotation completed within the wait above, while the cron line fires next a
    // day later. How late it started is a figure, printed above.
    assert!(started >= due, "started {started} before its time {due}");
    let log = daemon.stop();
    assert!(log.contains("start a rotation (schedule)"), "{log}");
    assert!(log.contains("rotation complete"), "{log}");
    let active: Vec<_> = state
        .keys
        .iter()
        .filter(|k| k.role == keyrot::state::Role::Active)
        .collect();
    assert_eq!(active.len(), 1);
    assert_ne!(active[0].kid, first_kid);
}

#[test]
fn a_second_run_on_the_same_state_directory_is_refused_while_the_first_keeps_going() {
    let sandbox = Sandbox::new(WAITS);
    let mut first = sandbox.start(&[]);
    first.wait_for_log("waiting [schedule]", Duration::from_secs(5));
    let second = common::keyrot(["run", "-c", sandbox.plan_arg()]);
    assert_eq!(second.code, Some(1));
    assert!(
        second.stderr.contains("holds the lock")
            && second.stderr.contains(&format!("pid {}", first.pid())),
        "{}",
        second.stderr
    );
    assert!(first.is_running());
    assert!(sandbox.state_dir().join("keyrot.sock").exists());
    first.stop();
    assert!(
        !sandbox.state_dir().join("keyrot.sock").exists(),
        "the socket goes with the daemon"
    );
}
