//! `keyrot run` and its signals: SIGHUP reloads the plan (or keeps the running one when the new
//! one is invalid); SIGTERM in the middle of a phase exits 0 at once, and a restart resumes.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Sandbox, cron_in, wait_for_completed_rotation};
use keyrot::decision::Phase;

const WAITS: &str = "timings: { publishSettle: 1s, retireAfter: 1s, gateTimeout: 10s, retryBackoff: 1s, retryBackoffMax: 2s }\n";

#[test]
fn sighup_with_a_valid_plan_takes_effect() {
    let sandbox = Sandbox::new(WAITS);
    let daemon = sandbox.start(&[]);
    daemon.wait_for_log("no schedule: rotations start with", Duration::from_secs(5));

    // The edited plan adds a schedule: the daemon, asleep without a wake-up time, must pick it up.
    let (cron, due) = cron_in(Duration::from_secs(2));
    sandbox.write_plan(&format!("{WAITS}schedule: {{ cron: \"{cron}\" }}\n"));
    daemon.signal("HUP");
    daemon.wait_for_log("plan reloaded from", Duration::from_secs(5));
    let state = wait_for_completed_rotation(&sandbox, &daemon, Duration::from_secs(20));
    assert!(state.last_rotation_started_at.unwrap() >= due);
    let log = daemon.stop();
    assert!(log.contains("start a rotation (schedule)"), "{log}");
}

#[test]
fn sighup_with_an_invalid_plan_is_reported_and_the_running_plan_kept() {
    let sandbox = Sandbox::new(&format!("{WAITS}approvals: [promote]\n"));
    let mut daemon = sandbox.start(&[]);
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(5));

    sandbox.write_plan(&format!("{WAITS}keepRetired: many\n"));
    daemon.signal("HUP");
    daemon.wait_for_log("plan not reloaded", Duration::from_secs(5));
    let log = daemon.log();
    let report = log
        .lines()
        .find(|l| l.contains("plan not reloaded"))
        .unwrap();
    assert!(report.contains("keeping the running plan"), "{report}");
    assert!(
        log.contains(&format!("{}:", sandbox.plan.display())) && log.contains("keepRetired"),
        "the problem is named with its file and field:\n{log}"
    );
    assert!(daemon.is_running());

    // Still the old plan: its approval hold applies to a rotation started now. (The file is made
    // valid again, without the hold and without a SIGHUP, for the client, which reads the plan
    // to find the daemon's state directory.)
    sandbox.write_plan(WAITS);
    common::keyrot_ok(["rotate", "-c", sandbox.plan_arg()]);
    daemon.wait_for_log("waiting [approval]", Duration::from_secs(10));
    daemon.stop();
}

#[test]
fn sigterm_during_publish_settle_exits_0_and_a_restart_resumes_and_completes() {
    let waits = "timings: { publishSettle: 30s, retireAfter: 1s, gateTimeout: 10s, retryBackoff: 1s, retryBackoffMax: 2s }\n";
    let sandbox = Sandbox::new(waits);
    let mut daemon = sandbox.start(&[]);
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(5));
    common::keyrot_ok(["rotate", "-c", sandbox.plan_arg()]);
    daemon.wait_for_log("waiting [publish-settle]", Duration::from_secs(10));

    let asked = Instant::now();
    daemon.signal("TERM");
    // Well before the 30 s settle time ends, however loaded the machine: the daemon does not
    // wait the settle time out. The figure is printed, not asserted.
    let status = daemon.wait_exit(Duration::from_secs(20));
    let took = asked.elapsed();
    println!("SIGTERM during publish-settle: exited in {took:?}");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    let rotation = sandbox.state().rotation.expect("the rotation is recorded");
    assert_eq!(rotation.phase, Phase::Publish);
    let confirmed = rotation
        .published_confirmed_at
        .expect("publication confirmed");

    // A shorter settle in the restarted daemon's plan: it resumes the same rotation, counting
    // the settle from the recorded confirmation, and completes it.
    sandbox.write_plan(WAITS);
    let restarted = sandbox.start(&[]);
    let state = wait_for_completed_rotation(&sandbox, &restarted, Duration::from_secs(20));
    let log = restarted.stop();
    assert!(
        !log.contains("start a rotation"),
        "resumed, not restarted:\n{log}"
    );
    assert!(log.contains("gate passed: enter phase promote"), "{log}");
    assert!(state.last_rotation_completed_at.unwrap() > confirmed);
    assert_eq!(state.last_rotation_started_at, Some(rotation.started_at));
}
