//! What the plan's recorded migration waits for, read from the state directory for `keyrot
//! approve`.

use super::record::{self, Awaiting};
use crate::plan::Plan;
use crate::state::StateError;

/// What the plan's recorded migration waits for `keyrot approve` to do, if anything. Reads the
/// record without the lock: `keyrot approve` uses it to choose between a migration and a
/// rotation, and the migration checks again under the lock.
pub fn awaiting(plan: &Plan) -> Result<Option<Awaiting>, StateError> {
    if plan.issuer_migration.is_none() {
        return Ok(None);
    }
    Ok(record::read(&plan.state_dir)?.and_then(|p| p.awaiting))
}
