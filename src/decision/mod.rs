//! The pure decision core: plan + state + observation + time -> what to do next, and how each
//! action changes the record. No I/O and no clock reads anywhere below this module.

mod action;
mod apply;
mod canary;
mod decide;
mod due;
pub mod ha;
pub mod lease;
pub mod migration;
mod observed;
mod switch;

use std::path::PathBuf;

use crate::plan::Plan;

pub use action::{Action, AdoptedKey, Blocked, Decision, Gate};
pub use apply::{action_name, apply, apply_failure, record_intent};
pub use canary::canary_due;
pub use decide::{backoff, decide, retry_time};
pub use due::{Due, RecordedMigration, next_due, next_rotation_due, old_issuer_drop_due};
pub use observed::{
    CanaryResult, CanaryView, KeyId, KeyModeView, KeySetStamps, MigrationView, Observed, Probed,
    TargetView, stamp_millis,
};
// Phases live outside the core: the plan names them (approvals) and the state records them, and
// neither may depend on the core that reads both.
pub use crate::phase::Phase;

/// Where a rotation's new private key lives: named after the rotation, so a key generated just
/// before a crash is found again.
pub fn key_path_for_rotation(plan: &Plan, rotation_id: &str) -> PathBuf {
    plan.private_key_dir.join(format!("{rotation_id}.key"))
}

/// Where keyrot keeps its copy of an adopted signing key, for rollback.
pub fn key_path_for_adopted(plan: &Plan, kid: &str) -> PathBuf {
    plan.private_key_dir.join(format!("adopted-{kid}.key"))
}
