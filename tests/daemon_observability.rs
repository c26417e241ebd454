//! What `keyrot run` tells the outside: Prometheus metrics, systemd notifications captured on a
//! NOTIFY_SOCKET bound here, and JSON log lines.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{Sandbox, free_port, http_get, wait_for_completed_rotation, wait_until};
use keyrot::state::Role;

const WAITS: &str = "timings: { publishSettle: 1s, retireAfter: 1s, gateTimeout: 10s, retryBackoff: 1s, retryBackoffMax: 2s }\n";

/// The value of the sample whose line starts with `series ` (name and labels as written).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_after_a_rotation_show_keys_phase_times_gates_and_errors() {
    let port = free_port();
    let sandbox = Sandbox::new(&format!(
        "{WAITS}schedule: {{ cron: \"0 3 * * SUN\" }}\nmetrics: {{ listen: \"127.0.0.1:{port}\" }}\n"
    ));
    let daemon = sandbox.start(&[]);
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(5));
    common::keyrot_ok(["rotate", "-c", sandbox.plan_arg()]);
    let state = wait_for_completed_rotation(&sandbox, &daemon, Duration::from_secs(20));
    // The snapshot is refreshed once the loop settles after the last step.
    let settled = wait_until(Duration::from_secs(5), || {
        http_get(port, "/metrics").contains("keyrot_phase{phase=\"idle\"} 1")
    });
    assert!(settled, "{}", http_get(port, "/metrics"));

    let metrics = http_get(port, "/metrics");
    let now = chrono::Utc::now();
    let completed = state.last_rotation_completed_at.unwrap();
    assert_eq!(
        sample(&metrics, "keyrot_last_rotation_completed_timestamp_seconds"),
        completed.timestamp_millis() as f64 / 1000.0
    );
    let next = sample(&metrics, "keyrot_next_rotation_timestamp_seconds");
    assert!(next > now.timestamp() as f64, "{next}");
    assert!(
        next <= (now + chrono::TimeDelta::days(7)).timestamp() as f64,
        "{next}"
    );
    for key in &state.keys {
        let series = format!(
            "keyrot_key_age_seconds{{kid=\"{}\",alg=\"ES256\",role=\"{}\"}}",
            key.kid,
            key.role.as_str()
        );
        let age = sample(&metrics, &series);
        let expected = (now - key.entered(key.role).unwrap()).num_milliseconds() as f64 / 1000.0;
        assert!(
            (age - expected).abs() < 5.0,
            "{series} = {age}, expected about {expected}"
        );
    }
    assert!(state.keys.iter().any(|k| k.role == Role::Active));
    assert!(state.keys.iter().any(|k| k.role == Role::Retired));
    assert_eq!(sample(&metrics, "keyrot_phase{phase=\"idle\"}"), 1.0);
    assert_eq!(sample(&metrics, "keyrot_phase{phase=\"publish\"}"), 0.0);
    assert_eq!(
        sample(&metrics, "keyrot_gate_blocked{gate=\"schedule\"}"),
        1.0
    );
    assert_eq!(
        sample(&metrics, "keyrot_gate_blocked{gate=\"publish-settle\"}"),
        0.0
    );
    assert_eq!(
        sample(&metrics, "keyrot_errors_total{kind=\"effect\"}"),
        0.0
    );
    assert_eq!(sample(&metrics, "keyrot_rotation_failed_attempts"), 0.0);
    assert!(
        metrics.contains("keyrot_build_info{version=\""),
        "{metrics}"
    );

    // An invalid plan on SIGHUP is counted.
    sandbox.write_plan("keepRetired: many\n");
    daemon.signal("HUP");
    daemon.wait_for_log("plan not reloaded", Duration::from_secs(5));
    let counted = wait_until(Duration::from_secs(20), || {
        http_get(port, "/metrics").contains("keyrot_errors_total{kind=\"plan_reload\"} 1")
    });
    assert!(counted, "{}", http_get(port, "/metrics"));
    daemon.stop();
}

#[test]
fn systemd_hears_ready_status_watchdog_reloading_and_stopping() {
    let sandbox = Sandbox::new(WAITS);
    let socket_path = sandbox.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = messages.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).to_string();
            sink.lock()
                .unwrap()
                .extend(text.lines().map(str::to_string));
        }
    });
    let all = || messages.lock().unwrap().clone();
    let count = |prefix: &str| all().iter().filter(|m| m.starts_with(prefix)).count();

    // A watchdog of 400 ms: pings every 200 ms.
    let daemon = sandbox.start(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    assert!(
        wait_until(Duration::from_secs(5), || count("READY=1") == 1),
        "{:?}",
        all()
    );
    assert!(
        wait_until(Duration::from_secs(5), || count("WATCHDOG=1") >= 3),
        "{:?}",
        all()
    );
    assert!(
        all()
            .iter()
            .any(|m| m.starts_with("STATUS=idle; waiting [schedule]")),
        "{:?}",
        all()
    );

    // A rotation moves the status line through its phases.
    common::keyrot_ok(["rotate", "-c", sandbox.plan_arg()]);
    wait_for_completed_rotation(&sandbox, &daemon, Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(20), || all()
            .iter()
            .any(|m| m.starts_with("STATUS=rotation ")
                && m.contains(": phase publish; waiting [publish-settle]"))),
        "{:?}",
        all()
    );
    assert!(
        all().iter().any(|m| m == "STATUS=phase promote: acting"),
        "{:?}",
        all()
    );

    daemon.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || count("READY=1") == 2),
        "{:?}",
        all()
    );
    assert!(count("RELOADING=1") == 1, "{:?}", all());
    assert!(
        all().iter().any(|m| m.starts_with("MONOTONIC_USEC=")),
        "{:?}",
        all()
    );

    daemon.stop();
    assert!(
        wait_until(Duration::from_secs(20), || count("STOPPING=1") == 1),
        "{:?}",
        all()
    );
    let messages = all();
    let ready = messages.iter().position(|m| m == "READY=1").unwrap();
    let stopping = messages.iter().position(|m| m == "STOPPING=1").unwrap();
    assert!(ready < stopping);
    assert_eq!(
        stopping,
        messages.len() - 1,
        "nothing after STOPPING=1: {messages:?}"
    );
}

#[test]
fn without_a_watchdog_nothing_is_pinged_and_json_logs_are_one_object_per_line() {
    let sandbox = Sandbox::new(WAITS);
    let socket_path = sandbox.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let daemon = sandbox.start_with(
        &["--log-format", "json"],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buffer) {
        received.push(String::from_utf8_lossy(&buffer[..n]).to_string());
    }
    assert!(
        received.iter().any(|m| m.contains("READY=1")),
        "{received:?}"
    );
    assert!(
        !received.iter().any(|m| m.contains("WATCHDOG=1")),
        "{received:?}"
    );

    let log = daemon.stop();
    for line in log.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event["level"].is_string(), "{line}");
        assert!(event["fields"]["message"].is_string(), "{line}");
        assert!(!line.contains("\u{1b}["), "no colour codes: {line}");
    }
    assert!(log.contains("\"message\":\"waiting [schedule]"), "{log}");
}
