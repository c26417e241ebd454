//! The reads behind `keyrot doctor`: key files, the flag file, each apiserver and each target,
//! all read-only, through the same code the rotation uses.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::observations::{
    ApiserverSeen, BundleSeen, FlagsSeen, KeyFileSeen, Observations, TargetSeen,
};
use super::process::ApiserverProcess;
use crate::adapters::Prober;
use crate::adapters::probe::KubeProber;
use crate::decision::Probed;
use crate::documents::JWKS_CONTENT_TYPE;
use crate::http::block_on;
use crate::issuer::FlagFile;
use crate::keys::SigningKey;
use crate::keys::load_verification_keys;
use crate::plan::{Issuer, PublicRead, Target, TargetKind};
use crate::targets::{public, read_served};

/// What to look at.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub issuer: Option<Issuer>,
    pub signing_key_file: Option<PathBuf>,
    /// `--service-account-key-file` values, in flag order; empty: not checked.
    pub verification_files: Vec<PathBuf>,
    pub controller_manager_key_file: Option<PathBuf>,
    pub flags: Option<(PathBuf, FlagFile)>,
    /// One kubeconfig per apiserver; the first is this node's.
    pub kubeconfigs: Vec<PathBuf>,
    /// This node's kube-apiserver process, whose start time explains stale keys.
    pub apiserver_process: Option<ApiserverProcess>,
    /// The plan's targets, read as keyrot's own gate reads them.
    pub targets: Vec<Target>,
    /// URLs serving the documents, read anonymously; `None` stands for the issuer itself.
    pub public_urls: Vec<Option<String>>,
    /// Extra root certificates (PEM) for the public URLs: test servers.
    pub ca_file: Option<PathBuf>,
}

pub fn gather(sources: &Sources) -> Observations {
    let signing = sources.signing_key_file.as_deref().map(signing_key);
    let controller_manager = sources
        .controller_manager_key_file
        .as_deref()
        .map(signing_key);
    let bundle = (!sources.verification_files.is_empty()).then(|| {
        bundle(
            &sources.verification_files,
            sources.signing_key_file.as_deref(),
        )
    });
    let flags = sources.flags.as_ref().map(|(path, file)| FlagsSeen {
        path: path.clone(),
        flags: crate::fs_read::read_to_string(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| file.read_flags(&text).map_err(|e| e.to_string())),
    });
    let apiservers = sources
        .kubeconfigs
        .iter()
        .enumerate()
        .map(|(i, kubeconfig)| {
            // Only the first apiserver is this node's: another node's process is not visible.
            let process = sources.apiserver_process.as_ref().filter(|_| i == 0);
            apiserver(kubeconfig, process)
        })
        .collect();
    let mut targets: Vec<TargetSeen> = Vec::new();
    if let Some(issuer) = &sources.issuer {
        for target in &sources.targets {
            let served = read_served(issuer, target);
            targets.push(TargetSeen {
                name: target.name.clone(),
                at: served.at,
                kids: served.kids.map_err(|e| e.to_string()),
            });
        }
        for url in &sources.public_urls {
            targets.push(public_read(
                issuer,
                url.as_deref(),
                sources.ca_file.as_deref(),
            ));
        }
    }
    Observations {
        issuer: sources.issuer.clone(),
        signing,
        bundle,
        controller_manager,
        flags,
        apiservers,
        targets,
    }
}

/// A plan's local directories are files a web server serves at the issuer: besides the files,
/// the issuer URL itself is read, as a cloud reads it.
pub fn serves_issuer_locally(targets: &[Target]) -> bool {
    targets
        .iter()
        .any(|t| matches!(t.kind, TargetKind::LocalDirectory { .. }))
}

fn signing_key(path: &Path) -> KeyFileSeen {
    KeyFileSeen {
        path: path.to_path_buf(),
        kid: SigningKey::from_pem_file(path)
            .map(|key| key.public().kid().to_string())
            .map_err(|e| e.to_string()),
    }
}

fn bundle(paths: &[PathBuf], signing: Option<&Path>) -> BundleSeen {
    let (kids, skipped) = match load_verification_keys(paths) {
        Ok(loaded) => (
            Ok(loaded.keys.iter().map(|k| k.kid().to_string()).collect()),
            loaded.warnings,
        ),
        Err(e) => (Err(e.to_string()), Vec::new()),
    };
    let changed_at = paths
        .iter()
        .map(PathBuf::as_path)
        .chain(signing)
        .filter_map(modified)
        .max();
    BundleSeen {
        paths: paths.to_vec(),
        kids,
        skipped,
        changed_at,
    }
}

fn modified(path: &Path) -> Option<DateTime<Utc>> {
    let time = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(time.into())
}

fn apiserver(kubeconfig: &Path, process: Option<&ApiserverProcess>) -> ApiserverSeen {
    let name = kubeconfig.display().to_string();
    let started_at = match process {
        Some(process) => process.started_at().map_err(|e| e.to_string()),
        None => Err("its start time is not visible from here".to_string()),
    };
    // Only the two documents are read: no token is requested, nothing is created.
    let mut prober = match KubeProber::new(kubeconfig, "", "", "") {
        Ok(prober) => prober,
        Err(e) => {
            return ApiserverSeen {
                name,
                jwks: Err(e.to_string()),
                discovery: Err(e.to_string()),
                started_at,
            };
        }
    };
    let jwks = match prober.apiserver_kids() {
        Probed::Seen(kids) => Ok(kids),
        Probed::Failed(why) => Err(why),
        Probed::NotConfigured => Err("no probe".to_string()),
    };
    ApiserverSeen {
        name,
        jwks,
        discovery: prober.discovery().map_err(|e| e.to_string()),
        started_at,
    }
}

fn public_read(issuer: &Issuer, url: Option<&str>, ca_file: Option<&Path>) -> TargetSeen {
    let public = PublicRead {
        url: url.map(str::to_string),
        ca_file: ca_file.map(Path::to_path_buf),
    };
    let name = url.unwrap_or(&issuer.url).to_string();
    match block_on(public::read_public(issuer, &public, JWKS_CONTENT_TYPE)) {
        Ok(view) => TargetSeen {
            name,
            at: view.jwks_url,
            kids: Ok(view.kids),
        },
        Err(why) => TargetSeen {
            at: name.clone(),
            name,
            kids: Err(why.to_string()),
        },
    }
}
