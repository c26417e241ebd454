//! What a publication is made of and what it reports: the two documents, and each object's
//! outcome. Shared by local publishing (`publish`) and remote publishing (`publish_remote`), so
//! neither imports the other's types.

use crate::stores::conditional::Written;

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

/// Why publishing to a target stopped, and what it had written (or found unchanged) by then:
/// every write is reported, also when a later one fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PublishError {
    pub written: Vec<ObjectOutcome>,
    pub message: String,
}

impl PublishError {
    pub(crate) fn after(written: Vec<ObjectOutcome>, message: String) -> Self {
        PublishError { written, message }
    }

    pub(crate) fn nothing_written(message: String) -> Self {
        Self::after(Vec::new(), message)
    }
}
