//! The one-line summary of where things stand, for systemd's `STATUS=` and `systemctl status`.

use crate::decision::Phase;
use crate::describe::{shorten_kids, time};
use crate::status::Status;

/// `rotation ID: phase publish; waiting [publish-settle] until ...` or `idle; next rotation at ...`.
pub fn status_line(status: &Status) -> String {
    let head = match (&status.rotation, &status.phase) {
        (Some(r), Some(phase)) => format!("rotation {}: phase {phase}", r.id),
        _ => "idle".to_string(),
    };
    let line = match status.blocked_by.first() {
        Some(b) => {
            let until = match b.until {
                Some(t) if !b.reason.contains(&time(t)) => format!(" (until {})", time(t)),
                _ => String::new(),
            };
            format!("{head}; waiting [{}] {}{until}", b.gate, b.reason)
        }
        None => head,
    };
    one_line(&shorten_kids(&line))
}

/// After a failure that needs a person: nothing is retried until SIGHUP or a request.
pub fn halted_line(failure: &str) -> String {
    one_line(&format!(
        "stopped until fixed (then systemctl reload keyrot): {failure}"
    ))
}

/// While steps are being taken: the phase they belong to.
pub fn acting_line(phase: Option<Phase>) -> String {
    match phase {
        Some(phase) => format!("phase {phase}: acting"),
        None => "acting".to_string(),
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::decision::Gate;
    use crate::status::{BlockedStatus, RotationStatus};

    #[test]
    fn a_failure_that_needs_a_person_reads_as_one_line_saying_how_to_go_on() {
        let line = halted_line("/etc/kubernetes/pki/sa.pub: line 1: not a key\n  more");
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("stopped until fixed (then systemctl reload keyrot): "));
        assert!(line.contains("sa.pub: line 1"), "{line}");
    }

    #[test]
    fn names_the_rotation_phase_gate_and_time() {
        let until = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 3).unwrap();
        let status = Status {
            cluster: "c".into(),
            keys: vec![],
            phase: Some("publish".into()),
            rotation: Some(RotationStatus {
                id: "20300101T120000.000Z".into(),
                started_at: until,
                old_kid: "a".into(),
                new_kid: None,
                attempts: 0,
                retry_at: None,
                rolled_back: false,
                aborted: false,
            }),
            next_rotation: None,
            last_rotation_completed_at: None,
            blocked_by: vec![BlockedStatus {
                gate: Gate::TargetsServeKeys,
                reason: "expected [a]\nweb serves []".into(),
                until: Some(until),
            }],
            last_error: None,
            adopted: true,
            issuer_migration: None,
            signer_switch: None,
            unusable_private_keys: Vec::new(),
            state_dir: "/var/lib/keyrot".into(),
            in_progress: false,
            lock_holder: None,
        };
        assert_eq!(
            status_line(&status),
            "rotation 20300101T120000.000Z: phase publish; waiting [targets-serve-keys] \
             expected [a] web serves [] (until 2030-01-01T12:00:03Z)"
        );
        let idle = Status {
            phase: None,
            rotation: None,
            blocked_by: vec![],
            ..status
        };
        assert_eq!(status_line(&idle), "idle");
        assert_eq!(acting_line(Some(Phase::Stage)), "phase stage: acting");
    }
}
