//! keyrot as kube-apiserver's external JWT signer (KEP-740): the ExternalJWTSigner service in
//! packages v1 and v1alpha1 on one unix socket, serving the key files' keys and signing with the
//! signing key file's (docs/external-signer.md).
//!
//! It runs on a runtime and threads of its own, so it answers while the daemon's acting thread
//! is busy or blocked; the keys are loaded before the socket exists, so the apiserver never
//! meets a signer without keys; a watcher (inotify) reloads the set when a key file changes, and a set
//! that fails its checks is logged and not served (the previous one stays).

pub mod client;
pub mod keyset;
pub mod proto;
mod service;
pub mod socket;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{error, info, warn};

use keyset::{KeyFiles, KeySet, KeySetError, Sources};
use service::{Service, Shared};
use socket::{Peers, SocketError};

use crate::plan::Plan;

/// Why the signer did not start.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("signer: {0}")]
    Keys(#[from] KeySetError),
    #[error("signer socket: {0}")]
    Socket(#[from] SocketError),
    #[error("signer: cannot start its threads: {0}")]
    Runtime(std::io::Error),
}

/// The running signer; dropping it stops serving and removes the socket file.
pub struct Signer {
    socket: PathBuf,
    watcher: Option<watch::Watcher>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Signer {
    /// Loads the key set, then opens the socket and serves it; `Ok(None)` when the plan has no
    /// `signer` section.
    pub fn start(plan: &Plan) -> Result<Option<Signer>, SignerError> {
        let Some(settings) = &plan.signer else {
            return Ok(None);
        };
        let sources = Sources::of(plan);
        let fingerprint = sources.fingerprint();
        let set = KeySet::stamp(KeyFiles::read(&sources)?, None, SystemTime::now());
        log_set(&set);
        let shared = Arc::new(Shared::new(set, settings));
        let listener = socket::bind(&settings.socket, settings.group.as_ref())?;
        listener
            .set_nonblocking(true)
            .map_err(SignerError::Runtime)?;
        // Two workers: a slow RSA signature does not hold up a FetchKeys behind it.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("signer")
            .enable_all()
            .build()
            .map_err(SignerError::Runtime)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::UnixListener::from_std(listener).map_err(SignerError::Runtime)?
        };
        let peers = Peers::new(settings.group.as_ref());
        let incoming = UnixListenerStream::new(listener).filter(move |stream| match stream {
            Ok(stream) => peers
                .check(stream)
                .map_err(|refusal| warn!("signer socket: {refusal}"))
                .is_ok(),
            Err(_) => true,
        });
        let service = Service(shared.clone());
        runtime.spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(
                    proto::v1::external_jwt_signer_server::ExternalJwtSignerServer::new(
                        service.clone(),
                    ),
                )
                .add_service(
                    proto::v1alpha1::external_jwt_signer_server::ExternalJwtSignerServer::new(
                        service,
                    ),
                )
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                error!("signer: stopped serving: {e}");
            }
        });
        let watcher =
            watch::Watcher::start(sources, fingerprint, shared).map_err(SignerError::Runtime)?;
        info!(
            "signer serving ExternalJWTSigner v1 and v1alpha1 on {}",
            settings.socket.display()
        );
        Ok(Some(Signer {
            socket: settings.socket.clone(),
            watcher: Some(watcher),
            runtime: Some(runtime),
        }))
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.stop();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn log_set(set: &KeySet) {
    let kids: Vec<String> = set
        .keys
        .iter()
        .map(|k| match k.verify_only {
            true => format!("{} (verify-only)", k.kid),
            false => k.kid.clone(),
        })
        .collect();
    info!(
        "signer key set: {}; signing with {}{}",
        kids.join(", "),
        set.active_kid(),
        if set.rotating {
            "; rotation in progress"
        } else {
            ""
        }
    );
}
