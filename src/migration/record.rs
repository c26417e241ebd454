//! The record of an issuer migration's steps: which are done and when, in the state directory.
//!
//! Written atomically, and only by a keyrot holding the state lock, so a migration stopped at
//! any point (a failure, a crash, a grace period) continues where it stopped when run again.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{self, Existing};

/// The file under the state directory.
pub const FILE_NAME: &str = "issuer-migration.json";

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

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The record, or `None` when no migration was started.
pub fn read(state_dir: &Path) -> Result<Option<MigrationRecord>, String> {
    let path = path(state_dir);
    match crate::fs_read::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Removes the record (a rollback finished); a missing one is fine.
pub fn remove(state_dir: &Path) -> Result<(), String> {
    let path = path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Replaces the record atomically (0600). The caller holds the state lock.
pub fn write(state_dir: &Path, progress: &MigrationRecord) -> Result<(), String> {
    let mut json = serde_json::to_string_pretty(progress).map_err(|e| e.to_string())?;
    json.push('\n');
    atomic_file::write(&path(state_dir), json.as_bytes(), 0o600, Existing::Replace)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_record_reads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut progress = MigrationRecord::new("https://old.example", "https://new.example");
        progress.published_at = Some(DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        progress.awaiting = Some(Awaiting::ManualChange {
            step: ManualStep::Add,
        });
        write(dir.path(), &progress).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(progress));
        remove(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        remove(dir.path()).unwrap();
        std::fs::write(path(dir.path()), "{").unwrap();
        assert!(read(dir.path()).unwrap_err().contains(FILE_NAME));
    }

    #[test]
    fn a_record_from_before_approvals_and_rollbacks_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"oldIssuer":"https://old.example","newIssuer":"https://new.example",
            "publishedAt":null,"verifiedAt":null,"flagsChangedAt":null,
            "clusterVerifiedAt":null,"oldIssuerDroppedAt":null}"#;
        std::fs::write(path(dir.path()), old).unwrap();
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
