//! kube-apiserver's external JWT signer plugin (`--service-account-signing-endpoint`), as far as
//! keyrot depends on it: the key set fetched at start (waiting at most 60 s for the signer), again
//! after each refresh hint and at once for a token with an unknown kid, the last good set kept
//! when a fetch fails ("stale set of keys will be supported"), Sign for every TokenRequest, and
//! the `apiserver_externaljwt_fetch_keys_data_timestamp` gauge.
//!
//! The gRPC client runs on a thread of its own with its own runtime; the stand-in's handlers
//! call it through a channel and wait for the answer, as kube's handlers wait for the plugin.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyrot::keys::VerificationKey;
use keyrot::keys::reader::verification_key_from_spki_der;
use keyrot::signer::proto::v1;
use keyrot::signer::proto::v1::external_jwt_signer_client::ExternalJwtSignerClient;
use tonic::transport::Channel;

/// How long kube-apiserver waits for its first key set at start.
const START_WAIT: Duration = Duration::from_secs(60);
/// How often a failed refresh is tried again (kube's key cache retries every 10 s; the stand-in
/// is quicker so tests need not wait that long).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// One key of the signer's set.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: VerificationKey,
    /// The signer's key_id: what tokens name and the JWKS lists.
    pub kid: String,
    /// Verify-only (`exclude_from_oidc_discovery`): never in the JWKS, never signs.
    pub excluded: bool,
}

/// The last good key set.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub keys: Vec<Listed>,
    /// The set's data_timestamp, as seconds since the epoch.
    pub data_timestamp: f64,
    pub refresh_hint: Duration,
}

enum Call {
    Sign {
        claims: String,
        reply: Sender<Result<(String, String), String>>,
    },
    Fetch {
        reply: Sender<Result<(), String>>,
    },
}

/// The plugin: a client thread and the set it keeps. Dropping it stops the thread.
pub struct ExternalSigner {
    calls: Mutex<Sender<Call>>,
    set: Arc<Mutex<KeySet>>,
}

impl ExternalSigner {
    /// Connects to `socket` and makes the first fetch, waiting at most 60 s for the signer as
    /// kube-apiserver does; `Err` when it never answered with a usable set.
    pub fn start(socket: &Path) -> Result<ExternalSigner, String> {
        let (calls, receive) = mpsc::channel();
        let (started, first) = mpsc::channel();
        let socket: PathBuf = socket.to_path_buf();
        std::thread::spawn(move || client_thread(&socket, receive, started));
        let set = first
            .recv()
            .map_err(|_| "the signer client stopped".to_string())??;
        Ok(ExternalSigner {
            calls: Mutex::new(calls),
            set,
        })
    }

    /// The set as last fetched.
    pub fn key_set(&self) -> KeySet {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// FetchKeys now (a token named a kid the set does not hold); the set is kept on failure.
    pub fn fetch_now(&self) -> Result<(), String> {
        let (reply, answer) = mpsc::channel();
        self.call(Call::Fetch { reply })?;
        answer
            .recv()
            .map_err(|_| "the signer client stopped".to_string())?
    }

    /// Signs `claims` (base64url JSON); returns the token, checked as kube checks the answer:
    /// the header decodes strictly to alg, kid and typ "JWT", and the kid is a listed key that
    /// may sign.
    pub fn sign(&self, claims: &str) -> Result<String, String> {
        let (reply, answer) = mpsc::channel();
        self.call(Call::Sign {
            claims: claims.to_string(),
            reply,
        })?;
        let (header, signature) = answer
            .recv()
            .map_err(|_| "the signer client stopped".to_string())??;
        let kid = header_kid(&header)?;
        let set = self.key_set();
        match set.keys.iter().find(|k| k.kid == kid) {
            Some(listed) if listed.excluded => {
                return Err(format!(
                    "the signer signed with {kid}, excluded from discovery"
                ));
            }
            Some(_) => {}
            None => {
                return Err(format!(
                    "the signer signed with {kid}, which it does not list"
                ));
            }
        }
        if signature.is_empty() {
            return Err("the signer returned an empty signature".into());
        }
        Ok(format!("{header}.{claims}.{signature}"))
    }

    fn call(&self, call: Call) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(call)
            .map_err(|_| "the signer client stopped".to_string())
    }
}

