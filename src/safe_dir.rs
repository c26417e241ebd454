//! Directories keyrot creates, walks and trusts: explicit modes whatever the umask, no symlink
//! followed inside a tree it publishes, and no directory others could change where keys live.
//!
//! keyrot runs as root. A directory another user can write to lets that user plant a symlink or
//! swap a file between keyrot's check and its write; a directory created with the umask's mode is
//! world-writable under `umask 0` and unreadable by the web server under the unit's `UMask=0077`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// The mode of directories that hold private keys or state.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode of directories of published documents: a web server must read them.
pub const PUBLIC_DIR_MODE: u32 = 0o755;

/// Why a directory was not created, walked or trusted. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error(
        "{path} is {found}: keyrot does not follow symlinks inside a directory it writes to; \
         make it a plain directory (nothing was written)"
    )]
    NotPlainDirectory { path: PathBuf, found: String },
    #[error("{path} {problem}: keyrot will not use it for {purpose}; {fix}")]
    Untrusted {
        path: PathBuf,
        problem: String,
        purpose: &'static str,
        fix: String,
    },
}

/// What a directory is for, which sets how strict [`check_trusted`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// keyrot's own private directory (state, private keys): no access for anyone else at all.
    Private,
    /// A directory keyrot writes secrets into but does not own (`/etc/kubernetes/pki`): others
    /// may read and traverse it, but not write.
    NotWritableByOthers,
}

/// How a non-regular file was found, for messages: "a symlink to /x", "a directory", "a FIFO".
pub fn describe(dir: BorrowedFd<'_>, name: &OsStr, stat: &Stat) -> String {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => match rustix::fs::readlinkat(dir, name, Vec::new()) {
            Ok(target) => format!(
                "a symlink to {}",
                Path::new(OsStr::from_bytes(target.as_bytes())).display()
            ),
            Err(_) => "a symlink".to_string(),
        },
        FileType::RegularFile => "a regular file".to_string(),
        FileType::Directory => "a directory".to_string(),
        FileType::Fifo => "a FIFO".to_string(),
        FileType::Socket => "a socket".to_string(),
        FileType::CharacterDevice | FileType::BlockDevice => "a device".to_string(),
        FileType::Unknown => "not a regular file".to_string(),
    }
}

/// Creates `path` and its missing parents with exactly `mode`, whatever the umask, and returns
/// it open. Directories that exist keep their mode; symlinks in the existing part of `path` (the
/// operator's own layout) are followed, none below it.
pub fn create_dir_all(path: &Path, mode: u32) -> Result<OwnedFd, DirError> {
    let path = std::path::absolute(path).map_err(io_at(path))?;
    let mut base = path.as_path();
    let base_fd = loop {
        match open_dir(base) {
            Ok(fd) => break fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A file where a parent should be: `walk` below names it.
            Err(e) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {}
            Err(e) => return Err(io_at(base)(e)),
        }
        base = base.parent().unwrap_or(Path::new("/"));
    };
    let rest = path.strip_prefix(base).expect("an ancestor of the path");
    let opened = walk(base_fd.as_fd(), base, rest, Some(mode))?;
    Ok(opened.expect("walk creates what is missing"))
}

/// Opens the directory `path` (following symlinks: it is the operator's path); `None` when it
/// does not exist.
pub fn open_if_exists(path: &Path) -> Result<Option<OwnedFd>, DirError> {
    match open_dir(path) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Opens `relative` below the open directory `root` (whose path is `root_path`, for messages)
/// one name at a time, never following a symlink. Missing directories are created with exactly
/// `mode` when `create` is `Some(mode)`; otherwise a missing one gives `Ok(None)`.
pub fn walk(
    root: BorrowedFd<'_>,
    root_path: &Path,
    relative: &Path,
    create: Option<u32>,
) -> Result<Option<OwnedFd>, DirError> {
    let mut current = rustix::io::dup(root).map_err(|e| io_at(root_path)(e.into()))?;
    let mut current_path = root_path.to_path_buf();
    for component in relative.components() {
        let Component::Normal(name) = component else {
            return Err(io_at(&current_path.join(relative))(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only plain names may follow the directory keyrot writes to",
            )));
        };
        let path = current_path.join(name);
        current = match open_child(current.as_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => match create {
                None => return Ok(None),
                Some(mode) => make_child(current.as_fd(), name, mode, &path)?,
            },
            Err(Errno::LOOP | Errno::NOTDIR) => return Err(not_plain(current.as_fd(), name, path)),
            Err(e) => return Err(io_at(&path)(e.into())),
        };
        current_path = path;
    }
    Ok(Some(current))
}

