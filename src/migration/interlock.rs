//! How an issuer migration and key rotations keep out of each other's way, and what a running
//! daemon does for a migration by itself.

use chrono::{DateTime, Utc};

use super::record::{self, Awaiting, MigrationRecord};
use crate::plan::Plan;
use crate::state::Rotation;

/// Why no key rotation may start while `recorded` exists, if it concerns the plan's issuer.
///
/// From step 1 on the targets serve the new issuer's discovery document; a rotation with the
/// plan's issuer would publish the old one's over it, and change the keys under a migration
/// that checked them. Once the plan names the new issuer, the record is history.
pub fn blocks_rotation(plan: &Plan, recorded: &MigrationRecord) -> Option<String> {
    if recorded.old_issuer != plan.issuer.url {
        return None;
    }
    let path = record::path(&plan.state_dir);
    let finished = recorded.old_issuer_dropped_at.is_some()
        || (recorded.cluster_verified_at.is_some()
            && plan
                .issuer_migration
                .as_ref()
                .is_some_and(|m| !m.drop_old_issuer));
    Some(if finished {
        format!(
            "the issuer migration to {} is done ({}): set issuer.url to it and remove \
             issuerMigration before keys rotate again",
            recorded.new_issuer,
            path.display()
        )
    } else {
        format!(
            "the issuer migration from {} to {} is under way ({}): finish it or roll it back \
             before keys rotate",
            recorded.old_issuer,
            recorded.new_issuer,
            path.display()
        )
    })
}

/// When a running daemon continues the plan's recorded migration on its own
/// ([`crate::decision::old_issuer_drop_due`]); `None` without a readable record.
pub fn due(plan: &Plan) -> Option<DateTime<Utc>> {
    let section = plan.issuer_migration.as_ref()?;
    let record = record::read(&plan.state_dir).ok()??;
    let grace = super::grace::for_section(section).ok()?.period;
    crate::decision::old_issuer_drop_due(
        plan,
        crate::decision::RecordedMigration {
            record: &record,
            grace,
        },
    )
}

/// Why a migration may not start now: a key rotation is in record. A rotation changes the
/// keys the migration publishes and checks.
pub fn refused_during_rotation(rotation: Option<&Rotation>) -> Option<String> {
    rotation.map(|r| {
        format!(
            "key rotation {} is in record (phase {}): let it finish (or abort it) before \
             changing the issuer",
            r.id, r.phase
        )
    })
}

/// What the plan's recorded migration waits for `keyrot approve` to do, if anything. Reads the
/// record without the lock: `keyrot approve` uses it to choose between a migration and a
/// rotation, and the migration checks again under the lock.
pub fn awaiting(plan: &Plan) -> Result<Option<Awaiting>, String> {
    if plan.issuer_migration.is_none() {
        return Ok(None);
    }
    Ok(record::read(&plan.state_dir)?.and_then(|p| p.awaiting))
}
