//! The local-directory target: the two documents as files under a directory a web server serves.
//!
//! Other users (the web server's, the site's owner) may own that tree, so nothing below the
//! target directory is followed through a symlink, for reading or writing: a symlinked
//! `.well-known` would make root write wherever it points, a symlinked document would be read
//! through. Directories keyrot creates are 0755 and the documents 0644, whatever the umask, so the
//! web server can read them and nobody else can change them.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::atomic_file::{self, Existing, Ownership, WriteError};
use crate::documents::JWKS_PATH;
use crate::safe_dir::{self, DirError};

/// The mode of a published document: world-readable, writable by its owner only.
const DOCUMENT_MODE: u32 = 0o644;
/// More than any JWKS or discovery document keyrot writes; a bigger file is not one of them.
const MAX_DOCUMENT_BYTES: u64 = 1 << 20;

/// Why a document under a local target could not be read or written. Each names the path.
#[derive(Debug, thiserror::Error)]
pub enum LocalDirError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error(
        "{path} is {found}: keyrot reads only regular files under a target, never through a symlink"
    )]
    NotRegular { path: PathBuf, found: String },
    #[error("{path} is larger than {MAX_DOCUMENT_BYTES} bytes: not a document keyrot wrote")]
    TooLarge { path: PathBuf },
    #[error("{path}: {error}")]
    Jwks {
        path: PathBuf,
        error: super::JwksError,
    },
}

/// The kids of the JWKS file under `dir`; none when nothing was published there yet.
pub fn read_served_kids(dir: &Path) -> Result<Vec<String>, LocalDirError> {
    match read_document(dir, JWKS_PATH)? {
        Some(body) => super::jwks_kids(&body).map_err(|error| LocalDirError::Jwks {
            path: dir.join(JWKS_PATH),
            error,
        }),
        None => Ok(Vec::new()),
    }
}

/// The bytes of `relative` (e.g. `openid/v1/jwks`) under `dir`; `None` when it or a directory on
/// the way does not exist.
pub fn read_document(dir: &Path, relative: &str) -> Result<Option<Vec<u8>>, LocalDirError> {
    let (parent, parent_path, name) = match open_parent(dir, relative, None)? {
        Some(found) => found,
        None => return Ok(None),
    };
    let path = parent_path.join(name);
    let read_error = |error: io::Error| LocalDirError::Read {
        path: path.clone(),
        error,
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(not_regular(&parent, name, path)),
        Err(e) => return Err(read_error(e.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| read_error(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(not_regular(&parent, name, path));
    }
    let mut body = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(read_error)?;
    if body.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(LocalDirError::TooLarge { path });
    }
    Ok(Some(body))
}

/// Writes `body` to `relative` under `dir` atomically, creating what is missing.
pub fn write_document(dir: &Path, relative: &str, body: &[u8]) -> Result<(), LocalDirError> {
    let (parent, parent_path, name) = open_parent(dir, relative, Some(safe_dir::PUBLIC_DIR_MODE))?
        .expect("missing directories are created");
    atomic_file::write_at(
        parent.as_fd(),
        &parent_path,
        name,
        body,
        Ownership::Mode(DOCUMENT_MODE),
        Existing::Replace,
    )?;
    Ok(())
}

/// The open directory `relative`'s file lives in, its path, and the file's name. The target
/// directory itself is the operator's path (symlinks in it are the operator's layout); below
/// it nothing is followed. `create`: make missing directories with that mode.
fn open_parent<'a>(
    dir: &Path,
    relative: &'a str,
    create: Option<u32>,
) -> Result<Option<(OwnedFd, PathBuf, &'a OsStr)>, LocalDirError> {
    let relative = Path::new(relative);
    let name = relative
        .file_name()
        .expect("a document path ends in a name");
    let subdir = relative.parent().unwrap_or(Path::new(""));
    let root = match create {
        Some(mode) => safe_dir::create_dir_all(dir, mode)?,
        None => match safe_dir::open_if_exists(dir)? {
            Some(root) => root,
            None => return Ok(None),
        },
    };
    Ok(safe_dir::walk(root.as_fd(), dir, subdir, create)?
        .map(|parent| (parent, dir.join(subdir), name)))
}

fn not_regular(parent: &OwnedFd, name: &OsStr, path: PathBuf) -> LocalDirError {
    let found = match rustix::fs::statat(parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => safe_dir::describe(parent.as_fd(), name, &stat),
        Err(_) => "not a regular file".to_string(),
    };
    LocalDirError::NotRegular { path, found }
}