/// Refuses `path` when a user other than root and keyrot's own could change it or (for
/// [`Trust::Private`]) read it, and when any directory above it could be renamed or replaced
/// by such a user. `purpose` says what keyrot keeps there, for the message. A missing `path`
/// is judged by the directories above it: keyrot creates it with the right mode.
pub fn check_trusted(path: &Path, trust: Trust, purpose: &'static str) -> Result<(), DirError> {
    let resolved = resolve(path).map_err(io_at(path))?;
    let euid = rustix::process::geteuid().as_raw();
    let untrusted = |at: &Path, problem: String, fix: String| DirError::Untrusted {
        path: at.to_path_buf(),
        problem,
        purpose,
        fix,
    };
    for (depth, dir) in resolved.ancestors().enumerate() {
        let meta = match std::fs::metadata(dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_at(dir)(e)),
        };
        let mode = meta.mode() & 0o7777;
        let shown = if dir == resolved {
            path.display().to_string()
        } else {
            format!("{} (above {})", dir.display(), path.display())
        };
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(untrusted(
                Path::new(&shown),
                format!("is owned by uid {}", meta.uid()),
                format!("`chown root {}` if that is right", dir.display()),
            ));
        }
        let sticky = mode & 0o1000 != 0;
        let writable_by_others = mode & 0o022 != 0;
        // Above the directory itself a sticky bit (/tmp) keeps others from renaming its entries.
        if writable_by_others && (depth == 0 || !sticky) {
            return Err(untrusted(
                Path::new(&shown),
                format!("is writable by users other than its owner (mode {mode:04o})"),
                format!("`chmod go-w {}`", dir.display()),
            ));
        }
        if depth == 0 && trust == Trust::Private && mode & 0o077 != 0 {
            return Err(untrusted(
                Path::new(&shown),
                format!("is open to users other than its owner (mode {mode:04o})"),
                format!("`chmod 700 {}`", dir.display()),
            ));
        }
    }
    Ok(())
}

/// `path` made absolute with symlinks resolved, for the part of it that exists: what a path in
/// a plan really names, before keyrot compares it with another.
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut existing = std::path::absolute(path)?;
    let mut missing = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut resolved) => {
                resolved.extend(missing.iter().rev());
                return Ok(resolved);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let name = existing.file_name().ok_or(e)?.to_os_string();
                missing.push(name);
                existing.pop();
            }
            Err(e) => return Err(e),
        }
    }
}

fn open_child(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty())
}

fn make_child(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mode: u32,
    path: &Path,
) -> Result<OwnedFd, DirError> {
    let created = match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        // Another process made it meanwhile: use it as it is.
        Err(Errno::EXIST) => false,
        Err(e) => return Err(io_at(path)(e.into())),
    };
    let fd = match open_child(dir, name) {
        Ok(fd) => fd,
        Err(Errno::LOOP | Errno::NOTDIR) => return Err(not_plain(dir, name, path.to_path_buf())),
        Err(e) => return Err(io_at(path)(e.into())),
    };
    if created {
        // Created 0700 and widened through the open descriptor: the umask plays no part, and the
        // directory is never more open than `mode`, not even for an instant.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| io_at(path)(e.into()))?;
    }
    Ok(fd)
}

