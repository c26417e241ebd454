//! The record of an issuer migration's steps: which are done and when, kept in the state file.
//!
//! Saved with the rest of the state, atomically and only by a keyrot holding the state lock, so
//! a migration stopped at any point (a failure, a crash, a grace period) continues where it
//! stopped when run again. Releases before state format 2 kept it in `issuer-migration.json`
//! beside the state file; the state store reads that file and retires it on the first locked
//! open.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::{StateError, StateStore};

/// When each step was done; `None`: not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRecord {
    pub old_issuer: String,
    pub new_issuer: String,
    pub published_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    /// The flags name the new issuer first and kube-apiserver was restarted.
    pub flags_changed_at: Option<DateTime<Utc>>,
    pub cluster_verified_at: Option<DateTime<Utc>>,
    pub old_issuer_dropped_at: Option<DateTime<Utc>>,
    /// Every apiserver accepts the new issuer while still issuing with the old one
    /// (`acceptFirst`): the node's flags were changed, then `keyrot approve` said every other
    /// node's were too.
    #[serde(default)]
    pub accepted_at: Option<DateTime<Utc>>,
    /// The rollback started: the flags go back to their bytes from before the migration.
    #[serde(default)]
    pub rollback_started_at: Option<DateTime<Utc>>,
    /// Whether the rollback restarts kube-apiserver once the flags are back: decided when it
    /// starts, while the editors' backups still show whether the flags changed. Unset in
    /// records of earlier releases: then it restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_restarts: Option<bool>,
    /// What a person was asked to do before the migration goes on; `keyrot approve` says it is
    /// done. Cleared when the step it belongs to is recorded.
    #[serde(default)]
    pub awaiting: Option<Awaiting>,
}

/// A step that waits for `keyrot approve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Awaiting {
    /// This node accepts the new issuer; every other apiserver must too before any issues it.
    AcceptEverywhere,
    /// The manual editor printed the flag change of a step (`accept-issuer`, `add-issuer`,
    /// `drop-issuer`, `rollback`) for a person to make.
    ManualChange { step: ManualStep },
}

/// The flag change a person makes when keyrot edits no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManualStep {
    Accept,
    Add,
    Drop,
    Rollback,
}

impl MigrationRecord {
    pub fn new(old_issuer: &str, new_issuer: &str) -> Self {
        MigrationRecord {
            old_issuer: old_issuer.to_string(),
            new_issuer: new_issuer.to_string(),
            published_at: None,
            verified_at: None,
            flags_changed_at: None,
            cluster_verified_at: None,
            old_issuer_dropped_at: None,
            accepted_at: None,
            rollback_started_at: None,
            rollback_restarts: None,
            awaiting: None,
        }
    }
}

impl MigrationRecord {
    /// How far the migration got and what it waits for, in a line.
    pub fn summary(&self) -> String {
        let at = |t: &DateTime<Utc>| crate::describe::time(*t);
        let mut done = match (
            &self.rollback_started_at,
            &self.old_issuer_dropped_at,
            &self.cluster_verified_at,
            &self.flags_changed_at,
            &self.accepted_at,
            &self.verified_at,
            &self.published_at,
        ) {
            (Some(t), ..) => format!("rollback started {}", at(t)),
            (_, Some(t), ..) => format!("old issuer dropped {} (step 5)", at(t)),
            (_, _, Some(t), ..) => {
                format!("the apiserver issues as the new issuer (step 4, {})", at(t))
            }
            (_, _, _, Some(t), ..) => format!("flags changed {} (step 3)", at(t)),
            (.., Some(t), _, _) => format!("every apiserver accepts the new issuer ({})", at(t)),
            (.., Some(t), _) => format!("documents verified {} (step 2)", at(t)),
            (.., Some(t)) => format!("documents published {} (step 1)", at(t)),
            _ => "nothing done yet".to_string(),
        };
        if let Some(awaiting) = self.awaiting {
            done.push_str(&format!(
                "; waits for `keyrot approve`: {}",
                match awaiting {
                    Awaiting::AcceptEverywhere => "every apiserver to accept the new issuer",
                    Awaiting::ManualChange {
                        step: ManualStep::Accept,
                    } => {
                        "the manual accept change"
                    }
                    Awaiting::ManualChange {
                        step: ManualStep::Add,
                    } => "the manual flag change",
                    Awaiting::ManualChange {
                        step: ManualStep::Drop,
                    } => "the manual drop",
                    Awaiting::ManualChange {
                        step: ManualStep::Rollback,
                    } => {
                        "the manual rollback"
                    }
                }
            ));
        }
        done
    }
}

/// The file the record is kept in: the state file.
pub fn path(state_dir: &Path) -> PathBuf {
    StateStore::new(state_dir).state_path()
}

/// The record as it stands, read without the lock (the dry run, `status`, `keyrot approve`
/// choosing what it approves).
pub fn read(state_dir: &Path) -> Result<Option<MigrationRecord>, StateError> {
    Ok(StateStore::new(state_dir)
        .read()?
        .and_then(|state| state.issuer_migration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_a_release_before_format_2_reads_and_a_broken_one_is_named() {
        use crate::state::LEGACY_MIGRATION_FILE;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut record = MigrationRecord::new("https://old.example", "https://new.example");
        record.published_at = Some(DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        record.awaiting = Some(Awaiting::ManualChange {
            step: ManualStep::Add,
        });
        let legacy = dir.path().join(LEGACY_MIGRATION_FILE);
        std::fs::write(&legacy, serde_json::to_string_pretty(&record).unwrap()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(record));
        std::fs::write(&legacy, "{").unwrap();
        let error = read(dir.path()).unwrap_err().to_string();
        assert!(error.contains(LEGACY_MIGRATION_FILE), "{error}");
    }

    #[test]
    fn a_record_from_before_approvals_and_rollbacks_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"oldIssuer":"https://old.example","newIssuer":"https://new.example",
            "publishedAt":null,"verifiedAt":null,"flagsChangedAt":null,
            "clusterVerifiedAt":null,"oldIssuerDroppedAt":null}"#;
        std::fs::write(dir.path().join(crate::state::LEGACY_MIGRATION_FILE), old).unwrap();
        let read = read(dir.path()).unwrap().unwrap();
        assert_eq!(
            read,
            MigrationRecord::new("https://old.example", "https://new.example")
        );
    }

    #[test]
    fn what_waits_for_approval_is_written_in_words() {
        let awaiting = Awaiting::ManualChange {
            step: ManualStep::Rollback,
        };
        assert_eq!(
            serde_json::to_string(&awaiting).unwrap(),
            r#"{"manual-change":{"step":"rollback"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Awaiting::AcceptEverywhere).unwrap(),
            r#""accept-everywhere""#
        );
    }

    #[test]
    fn the_summary_names_the_last_step_done_and_what_it_waits_for() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut progress = MigrationRecord::new("https://old.example", "https://new.example");
        assert_eq!(progress.summary(), "nothing done yet");
        progress.published_at = Some(t);
        progress.verified_at = Some(t);
        progress.awaiting = Some(Awaiting::ManualChange {
            step: ManualStep::Add,
        });
        let summary = progress.summary();
        assert!(summary.starts_with("documents verified "), "{summary}");
        assert!(
            summary.ends_with("(step 2); waits for `keyrot approve`: the manual flag change"),
            "{summary}"
        );
        progress.flags_changed_at = Some(t);
        progress.cluster_verified_at = Some(t);
        progress.awaiting = None;
        assert!(
            progress
                .summary()
                .starts_with("the apiserver issues as the new issuer (step 4")
        );
    }
}
