//! The real publisher: renders the JWKS and discovery document for the requested kids and writes
//! them to every target (local directories here, object stores and GCP providers through
//! `publish_remote`), reporting every object written.

use std::path::Path;

use super::publish_remote;
use super::published::worst;
pub use super::published::{Documents, ObjectOutcome, PublishError, TargetError};
use super::{AdapterError, FailureKind, Publisher};
use crate::documents::{DISCOVERY_PATH, DiscoveryDocument, JWKS_PATH, render_jwks};
use crate::keys::VerificationKey;
use crate::keys::private_dir;
use crate::keys::reader::read_file;
use crate::plan::{Plan, Target, TargetKind};
use crate::stores::conditional::{WriteError, Written};
use crate::targets::local_dir::{self, LocalDirError};

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
    /// fails the publication, permanent when one target's failure is (see [`TargetError::kind`]).
    fn publish(&mut self, kids: &[String]) -> Result<(), AdapterError> {
        let documents = render_documents(self.plan, kids)?;
        publish_documents(self.plan, &documents)
    }
}

/// Writes `documents` to every target of `plan`, trying each so one broken target does not hold
/// the others back.
pub fn publish_documents(plan: &Plan, documents: &Documents) -> Result<(), AdapterError> {
    let failures: Vec<(FailureKind, String)> = plan
        .targets
        .iter()
        .filter_map(|target| {
            let (written, failure) = match publish_target(target, documents) {
                Ok(written) => (written, None),
                Err(e) => (e.written, Some(e.error)),
            };
            // Every write is reported: in the log, and with the failure that followed it.
            for object in &written {
                tracing::info!("target {}: {}: {}", target.name, object.url, object.written);
            }
            let report = written
                .iter()
                .map(|o| format!("{} {}", o.url, o.written))
                .collect::<Vec<_>>();
            failure.map(|e| {
                let message = match report.is_empty() {
                    true => format!("target {}: {e}", target.name),
                    false => format!(
                        "target {}: {e} (before that: {})",
                        target.name,
                        report.join(", ")
                    ),
                };
                (e.kind(), message)
            })
        })
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    let messages: Vec<&str> = failures.iter().map(|(_, m)| m.as_str()).collect();
    Err(AdapterError {
        kind: worst(failures.iter().map(|(kind, _)| *kind)),
        message: messages.join("; "),
    })
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
    documents_for_keys(plan, &keys)
}

/// The plan issuer's documents listing `keys`, in that order.
pub fn documents_for_keys(
    plan: &Plan,
    keys: &[VerificationKey],
) -> Result<Documents, AdapterError> {
    let issuer = &plan.issuer;
    let discovery = DiscoveryDocument::new(&issuer.url, &issuer.jwks_uri, keys)
        .map_err(|e| AdapterError::permanent(e.to_string()))?
        .render();
    Ok(Documents {
        discovery,
        jwks: render_jwks(keys),
    })
}

/// Writes both documents to one target, JWKS first, then reads the pair back.
pub fn publish_target(
    target: &Target,
    documents: &Documents,
) -> Result<Vec<ObjectOutcome>, PublishError> {
    match &target.kind {
        TargetKind::LocalDirectory { path } => write_local(path, documents),
        _ => publish_remote::publish(target, documents, false),
    }
}

/// What `publish_target` would change, without writing.
pub fn preview_target(
    target: &Target,
    documents: &Documents,
) -> Result<Vec<ObjectOutcome>, PublishError> {
    match &target.kind {
        TargetKind::LocalDirectory { path } => {
            local_changes(path, documents).map_err(PublishError::nothing_written)
        }
        _ => publish_remote::publish(target, documents, true),
    }
}

/// Writes both documents under `dir`, JWKS first (see `stores::document_keys`), then reads both
/// back: a file that no longer holds what keyrot wrote means a second writer published there.
fn write_local(dir: &Path, documents: &Documents) -> Result<Vec<ObjectOutcome>, PublishError> {
    let changes = local_changes(dir, documents).map_err(PublishError::nothing_written)?;
    let mut written = Vec::new();
    for ((relative, body), change) in local_files(documents).into_iter().zip(changes) {
        if change.written != Written::Unchanged
            && let Err(e) = local_dir::write_document(dir, relative, body.as_bytes())
        {
            return Err(PublishError::after(written, e));
        }
        written.push(change);
    }
    let mut overwritten = Vec::new();
    for (relative, body) in local_files(documents) {
        match local_dir::read_document(dir, relative) {
            Ok(Some(found)) if found == body.as_bytes() => {}
            Ok(_) => overwritten.push(TargetError::from(WriteError::Overwritten {
                url: dir.join(relative).display().to_string(),
            })),
            Err(e) => overwritten.push(e.into()),
        }
    }
    match overwritten.is_empty() {
        true => Ok(written),
        false => Err(PublishError::after(
            written,
            TargetError::ReadBack(overwritten),
        )),
    }
}

fn local_files(documents: &Documents) -> [(&'static str, &str); 2] {
    [
        (JWKS_PATH, &documents.jwks),
        (DISCOVERY_PATH, &documents.discovery),
    ]
}

/// What writing the documents under `dir` would change. A symlink or other non-regular file in
/// a document's place is an error here already, so the dry run shows it too.
fn local_changes(dir: &Path, documents: &Documents) -> Result<Vec<ObjectOutcome>, LocalDirError> {
    local_files(documents)
        .into_iter()
        .map(|(relative, body)| {
            let written = match local_dir::read_document(dir, relative)? {
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
