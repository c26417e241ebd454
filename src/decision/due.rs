//! When something is next due without any event: a scheduled rotation, or dropping the old
//! issuer once a migration's grace period is over. The one answer the daemon, `status`,
//! `validate` and `plan` give.

use chrono::{DateTime, TimeDelta, Utc};

use crate::migration::record::MigrationRecord;
use crate::plan::{FlagSource, Plan};
use crate::state::State;

/// What comes next by the clock alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The schedule starts a rotation.
    Rotation(DateTime<Utc>),
    /// The migration's grace period is over: the old issuer is dropped.
    DropOldIssuer(DateTime<Utc>),
}

impl Due {
    pub fn at(self) -> DateTime<Utc> {
        match self {
            Due::Rotation(at) | Due::DropOldIssuer(at) => at,
        }
    }
}

/// An issuer migration as recorded, with its grace period (read from the apiserver's flags by
/// `migration::grace`: the core reads no files).
#[derive(Debug, Clone, Copy)]
pub struct RecordedMigration<'a> {
    pub record: &'a MigrationRecord,
    pub grace: TimeDelta,
}

/// The earliest of [`next_rotation_due`] and [`old_issuer_drop_due`]; `None`: only an event
/// (a request, a signal) starts anything.
pub fn next_due(
    plan: &Plan,
    state: &State,
    migration: Option<RecordedMigration>,
    now: DateTime<Utc>,
) -> Option<Due> {
    // A rotation does not start while a migration is recorded (the core's interlock): then only
    // the migration's own step is due.
    let rotation = match migration {
        Some(_) => None,
        None => next_rotation_due(plan, state, now).map(Due::Rotation),
    };
    let drop = migration
        .and_then(|m| old_issuer_drop_due(plan, m))
        .map(Due::DropOldIssuer);
    [rotation, drop]
        .into_iter()
        .flatten()
        .min_by_key(|d| d.at())
}

/// When the schedule next starts a rotation: the first time it fires after the last rotation
/// started (or the keys were adopted); at or before `now` means due now. `None`: no schedule, or
/// one that never fires again.
pub fn next_rotation_due(plan: &Plan, state: &State, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let anchor = state
        .last_rotation_started_at
        .or(state.adopted_at)
        .unwrap_or(now);
    plan.schedule.as_ref()?.next_after(anchor)
}

/// When a running daemon continues `recorded` on its own: step 5, dropping the old issuer, once
/// the grace period is over, when an editor changes the flags (a manual drop waits for a person
/// anyway). `None`: nothing for the daemon to do by itself.
pub fn old_issuer_drop_due(plan: &Plan, migration: RecordedMigration) -> Option<DateTime<Utc>> {
    let recorded = migration.record;
    let section = plan.issuer_migration.as_ref()?;
    if !section.drop_old_issuer || matches!(section.flags, FlagSource::Manual) {
        return None;
    }
    let waiting_for_grace = recorded.old_issuer == plan.issuer.url
        && recorded.new_issuer == section.new_issuer.url
        && recorded.cluster_verified_at.is_some()
        && recorded.old_issuer_dropped_at.is_none()
        && recorded.rollback_started_at.is_none()
        && recorded.awaiting.is_none();
    if !waiting_for_grace {
        return None;
    }
    // A grace period that ends past the end of the calendar never makes the daemon due.
    recorded
        .flags_changed_at?
        .checked_add_signed(migration.grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(migration: &str) -> Plan {
        let text = format!(
            "cluster: c\nflavour: kubeadm\nissuer: {{ url: \"https://old.example\" }}\n\
             schedule: {{ cron: \"0 3 1 * *\" }}\n\
             targets: [{{ name: web, localDirectory: /var/www/oidc }}]\n{migration}"
        );
        crate::plan::parse(std::path::Path::new("/etc/keyrot/plan.yaml"), &text).unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn while_a_migration_waits_for_its_grace_period_the_old_issuer_drop_is_next_not_a_rotation() {
        let plan = plan(
            "issuerMigration:\n  newIssuer: \"https://new.example\"\n  \
             flags: { kubeadmManifest: /etc/kubernetes/manifests/kube-apiserver.yaml }\n  \
             gracePeriod: 48h\n  dropOldIssuer: true\n",
        );
        let state = State {
            adopted_at: Some(at("2027-01-01T00:00:00Z")),
            ..State::default()
        };
        let now = at("2027-01-10T00:00:00Z");
        // The first firing after adoption: overdue, so due now.
        assert_eq!(
            next_due(&plan, &state, None, now),
            Some(Due::Rotation(at("2027-01-01T03:00:00Z")))
        );

        let mut record = MigrationRecord::new("https://old.example", "https://new.example");
        record.flags_changed_at = Some(at("2027-01-09T12:00:00Z"));
        record.cluster_verified_at = Some(at("2027-01-09T12:05:00Z"));
        fn recorded(record: &MigrationRecord) -> RecordedMigration<'_> {
            RecordedMigration {
                record,
                grace: TimeDelta::hours(48),
            }
        }
        assert_eq!(
            next_due(&plan, &state, Some(recorded(&record)), now),
            Some(Due::DropOldIssuer(at("2027-01-11T12:00:00Z")))
        );

        // Waiting for a person, nothing is due by the clock.
        record.awaiting = Some(crate::migration::record::Awaiting::AcceptEverywhere);
        assert_eq!(next_due(&plan, &state, Some(recorded(&record)), now), None);
    }
}