fn not_plain(dir: BorrowedFd<'_>, name: &OsStr, path: PathBuf) -> DirError {
    let found = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => describe(dir, name, &stat),
        Err(_) => "not a directory".to_string(),
    };
    DirError::NotPlainDirectory { path, found }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> DirError + '_ {
    move |error| DirError::Io {
        path: path.to_path_buf(),
        error,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Tests of what root may do to other users' files run as root, as CI does.
    pub(crate) fn require_root() {
        assert_eq!(
            rustix::process::geteuid().as_raw(),
            0,
            "this test plants files owned by other users: run the suite as root, as CI does"
        );
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_missing_directories_with_exactly_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep, PUBLIC_DIR_MODE).unwrap();
        for path in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(path)), 0o755, "{path}");
        }
        create_dir_all(&deep, PRIVATE_DIR_MODE).unwrap();
        assert_eq!(mode(&deep), 0o755, "an existing directory keeps its mode");
    }

    #[test]
    fn walk_refuses_a_symlinked_directory_and_names_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let root = dir.path().join("www");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join(".well-known")).unwrap();
        let root_fd = open_dir(&root).unwrap();
        let err = walk(
            root_fd.as_fd(),
            &root,
            Path::new(".well-known"),
            Some(0o755),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("www/.well-known is a symlink to"),
            "{message}"
        );
        assert!(message.contains("elsewhere"), "{message}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn walk_without_create_reports_a_missing_directory_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let root_fd = open_dir(dir.path()).unwrap();
        let found = walk(root_fd.as_fd(), dir.path(), Path::new("openid/v1"), None).unwrap();
        assert!(found.is_none());
        assert!(!dir.path().join("openid").exists());
    }

    #[test]
    fn walk_refuses_parent_components() {
        let dir = tempfile::tempdir().unwrap();
        let root_fd = open_dir(dir.path()).unwrap();
        assert!(walk(root_fd.as_fd(), dir.path(), Path::new("../x"), Some(0o755)).is_err());
    }

    #[test]
    fn group_writable_directory_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, Permissions::from_mode(0o775)).unwrap();
        let err = check_trusted(&state, Trust::NotWritableByOthers, "state").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("mode 0775"), "{message}");
        assert!(message.contains("chmod go-w"), "{message}");
    }

    #[test]
    fn private_directory_readable_by_others_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        fs::create_dir(&keys).unwrap();
        fs::set_permissions(&keys, Permissions::from_mode(0o755)).unwrap();
        assert!(check_trusted(&keys, Trust::NotWritableByOthers, "keys").is_ok());
        let err = check_trusted(&keys, Trust::Private, "private keys").unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
        fs::set_permissions(&keys, Permissions::from_mode(0o700)).unwrap();
        assert!(check_trusted(&keys, Trust::Private, "private keys").is_ok());
        assert!(check_trusted(&keys.join("missing"), Trust::Private, "keys").is_ok());
        fs::set_permissions(&keys, Permissions::from_mode(0o777)).unwrap();
        let err = check_trusted(&keys.join("missing/deeper"), Trust::Private, "keys").unwrap_err();
        assert!(
            err.to_string().contains("(above "),
            "a missing directory under a lax one: {err}"
        );
    }

    #[test]
    fn directory_owned_by_another_user_is_not_trusted() {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        fs::create_dir(&pki).unwrap();
        std::os::unix::fs::chown(&pki, Some(65534), Some(65534)).unwrap();
        let err = check_trusted(&pki, Trust::NotWritableByOthers, "keys").unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn world_writable_parent_without_sticky_bit_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let state = shared.join("state");
        fs::create_dir_all(&state).unwrap();
        fs::set_permissions(&state, Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&shared, Permissions::from_mode(0o777)).unwrap();
        let err = check_trusted(&state, Trust::Private, "state").unwrap_err();
        assert!(err.to_string().contains("(above "), "{err}");
        fs::set_permissions(&shared, Permissions::from_mode(0o1777)).unwrap();
        assert!(check_trusted(&state, Trust::Private, "state").is_ok());
    }
}
