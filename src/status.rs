//! What `keyrot status` shows: the key ring with roles and ages, the rotation in progress, the
//! next scheduled rotation and what blocks, computed from the recorded state and the files; and
//! the issuer migration, when the caller read one.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::decision::{Blocked, Observed, decide};
use crate::migration::record::MigrationRecord;
use crate::plan::Plan;
use crate::state::{Holder, Role, State};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub cluster: String,
    /// The plan's state directory, where the lock lives.
    pub state_dir: String,
    pub keys: Vec<KeyStatus>,
    /// The phase of the rotation in progress, if any.
    pub phase: Option<String>,
    pub rotation: Option<RotationStatus>,
    pub next_rotation: Option<DateTime<Utc>>,
    pub last_rotation_completed_at: Option<DateTime<Utc>>,
    pub blocked_by: Vec<BlockedStatus>,
    pub last_error: Option<String>,
    /// False before keyrot first recorded this cluster's keys.
    pub adopted: bool,
    /// A rotation or a request is recorded and not finished.
    pub in_progress: bool,
    /// Who holds the state lock, when the caller looked (`keyrot status` does): with a rotation
    /// in progress and nobody holding it, nothing carries the rotation on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_holder: Option<Holder>,
    /// The issuer migration recorded in the state directory, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_migration: Option<MigrationRecord>,
    /// A switch between key files and the signer in progress (`keyrot switch-signer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer_switch: Option<crate::state::SignerSwitchRecord>,
    /// Files in keyrot's private key directory it set aside, each "path: reason".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unusable_private_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub kid: String,
    pub alg: String,
    pub role: Role,
    /// When the key took its current role.
    pub since: Option<DateTime<Utc>>,
    /// For the retiring key: the earliest time it may leave the bundle and the JWKS.
    pub retire_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RotationStatus {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub old_kid: String,
    pub new_kid: Option<String>,
    pub attempts: u32,
    pub retry_at: Option<DateTime<Utc>>,
    pub rolled_back: bool,
    pub aborted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockedStatus {
    pub gate: crate::decision::Gate,
    pub reason: String,
    pub until: Option<DateTime<Utc>>,
}

/// The status from the recorded state (`None`: never run) and the files as they are now.
pub fn status(
    plan: &Plan,
    state: Option<&State>,
    observed: &Observed,
    now: DateTime<Utc>,
) -> Status {
    let empty = State::default();
    let state = state.unwrap_or(&empty);
    let decision = decide(plan, state, observed, now);
    let mut status = recorded(plan, state, now);
    status.blocked_by = decision
        .blocked_by
        .iter()
        .map(|Blocked { gate, reason }| BlockedStatus {
            gate: *gate,
            reason: reason.clone(),
            until: decision.wake_at,
        })
        .collect();
    status.unusable_private_keys = observed.unusable_private_keys.clone();
    status
}

/// The status when the files cannot be read (a damaged key file, say): what the state records,
/// and the cluster-keys gate failing with `error`. An operator needs it most at that moment.
pub fn status_with_unreadable_files(
    plan: &Plan,
    state: Option<&State>,
    error: &str,
    now: DateTime<Utc>,
) -> Status {
    let empty = State::default();
    let mut status = recorded(plan, state.unwrap_or(&empty), now);
    status.blocked_by = vec![BlockedStatus {
        gate: crate::decision::Gate::ClusterKeys,
        reason: error.to_string(),
        until: None,
    }];
    status
}

/// What the state alone says.
fn recorded(plan: &Plan, state: &State, now: DateTime<Utc>) -> Status {
    let rotation = state.rotation.as_ref();
    let retire_at = rotation
        .and_then(|r| r.promoted_at)
        .and_then(|t| t.checked_add_signed(plan.timings.retire_after));
    let keys = state
        .keys
        .iter()
        .map(|k| KeyStatus {
            kid: k.kid.clone(),
            alg: k.alg.to_string(),
            role: k.role,
            since: k.entered(k.role),
            retire_at: (k.role == Role::Retiring).then_some(retire_at).flatten(),
        })
        .collect();
    // A next key kept ready (`keepNextKey`) signs when the schedule next fires.
    let next_rotation = match rotation {
        Some(r) if r.cause != crate::state::Cause::NextKey => None,
        _ => crate::decision::next_rotation_due(plan, state, now),
    };
    Status {
        cluster: plan.cluster.clone(),
        state_dir: plan.state_dir.display().to_string(),
        keys,
        phase: rotation.map(|r| r.phase.to_string()),
        rotation: rotation.map(|r| RotationStatus {
            id: r.id.clone(),
            started_at: r.started_at,
            old_kid: r.old_kid.clone(),
            new_kid: r.new_kid.clone(),
            attempts: r.attempts,
            retry_at: r.retry_at,
            rolled_back: r.rolled_back,
            aborted: r.aborted,
        }),
        next_rotation,
        last_rotation_completed_at: state.last_rotation_completed_at,
        blocked_by: Vec::new(),
        last_error: rotation.and_then(|r| r.last_error.clone()),
        adopted: !state.keys.is_empty(),
        in_progress: rotation.is_some()
            || !state.triggers.is_empty()
            || state.signer_switch.is_some(),
        lock_holder: None,
        issuer_migration: None,
        signer_switch: state.signer_switch.clone(),
        unusable_private_keys: Vec::new(),
    }
}

/// The status for people.
pub fn render_text(status: &Status, now: DateTime<Utc>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "cluster {}", status.cluster);
    if !status.adopted {
        let _ = writeln!(
            out,
            "keys     not recorded yet: keyrot records the cluster's keys on its first run"
        );
    }
    for key in &status.keys {
        let age = key
            .since
            .map_or_else(|| "-".into(), |t| format!("{} ago", human(now - t)));
        let _ = write!(
            out,
            "key      {}  {}  {:<9} {}",
            key.kid,
            key.alg,
            key.role.as_str(),
            age
        );
        if let Some(t) = key.retire_at {
            let _ = write!(out, ", may retire at {}", crate::describe::time(t));
        }
        let _ = writeln!(out);
    }
    match (&status.phase, &status.rotation) {
        (Some(phase), Some(r)) => {
            let _ = writeln!(
                out,
                "rotation {} in phase {phase} (started {})",
                r.id,
                crate::describe::time(r.started_at)
            );
            if r.rolled_back || r.aborted {
                let _ = writeln!(
                    out,
                    "         {}",
                    if r.aborted {
                        "aborted: removing the new key"
                    } else {
                        "rolled back"
                    }
                );
            }
        }
        _ => {
            let _ = writeln!(out, "rotation none in progress");
        }
    }
    if let Some(t) = status.next_rotation {
        let _ = writeln!(
            out,
            "next     scheduled rotation at {}",
            crate::describe::time(t)
        );
    }
    if let Some(t) = status.last_rotation_completed_at {
        let _ = writeln!(
            out,
            "last     rotation completed at {}",
            crate::describe::time(t)
        );
    }
    for b in &status.blocked_by {
        let until = b
            .until
            .map(|t| format!(" (until {})", crate::describe::time(t)))
            .unwrap_or_default();
        let _ = writeln!(out, "waiting  [{}] {}{until}", b.gate, b.reason);
    }
    if let Some(m) = &status.issuer_migration {
        let _ = writeln!(
            out,
            "issuer   migration {} -> {}: {}",
            m.old_issuer,
            m.new_issuer,
            m.summary()
        );
    }
    if let Some(s) = &status.signer_switch {
        let edited = match s.flags_changed_at {
            Some(at) => format!("flags changed {}", crate::describe::time(at)),
            None => "flags not changed yet".to_string(),
        };
        let _ = writeln!(
            out,
            "switch   kube-apiserver to {}, asked {}; {edited}",
            s.to.as_str(),
            crate::describe::time(s.requested_at)
        );
    }
    if let Some(e) = &status.last_error {
        let _ = writeln!(out, "error    {e}");
    }
    if status.in_progress {
        match status.lock_holder {
            Some(Holder::Process { pid }) => {
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                let _ = writeln!(out, "acting   a keyrot{pid} carries it on");
            }
            Some(Holder::Nobody) => {
                let _ = writeln!(
                    out,
                    "warning  nothing carries this rotation on: no keyrot holds the lock on {}; \
                     start the service (`systemctl start keyrot`, or `keyrot run`) or run \
                     `keyrot rotate`, which continues it in the foreground",
                    status.state_dir
                );
            }
            None => {}
        }
    }
    for unusable in &status.unusable_private_keys {
        let _ = writeln!(out, "warning  set aside {unusable}");
    }
    out
}

/// "3d 4h", "5m 2s": the two largest units.
fn human(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}
