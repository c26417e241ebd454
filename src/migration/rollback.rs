//! The issuer migration's rollback: kube-apiserver's flags back to what they were before the
//! migration, the apiserver restarted and checked, the record removed (the steps are the
//! decision core's; this carries them out and previews them).
//!
//! The editors' backups hold the flag file's bytes from before each step; the earliest one is
//! the original. The later ones are removed first, so a rollback stopped at any point (a
//! crash, a failed restart) finds the same original when run again. The documents published
//! for the new issuer stay where they are: they expose nothing, and a cloud trusting the new
//! issuer only stops being useful.

use std::path::{Path, PathBuf};

use super::record::{self, Awaiting, ManualStep, MigrationRecord};
use super::{APPROVE, Migration, ROLLBACK, StepError, edit, failed};
use crate::adapters::{AdapterError, ExpectedIssuer, MigrationEffects};
use crate::decision::migration::flags_touched;
use crate::issuer::{self, IssuerFlags, MigrationStep, diff};
use crate::plan::{FlagSource, Plan};
use crate::state::TriggerKind;

/// What a rollback would do, for `--rollback --dry-run`. Writes nothing.
pub fn preview_rollback(plan: &Plan) -> Result<String, StepError> {
    let migration = Migration::new(plan)?;
    let found = record::read(&plan.state_dir).map_err(|e| failed(ROLLBACK, e.to_string()))?;
    let Some(record) = found else {
        return Ok(nothing_recorded(plan));
    };
    match &migration.section.flags {
        FlagSource::File { path, .. } => Ok(match original(&migration, path) {
            Some((_, backup)) => format!(
                "{}then restart kube-apiserver and check that it issues as {} again\n",
                issuer::restore_diff(path, &backup).map_err(|e| failed(ROLLBACK, e.to_string()))?,
                migration.old_issuer()
            ),
            None if flags_touched(&record) => format!(
                "{} has no backup left: restart kube-apiserver and check that it issues as {}\n",
                path.display(),
                migration.old_issuer()
            ),
            None => "the flags were not changed: only the record is removed\n".to_string(),
        }),
        FlagSource::Manual => Ok(match manual_restore(&migration, &record) {
            Some(text) => text,
            None => "no flag change was asked for: only the record is removed\n".to_string(),
        }),
    }
}

/// Puts the flag file's original bytes back (when a backup holds them) and, with `restart`,
/// restarts kube-apiserver and checks it issues as the old issuer again. Idempotent: a rollback
/// stopped anywhere finds the same original, or none left and the file already restored.
pub(super) fn restore(
    migration: &Migration,
    effects: &mut dyn MigrationEffects,
    restart: bool,
    say: &mut dyn FnMut(String),
) -> Result<(), AdapterError> {
    let FlagSource::File { path, .. } = &migration.section.flags else {
        return Err(AdapterError::permanent(
            "flags: manual: keyrot edits no flag file to restore",
        ));
    };
    let backups = edit::backup_dir(migration.plan);
    effects.restore_flags(path, &flag_steps(migration), &backups, say)?;
    if restart {
        effects.restart("rollback")?;
        effects.check_cluster(ExpectedIssuer {
            issuer: migration.old_issuer(),
            jwks_uri: None,
        })?;
        say(format!(
            "rollback: kube-apiserver restarted and issues as {} again",
            migration.old_issuer()
        ));
    }
    say_done(migration, say);
    Ok(())
}

/// The last line of a rollback.
pub(super) fn say_done(migration: &Migration, say: &mut dyn FnMut(String)) {
    say(format!(
        "rollback: done; the record is removed. The documents published for {} stay on the \
         targets: remove them by hand if nothing uses them",
        migration.new_issuer().url
    ));
}

