//! Dialling a signer socket, and keyrot's own check that the signer serves what the key files
//! hold: what `restart: externalSigner` waits for instead of a process restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::transport::{Channel, Endpoint, Uri};

use super::keyset::{KeyFiles, KeySetError, Sources};
use super::proto::v1;

/// How often the check asks again while the signer has not caught up.
const POLL: Duration = Duration::from_millis(100);
/// `{}`: a payload that is valid base64url JSON, enough to learn which key signs.
const PROBE_CLAIMS: &str = "e30";

/// Why the signer does not (yet) serve the key files.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// The files themselves are not a key set the signer may serve: a person must fix them.
    #[error("signer: {0}")]
    Keys(#[from] KeySetError),
    #[error("signer on {socket} did not serve the key files within {waited:?}: {last}")]
    NotYet {
        socket: PathBuf,
        waited: Duration,
        last: String,
    },
    #[error("signer: cannot start a client runtime: {0}")]
    Runtime(std::io::Error),
    #[error("signer on {socket}: {why}")]
    NotAnswering { socket: PathBuf, why: String },
}

/// How long the observation waits for the signer's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The data_timestamp of the key set the signer on `socket` serves now, in seconds since the
/// epoch: what an apiserver's `apiserver_externaljwt_fetch_keys_data_timestamp` reaches once it
/// fetched that set.
pub fn served_data_timestamp(socket: &Path) -> Result<f64, ServingError> {
    let failed = |why: String| ServingError::NotAnswering {
        socket: socket.to_path_buf(),
        why,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServingError::Runtime)?;
    let listed = runtime.block_on(async {
        let mut client =
            v1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel(socket));
        let call = client.fetch_keys(v1::FetchKeysRequest {});
        match tokio::time::timeout(ANSWER_WAIT, call).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(failed(format!("FetchKeys: {}", status.message()))),
            Err(_) => Err(failed(format!(
                "no answer to FetchKeys within {ANSWER_WAIT:?}"
            ))),
        }
    })?;
    let stamp = listed
        .data_timestamp
        .ok_or_else(|| failed("FetchKeys answered without a data_timestamp".into()))?;
    let stamp = std::time::SystemTime::try_from(stamp)
        .map_err(|e| failed(format!("FetchKeys' data_timestamp: {e}")))?;
    let since_epoch = stamp
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| failed(format!("FetchKeys' data_timestamp is before 1970: {e}")))?;
    // As kube-apiserver's gauge computes it: float64(UnixNano) / 1e9.
    Ok(since_epoch.as_nanos() as f64 / 1e9)
}

/// A channel to the signer on `socket` (connected lazily, on the first call).
pub fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    // The URI is required by the API and unused: every connection goes to the socket. kube
    // dials with authority "localhost" too.
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        },
    ))
}

/// Waits until the signer on `socket` lists exactly the keys `sources` make, in order and with
/// the same exclude flags, and signs with the signing key file's key; at most `limit`.
pub fn wait_until_serving(
    socket: &Path,
    sources: &Sources,
    limit: Duration,
) -> Result<(), ServingError> {
    let expected = KeyFiles::read(sources)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServingError::Runtime)?;
    let started = Instant::now();
    runtime.block_on(async {
        let mut client =
            v1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel(socket));
        loop {
            let last = match serves(&mut client, &expected).await {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if started.elapsed() >= limit {
                return Err(ServingError::NotYet {
                    socket: socket.to_path_buf(),
                    waited: limit,
                    last,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

/// `Err` says what differs.
async fn serves(
    client: &mut v1::external_jwt_signer_client::ExternalJwtSignerClient<Channel>,
    expected: &KeyFiles,
) -> Result<(), String> {
    let listed = client
        .fetch_keys(v1::FetchKeysRequest {})
        .await
        .map_err(|status| format!("FetchKeys: {}", status.message()))?
        .into_inner();
    let served: Vec<(&str, bool)> = listed
        .keys
        .iter()
        .map(|k| (k.key_id.as_str(), k.exclude_from_oidc_discovery))
        .collect();
    let wanted: Vec<(&str, bool)> = expected
        .keys
        .iter()
        .map(|k| (k.kid.as_str(), k.verify_only))
        .collect();
    if served != wanted {
        return Err(format!("it lists {served:?}, the files hold {wanted:?}"));
    }
    let signed = client
        .sign(v1::SignJwtRequest {
            claims: PROBE_CLAIMS.into(),
        })
        .await
        .map_err(|status| format!("Sign: {}", status.message()))?
        .into_inner();
    let header = URL_SAFE_NO_PAD
        .decode(&signed.header)
        .ok()
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .ok_or("Sign answered a header that is not base64url JSON")?;
    let kid = header["kid"].as_str().unwrap_or_default();
    let active = expected.active.public().kid();
    if kid != active {
        return Err(format!(
            "it signs with {kid}, the signing key file holds {active}"
        ));
    }
    Ok(())
}
