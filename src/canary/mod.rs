//! Relying-party canaries: before promotion, a short-lived token signed by the rotation's new
//! key (keyrot's own copy, never the cluster's signing key file) is exchanged at each cloud the
//! plan names, and the cloud's answer becomes what the `relying-parties-accept` gate observes.
//!
//! The decision core says when (`decision::canary_due`); this module does the I/O and records
//! the results in `canaries.json`, which every observation reads.

mod exchange;
pub mod record;
pub mod token;

use std::path::PathBuf;

use chrono::{DateTime, Utc};

pub use exchange::{ExchangeError, exchange, refusal_text};

use crate::adapters::{FailureKind, io_failure_kind};
use crate::atomic_file::WriteError;
use crate::decision::{CanaryResult, CanaryView};
use crate::plan::Plan;
use record::LastExchange;

#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("{path}: cannot list keyrot's private keys: {error}")]
    PrivateKeyDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no private key with kid {kid} in {dir}: the canary cannot be signed")]
    NoPrivateKey { kid: String, dir: PathBuf },
    #[error("cannot record the canary results: {0}")]
    Record(#[from] WriteError),
}

impl CanaryError {
    pub fn kind(&self) -> FailureKind {
        match self {
            CanaryError::PrivateKeyDir { error, .. } => io_failure_kind(error.kind()),
            CanaryError::NoPrivateKey { .. } => FailureKind::Permanent,
            CanaryError::Record(e) => e.kind().map_or(FailureKind::Permanent, io_failure_kind),
        }
    }
}

/// Exchanges a canary signed by `kid` with every relying party that has not accepted one signed
/// by it yet, and records each answer (refusals and failures count as failed attempts).
pub fn exchange_due(plan: &Plan, kid: &str, now: DateTime<Utc>) -> Result<(), CanaryError> {
    let mut record = record::read(&plan.state_dir);
    let pending: Vec<_> = plan
        .targets
        .iter()
        .filter_map(|t| t.canary.as_ref().map(|c| (t, c)))
        .filter(|(t, _)| {
            record
                .target(&t.name)
                .and_then(|r| r.last.as_ref())
                .is_none_or(|last| last.kid != kid || last.error.is_some())
        })
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let dir = &plan.private_key_dir;
    let listing =
        crate::keys::private_dir::list(dir).map_err(|error| CanaryError::PrivateKeyDir {
            path: dir.clone(),
            error,
        })?;
    let key = listing
        .keys
        .iter()
        .find(|k| k.key.public().kid() == kid)
        .ok_or_else(|| CanaryError::NoPrivateKey {
            kid: kid.to_string(),
            dir: dir.clone(),
        })?;
    for (target, canary) in pending {
        let outcome = match token::sign(&plan.issuer.url, canary, &key.key, now) {
            Ok(token) => crate::http::block_on(exchange(&canary.relying_party, &token))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let entry = record.target_mut(&target.name);
        entry.attempts += 1;
        if outcome.is_err() {
            entry.failures += 1;
        }
        entry.last = Some(LastExchange {
            kid: kid.to_string(),
            at: now,
            error: outcome.err(),
        });
    }
    record::write(&plan.state_dir, &record)?;
    Ok(())
}

/// What the record says of each target's canary, as the decision core observes it.
pub fn observe(plan: &Plan) -> Vec<CanaryView> {
    let record = record::read(&plan.state_dir);
    plan.targets
        .iter()
        .map(|t| {
            let last = record.target(&t.name).and_then(|r| r.last.clone());
            let result = match (&t.canary, last) {
                (None, _) => CanaryResult::NotConfigured,
                (Some(_), None) => CanaryResult::NotTried,
                (
                    Some(_),
                    Some(LastExchange {
                        kid, error: None, ..
                    }),
                ) => CanaryResult::Accepted { kid },
                (
                    Some(_),
                    Some(LastExchange {
                        kid,
                        error: Some(error),
                        ..
                    }),
                ) => CanaryResult::Refused { kid, error },
            };
            CanaryView {
                target: t.name.clone(),
                result,
            }
        })
        .collect()
}
