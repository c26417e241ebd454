//! The Prometheus text exposition of the daemon's view: key ages, phase, times, gates, errors.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::errors::ErrorCounts;
use crate::decision::{Gate, Phase};
use crate::status::Status;

/// What the metrics show, as of the daemon's last decision. Ages are computed at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `None` until the daemon has read its state and the cluster once.
    pub status: Option<Status>,
    pub errors: ErrorCounts,
    /// Each target's canary exchanges, from `canaries.json`.
    pub canaries: Vec<crate::canary::record::TargetRecord>,
    /// The state file is refused: nothing is acted on until it is repaired (the log says why).
    pub state_refused: bool,
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text format Prometheus scrapes; `now` is the scrape time.
pub fn render(snapshot: &Snapshot, now: DateTime<Utc>) -> String {
    let mut out = Metrics(String::new());
    let cluster = snapshot.status.as_ref().map_or("", |s| s.cluster.as_str());
    out.family(
        "keyrot_build_info",
        "gauge",
        "The running keyrot's version and the plan's cluster; always 1.",
    );
    out.sample(
        "keyrot_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("cluster", cluster)],
        1.0,
    );

    out.family(
        "keyrot_errors_total",
        "counter",
        "Errors since the daemon started, by kind (details in the log).",
    );
    for (kind, count) in snapshot.errors.iter() {
        out.sample(
            "keyrot_errors_total",
            &[("kind", kind.as_str())],
            count as f64,
        );
    }

    if !snapshot.canaries.is_empty() {
        out.family(
            "keyrot_canary_exchanges_total",
            "counter",
            "Canary tokens exchanged with each target's relying party.",
        );
        for c in &snapshot.canaries {
            let labels = [("target", c.target.as_str())];
            out.sample("keyrot_canary_exchanges_total", &labels, c.attempts as f64);
        }
        out.family(
            "keyrot_canary_failures_total",
            "counter",
            "Canary exchanges the relying party refused or did not answer, by target.",
        );
        for c in &snapshot.canaries {
            let labels = [("target", c.target.as_str())];
            out.sample("keyrot_canary_failures_total", &labels, c.failures as f64);
        }
    }
    out.family(
        "keyrot_state_refused",
        "gauge",
        "1 while the state file is refused (corrupt, inconsistent, or of a newer keyrot): \
         nothing is acted on until it is repaired (the log and `keyrot status` say why).",
    );
    let refused = if snapshot.state_refused { 1.0 } else { 0.0 };
    out.sample("keyrot_state_refused", &[], refused);

    let Some(status) = &snapshot.status else {
        return out.0;
    };

    out.family(
        "keyrot_key_age_seconds",
        "gauge",
        "Seconds since each key in keyrot's key ring took its current role.",
    );
    for key in &status.keys {
        if let Some(since) = key.since {
            let labels = [
                ("kid", key.kid.as_str()),
                ("alg", key.alg.as_str()),
                ("role", key.role.as_str()),
            ];
            out.sample("keyrot_key_age_seconds", &labels, seconds(now - since));
        }
    }

    out.family(
        "keyrot_phase",
        "gauge",
        "1 for the phase of the rotation in progress (idle: none), 0 for the others.",
    );
    let current = status.phase.as_deref().unwrap_or("idle");
    for phase in std::iter::once("idle").chain(Phase::ALL.iter().map(|p| p.as_str())) {
        let value = if phase == current { 1.0 } else { 0.0 };
        out.sample("keyrot_phase", &[("phase", phase)], value);
    }

    out.family(
        "keyrot_rotation_failed_attempts",
        "gauge",
        "Failed attempts of the current phase of the rotation in progress (0 when idle).",
    );
    let attempts = status.rotation.as_ref().map_or(0, |r| r.attempts);
    out.sample("keyrot_rotation_failed_attempts", &[], f64::from(attempts));

    if let Some(t) = status.last_rotation_completed_at {
        out.family(
            "keyrot_last_rotation_completed_timestamp_seconds",
            "gauge",
            "When the last rotation completed (Unix time).",
        );
        out.sample(
            "keyrot_last_rotation_completed_timestamp_seconds",
            &[],
            timestamp(t),
        );
    }
    if let Some(t) = status.next_rotation {
        out.family(
            "keyrot_next_rotation_timestamp_seconds",
            "gauge",
            "When the schedule starts the next rotation (Unix time).",
        );
        out.sample("keyrot_next_rotation_timestamp_seconds", &[], timestamp(t));
    }

    out.family(
        "keyrot_gate_blocked",
        "gauge",
        "1 for each gate that holds keyrot up now, 0 for the others.",
    );
    for gate in Gate::ALL {
        let blocked = status.blocked_by.iter().any(|b| b.gate == gate);
        let value = if blocked { 1.0 } else { 0.0 };
        out.sample("keyrot_gate_blocked", &[("gate", gate.as_str())], value);
    }
    out.0
}

struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Label values escape backslash, double quote and newline; nothing else.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds().max(0) as f64 / 1000.0
}

fn timestamp(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::daemon::errors::ErrorKind;
    use crate::state::Role;
    use crate::status::{BlockedStatus, KeyStatus};

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn idle_status() -> Status {
        Status {
            cluster: "prod \"eu\"".into(),
            keys: vec![KeyStatus {
                kid: "kid-a".into(),
                alg: "ES256".into(),
                role: Role::Active,
                since: Some(at(0)),
                retire_at: None,
            }],
            phase: None,
            rotation: None,
            next_rotation: Some(at(3600)),
            last_rotation_completed_at: Some(at(-60)),
            blocked_by: vec![BlockedStatus {
                gate: Gate::Schedule,
                reason: "next scheduled rotation".into(),
                until: Some(at(3600)),
            }],
            last_error: None,
            adopted: true,
            issuer_migration: None,
            signer_switch: None,
            unusable_private_keys: Vec::new(),
            state_dir: "/var/lib/keyrot".into(),
            in_progress: false,
            lock_holder: None,
        }
    }

    #[test]
    fn renders_every_family_with_values_at_scrape_time() {
        let mut errors = ErrorCounts::default();
        errors.count(ErrorKind::Effect);
        errors.count(ErrorKind::Effect);
        let snapshot = Snapshot {
            status: Some(idle_status()),
            errors,
            canaries: vec![crate::canary::record::TargetRecord {
                target: "s3".into(),
                attempts: 3,
                failures: 2,
                last: None,
            }],
            state_refused: false,
        };
        let text = render(&snapshot, at(90));
        let build_info = format!(
            "keyrot_build_info{{version=\"{}\",cluster=\"prod \\\"eu\\\"\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        for line in [
            build_info.as_str(),
            "keyrot_errors_total{kind=\"effect\"} 2",
            "keyrot_errors_total{kind=\"plan_reload\"} 0",
            "keyrot_key_age_seconds{kid=\"kid-a\",alg=\"ES256\",role=\"active\"} 90",
            "keyrot_phase{phase=\"idle\"} 1",
            "keyrot_state_refused 0",
            "keyrot_phase{phase=\"publish\"} 0",
            "keyrot_rotation_failed_attempts 0",
            "keyrot_last_rotation_completed_timestamp_seconds 1799999940",
            "keyrot_next_rotation_timestamp_seconds 1800003600",
            "keyrot_gate_blocked{gate=\"schedule\"} 1",
            "keyrot_gate_blocked{gate=\"publish-settle\"} 0",
            "# TYPE keyrot_errors_total counter",
            "keyrot_canary_exchanges_total{target=\"s3\"} 3",
            "keyrot_canary_failures_total{target=\"s3\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn before_the_first_observation_only_build_info_and_errors_are_shown() {
        let text = render(&Snapshot::default(), at(0));
        assert!(text.contains("keyrot_build_info{"), "{text}");
        assert!(text.contains("keyrot_errors_total{kind=\"observe\"} 0"));
        assert!(!text.contains("keyrot_phase"), "{text}");
        assert!(!text.contains("keyrot_canary"), "{text}");
    }
}
