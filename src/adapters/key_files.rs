//! The real key files: the verification bundle, the signing key file(s), keyrot's private keys.
//!
//! The bundle is edited, not regenerated: blocks that stay are kept byte for byte (k3s keeps
//! private keys in its bundle), removed keys' blocks are dropped, new keys are appended as SPKI
//! `PUBLIC KEY` blocks. Every write is atomic. The bundle keeps its mode and owner; a private
//! key file always comes out a regular file 0600 owned by keyrot's user, or is not written.

use std::path::Path;

use super::{AdapterError, KeyFiles};
use crate::atomic_file::{self, Existing};
use crate::keys::private_dir::{self, PrivateKeyFile};
use crate::keys::reader::parse_file;
use crate::keys::{GenerateSpec, SigningKey, VerificationKey};
use crate::plan::Plan;
use crate::safe_dir::{self, Trust};

pub struct KeyFilesOnDisk<'a> {
    plan: &'a Plan,
}

impl<'a> KeyFilesOnDisk<'a> {
    pub fn new(plan: &'a Plan) -> Self {
        KeyFilesOnDisk { plan }
    }

    /// keyrot's private key file holding `kid`; unusable files in the directory are named only
    /// when none of the others holds it.
    fn private_key_file(&self, kid: &str) -> Result<PrivateKeyFile, AdapterError> {
        let dir = &self.plan.private_key_dir;
        let mut listing = private_dir::list(dir).map_err(|e| err(dir, e))?;
        if let Some(i) = listing
            .keys
            .iter()
            .position(|f| f.key.public().kid() == kid)
        {
            return Ok(listing.keys.swap_remove(i));
        }
        let unusable: Vec<String> = listing.unusable.iter().map(|u| u.to_string()).collect();
        let also = match unusable.is_empty() {
            true => String::new(),
            false => format!(" (set aside: {})", unusable.join("; ")),
        };
        Err(AdapterError::permanent(format!(
            "{}: keyrot holds no private key with kid {kid}{also}",
            dir.display()
        )))
    }

    /// Refuses a private key directory others could read or change; creates a missing one 0700.
    fn ensure_private_key_dir(&self) -> Result<(), AdapterError> {
        let dir = &self.plan.private_key_dir;
        safe_dir::check_trusted(dir, Trust::Private, "private keys")
            .and_then(|()| safe_dir::create_dir_all(dir, safe_dir::PRIVATE_DIR_MODE))
            .map(drop)
            .map_err(AdapterError::dir)
    }
}

impl KeyFiles for KeyFilesOnDisk<'_> {
    fn generate(&mut self, path: &Path, spec: GenerateSpec) -> Result<(), AdapterError> {
        self.ensure_private_key_dir()?;
        // Generation fails only on a broken random source or an impossible spec.
        let key = SigningKey::generate(spec).map_err(|e| AdapterError::permanent(e.to_string()))?;
        atomic_file::write_private_key(path, key.to_private_pem().as_bytes(), Existing::Refuse)
            .map_err(AdapterError::write)
    }

    fn copy_signing_key(&mut self, to: &Path) -> Result<(), AdapterError> {
        self.ensure_private_key_dir()?;
        let from = &self.plan.apiserver.signing_key_file;
        let bytes = zeroize::Zeroizing::new(crate::fs_read::read(from).map_err(|e| err(from, e))?);
        atomic_file::write_private_key(to, &bytes, Existing::Replace).map_err(AdapterError::write)
    }

    fn write_bundle(&mut self, kids: &[String]) -> Result<(), AdapterError> {
        let path = &self.plan.apiserver.verification_bundle;
        let current = crate::fs_read::read(path).map_err(|e| err(path, e))?;
        let present: Vec<String> = parse_file(path, &current)
            .keys()
            .map(|k| k.kid().to_string())
            .collect();
        let mut added = Vec::new();
        for kid in kids.iter().filter(|k| !present.contains(k)) {
            added.push(self.private_key_file(kid)?.key.public().clone());
        }
        let edited = edit_bundle(path, &current, kids, &added)?;
        atomic_file::replace_keeping_metadata(path, &edited, 0o644).map_err(AdapterError::write)
    }

    fn write_signing_key(&mut self, kid: &str) -> Result<(), AdapterError> {
        let source = self.private_key_file(kid)?.path;
        let bytes =
            zeroize::Zeroizing::new(crate::fs_read::read(&source).map_err(|e| err(&source, e))?);
        let mut targets = vec![self.plan.apiserver.signing_key_file.clone()];
        if let Some(cm) = &self.plan.controller_manager
            && !targets.contains(&cm.private_key_file)
        {
            targets.push(cm.private_key_file.clone());
        }
        for target in &targets {
            // A signing key file's directory others can write would let them swap the key.
            if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
                safe_dir::check_trusted(dir, Trust::NotWritableByOthers, "a signing key")
                    .map_err(AdapterError::dir)?;
            }
            atomic_file::write_private_key(target, &bytes, Existing::Replace)
                .map_err(AdapterError::write)?;
        }
        Ok(())
    }

    fn destroy_private_key(&mut self, path: &Path) -> Result<(), AdapterError> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(path, e)),
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(dir, e))
    }
}

/// The bundle `current` edited to hold exactly `kids`: blocks of kept keys and blocks that are not
/// keys stay byte for byte and in place; blocks of other keys go; `added` keys are appended.
pub fn edit_bundle(
    path: &Path,
    current: &[u8],
    kids: &[String],
    added: &[VerificationKey],
) -> Result<Vec<u8>, AdapterError> {
    let report = parse_file(path, current);
    let mut out: Vec<u8> = Vec::with_capacity(current.len() + 512);
    for block in &report.blocks {
        let keep = match &block.outcome {
            Ok((key, _)) => kids.iter().any(|k| k == key.kid()),
            Err(_) => true,
        };
        if keep {
            out.extend_from_slice(&current[block.span.clone()]);
            if !out.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
    for key in added {
        out.extend_from_slice(key.to_spki_pem().as_bytes());
    }
    let result: Vec<String> = parse_file(path, &out)
        .keys()
        .map(|k| k.kid().to_string())
        .collect();
    if result != kids {
        return Err(AdapterError::permanent(format!(
            "{}: cannot arrange the bundle as [{}] (it would hold [{}]); it holds keys keyrot does \
             not manage in an order it will not change",
            path.display(),
            kids.join(", "),
            result.join(", ")
        )));
    }
    Ok(out)
}

fn err(path: &Path, e: std::io::Error) -> AdapterError {
    AdapterError::io(&e, format!("{}: {e}", path.display()))
}
