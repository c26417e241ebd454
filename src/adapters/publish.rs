//! The real publisher: renders the JWKS and discovery document for the requested kids and writes
//! them to every target: local directories here, object stores and GCP providers through
//! `publish_remote`.

use std::path::Path;

use super::publish_remote;
use super::{AdapterError, Publisher};
use crate::documents::{DISCOVERY_PATH, DiscoveryDocument, JWKS_PATH, render_jwks};
use crate::keys::VerificationKey;
use crate::keys::private_dir;
use crate::keys::reader::read_file;
use crate::plan::{Plan, Target, TargetKind};
use crate::stores::conditional::Written;
use crate::targets::local_dir;

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
            // Target answers are not typed yet: retried with backoff, as a server hiccup is.
            Err(AdapterError::transient(failures.join("; ")))
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
                AdapterError::permanent(format!("no public key known for kid {kid}: not in the key files nor in keyrot's keys"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let issuer = &plan.issuer;
    let discovery = DiscoveryDocument::new(&issuer.url, &issuer.jwks_uri, &keys)
        .map_err(|e| AdapterError::permanent(e.to_string()))?
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
        TargetKind::LocalDirectory { path } => local_changes(path, documents),
        _ => publish_remote::publish(target, documents, true),
    }
}

/// Writes both documents under `dir`, JWKS first: a verifier that follows the new discovery
/// document always finds a JWKS at least as new.
fn write_local(dir: &Path, documents: &Documents) -> Result<Vec<ObjectOutcome>, String> {
    let changes = local_changes(dir, documents)?;
    for ((relative, body), change) in local_files(documents).into_iter().zip(&changes) {
        if change.written != Written::Unchanged {
            local_dir::write_document(dir, relative, body.as_bytes()).map_err(|e| e.to_string())?;
        }
    }
    Ok(changes)
}

fn local_files(documents: &Documents) -> [(&'static str, &str); 2] {
    [
        (JWKS_PATH, &documents.jwks),
        (DISCOVERY_PATH, &documents.discovery),
    ]
}

/// What writing the documents under `dir` would change. A symlink or other non-regular file in
/// a document's place is an error here already, so the dry run shows it too.
fn local_changes(dir: &Path, documents: &Documents) -> Result<Vec<ObjectOutcome>, String> {
    local_files(documents)
        .into_iter()
        .map(|(relative, body)| {
            let written =
                match local_dir::read_document(dir, relative).map_err(|e| e.to_string())? {
                    Some(existing) if existing == body.as_bytes() => Written::Unchanged,
                    Some(_) => Written::Replaced,
                    None => Written::Created,
                };
            Ok(ObjectOutcome {
                url: dir.join(relative).display().to_string(),
                written,
            })
        })
        .collect()
}

/// Every public key keyrot can name: the key files' and those of its own private keys.
fn known_public_keys(plan: &Plan) -> Result<Vec<VerificationKey>, AdapterError> {
    let files = &plan.apiserver;
    let mut keys = Vec::new();
    for path in std::iter::once(&files.verification_bundle).chain(&files.extra_verification_files) {
        if path.exists() {
            let report = read_file(path).map_err(|e| AdapterError::permanent(e.to_string()))?;
            keys.extend(report.keys().cloned());
        }
    }
    // Unusable files in keyrot's directory are skipped here: a kid they held is reported as
    // unknown by the caller, and `keyrot status` names the files.
    if let Ok(listing) = private_dir::list(&plan.private_key_dir) {
        keys.extend(listing.keys.iter().map(|file| file.key.public().clone()));
    }
    Ok(keys)
}
