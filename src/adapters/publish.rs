//! The real publisher: renders the JWKS and discovery document for the requested kids and writes
//! them to every target: local directories here, object stores and GCP providers through
//! `publish_remote`.

use std::path::Path;

use super::publish_remote;
use super::{AdapterError, Publisher};
use crate::atomic_file;
use crate::documents::{DISCOVERY_PATH, DiscoveryDocument, JWKS_PATH, render_jwks};
use crate::keys::reader::read_file;
use crate::keys::{SigningKey, VerificationKey};
use crate::plan::{Plan, Target, TargetKind};
use crate::stores::conditional::Written;

pub struct TargetsPublisher<'a> {
    plan: &'a Plan,
}

impl<'a> TargetsPublisher<'a> {
    pub fn new(plan: &'a Plan) -> Self {
        TargetsPublisher { plan }
    }
}

impl Publisher for TargetsPublisher<'_> {
    /// Every target is tried, so one broken target does not hold the others back; any failure
    /// fails the publication, and the decision core retries it.
    fn publish(&mut self, kids: &[String]) -> Result<(), AdapterError> {
        let documents = render_documents(self.plan, kids)?;
        let failures: Vec<String> = self
            .plan
            .targets
            .iter()
            .filter_map(|target| {
                publish_target(target, &documents)
                    .err()
                    .map(|e| format!("target {}: {e}", target.name))
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(AdapterError::new(failures.join("; ")))
        }
    }
}

/// The two bodies, byte for byte as kube-apiserver serves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documents {
    pub discovery: String,
    pub jwks: String,
}

/// What one object (or provider) got: where, and whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOutcome {
    pub url: String,
    pub written: Written,
}

/// The documents listing `kids`, in that order, from the key files and keyrot's own keys.
pub fn render_documents(plan: &Plan, kids: &[String]) -> Result<Documents, AdapterError> {
    let known = known_public_keys(plan)?;
    let keys = kids
        .iter()
        .map(|kid| {
            known.iter().find(|k| k.kid() == kid).cloned().ok_or_else(|| {
                AdapterError::new(format!("no public key known for kid {kid}: not in the key files nor in keyrot's keys"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let issuer = &plan.issuer;
    let discovery = DiscoveryDocument::new(&issuer.url, &issuer.jwks_uri, &keys)
        .map_err(|e| AdapterError::new(e.to_string()))?
        .render();
    Ok(Documents {
        discovery,
        jwks: render_jwks(&keys),
    })
}

/// Writes both documents to one target; `dry_run` only says what would change.
pub fn publish_target(
    target: &Target,
    documents: &Documents,
) -> Result<Vec<ObjectOutcome>, String> {
    match &target.kind {
        TargetKind::LocalDirectory { path } => write_local(path, documents),
        _ => publish_remote::publish(target, documents, false),
    }
}

/// What `publish_target` would change, without writing.
pub fn preview_target(
    target: &Target,
    documents: &Documents,
) -> Result<Vec<ObjectOutcome>, String> {
    match &target.kind {
        TargetKind::LocalDirectory { path } => Ok(local_changes(path, documents)),
        _ => publish_remote::publish(target, documents, true),
    }
}

/// Writes both documents under `dir`, JWKS first: a verifier that follows the new discovery
/// document always finds a JWKS at least as new.
fn write_local(dir: &Path, documents: &Documents) -> Result<Vec<ObjectOutcome>, String> {
    let changes = local_changes(dir, documents);
    for ((relative, body), change) in local_files(documents).into_iter().zip(&changes) {
        if change.written == Written::Unchanged {
            continue;
        }
        let path = dir.join(relative);
        let parent = path.parent().expect("documents live in a subdirectory");
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        atomic_file::replace_keeping_metadata(&path, body.as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
    }
    Ok(changes)
}

fn local_files(documents: &Documents) -> [(&'static str, &str); 2] {
    [
        (JWKS_PATH, &documents.jwks),
        (DISCOVERY_PATH, &documents.discovery),
    ]
}

fn local_changes(dir: &Path, documents: &Documents) -> Vec<ObjectOutcome> {
    local_files(documents)
        .into_iter()
        .map(|(relative, body)| {
            let path = dir.join(relative);
            let written = match crate::fs_read::read(&path) {
                Ok(existing) if existing == body.as_bytes() => Written::Unchanged,
                Ok(_) => Written::Replaced,
                Err(_) => Written::Created,
            };
            ObjectOutcome {
                url: path.display().to_string(),
                written,
            }
        })
        .collect()
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