/// The warning a request of `kind` starts with when it starts a rollback once tokens name the
/// new issuer.
pub fn rollback_warning(
    plan: &Plan,
    kind: TriggerKind,
    record: Option<&MigrationRecord>,
) -> Option<String> {
    let record = record.filter(|r| r.rollback_started_at.is_none())?;
    let changed = record.flags_changed_at?;
    let new = plan.issuer_migration.as_ref()?;
    let this_plans =
        record.new_issuer == new.new_issuer.url && record.old_issuer == plan.issuer.url;
    (kind == TriggerKind::RollbackIssuerMigration && this_plans).then(|| {
        format!(
            "warning: tokens issued since {} name {}; once the flags are back the apiserver \
             rejects them until the kubelet replaces them (within about an hour for pods' \
             projected tokens; copies taken out of pods stop working)",
            changed.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            new.new_issuer.url
        )
    })
}

/// Whether the editors still hold the flag file's bytes from before the migration.
pub fn original_backup(plan: &Plan) -> bool {
    let Ok(migration) = Migration::new(plan) else {
        return false;
    };
    match &migration.section.flags {
        FlagSource::File { path, .. } => original(&migration, path).is_some(),
        FlagSource::Manual => false,
    }
}

/// What a person is asked to change to put the flags back (`flags: manual`).
pub(super) fn manual_restore_text(migration: &Migration, record: &MigrationRecord) -> String {
    manual_restore(migration, record)
        .unwrap_or_else(|| "no flag change was asked for: nothing to put back\n".to_string())
}

fn nothing_recorded(plan: &Plan) -> String {
    format!(
        "no issuer migration is recorded in {}: nothing to roll back\n",
        record::path(&plan.state_dir).display()
    )
}

/// Every flag step of the plan, in order.
fn flag_steps(migration: &Migration) -> Vec<MigrationStep> {
    let mut steps = migration.steps_to_add();
    steps.push(migration.drop_step());
    steps
}

/// The earliest step with a backup, and the backup: the bytes from before the migration.
fn original(migration: &Migration, path: &Path) -> Option<(usize, PathBuf)> {
    let dir = edit::backup_dir(migration.plan);
    issuer::original_backup(path, &flag_steps(migration), &dir)
}

/// The change a person makes to put the flags back, when keyrot asked for any.
fn manual_restore(migration: &Migration, record: &MigrationRecord) -> Option<String> {
    let waits_for = |step| record.awaiting == Some(Awaiting::ManualChange { step });
    let asked_drop = record.old_issuer_dropped_at.is_some() || waits_for(ManualStep::Drop);
    let asked_add = asked_drop || record.flags_changed_at.is_some() || waits_for(ManualStep::Add);
    let asked_accept = asked_add || record.accepted_at.is_some() || waits_for(ManualStep::Accept);
    let mut asked = match (asked_add || waits_for(ManualStep::Rollback), asked_accept) {
        // A rollback under way does not know how far the person got: assume all the way.
        (true, _) => migration.steps_to_add(),
        (false, true) => vec![migration.accept_step()],
        (false, false) => return None,
    };
    if asked_drop {
        asked.push(migration.drop_step());
    }
    let original = migration.assumed_flags();
    let now = asked
        .iter()
        .try_fold(original.clone(), |flags, step| {
            issuer::next_flags(&flags, step)
        })
        .ok()?;
    Some(render_manual_restore(&now, &original))
}

fn render_manual_restore(now: &IssuerFlags, original: &IssuerFlags) -> String {
    let lines = |flags: &IssuerFlags| {
        flags
            .to_args()
            .iter()
            .map(|arg| format!("{arg}\n"))
            .collect::<String>()
    };
    format!(
        "keyrot does not edit kube-apiserver's flags on this cluster: put them back by hand.\nOn \
         every control-plane node, change the flags as below, leaving every other flag as it \
         is; restart kube-apiserver; then {APPROVE}.\n\n{}",
        diff::unified(
            "kube-apiserver flags (now)",
            "kube-apiserver flags (after rollback)",
            &lines(now),
            &lines(original),
            3,
        )
    )
}
