//! Atomic file replacement: temp file in the same directory, fsync, rename, fsync the directory.
//!
//! Every file keyrot changes goes through here, so a crash at any instant leaves either the old
//! bytes or the new bytes on disk, never a torn file. Temp files start with a dot: the kubelet
//! ignores dot-files in the static-pod manifests directory. They never outlive the call, unless
//! the process dies in it; the next keyrot to take the lock removes those
//! ([`remove_stale_temp_files`]).
//!
//! keyrot runs as root in directories other users may be able to write to, so nothing here
//! follows a symlink at the destination or trusts what it finds there: a symlink, a directory or
//! a device in the file's place is refused and named; the temp file is created `O_EXCL |
//! O_NOFOLLOW`; the rename replaces a name, never what a name points to. Modes are set
//! explicitly (never from the umask) and setuid, setgid and sticky bits are never carried over.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::safe_dir;

/// What to do when the destination already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it atomically.
    Replace,
    /// Fail with `AlreadyExists` and leave it untouched.
    Refuse,
}

/// The mode and owner the written file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Exactly these permission bits, owned by keyrot's user.
    Mode(u32),
    /// A private key: 0600, owned by keyrot's user. A file in its place that belongs to another
    /// user is refused: the key would otherwise change hands, or a service that reads it as that
    /// user would stop at its next start.
    PrivateKey,
    /// The permission bits (rwx only) and owner of the file it replaces, or `default_mode` and
    /// keyrot's user for a new file. For files other programs own: manifests, the bundle.
    KeepExisting { default_mode: u32 },
}

/// Why a write did not happen. Every variant names the file; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error(
        "{path} is {found}: keyrot replaces only regular files and never writes through a \
         symlink; put the file itself there (nothing was written)"
    )]
    NotRegular { path: PathBuf, found: String },
    #[error(
        "{path} is owned by uid {owner}, not by uid {euid} that keyrot runs as: a private key is a \
         regular file 0600 owned by keyrot's user (root on a control-plane node); check who made \
         it, then `chown {euid}` it (nothing was written)"
    )]
    ForeignOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
}

impl WriteError {
    pub fn path(&self) -> &Path {
        match self {
            WriteError::Io { path, .. }
            | WriteError::NotRegular { path, .. }
            | WriteError::ForeignOwner { path, .. } => path,
        }
    }

    /// The I/O error kind, for callers that tell "already exists" from other failures.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            WriteError::Io { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

/// Writes `contents` to `path` atomically with permission bits `mode`, owned by keyrot's user.
///
/// The temp file is created 0600 and only widened to `mode` once written and synced, so
/// secret bytes are never readable by others, whatever the umask.
pub fn write(
    path: &Path,
    contents: &[u8],
    mode: u32,
    existing: Existing,
) -> Result<(), WriteError> {
    write_path(path, contents, Ownership::Mode(mode), existing)
}

/// Writes a private key to `path` atomically: a regular file 0600 owned by keyrot's user.
pub fn write_private_key(
    path: &Path,
    contents: &[u8],
    existing: Existing,
) -> Result<(), WriteError> {
    write_path(path, contents, Ownership::PrivateKey, existing)
}

/// Replaces an existing file's contents atomically, keeping its permission bits and owner.
///
/// Falls back to `default_mode` (owner: the current user) when the file does not exist yet.
pub fn replace_keeping_metadata(
    path: &Path,
    contents: &[u8],
    default_mode: u32,
) -> Result<(), WriteError> {
    write_path(
        path,
        contents,
        Ownership::KeepExisting { default_mode },
        Existing::Replace,
    )
}

/// Writes `name` inside the open directory `dir` (whose path, for messages, is `dir_path`).
/// For trees walked without following symlinks ([`safe_dir::walk`]).
pub fn write_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &OsStr,
    contents: &[u8],
    ownership: Ownership,
    existing: Existing,
) -> Result<(), WriteError> {
    let path = dir_path.join(name);
    write_inner(dir, &path, name, contents, ownership, existing)
}

fn write_path(
    path: &Path,
    contents: &[u8],
    ownership: Ownership,
    existing: Existing,
) -> Result<(), WriteError> {
    let io_error = |error: io::Error| WriteError::Io {
        path: path.to_path_buf(),
        error,
    };
    let name = path.file_name().ok_or_else(|| {
        io_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let dir = open_dir(parent_dir(path)).map_err(io_error)?;
    write_inner(dir.as_fd(), path, name, contents, ownership, existing)
}

/// The names of keyrot's temp files: `.keyrot-XXXXXX.tmp`.
const TEMP_PREFIX: &str = ".keyrot-";
const TEMP_SUFFIX: &str = ".tmp";

/// Removes the temp files of writes that never finished (keyrot killed between creating its
/// temp file and renaming it) from `dir`, and returns their paths. A temp file can hold a private
/// key, which must not linger after keyrot destroyed the key. Only for a process holding the
/// state lock: a write in progress has a temp file of the same form. A missing `dir` has none.
pub fn remove_stale_temp_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        // `file_type` does not follow symlinks: a planted symlink of that name is not ours.
        if is_temp_name(&entry.file_name()) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

fn write_inner(
    dir: BorrowedFd<'_>,
    path: &Path,
    name: &OsStr,
    contents: &[u8],
    ownership: Ownership,
    existing: Existing,
) -> Result<(), WriteError> {
    let io_error = |error: io::Error| WriteError::Io {
        path: path.to_path_buf(),
        error,
    };
    let current = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Some(stat),
        Err(Errno::NOENT) => None,
        Err(e) => return Err(io_error(e.into())),
    };
    if let Some(stat) = &current {
        if existing == Existing::Refuse {
            return Err(io_error(io::ErrorKind::AlreadyExists.into()));
        }
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(WriteError::NotRegular {
                path: path.to_path_buf(),
                found: safe_dir::describe(dir, name, stat),
            });
        }
    }
    let (mode, owner) = match (ownership, &current) {
        (Ownership::Mode(mode), _) => (mode, None),
        (Ownership::PrivateKey, Some(stat)) if stat.st_uid != euid() => {
            return Err(WriteError::ForeignOwner {
                path: path.to_path_buf(),
                owner: stat.st_uid,
                euid: euid(),
            });
        }
        (Ownership::PrivateKey, _) => (0o600, None),
        (Ownership::KeepExisting { .. }, Some(stat)) => {
            (stat.st_mode & 0o777, Some((stat.st_uid, stat.st_gid)))
        }
        (Ownership::KeepExisting { default_mode }, None) => (default_mode, None),
    };
    let (temp_name, temp) = create_temp(dir).map_err(io_error)?;
    let result = fill(temp, contents, mode & 0o777, owner)
        .and_then(|()| rename(dir, &temp_name, name, existing))
        .and_then(|()| rustix::fs::fsync(dir).map_err(io::Error::from));
    if result.is_err() {
        // The temp file may hold a private key: never leave it behind.
        let _ = rustix::fs::unlinkat(dir, &temp_name, AtFlags::empty());
    }
    result.map_err(io_error)
}

