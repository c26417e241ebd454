//! Narrow interfaces between the executor and the world, each with a real implementation here and
//! an in-memory one (`crate::simulation::World`) for tests.

pub mod command;
pub mod key_files;
pub mod key_flags;
pub mod kube_client;
pub mod migration;
pub mod probe;
pub mod publish;
pub mod publish_remote;
pub mod published;
pub mod restart;

use std::path::Path;

use crate::decision::Probed;
use crate::keys::GenerateSpec;
use crate::plan::Plan;

/// An adapter failed; the message names the file, command or target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AdapterError {
    pub kind: FailureKind,
    pub message: String,
}

/// Whether trying again can help without a person doing something first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A busy disk, a slow command, a network or server hiccup: retried with backoff.
    Transient,
    /// A wrong path, mode, owner or file content: retrying changes nothing until a person
    /// fixes it, so the daemon stops and reports it.
    Permanent,
}

impl AdapterError {
    pub fn transient(message: impl Into<String>) -> Self {
        AdapterError {
            kind: FailureKind::Transient,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        AdapterError {
            kind: FailureKind::Permanent,
            message: message.into(),
        }
    }

    /// An I/O failure, `message` naming what was done; its kind follows the error's.
    pub fn io(error: &std::io::Error, message: impl Into<String>) -> Self {
        AdapterError {
            kind: io_failure_kind(error.kind()),
            message: message.into(),
        }
    }

    /// A failed file write, its kind as [`write_failure_kind`] says.
    pub fn write(error: crate::atomic_file::WriteError) -> Self {
        AdapterError {
            kind: write_failure_kind(&error),
            message: error.to_string(),
        }
    }

    /// A directory keyrot will not use, its kind as [`dir_failure_kind`] says.
    pub fn dir(error: crate::safe_dir::DirError) -> Self {
        AdapterError {
            kind: dir_failure_kind(&error),
            message: error.to_string(),
        }
    }
}

/// A file write fails for good when the file's type or owner is wrong; I/O as
/// [`io_failure_kind`].
pub fn write_failure_kind(error: &crate::atomic_file::WriteError) -> FailureKind {
    error.kind().map_or(FailureKind::Permanent, io_failure_kind)
}

/// A directory keyrot will not use (a symlink, not a directory, lax modes) is permanent; I/O as
/// [`io_failure_kind`].
pub fn dir_failure_kind(error: &crate::safe_dir::DirError) -> FailureKind {
    match error {
        crate::safe_dir::DirError::Io { error, .. } => io_failure_kind(error.kind()),
        _ => FailureKind::Permanent,
    }
}

/// The I/O errors that go away by themselves: interrupted or timed-out calls, a full disk or
/// quota (space is freed), a busy resource, a dropped connection. The rest (missing files,
/// denied permissions, bad data, a read-only filesystem) need a person.
pub fn io_failure_kind(kind: std::io::ErrorKind) -> FailureKind {
    use std::io::ErrorKind as Io;
    match kind {
        Io::Interrupted
        | Io::TimedOut
        | Io::WouldBlock
        | Io::StorageFull
        | Io::QuotaExceeded
        | Io::ResourceBusy
        | Io::OutOfMemory
        | Io::ConnectionRefused
        | Io::ConnectionReset
        | Io::ConnectionAborted
        | Io::NotConnected
        | Io::BrokenPipe => FailureKind::Transient,
        _ => FailureKind::Permanent,
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

/// What the apiserver must serve and issue, checked after an issuer flag change.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedIssuer<'a> {
    /// The first `--service-account-issuer`: the discovery document's `issuer` and a new
    /// token's `iss`.
    pub issuer: &'a str,
    /// The discovery document's `jwks_uri`, when keyrot knows it. Without
    /// `--service-account-jwks-uri` kube-apiserver names its own address, which keyrot does not.
    pub jwks_uri: Option<&'a str>,
}

/// The issuer migration's effects: the targets, the flag file and its restart, the apiserver.
pub trait MigrationEffects {
    /// Step 1: every target serves the documents of `for_new` (the plan with the new issuer)
    /// for `kids`; one line per target to `say`.
    fn publish(
        &mut self,
        for_new: &Plan,
        kids: &[String],
        say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError>;
    /// The dry run's step 1: the documents and what each target would get, as text.
    fn preview_publish(&mut self, for_new: &Plan, kids: &[String]) -> Result<String, AdapterError>;
    /// Step 2: every target, and the new issuer URL read anonymously, serve them.
    fn check_documents(
        &mut self,
        for_new: &Plan,
        kids: &[String],
        public_ca_file: Option<&Path>,
    ) -> Result<(), AdapterError>;
    /// An editor makes `step` in the plan's flag file (the old bytes under `backups`), then
    /// kube-apiserver restarts; `number` names the step in what it says.
    fn change_flags(
        &mut self,
        step: &crate::issuer::MigrationStep,
        backups: &Path,
        number: u8,
        say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError>;
    /// Restarts kube-apiserver the plan's way, naming the cause `tag`.
    fn restart(&mut self, tag: &str) -> Result<(), AdapterError>;
    /// The rollback: `path` gets back its bytes from before the first of `steps` that edited
    /// it (the editors' backups under `backups`); nothing when no backup is left. Says the
    /// change as a diff.
    fn restore_flags(
        &mut self,
        path: &Path,
        steps: &[crate::issuer::MigrationStep],
        backups: &Path,
        say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError>;
    /// Asks until `timings.gateTimeout` (the apiserver may be restarting) for the discovery
    /// document and a new token naming what is expected.
    fn check_cluster(&mut self, expected: ExpectedIssuer) -> Result<(), AdapterError>;
}

/// The switch between key files and keyrot's signer: the plan's flag file (and kubeadm's
/// patches) give kube-apiserver `to`, and it restarts the plan's way.
pub trait KeyFlagEffects {
    fn switch_key_flags(
        &mut self,
        to: crate::issuer::key_flags::KeyMode,
        say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError>;
}

/// Asks the apiserver what it serves and signs with.
pub trait Prober {
    fn apiserver_kids(&mut self) -> Probed<Vec<String>>;
    fn token_kid(&mut self) -> Probed<String>;
    /// With an external signer: the data_timestamp of the key set the apiserver holds, in
    /// seconds since the epoch (its `apiserver_externaljwt_fetch_keys_data_timestamp`).
    fn apiserver_key_set_at(&mut self) -> Probed<f64>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind as Io;

    #[test]
    fn a_full_disk_is_retried_and_a_denied_permission_waits_for_a_person() {
        assert_eq!(io_failure_kind(Io::StorageFull), FailureKind::Transient);
        assert_eq!(io_failure_kind(Io::TimedOut), FailureKind::Transient);
        assert_eq!(
            io_failure_kind(Io::PermissionDenied),
            FailureKind::Permanent
        );
        assert_eq!(io_failure_kind(Io::NotFound), FailureKind::Permanent);
        assert_eq!(
            io_failure_kind(Io::ReadOnlyFilesystem),
            FailureKind::Permanent
        );
    }
}
