//! Narrow interfaces between the executor and the world, each with a real implementation here and
//! an in-memory one (`crate::simulation::World`) for tests.

pub mod command;
pub mod key_files;
pub mod probe;
pub mod publish;
pub mod publish_remote;
pub mod restart;

use std::path::Path;

use crate::decision::Probed;
use crate::keys::GenerateSpec;

/// An adapter failed; the message names the file, command or target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AdapterError(pub String);

impl AdapterError {
    pub fn new(message: impl Into<String>) -> Self {
        AdapterError(message.into())
    }
}

/// The cluster's key files and keyrot's private keys.
pub trait KeyFiles {
    /// Creates a new private key at `path` (0600), refusing to replace an existing file.
    fn generate(&mut self, path: &Path, spec: GenerateSpec) -> Result<(), AdapterError>;
    /// Copies the current signing key to `to` (0600), so a rollback can sign with it again.
    fn copy_signing_key(&mut self, to: &Path) -> Result<(), AdapterError>;
    /// Makes the verification bundle hold exactly these keys, keeping blocks it already has.
    fn write_bundle(&mut self, kids: &[String]) -> Result<(), AdapterError>;
    /// Makes the signing key file (and kube-controller-manager's) hold this key.
    fn write_signing_key(&mut self, kid: &str) -> Result<(), AdapterError>;
    fn destroy_private_key(&mut self, path: &Path) -> Result<(), AdapterError>;
}

/// Restarts the apiserver (and kube-controller-manager) so they read their key files again.
pub trait Restarter {
    /// `tag` is unique per restart (a static-pod restart writes it into the manifest);
    /// `controller_manager`: restart kube-controller-manager too.
    fn restart(&mut self, tag: &str, controller_manager: bool) -> Result<(), AdapterError>;
}

/// Publishes the issuer documents to every target.
pub trait Publisher {
    fn publish(&mut self, kids: &[String]) -> Result<(), AdapterError>;
}

/// Asks the apiserver what it serves and signs with.
pub trait Prober {
    fn apiserver_kids(&mut self) -> Probed<Vec<String>>;
    fn token_kid(&mut self) -> Probed<String>;
}
