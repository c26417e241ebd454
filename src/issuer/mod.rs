//! Issuer migration groundwork: the issuer flags, the steps that change them, and the editors.
//!
//! A migration moves the cluster from its current `--service-account-issuer` to a public one in
//! two flag changes (docs/issuer-migration.md): add the new issuer first, keeping the old one
//! accepted, then, after a grace period, drop the old one. With several apiservers a third change
//! comes before them: every apiserver accepts the new issuer while the old one still issues
//! tokens, so no apiserver rejects a token another one issued. `flags` computes the new values;
//! an editor per layout writes them into the file kube-apiserver's flags live in, changing only
//! the lines of those three flags:
//!
//! - `kubeadm`: the static pod manifest's command list;
//! - `k3s`: the `kube-apiserver-arg` list of a k3s or RKE2 `config.yaml`;
//! - `systemd`: the `ExecStart=` continuation lines of a hand-built kube-apiserver unit;
//! - `manual`: no file; the exact change is printed for a person to make.
//!
//! Every edit is computed first (`compute_edit`, which writes nothing and gives the diff a dry
//! run shows), then applied (`apply`): the original bytes go to a backup outside the edited
//! file's directory, then the file is replaced atomically. `rollback` puts the backup back.
//! Restarting kube-apiserver (and `systemctl daemon-reload` for a unit) is the caller's job.

mod arglist;
pub mod diff;
pub mod flags;
pub mod k3s;
pub mod key_flags;
pub mod kubeadm;
pub mod manual;
pub mod systemd;
mod write;
mod yaml_list;

use std::path::{Path, PathBuf};

pub use flags::{FlagError, next_flags};
pub use k3s::K3sDefaults;
pub use manual::ManualChange;
pub use write::{
    Applied, RolledBack, apply, backup_path, original_backup, restore_diff, restore_original,
    rollback,
};

/// The values of kube-apiserver's three issuer flags, as the apiserver sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuerFlags {
    /// `--service-account-issuer`, in flag order: the first issues tokens, all are accepted.
    pub issuers: Vec<String>,
    /// `--service-account-jwks-uri`; `None` when not set.
    pub jwks_uri: Option<String>,
    /// `--api-audiences`; `None` when not set (kube-apiserver then derives it from the issuers).
    pub api_audiences: Option<Vec<String>>,
}

impl IssuerFlags {
    /// The flags as command-line arguments, one per element, issuers in order.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self.issuers.iter().map(|i| Flag::Issuer.arg(i)).collect();
        if let Some(jwks) = &self.jwks_uri {
            args.push(Flag::JwksUri.arg(jwks));
        }
        if let Some(audiences) = &self.api_audiences {
            args.push(Flag::ApiAudiences.arg(&audiences.join(",")));
        }
        args
    }
}

/// One flag change of an issuer migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStep {
    /// Accept tokens from `new_issuer` (and for it as an audience) while the issuer first today
    /// keeps issuing them: on every apiserver of a control plane before any of them takes the
    /// add step, so none rejects a token another one issued with the new issuer.
    AcceptNewIssuer { new_issuer: String },
    /// Issue tokens with `new_issuer` while every issuer accepted today stays accepted; publish
    /// `new_jwks_uri` in the discovery document.
    AddNewIssuerFirst {
        new_issuer: String,
        new_jwks_uri: String,
    },
    /// Stop accepting tokens from `old_issuer`, once the grace period after the add step is over.
    DropOldIssuer { old_issuer: String },
}

impl MigrationStep {
    /// A short name for backups and diff headers.
    pub fn tag(&self) -> &'static str {
        match self {
            MigrationStep::AcceptNewIssuer { .. } => "accept-issuer",
            MigrationStep::AddNewIssuerFirst { .. } => "add-issuer",
            MigrationStep::DropOldIssuer { .. } => "drop-issuer",
        }
    }
}

/// The three flags the editors touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Issuer,
    JwksUri,
    ApiAudiences,
}

impl Flag {
    pub const ALL: [Flag; 3] = [Flag::Issuer, Flag::JwksUri, Flag::ApiAudiences];

    /// The flag's name without the leading dashes.
    pub fn name(self) -> &'static str {
        match self {
            Flag::Issuer => "service-account-issuer",
            Flag::JwksUri => "service-account-jwks-uri",
            Flag::ApiAudiences => "api-audiences",
        }
    }

    /// `--name=value`.
    pub fn arg(self, value: &str) -> String {
        format!("--{}={value}", self.name())
    }
}

