//! The kinds of error the daemon counts for `keyrot_errors_total`, and the counters.

use std::collections::BTreeMap;

/// What went wrong, coarsely: one label value each, so alerts can tell them apart. The details
/// are in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The cluster's files or the apiserver could not be read.
    Observe,
    /// keyrot's state file could not be written.
    State,
    /// An effect (file write, restart, publication) failed.
    Effect,
    /// A gate stayed closed past `gateTimeout`: an attempt failed.
    GateTimeout,
    /// A reloaded plan was invalid and the previous one was kept.
    PlanReload,
    /// A step of an issuer migration the daemon carried out failed.
    IssuerMigration,
    /// Anything else the executor refused to go on with.
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Observe,
        ErrorKind::State,
        ErrorKind::Effect,
        ErrorKind::GateTimeout,
        ErrorKind::PlanReload,
        ErrorKind::IssuerMigration,
        ErrorKind::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Observe => "observe",
            ErrorKind::State => "state",
            ErrorKind::Effect => "effect",
            ErrorKind::GateTimeout => "gate_timeout",
            ErrorKind::PlanReload => "plan_reload",
            ErrorKind::IssuerMigration => "issuer_migration",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Errors counted since the daemon started, every kind present from the start (at zero), so a
/// `rate()` over them never starts from a missing series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCounts(BTreeMap<ErrorKind, u64>);

impl Default for ErrorCounts {
    fn default() -> Self {
        ErrorCounts(ErrorKind::ALL.iter().map(|k| (*k, 0)).collect())
    }
}

impl ErrorCounts {
    pub fn count(&mut self, kind: ErrorKind) {
        *self.0.entry(kind).or_default() += 1;
    }

    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0.get(&kind).copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        self.0.iter().map(|(k, n)| (*k, *n))
    }
}