fn fill(temp: OwnedFd, contents: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let mut file = File::from(temp);
    file.write_all(contents)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    // After the chown, which clears setuid/setgid bits; explicit, so the umask plays no part.
    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
    file.sync_all()
}

/// A new, empty temp file in `dir`, 0600, created exclusively and never through a symlink.
fn create_temp(dir: BorrowedFd<'_>) -> io::Result<(OsString, OwnedFd)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = OsString::from(format!(
            "{TEMP_PREFIX}{}-{n}-{nanos:x}{TEMP_SUFFIX}",
            std::process::id()
        ));
        match rustix::fs::openat(dir, &name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((name, fd)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn rename(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr, existing: Existing) -> io::Result<()> {
    match existing {
        Existing::Replace => Ok(rustix::fs::renameat(dir, from, dir, to)?),
        Existing::Refuse => {
            match rustix::fs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
                Ok(()) => Ok(()),
                // File systems without RENAME_NOREPLACE: a hard link fails the same way when the
                // name is taken, then the temp name goes.
                Err(Errno::INVAL | Errno::NOSYS) => {
                    rustix::fs::linkat(dir, from, dir, to, AtFlags::empty())?;
                    Ok(rustix::fs::unlinkat(dir, from, AtFlags::empty())?)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `name` is one of keyrot's temp files.
fn is_temp_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.starts_with(TEMP_PREFIX.as_bytes()) && bytes.ends_with(TEMP_SUFFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
        assert_eq!(err.kind(), Some(io::ErrorKind::AlreadyExists));
        assert!(err.to_string().contains("key.pem"));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn removes_only_the_temp_files_of_interrupted_writes() {
        let dir = tempfile::tempdir().unwrap();
        // What a keyrot killed inside `write` leaves: a temp file of its own form.
        let dir_fd = open_dir(dir.path()).unwrap();
        let (name, _) = create_temp(dir_fd.as_fd()).unwrap();
        let stale = dir.path().join(&name);
        assert!(is_temp_name(&name));
        for other in ["sa.key", ".keyrot-notes", ".other.tmp", "keyrot.lock"] {
            fs::write(dir.path().join(other), b"kept").unwrap();
        }
        fs::create_dir(dir.path().join(".keyrot-dir.tmp")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("sa.key"),
            dir.path().join(".keyrot-link.tmp"),
        )
        .unwrap();

        assert_eq!(
            remove_stale_temp_files(dir.path()).unwrap(),
            std::slice::from_ref(&stale)
        );
        assert!(!stale.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 6);
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

    #[test]
    fn setuid_setgid_and_sticky_bits_are_never_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kube-apiserver.yaml");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o7644)).unwrap();
        replace_keeping_metadata(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
    }

    #[test]
    fn a_symlink_in_the_files_place_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, b"not keyrot's").unwrap();
        let path = dir.path().join("sa.pub");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();

        for result in [
            replace_keeping_metadata(&path, b"new", 0o644),
            write(&path, b"new", 0o644, Existing::Replace),
            write_private_key(&path, b"new", Existing::Replace),
        ] {
            let err = result.unwrap_err();
            assert!(matches!(err, WriteError::NotRegular { .. }), "{err}");
            let message = err.to_string();
            assert!(message.contains("is a symlink to"), "{message}");
            assert!(message.contains("elsewhere"), "{message}");
        }
        assert_eq!(fs::read(&elsewhere).unwrap(), b"not keyrot's");
        assert!(
            fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_directory_in_the_files_place_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks");
        fs::create_dir(&path).unwrap();
        let err = write(&path, b"{}", 0o644, Existing::Replace).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn private_key_replacing_a_lax_file_comes_out_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o4755)).unwrap();
        write_private_key(&path, b"new", Existing::Replace).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.uid(), euid());
    }

    #[test]
    fn private_key_in_place_of_another_users_file_is_refused() {
        crate::safe_dir::tests::require_root();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        fs::write(&path, b"old").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let err = write_private_key(&path, b"new", Existing::Replace).unwrap_err();
        assert!(
            matches!(err, WriteError::ForeignOwner { owner: 65534, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("sa.key"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