/// The file kube-apiserver's flags live in, and so the editor to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagFile {
    /// kubeadm's static pod manifest, `/etc/kubernetes/manifests/kube-apiserver.yaml`.
    KubeadmManifest,
    /// A k3s or RKE2 `config.yaml` (`/etc/rancher/k3s/config.yaml`, `/etc/rancher/rke2/config.yaml`).
    K3sConfig(K3sDefaults),
    /// A systemd unit running kube-apiserver with one flag per `ExecStart=` continuation line.
    SystemdUnit,
}

impl FlagFile {
    /// The flags the file gives kube-apiserver.
    pub fn read_flags(&self, text: &str) -> Result<IssuerFlags, TextError> {
        match self {
            FlagFile::KubeadmManifest => kubeadm::read_flags(text),
            FlagFile::K3sConfig(defaults) => k3s::read_flags(text, defaults),
            FlagFile::SystemdUnit => systemd::read_flags(text),
        }
    }

    /// The values the file gives kube-apiserver's flag `--name`, in order; empty when unset.
    pub fn values_of(&self, text: &str, name: &str) -> Result<Vec<String>, TextError> {
        let arguments = match self {
            FlagFile::KubeadmManifest => kubeadm::arguments(text)?,
            FlagFile::K3sConfig(_) => k3s::arguments(text)?,
            FlagFile::SystemdUnit => systemd::arguments(text)?,
        };
        Ok(arguments
            .iter()
            .filter_map(|arg| arg.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
            .collect())
    }

    /// The file's text after `step`, computed without writing anything.
    pub fn edit_text(&self, text: &str, step: &MigrationStep) -> Result<TextEdit, TextError> {
        match self {
            FlagFile::KubeadmManifest => kubeadm::edit_text(text, step),
            FlagFile::K3sConfig(defaults) => k3s::edit_text(text, defaults, step),
            FlagFile::SystemdUnit => systemd::edit_text(text, step),
        }
    }
}

/// A file's text before and after a step, and the flags each gives kube-apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextEdit {
    pub flags_before: IssuerFlags,
    pub flags_after: IssuerFlags,
    pub text: String,
}

/// Why an editor refuses a file's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{0}")]
    Flags(#[from] FlagError),
    /// The file is not in a form the editor can change safely.
    #[error("{0}")]
    Unsupported(String),
}

/// A computed edit of one file: what a dry run shows and what `apply` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagEdit {
    pub path: PathBuf,
    pub step: MigrationStep,
    pub flags_before: IssuerFlags,
    pub flags_after: IssuerFlags,
    /// The file's text when the edit was computed; `apply` refuses if it changed since.
    pub before: String,
    pub after: String,
}

impl FlagEdit {
    /// True when the file already holds what the step writes.
    pub fn changes_nothing(&self) -> bool {
        self.before == self.after
    }

    /// The change as a unified diff with three lines of context; empty when nothing changes.
    pub fn diff(&self) -> String {
        let path = self.path.display();
        diff::unified(
            &format!("{path} (now)"),
            &format!("{path} (after {})", self.step.tag()),
            &self.before,
            &self.after,
            3,
        )
    }
}

/// Why an edit could not be computed, applied or rolled back.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path}: {error}; nothing was changed")]
    Refused { path: PathBuf, error: TextError },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path}: the file changed since the edit was computed; nothing was changed, compute the \
         edit again"
    )]
    ChangedSinceComputed { path: PathBuf },
    #[error(
        "backup directory {backup_dir} is inside {target_dir}, the directory of the file it \
         saves; keep backups elsewhere (the kubelet runs every file in the static-pod \
         manifests directory); nothing was changed"
    )]
    BackupBesideTarget {
        backup_dir: PathBuf,
        target_dir: PathBuf,
    },
    #[error("{0}")]
    Write(#[from] crate::atomic_file::WriteError),
    #[error(transparent)]
    BackupDir(#[from] crate::safe_dir::DirError),
}

/// Reads `path` and computes the edit `step` makes to it; writes nothing.
pub fn compute_edit(
    file: &FlagFile,
    path: &Path,
    step: &MigrationStep,
) -> Result<FlagEdit, EditError> {
    let before = crate::fs_read::read_to_string(path).map_err(|error| EditError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let edit = file
        .edit_text(&before, step)
        .map_err(|error| EditError::Refused {
            path: path.to_path_buf(),
            error,
        })?;
    Ok(FlagEdit {
        path: path.to_path_buf(),
        step: step.clone(),
        flags_before: edit.flags_before,
        flags_after: edit.flags_after,
        before,
        after: edit.text,
    })
}
