//! What the plan's recorded migration means for the daemon and `keyrot approve`: read from the
//! state directory, judged by the decision core.

use chrono::{DateTime, Utc};

use super::record::{self, Awaiting, MigrationRecord};
use crate::plan::Plan;
use crate::state::StateError;

/// When a running daemon continues `record`, the plan's migration, on its own
/// ([`crate::decision::old_issuer_drop_due`]).
pub fn due(plan: &Plan, record: Option<MigrationRecord>) -> Option<DateTime<Utc>> {
    let section = plan.issuer_migration.as_ref()?;
    let record = record?;
    let grace = super::grace::for_section(section).ok()?.period;
    crate::decision::old_issuer_drop_due(
        plan,
        crate::decision::RecordedMigration {
            record: &record,
            grace,
        },
    )
}

/// What the plan's recorded migration waits for `keyrot approve` to do, if anything. Reads the
/// record without the lock: `keyrot approve` uses it to choose between a migration and a
/// rotation, and the migration checks again under the lock.
pub fn awaiting(plan: &Plan) -> Result<Option<Awaiting>, StateError> {
    if plan.issuer_migration.is_none() {
        return Ok(None);
    }
    Ok(record::read(&plan.state_dir)?.and_then(|p| p.awaiting))
}
