//! `keyrot migrate-issuer --rollback`: kube-apiserver's flags back to what they were before the
//! migration, the apiserver restarted and checked, the record removed.
//!
//! The editors' backups hold the flag file's bytes from before each step; the earliest one is
//! the original. The later ones are removed first, so a rollback stopped at any point (a
//! crash, a failed restart) finds the same original when run again. The documents published
//! for the new issuer stay where they are: they expose nothing, and a cloud trusting the new
//! issuer only stops being useful.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::record::{self, Awaiting, ManualStep, MigrationRecord, RecordStore};
use super::{APPROVE, Migration, Outcome, ROLLBACK, StepError, edit, failed};
use crate::adapters::{ExpectedIssuer, MigrationEffects};
use crate::issuer::{self, IssuerFlags, MigrationStep, RolledBack, diff};
use crate::plan::{FlagSource, Plan};

/// What a rollback would do, for `--rollback --dry-run`. Writes nothing.
pub fn preview_rollback(plan: &Plan) -> Result<String, StepError> {
    let migration = Migration::new(plan)?;
    let found = record::read(&plan.state_dir).map_err(|e| failed(ROLLBACK, e.to_string()))?;
    let Some(record) = recorded(&migration, found)? else {
        return Ok(nothing_recorded(plan));
    };
    match &migration.section.flags {
        FlagSource::File { path, .. } => Ok(match original(&migration, path) {
            Some((_, backup)) => format!(
                "{}then restart kube-apiserver and check that it issues as {} again\n",
                restore_diff(path, &backup)?,
                migration.old_issuer()
            ),
            None if touched(&record) => format!(
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

/// Puts the flags back. The caller holds the state lock. With `approved` (`keyrot approve`), a
/// manual rollback the person made is checked and finished.
pub fn rollback(
    plan: &Plan,
    store: &mut dyn RecordStore,
    effects: &mut dyn MigrationEffects,
    now: impl Fn() -> DateTime<Utc>,
    approved: bool,
    say: &mut dyn FnMut(String),
) -> Result<Outcome, StepError> {
    let migration = Migration::new(plan)?;
    let Some(mut record) = recorded(&migration, store.recorded())? else {
        return Err(failed(ROLLBACK, nothing_recorded(plan).trim_end()));
    };
    if record.rollback_started_at.is_none() && record.flags_changed_at.is_some() {
        say(format!(
            "warning: tokens issued since {} name {}; once the flags are back the apiserver \
             rejects them until the kubelet replaces them (within about an hour for pods' \
             projected tokens; copies taken out of pods stop working)",
            record
                .flags_changed_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            migration.new_issuer().url
        ));
    }
    let old = ExpectedIssuer {
        issuer: migration.old_issuer(),
        jwks_uri: None,
    };
    match &migration.section.flags {
        FlagSource::File { path, .. } => {
            // A backup means the file was edited, even when a crash kept the step unrecorded.
            let restart = touched(&record) || original(&migration, path).is_some();
            record.rollback_started_at.get_or_insert_with(&now);
            migration.save(store, &record, ROLLBACK)?;
            restore_file(&migration, path, say)?;
            if restart {
                effects
                    .restart("rollback")
                    .map_err(|e| failed(ROLLBACK, e.message))?;
                effects
                    .check_cluster(old)
                    .map_err(|e| failed(ROLLBACK, e.message))?;
                say(format!(
                    "rollback: kube-apiserver restarted and issues as {} again",
                    migration.old_issuer()
                ));
            }
        }
        FlagSource::Manual => {
            let waiting = record.awaiting
                == Some(Awaiting::ManualChange {
                    step: ManualStep::Rollback,
                });
            if approved && waiting {
                effects
                    .check_cluster(old)
                    .map_err(|e| failed(ROLLBACK, e.message))?;
                say(format!(
                    "rollback: approved: the apiserver issues as {} again",
                    migration.old_issuer()
                ));
            } else if let Some(text) = manual_restore(&migration, &record) {
                record.rollback_started_at.get_or_insert_with(&now);
                record.awaiting = Some(Awaiting::ManualChange {
                    step: ManualStep::Rollback,
                });
                migration.save(store, &record, ROLLBACK)?;
                return Ok(Outcome::Waiting(text));
            }
        }
    }
    store
        .keep(None)
        .map_err(|e| failed(ROLLBACK, e.to_string()))?;
    say(format!(
        "rollback: done; the record is removed. The documents published for {} stay on the \
         targets: remove them by hand if nothing uses them",
        migration.new_issuer().url
    ));
    Ok(Outcome::Done)
}

fn recorded(
    migration: &Migration,
    found: Option<MigrationRecord>,
) -> Result<Option<MigrationRecord>, StepError> {
    found.map(|f| migration.record_of(Some(f))).transpose()
}

fn nothing_recorded(plan: &Plan) -> String {
    format!(
        "no issuer migration is recorded in {}: nothing to roll back\n",
        record::path(&plan.state_dir).display()
    )
}

/// Whether the flags may differ from the original: a step changed them, or a rollback started.
fn touched(record: &MigrationRecord) -> bool {
    record.flags_changed_at.is_some()
        || record.accepted_at.is_some()
        || record.awaiting == Some(Awaiting::AcceptEverywhere)
        || record.rollback_started_at.is_some()
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
    flag_steps(migration)
        .iter()
        .map(|step| issuer::backup_path(&dir, path, step))
        .enumerate()
        .find(|(_, backup)| backup.exists())
}

fn restore_diff(path: &Path, backup: &Path) -> Result<String, StepError> {
    let read = |p: &Path| {
        crate::fs_read::read_to_string(p)
            .map_err(|e| failed(ROLLBACK, format!("{}: {e}", p.display())))
    };
    let label = path.display();
    Ok(diff::unified(
        &format!("{label} (now)"),
        &format!("{label} (after rollback)"),
        &read(path)?,
        &read(backup)?,
        3,
    ))
}

/// Removes the backups of the steps after the earliest, then puts the earliest back.
fn restore_file(
    migration: &Migration,
    path: &Path,
    say: &mut dyn FnMut(String),
) -> Result<(), StepError> {
    let Some((earliest, backup)) = original(migration, path) else {
        return Ok(());
    };
    say(format!(
        "rollback: {} gets its bytes from before the migration back:\n{}",
        path.display(),
        restore_diff(path, &backup)?
    ));
    let steps = flag_steps(migration);
    let dir = edit::backup_dir(migration.plan);
    for later in &steps[earliest + 1..] {
        let later = issuer::backup_path(&dir, path, later);
        match std::fs::remove_file(&later) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(ROLLBACK, format!("{}: {e}", later.display()))),
        }
    }
    match issuer::rollback(path, &steps[earliest], &dir)
        .map_err(|e| failed(ROLLBACK, e.to_string()))?
    {
        RolledBack::Restored { backup } => say(format!(
            "rollback: {} restored from {}",
            path.display(),
            backup.display()
        )),
        RolledBack::NoBackup => {}
    }
    // The migration's own backup directory goes too once empty; anything else in it stays.
    let _ = std::fs::remove_dir(&dir);
    Ok(())
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
