//! The signer's unix socket: bound so that it is never reachable with a laxer mode than the plan
//! says, and every peer checked with `SO_PEERCRED` before a byte is read.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::plan::SignerGroup;

/// Why the socket could not be set up; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path} exists and is not a socket; keyrot will not remove it")]
    NotASocket { path: PathBuf },
    #[error(transparent)]
    Dir(#[from] crate::safe_dir::DirError),
}

/// Creates the socket: 0600, or 0660 with the plan's group. A stale socket file is replaced;
/// only the state-lock holder calls this, so no other keyrot owns it.
pub fn bind(path: &Path, group: Option<&SignerGroup>) -> Result<UnixListener, SocketError> {
    let named = |error: io::Error| SocketError::Io {
        path: path.to_path_buf(),
        error,
    };
    let parent = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !parent.exists() {
        // Others must be able to reach the socket through it; the socket's mode keeps them out.
        crate::safe_dir::create_dir_all(parent, 0o755)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(named)?,
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(e)),
    }
    // Bound inside a fresh 0700 directory, given its mode and group, then moved into place: at
    // no moment can anyone else connect to it.
    let private = tempfile::Builder::new()
        .prefix(".keyrot-signer.")
        .tempdir_in(parent)
        .map_err(named)?;
    let staged = private.path().join("signer.sock");
    let listener = UnixListener::bind(&staged).map_err(named)?;
    let mode = match group {
        Some(group) => {
            let gid = rustix::fs::Gid::from_raw(group.gid);
            rustix::fs::chown(&staged, None, Some(gid)).map_err(|e| named(e.into()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode)).map_err(named)?;
    std::fs::rename(&staged, path).map_err(named)?;
    Ok(listener)
}

/// Who may connect: root, keyrot's own uid, and members of the plan's group by their primary
/// gid (`SO_PEERCRED` carries no supplementary groups).
#[derive(Debug, Clone, Copy)]
pub struct Peers {
    own_uid: u32,
    gid: Option<u32>,
}

impl Peers {
    pub fn new(group: Option<&SignerGroup>) -> Peers {
        Peers {
            own_uid: rustix::process::geteuid().as_raw(),
            gid: group.map(|g| g.gid),
        }
    }

    /// `Err` says who was refused, for the log.
    pub fn check(&self, stream: &tokio::net::UnixStream) -> Result<(), String> {
        let cred = stream
            .peer_cred()
            .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
        if cred.uid() == 0 || cred.uid() == self.own_uid || Some(cred.gid()) == self.gid {
            return Ok(());
        }
        Err(format!(
            "uid {} gid {} (pid {}) refused: only root, uid {}{} may connect",
            cred.uid(),
            cred.gid(),
            cred.pid().map_or("?".into(), |p| p.to_string()),
            self.own_uid,
            self.gid
                .map(|g| format!(" and gid {g}"))
                .unwrap_or_default()
        ))
    }
}
