//! keyrot's private key directory: the `*.key` files in it, and the ones it cannot use.
//!
//! One unreadable, damaged or symlinked file must not stop every command: it is set aside with
//! the reason, and the others are read. keyrot's own keys are regular files it wrote itself; a
//! symlink there is never followed (it could point at any file root can read).

use std::io;
use std::path::{Path, PathBuf};

use super::SigningKey;

/// A private key file keyrot can use.
pub struct PrivateKeyFile {
    pub path: PathBuf,
    pub key: SigningKey,
}

/// A `*.key` file that was set aside, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// What the directory holds, each list sorted by path.
#[derive(Default)]
pub struct Listing {
    pub keys: Vec<PrivateKeyFile>,
    pub unusable: Vec<Unusable>,
}

/// Reads every `*.key` file in `dir`; a missing directory holds none. Only listing the
/// directory itself can fail.
pub fn list(dir: &Path) -> io::Result<Listing> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(e),
    };
    let mut listing = Listing::default();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "key") {
            continue;
        }
        let unusable = |reason: String| Unusable {
            path: path.clone(),
            reason,
        };
        // `file_type` does not follow symlinks.
        match entry.file_type() {
            Ok(kind) if kind.is_file() => match SigningKey::from_pem_file(&path) {
                Ok(key) => listing.keys.push(PrivateKeyFile { path, key }),
                Err(e) => listing
                    .unusable
                    .push(unusable(without_path(&path, e.to_string()))),
            },
            Ok(kind) if kind.is_symlink() => listing.unusable.push(unusable(
                "is a symlink; keyrot's own keys are regular files it wrote, so it is not followed"
                    .to_string(),
            )),
            Ok(_) => listing
                .unusable
                .push(unusable("is not a regular file".to_string())),
            Err(e) => listing.unusable.push(unusable(e.to_string())),
        }
    }
    listing.keys.sort_by(|a, b| a.path.cmp(&b.path));
    listing.unusable.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

/// The key reader's messages start with the path, which [`Unusable`] shows already.
fn without_path(path: &Path, message: String) -> String {
    let prefix = format!("{}: ", path.display());
    match message.strip_prefix(&prefix) {
        Some(rest) => rest.to_string(),
        None => message,
    }
}
