//! Applying a computed edit, with a backup outside the file's directory, and rolling it back.
//!
//! The backup is written (and synced) before the file is replaced, so a crash at any instant
//! leaves a way back. It never lives in the edited file's directory: the kubelet runs every file
//! in the static-pod manifests directory as a pod. Each step has its own backup, holding the
//! bytes from just before the last change that step made.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{EditError, FlagEdit, MigrationStep};
use crate::atomic_file::{self, Existing};

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The file already held the result; nothing was written.
    Unchanged,
    /// The original bytes went to `backup`, then the file was replaced.
    Written { backup: PathBuf },
}

/// What `rollback` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolledBack {
    /// The file holds the backup's bytes again; the backup was removed.
    Restored { backup: PathBuf },
    /// There was no backup for this step: nothing to roll back.
    NoBackup,
}

/// Where the bytes `target` had before `step` are kept.
pub fn backup_path(backup_dir: &Path, target: &Path, step: &MigrationStep) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(|| "flags".into(), |n| n.to_string_lossy());
    backup_dir.join(format!("{name}.before-{}", step.tag()))
}

/// Writes the edit: the original bytes to a backup under `backup_dir`, then the new bytes to the
/// file, atomically, keeping its mode and owner. Refuses when the file changed since the edit
/// was computed, and writes nothing when the edit changes nothing.
pub fn apply(edit: &FlagEdit, backup_dir: &Path) -> Result<Applied, EditError> {
    let now = crate::fs_read::read(&edit.path).map_err(|error| io_error(&edit.path, error))?;
    if now != edit.before.as_bytes() {
        return Err(EditError::ChangedSinceComputed {
            path: edit.path.clone(),
        });
    }
    if edit.changes_nothing() {
        return Ok(Applied::Unchanged);
    }
    prepare_backup_dir(backup_dir, &edit.path)?;
    let backup = backup_path(backup_dir, &edit.path, &edit.step);
    atomic_file::write(&backup, edit.before.as_bytes(), 0o600, Existing::Replace)?;
    atomic_file::replace_keeping_metadata(&edit.path, edit.after.as_bytes(), 0o600)?;
    Ok(Applied::Written { backup })
}

/// Puts back the bytes `target` had before `step`, exactly, then removes the backup. Running it
/// again finds no backup and changes nothing.
pub fn rollback(
    target: &Path,
    step: &MigrationStep,
    backup_dir: &Path,
) -> Result<RolledBack, EditError> {
    let backup = backup_path(backup_dir, target, step);
    let bytes = match crate::fs_read::read(&backup) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RolledBack::NoBackup),
        Err(e) => return Err(io_error(&backup, e)),
    };
    atomic_file::replace_keeping_metadata(target, &bytes, 0o600)?;
    fs::remove_file(&backup).map_err(|e| io_error(&backup, e))?;
    Ok(RolledBack::Restored { backup })
}

/// The earliest of `steps` whose backup of `target` is under `backup_dir`, and that backup: the
/// bytes from before the first edit.
pub fn original_backup(
    target: &Path,
    steps: &[MigrationStep],
    backup_dir: &Path,
) -> Option<(usize, PathBuf)> {
    steps
        .iter()
        .map(|step| backup_path(backup_dir, target, step))
        .enumerate()
        .find(|(_, backup)| backup.exists())
}

/// What putting `backup` back changes in `target`, as a unified diff. An error names the file.
pub fn restore_diff(target: &Path, backup: &Path) -> io::Result<String> {
    let read = |p: &Path| {
        crate::fs_read::read_to_string(p)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let label = target.display();
    Ok(super::diff::unified(
        &format!("{label} (now)"),
        &format!("{label} (after rollback)"),
        &read(target)?,
        &read(backup)?,
        3,
    ))
}

/// Puts back the bytes `target` had before the earliest of `steps` that has a backup: the
/// backups of the later steps go first, so a restore stopped anywhere finds the same original
/// again. The backup directory goes too once empty; anything else in it stays.
pub fn restore_original(
    target: &Path,
    steps: &[MigrationStep],
    backup_dir: &Path,
) -> Result<RolledBack, EditError> {
    let Some((earliest, _)) = original_backup(target, steps, backup_dir) else {
        return Ok(RolledBack::NoBackup);
    };
    for later in &steps[earliest + 1..] {
        let later = backup_path(backup_dir, target, later);
        match fs::remove_file(&later) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&later, e)),
        }
    }
    let restored = rollback(target, &steps[earliest], backup_dir)?;
    let _ = fs::remove_dir(backup_dir);
    Ok(restored)
}

/// Refuses a backup directory in or under the target's directory, then creates it (0700).
/// The check comes first so that a refused directory is never created there.
fn prepare_backup_dir(backup_dir: &Path, target: &Path) -> Result<(), EditError> {
    let target_dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let target_dir = target_dir
        .canonicalize()
        .map_err(|e| io_error(target_dir, e))?;
    let resolved = crate::safe_dir::resolve(backup_dir).map_err(|e| io_error(backup_dir, e))?;
    if resolved.starts_with(&target_dir) {
        return Err(EditError::BackupBesideTarget {
            backup_dir: backup_dir.to_path_buf(),
            target_dir,
        });
    }
    crate::safe_dir::create_dir_all(backup_dir, crate::safe_dir::PRIVATE_DIR_MODE)
        .map(drop)
        .map_err(EditError::from)
}

fn io_error(path: &Path, error: io::Error) -> EditError {
    EditError::Io {
        path: path.to_path_buf(),
        error,
    }
}
