//! The real publisher: renders the JWKS and discovery document for the requested kids and writes
//! them to every target.

use std::path::Path;

use super::{AdapterError, Publisher};
use crate::atomic_file;
use crate::documents::{DISCOVERY_PATH, DiscoveryDocument, JWKS_PATH, render_jwks};
use crate::keys::reader::read_file;
use crate::keys::{SigningKey, VerificationKey};
use crate::plan::{Plan, TargetKind};

pub struct TargetsPublisher<'a> {
    plan: &'a Plan,
}

impl<'a> TargetsPublisher<'a> {
    pub fn new(plan: &'a Plan) -> Self {
        TargetsPublisher { plan }
    }
}

impl Publisher for TargetsPublisher<'_> {
    fn publish(&mut self, kids: &[String]) -> Result<(), AdapterError> {
        let known = known_public_keys(self.plan)?;
        let keys = kids
            .iter()
            .map(|kid| {
                known.iter().find(|k| k.kid() == kid).cloned().ok_or_else(|| {
                    AdapterError::new(format!("no public key known for kid {kid}: not in the key files nor in keyrot's keys"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let issuer = &self.plan.issuer;
        let discovery = DiscoveryDocument::new(&issuer.url, &issuer.jwks_uri, &keys)
            .map_err(|e| AdapterError::new(e.to_string()))?
            .render();
        let jwks = render_jwks(&keys);
        for target in &self.plan.targets {
            match &target.kind {
                TargetKind::LocalDirectory { path } => write_local(path, &discovery, &jwks)
                    .map_err(|e| AdapterError::new(format!("target {}: {e}", target.name)))?,
            }
        }
        Ok(())
    }
}

/// Writes both documents under `dir`, JWKS first: a verifier that follows the new discovery
/// document always finds a JWKS at least as new.
fn write_local(dir: &Path, discovery: &str, jwks: &str) -> Result<(), String> {
    for (relative, body) in [(JWKS_PATH, jwks), (DISCOVERY_PATH, discovery)] {
        let path = dir.join(relative);
        let parent = path.parent().expect("documents live in a subdirectory");
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        atomic_file::replace_keeping_metadata(&path, body.as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Every public key keyrot can name: the key files' and those of its own private keys.
fn known_public_keys(plan: &Plan) -> Result<Vec<VerificationKey>, AdapterError> {
    let files = &plan.apiserver;
    let mut keys = Vec::new();
    for path in std::iter::once(&files.verification_bundle).chain(&files.extra_verification_files) {
        if path.exists() {
            let report = read_file(path).map_err(|e| AdapterError::new(e.to_string()))?;
            keys.extend(report.keys().cloned());
        }
    }
    if let Ok(entries) = std::fs::read_dir(&plan.private_key_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "key") {
                let key = SigningKey::from_pem_file(&path)
                    .map_err(|e| AdapterError::new(e.to_string()))?;
                keys.push(key.public().clone());
            }
        }
    }
    Ok(keys)
}
