//! Atomic file replacement: temp file in the same directory, fsync, rename, fsync the directory.
//!
//! Every file keyrot changes goes through here, so a crash at any instant leaves either the old
//! bytes or the new bytes on disk, never a torn file. Temp files start with a dot: the kubelet
//! ignores dot-files in the static-pod manifests directory. They never outlive the call, unless
//! the process dies in it; the next keyrot to take the lock removes those
//! ([`remove_stale_temp_files`]).

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What to do when the destination already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it atomically.
    Replace,
    /// Fail with `AlreadyExists` and leave it untouched.
    Refuse,
}

/// An error from an atomic write, naming the file it was for.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct WriteError {
    pub path: PathBuf,
    pub error: io::Error,
}

/// Writes `contents` to `path` atomically with permission bits `mode`.
///
/// The temp file is created 0600 and only widened to `mode` once written and synced, so
/// secret bytes are never readable by others, whatever the umask.
pub fn write(
    path: &Path,
    contents: &[u8],
    mode: u32,
    existing: Existing,
) -> Result<(), WriteError> {
    write_inner(path, contents, mode, None, existing).map_err(|error| WriteError {
        path: path.to_path_buf(),
        error,
    })
}

/// Replaces an existing file's contents atomically, keeping its mode, owner and group.
///
/// Falls back to `default_mode` (owner: the current user) when the file does not exist yet.
pub fn replace_keeping_metadata(
    path: &Path,
    contents: &[u8],
    default_mode: u32,
) -> Result<(), WriteError> {
    let result = match fs::metadata(path) {
        Ok(meta) => write_inner(
            path,
            contents,
            meta.mode() & 0o7777,
            Some((meta.uid(), meta.gid())),
            Existing::Replace,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_inner(path, contents, default_mode, None, Existing::Replace)
        }
        Err(e) => Err(e),
    };
    result.map_err(|error| WriteError {
        path: path.to_path_buf(),
        error,
    })
}

/// The names of keyrot's temp files: `.keyrot-XXXXXX.tmp`.
const TEMP_PREFIX: &str = ".keyrot-";
const TEMP_SUFFIX: &str = ".tmp";

/// Removes the temp files of writes that never finished (keyrot killed between creating its
/// temp file and renaming it) from `dir`, and returns their paths. A temp file can hold a private
/// key, which must not linger after keyrot destroyed the key. Only for a process holding the
/// state lock: a write in progress has a temp file of the same form. A missing `dir` has none.
pub fn remove_stale_temp_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_temp = name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX);
        if is_temp && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

fn write_inner(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    existing: Existing,
) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    temp.write_all(contents)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(temp.as_file(), Some(uid), Some(gid))?;
    }
    temp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    temp.as_file().sync_all()?;
    match existing {
        Existing::Replace => temp.persist(path).map_err(|e| e.error)?,
        Existing::Refuse => temp.persist_noclobber(path).map_err(|e| e.error)?,
    };
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_sets_mode_without_leaving_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write(&path, b"one", 0o600, Existing::Refuse).unwrap();
        write(&path, b"two", 0o644, Existing::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn refuse_keeps_the_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        fs::write(&path, b"old").unwrap();
        let err = write(&path, b"new", 0o600, Existing::Refuse).unwrap_err();
        assert_eq!(err.error.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("key.pem"));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn removes_only_the_temp_files_of_interrupted_writes() {
        let dir = tempfile::tempdir().unwrap();
        // What a keyrot killed inside `write` leaves: a temp file of its own form.
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(TEMP_SUFFIX)
            .tempfile_in(dir.path())
            .unwrap();
        let (_, stale) = temp.keep().unwrap();
        for other in ["sa.key", ".keyrot-notes", ".other.tmp", "keyrot.lock"] {
            fs::write(dir.path().join(other), b"kept").unwrap();
        }
        fs::create_dir(dir.path().join(".keyrot-dir.tmp")).unwrap();

        assert_eq!(
            remove_stale_temp_files(dir.path()).unwrap(),
            std::slice::from_ref(&stale)
        );
        assert!(!stale.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 5);
        assert!(remove_stale_temp_files(dir.path()).unwrap().is_empty());
        let missing = dir.path().join("missing");
        assert!(remove_stale_temp_files(&missing).unwrap().is_empty());
    }

    #[test]
    fn keeps_mode_of_the_file_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.pub");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        replace_keeping_metadata(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }
}
