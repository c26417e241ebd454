//! `<stateDir>/canaries.json`: what each relying party said to the last canary, and how many
//! exchanges were tried and failed per target. What observations and the metrics read; never a
//! credential (the cloud's answer is not kept), only the cloud's error text.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{self, Existing, WriteError};

const FILE: &str = "canaries.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub targets: Vec<TargetRecord>,
}

/// One target's canary history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub target: String,
    /// Exchanges tried, and of those refused or unanswered, since the record began.
    pub attempts: u64,
    pub failures: u64,
    pub last: Option<LastExchange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExchange {
    /// The kid the token was signed by.
    pub kid: String,
    pub at: DateTime<Utc>,
    /// `None`: accepted; otherwise why not, as the relying party said it.
    pub error: Option<String>,
}

impl Record {
    pub fn target_mut(&mut self, target: &str) -> &mut TargetRecord {
        match self.targets.iter().position(|t| t.target == target) {
            Some(i) => &mut self.targets[i],
            None => {
                self.targets.push(TargetRecord {
                    target: target.to_string(),
                    ..TargetRecord::default()
                });
                self.targets.last_mut().expect("just pushed")
            }
        }
    }

    pub fn target(&self, target: &str) -> Option<&TargetRecord> {
        self.targets.iter().find(|t| t.target == target)
    }
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The record; empty when there is none. It only remembers results that the next exchange
/// finds out again, so a damaged one is forgotten (and replaced by that exchange) rather than
/// stopping keyrot.
pub fn read(state_dir: &Path) -> Record {
    crate::fs_read::read(path(state_dir))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

pub fn write(state_dir: &Path, record: &Record) -> Result<(), WriteError> {
    let mut text = serde_json::to_string_pretty(record).expect("the record serialises");
    text.push('\n');
    atomic_file::write(&path(state_dir), text.as_bytes(), 0o600, Existing::Replace)
}
