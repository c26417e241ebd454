//! `keyrot run` after a failed run: a failure that may pass by itself is retried with backoff,
//! one that needs a person waits for a sign that something changed (SIGHUP, a request).

mod common;

use std::time::Duration;

use common::daemon::{Sandbox, wait_until};

const WAITS: &str = "timings: { publishSettle: 1s, retireAfter: 1s, gateTimeout: 10s, retryBackoff: 1s, retryBackoffMax: 1s }\n";

const NEEDS_A_PERSON: &str = "not trying again on its own: this needs a person";

#[test]
fn a_failure_that_needs_a_person_is_not_retried_until_sighup() {
    let sandbox = Sandbox::new(WAITS);
    let daemon = sandbox.start(&[]);
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(10));

    // A verification key file that does not parse: no retry can read it until it is repaired.
    let bundle = sandbox.dir.path().join("pki/sa.pub");
    let good = std::fs::read(&bundle).unwrap();
    std::fs::write(
        &bundle,
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log(NEEDS_A_PERSON, Duration::from_secs(10));
    let log = daemon.log();
    assert!(log.contains("sa.pub"), "the failure names the file:\n{log}");

    // With a backoff of one second, a timer would have retried several times by now.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        daemon.count_log("cannot observe the cluster"),
        1,
        "retried without anything changing:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.count_log("trying again in"), 0, "{}", daemon.log());

    // Repaired, and told so: the daemon acts again and is back to waiting for the schedule.
    std::fs::write(&bundle, good).unwrap();
    let waits_before = daemon.count_log("waiting [schedule]");
    daemon.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || {
            daemon.count_log("waiting [schedule]") > waits_before
        }),
        "the daemon did not act again after SIGHUP:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.count_log("cannot observe the cluster"), 1);
    daemon.stop();
}
