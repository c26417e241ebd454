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

#[test]
fn a_refused_state_file_is_reported_in_metrics_and_answers_until_sighup_finds_it_repaired() {
    let port = common::daemon::free_port();
    let sandbox = Sandbox::new(&format!(
        "{WAITS}metrics: {{ listen: \"127.0.0.1:{port}\" }}\n"
    ));
    // Adopted by a first daemon run, then broken: the same key listed twice.
    let first = sandbox.start(&[]);
    first.wait_for_log("waiting [schedule]", Duration::from_secs(10));
    first.stop();
    let state_path = sandbox.state_dir().join("state.json");
    let good = std::fs::read_to_string(&state_path).unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&good).unwrap();
    let key = state["keys"][0].clone();
    state["keys"].as_array_mut().unwrap().push(key);
    let broken = serde_json::to_string_pretty(&state).unwrap();
    std::fs::write(&state_path, &broken).unwrap();

    let mut daemon = sandbox.start(&[]);
    daemon.wait_for_log(
        "not acting until the state file is repaired",
        Duration::from_secs(10),
    );
    assert!(daemon.is_running(), "the daemon stays up to report it");
    assert!(
        daemon.log().contains("keys[1].kid"),
        "the field is named:\n{}",
        daemon.log()
    );
    let metrics = common::daemon::http_get(port, "/metrics");
    assert!(metrics.contains("keyrot_state_refused 1"), "{metrics}");

    // A request is answered with why, and changes nothing.
    let rotate = common::keyrot(["rotate", "-c", sandbox.plan_arg()]);
    assert!(!rotate.success, "{rotate:?}");
    assert!(
        format!("{}{}", rotate.stdout, rotate.stderr).contains("state file refused"),
        "{rotate:?}"
    );
    assert_eq!(std::fs::read_to_string(&state_path).unwrap(), broken);

    // Repaired, and told so: the daemon reads it and acts again.
    std::fs::write(&state_path, &good).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(10), || {
            common::daemon::http_get(port, "/metrics").contains("keyrot_state_refused 0")
        }),
        "{}",
        common::daemon::http_get(port, "/metrics")
    );
    daemon.stop();
}