/// The header's kid, decoded as kube decodes it: base64url without padding, a JSON object with
/// exactly alg, kid and typ, typ "JWT".
fn header_kid(header: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Header {
        alg: String,
        kid: String,
        typ: String,
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| format!("header is not base64url: {e}"))?;
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|e| format!("header does not decode: {e}"))?;
    if header.typ != "JWT" || header.alg.is_empty() || header.kid.is_empty() {
        return Err(format!(
            "header has typ {:?}, alg {:?}, kid {:?}",
            header.typ, header.alg, header.kid
        ));
    }
    Ok(header.kid)
}

fn client_thread(
    socket: &Path,
    calls: Receiver<Call>,
    started: Sender<Result<Arc<Mutex<KeySet>>, String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = started.send(Err(format!("cannot start the signer client: {e}")));
            return;
        }
    };
    let mut client = {
        let _entered = runtime.enter();
        ExternalJwtSignerClient::new(keyrot::signer::client::channel(socket))
    };
    let deadline = Instant::now() + START_WAIT;
    let first = loop {
        match runtime.block_on(fetch(&mut client)) {
            Ok(set) => break set,
            Err(e) if Instant::now() >= deadline => {
                let _ = started.send(Err(format!(
                    "no key set from the signer on {} within {START_WAIT:?}: {e}",
                    socket.display()
                )));
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let mut next_refresh = Instant::now() + first.refresh_hint;
    let set = Arc::new(Mutex::new(first));
    if started.send(Ok(set.clone())).is_err() {
        return;
    }
    // A new set and when to fetch again, or why not (the last good set stays).
    let refresh =
        |client: &mut ExternalJwtSignerClient<Channel>| match runtime.block_on(fetch(client)) {
            Ok(fetched) => {
                let next = Instant::now() + fetched.refresh_hint;
                *set.lock().unwrap_or_else(|e| e.into_inner()) = fetched;
                (Ok(()), next)
            }
            Err(e) => (Err(e), Instant::now() + RETRY_AFTER_FAILURE),
        };
    loop {
        let wait = next_refresh.saturating_duration_since(Instant::now());
        match calls.recv_timeout(wait) {
            Ok(Call::Sign { claims, reply }) => {
                let signed = runtime.block_on(sign(&mut client, claims));
                let _ = reply.send(signed);
            }
            Ok(Call::Fetch { reply }) => {
                let (fetched, next) = refresh(&mut client);
                next_refresh = next;
                let _ = reply.send(fetched);
            }
            Err(RecvTimeoutError::Timeout) => {
                let (fetched, next) = refresh(&mut client);
                next_refresh = next;
                if let Err(e) = fetched {
                    eprintln!("external signer: refresh failed, keeping the last good set: {e}");
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// FetchKeys, with the checks kube's key cache makes before it takes a set.
async fn fetch(client: &mut ExternalJwtSignerClient<Channel>) -> Result<KeySet, String> {
    let answer = client
        .fetch_keys(v1::FetchKeysRequest {})
        .await
        .map_err(|s| format!("FetchKeys: {}", s.message()))?
        .into_inner();
    if answer.refresh_hint_seconds <= 0 {
        return Err(format!("refresh hint {} <= 0", answer.refresh_hint_seconds));
    }
    if answer.keys.is_empty() {
        return Err("no keys".into());
    }
    let stamp = answer.data_timestamp.ok_or("no data_timestamp")?;
    let stamp = SystemTime::try_from(stamp).map_err(|e| format!("data_timestamp: {e}"))?;
    let data_timestamp = stamp
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("data_timestamp before 1970: {e}"))?
        .as_secs_f64();
    let keys = answer
        .keys
        .into_iter()
        .map(|k| {
            let key = verification_key_from_spki_der(&k.key)
                .map_err(|e| format!("key {} is not PKIX: {e}", k.key_id))?;
            Ok(Listed {
                key,
                kid: k.key_id,
                excluded: k.exclude_from_oidc_discovery,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(KeySet {
        keys,
        data_timestamp,
        refresh_hint: Duration::from_secs(answer.refresh_hint_seconds as u64),
    })
}

async fn sign(
    client: &mut ExternalJwtSignerClient<Channel>,
    claims: String,
) -> Result<(String, String), String> {
    let answer = client
        .sign(v1::SignJwtRequest { claims })
        .await
        .map_err(|s| format!("Sign: {}", s.message()))?
        .into_inner();
    Ok((answer.header, answer.signature))
}
