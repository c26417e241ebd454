//! The local-directory target: the two documents as files under a directory a web server serves.

use std::path::Path;

use crate::documents::JWKS_PATH;

/// The kids of the JWKS file under `dir`; none when nothing was published there yet.
pub fn read_served_kids(dir: &Path) -> Result<Vec<String>, String> {
    let path = dir.join(JWKS_PATH);
    match crate::fs_read::read(&path) {
        Ok(body) => super::jwks_kids(&body).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
