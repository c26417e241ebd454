//! Reads what keyrot can see of the cluster without changing anything: the key files, keyrot's
//! private keys and what each publication target serves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::adapters::Prober;
use crate::decision::{
    KeyId, KeyModeView, KeySetStamps, MigrationView, Observed, Probed, TargetView, stamp_millis,
};
use crate::issuer::key_flags::key_mode;
use crate::keys::reader::{KeyFileError, read_file};
use crate::keys::{SigningKey, SigningKeyError, VerificationKey};
use crate::plan::{FlagSource, Plan, Restart, TargetKind};
use crate::state::State;
use crate::targets;

/// A file keyrot must read is there but unusable; nothing can be decided until it is fixed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error(transparent)]
    SigningKey(#[from] SigningKeyError),
    #[error("relying-party canary: {0}")]
    Canary(#[from] crate::canary::CanaryError),
    #[error("{path}: cannot list keyrot's private keys: {error}")]
    PrivateKeyDir {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The files, and the apiserver through `prober` when the plan has a probe. What only a change
/// in `state` needs is read only then: with a rotation and the external signer, which key set
/// the signer serves and which the apiserver holds (an apiserver's /metrics is large); with a
/// switch, whether the signer serves the key files.
pub fn observe(
    plan: &Plan,
    mut prober: Option<&mut dyn Prober>,
    state: &State,
) -> Result<Observed, ObserveError> {
    let mut observed = observe_files(plan)?;
    if let Some(prober) = prober.as_deref_mut() {
        observed.apiserver = prober.apiserver_kids();
        observed.token_kid = prober.token_kid();
    }
    if state.rotation.is_some() {
        observed.key_sets = key_sets(plan, prober);
    }
    if let (Some(view), Some(signer)) = (observed.key_mode.as_mut(), &plan.signer)
        && state.signer_switch.is_some()
    {
        let sources = crate::signer::keyset::Sources::of(plan);
        view.signer_serves =
            crate::signer::client::wait_until_serving(&signer.socket, &sources, Duration::ZERO)
                .map_err(|e| e.to_string());
    }
    Ok(observed)
}

/// With a `signer.switch` section: where the flag file has kube-apiserver take its keys from.
fn key_mode_view(plan: &Plan) -> Option<KeyModeView> {
    let switch = plan.signer.as_ref()?.switch.as_ref()?;
    let flags = crate::fs_read::read_to_string(&switch.path)
        .map_err(|e| format!("{}: {e}", switch.path.display()))
        .and_then(|text| {
            key_mode(&switch.file, &text).map_err(|e| format!("{}: {e}", switch.path.display()))
        });
    Some(KeyModeView {
        flags,
        signer_serves: Ok(()),
    })
}

/// In signer mode: the data_timestamp of the set keyrot's signer serves, and of the one the
/// apiserver holds (through `prober`, when the plan has a probe).
fn key_sets(plan: &Plan, prober: Option<&mut dyn Prober>) -> Option<KeySetStamps> {
    let signer = plan.signer.as_ref()?;
    if !matches!(plan.apiserver.restart, Restart::ExternalSigner) {
        return None;
    }
    let apiserver = match prober.map(|p| p.apiserver_key_set_at()) {
        Some(Probed::Seen(seconds)) => Probed::Seen(stamp_millis(seconds)),
        Some(Probed::Failed(why)) => Probed::Failed(why),
        Some(Probed::NotConfigured) | None => Probed::NotConfigured,
    };
    let served = crate::signer::client::served_data_timestamp(&signer.socket);
    Some(KeySetStamps {
        signer: match served {
            Ok(seconds) => Probed::Seen(stamp_millis(seconds)),
            Err(e) => Probed::Failed(e.to_string()),
        },
        apiserver,
    })
}

/// Everything but the apiserver probes, which need the network (`Probed::NotConfigured` here).
pub fn observe_files(plan: &Plan) -> Result<Observed, ObserveError> {
    observe_without_apiserver(plan, true)
}

/// The files only: local-directory targets are read, targets behind the network are not
/// (`Probed::NotConfigured`). What `keyrot plan --offline` sees.
pub fn observe_offline(plan: &Plan) -> Result<Observed, ObserveError> {
    observe_without_apiserver(plan, false)
}

fn observe_without_apiserver(plan: &Plan, remote_targets: bool) -> Result<Observed, ObserveError> {
    let files = &plan.apiserver;
    let controller_manager_signing = match &plan.controller_manager {
        Some(cm) => signing_key(&cm.private_key_file)?,
        None => None,
    };
    let (private_keys, unusable_private_keys) = private_keys(&plan.private_key_dir)?;
    Ok(Observed {
        bundle: verification_keys(&files.verification_bundle, false)?,
        extra: files
            .extra_verification_files
            .iter()
            .map(|path| verification_keys(path, true).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()?
            .concat(),
        signing: signing_key(&files.signing_key_file)?,
        controller_manager_signing,
        private_keys,
        unusable_private_keys,
        apiserver: Probed::NotConfigured,
        token_kid: Probed::NotConfigured,
        targets: plan
            .targets
            .iter()
            .map(|t| match (&t.kind, remote_targets) {
                (TargetKind::LocalDirectory { .. }, _) | (_, true) => {
                    targets::read_served_view(&plan.issuer, t)
                }
                (_, false) => TargetView {
                    name: t.name.clone(),
                    kids: Probed::NotConfigured,
                    discovery: Probed::NotConfigured,
                },
            })
            .collect(),
        canaries: crate::canary::observe(plan),
        key_mode: key_mode_view(plan),
        key_sets: None,
        migration: migration_view(plan),
    })
}

/// What the plan's issuer migration depends on: the flag file's issuer and token lifetime cap,
/// and whether the editors still hold its bytes from before the migration.
fn migration_view(plan: &Plan) -> Option<MigrationView> {
    let section = plan.issuer_migration.as_ref()?;
    let issuer_problem = match &section.flags {
        FlagSource::File { path, file } => crate::migration::check_current_issuer(
            path,
            file,
            &plan.issuer.url,
            &section.new_issuer.url,
        )
        .err()
        .map(|e| e.message),
        FlagSource::Manual => None,
    };
    Some(MigrationView {
        issuer_problem,
        grace: crate::migration::grace::for_section(section),
        original_backup: crate::migration::original_backup(plan),
    })
}

pub fn key_id(key: &VerificationKey) -> KeyId {
    KeyId {
        kid: key.kid().to_string(),
        alg: key.alg(),
    }
}

/// The keys of a verification file; `None` when it does not exist (unless `required`). A file
/// that exists but holds no key is an error: kube-apiserver would not start with it.
fn verification_keys(path: &Path, required: bool) -> Result<Option<Vec<KeyId>>, ObserveError> {
    if !required && !path.exists() {
        return Ok(None);
    }
    let report = read_file(path)?;
    let keys: Vec<KeyId> = report.keys().map(key_id).collect();
    if keys.is_empty() {
        // Reuse the loader's error: it says why each block was skipped.
        crate::keys::load_verification_keys(&[path.to_path_buf()])?;
    }
    Ok(Some(keys))
}

fn signing_key(path: &Path) -> Result<Option<KeyId>, ObserveError> {
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(key_id(SigningKey::from_pem_file(path)?.public())))
}

/// Each of keyrot's private keys and its file.
type PrivateKeys = Vec<(KeyId, PathBuf)>;

/// keyrot's private key files (`*.key`) in its directory, sorted by name, and those it cannot use.
fn private_keys(dir: &Path) -> Result<(PrivateKeys, Vec<String>), ObserveError> {
    let listing =
        crate::keys::private_dir::list(dir).map_err(|error| ObserveError::PrivateKeyDir {
            path: dir.to_path_buf(),
            error,
        })?;
    let keys = listing
        .keys
        .into_iter()
        .map(|file| (key_id(file.key.public()), file.path))
        .collect();
    let unusable = listing.unusable.iter().map(ToString::to_string).collect();
    Ok((keys, unusable))
}
