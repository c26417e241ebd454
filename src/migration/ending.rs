//! How a request to the issuer migration (`keyrot migrate-issuer`, its rollback, an approval)
//! ended, once the executor stopped: what the command prints and its exit status.

use crate::decision::{Decision, Gate};
use crate::migration::record::{Awaiting, ManualStep, MigrationRecord};
use crate::plan::Plan;
use crate::state::TriggerKind;

/// How a request ended when nothing failed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every planned step is done (or, for a rollback, the record is gone).
    Done,
    /// Nothing failed, but the next step cannot start yet; the text says when or what to do.
    Waiting(String),
}

/// Why a request to the issuer migration did not end done or waiting.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The decision core refused the request; nothing was done.
    #[error("{0}")]
    Refused(String),
    /// A gate that no timer opens stops the migration (`[gate] reason`).
    #[error("[{gate}] {reason}")]
    Blocked { gate: Gate, reason: String },
    /// A step failed; the steps after it were not started.
    #[error("{0}; nothing after it was changed")]
    Failed(String),
}

/// Whether a request of `kind` is for the rollback: asked for, started, or (an approval) the
/// rollback's manual change.
pub fn is_rollback(kind: TriggerKind, record: Option<&MigrationRecord>) -> bool {
    let rollback_asked = Some(Awaiting::ManualChange {
        step: ManualStep::Rollback,
    });
    kind == TriggerKind::RollbackIssuerMigration
        || record.is_some_and(|r| r.rollback_started_at.is_some() || r.awaiting == rollback_asked)
}

/// The end of a request: `consumed` is what the core answered it (`None`: not acted on),
/// `record` the migration as the state now holds it, `waiting` the core's last decision.
pub fn ending(
    plan: &Plan,
    consumed: Option<&str>,
    record: Option<&MigrationRecord>,
    waiting: &Decision,
    rollback: bool,
) -> Result<Outcome, RequestError> {
    let Some(consumed) = consumed else {
        return Err(blocked(waiting, "the request was not acted on"));
    };
    if let Some(why) = consumed.strip_prefix("refused: ") {
        return Err(RequestError::Refused(why.to_string()));
    }
    let finished = match (rollback, record) {
        (true, record) => record.is_none(),
        (false, None) => false,
        (false, Some(record)) => finished(plan, record),
    };
    if finished {
        return Ok(Outcome::Done);
    }
    match waiting.blocked_by.first() {
        Some(b) if matches!(b.gate, Gate::Approval | Gate::OldIssuerGrace) => {
            Ok(Outcome::Waiting(b.reason.clone()))
        }
        _ => Err(blocked(waiting, "the issuer migration cannot go on")),
    }
}

/// The gate `waiting` names, or `otherwise` when it names none.
fn blocked(waiting: &Decision, otherwise: &str) -> RequestError {
    match waiting.blocked_by.first() {
        Some(b) => RequestError::Blocked {
            gate: b.gate,
            reason: b.reason.clone(),
        },
        None => RequestError::Refused(otherwise.to_string()),
    }
}

/// The end of a request to switch kube-apiserver between its key files and keyrot's signer:
/// done once the switch is no longer recorded; still waiting (the apiserver restarting) after
/// the time the client was given; or stopped at a gate no timer opens.
pub fn switch_ending(
    consumed: Option<&str>,
    recorded: bool,
    waiting: &Decision,
) -> Result<Outcome, RequestError> {
    let Some(consumed) = consumed else {
        return Err(blocked(waiting, "the request was not acted on"));
    };
    if let Some(why) = consumed.strip_prefix("refused: ") {
        return Err(RequestError::Refused(why.to_string()));
    }
    match (recorded, waiting.blocked_by.first()) {
        (false, _) => Ok(Outcome::Done),
        (true, Some(b)) if waiting.wake_at.is_some() => Ok(Outcome::Waiting(format!(
            "the switch goes on in keyrot run: [{}] {}",
            b.gate, b.reason
        ))),
        (true, _) => Err(blocked(waiting, "the switch cannot go on")),
    }
}

/// Every step the plan asks for is done.
pub fn finished(plan: &Plan, record: &MigrationRecord) -> bool {
    let keeps_old = plan
        .issuer_migration
        .as_ref()
        .is_some_and(|m| !m.drop_old_issuer);
    record.rollback_started_at.is_none()
        && (record.old_issuer_dropped_at.is_some()
            || (keeps_old && record.cluster_verified_at.is_some()))
}
