//! Shared helpers for the fixtures' tests: key files, running the two binaries, HTTPS calls.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyrot::keys::SigningKey;
use serde_json::{Value, json};

/// The first signing key of a rotation (RSA 2048) and the one replacing it (ECDSA P-256).
pub const KEY_A: &str = "rsa-pkcs1-private.pem";
pub const KEY_B: &str = "ec-p256-sec1-private.pem";

/// A file from keyrot's committed test data (`tests/data/` at the repository root).
pub fn repo_data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

/// A committed PEM fixture as a signing key, read with kube's rules.
pub fn fixture_key(name: &str) -> SigningKey {
    SigningKey::from_pem_file(&repo_data(&format!("pem/{name}"))).unwrap()
}

/// A scratch directory holding the key files, the TLS directory and the logs of one test.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.path("tls")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.tls_dir().join("ca.crt")).unwrap()
    }

    /// Writes `sa.key` (the signing key file) as the fixture's private PEM.
    pub fn write_signing_key(&self, fixture: &str) {
        let key = fixture_key(fixture);
        std::fs::write(self.path("sa.key"), key.to_private_pem().as_bytes()).unwrap();
    }

    /// Writes `sa.pub` (the verification bundle) as the fixtures' SPKI blocks, in order.
    pub fn write_bundle(&self, fixtures: &[&str]) {
        let bundle: String = fixtures
            .iter()
            .map(|f| fixture_key(f).public().to_spki_pem())
            .collect();
        std::fs::write(self.path("sa.pub"), bundle).unwrap();
    }
}

/// A child process that announced `listening on https://ADDR`; killed when dropped.
pub struct Process {
    child: Child,
    pub address: SocketAddr,
    log: PathBuf,
}

/// A process that exited before announcing its address.
#[derive(Debug)]
pub struct Refused {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Process {
    /// Starts `program` and waits for its first stdout line. stderr goes to `log`.
    pub fn start(program: &str, args: &[String], log: PathBuf) -> Result<Process, Refused> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(address) = line.trim().strip_prefix("listening on https://") else {
            let status = child.wait().unwrap();
            let stderr = std::fs::read_to_string(&log).unwrap();
            return Err(Refused { status, stderr });
        };
        Ok(Process {
            address: address.parse().unwrap(),
            child,
            log,
        })
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// What a rotation plan's `command` restart runs.
    pub fn send_hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The exit status, if the process ends within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether a TCP connection is refused now.
    pub fn refuses_connections(&self) -> bool {
        matches!(
            TcpStream::connect_timeout(&self.address, Duration::from_millis(200)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags of a stand-in run on the work directory's `sa.key` and `sa.pub`.
pub fn standin_args(work: &Workdir, issuers: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--service-account-key-file".to_string(),
        work.path("sa.pub").display().to_string(),
        "--service-account-signing-key-file".to_string(),
        work.path("sa.key").display().to_string(),
        "--tls-dir".to_string(),
        work.tls_dir().display().to_string(),
    ];
    for issuer in issuers {
        args.push("--service-account-issuer".to_string());
        args.push(issuer.to_string());
    }
    args
}

pub fn start_standin(work: &Workdir, args: &[String]) -> Result<Process, Refused> {
    Process::start(
        env!("CARGO_BIN_EXE_kube-apiserver-standin"),
        args,
        work.path("standin.log"),
    )
}

/// An HTTPS client that trusts only the test CA, as keyrot's probes would.
pub fn https_client(work: &Workdir) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&work.ca_pem()).unwrap()])
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Talks to a running stand-in with a bearer token, as a kubeconfig user would.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(work: &Workdir, standin: &Process) -> Self {
        Self {
            base: standin.url(),
            http: https_client(work),
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth("any-token")
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth("any-token")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// A TokenRequest for `default` in `default`; the whole response object.
    pub async fn token_request(&self, spec: Value) -> Value {
        let response = self
            .post(
                "/api/v1/namespaces/default/serviceaccounts/default/token",
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
            )
            .await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    /// A fresh token for the issuers' audience, signed by the current signing key.
    pub async fn token(&self) -> String {
        let request = self.token_request(json!({})).await;
        request["status"]["token"].as_str().unwrap().to_string()
    }

    /// The status of a TokenReview of `token` for `audiences` (empty: the API audiences).
    pub async fn review(&self, token: &str, audiences: &[&str]) -> Value {
        let mut spec = json!({"token": token});
        if !audiences.is_empty() {
            spec["audiences"] = json!(audiences);
        }
        let body =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec});
        let response = self
            .post("/apis/authentication.k8s.io/v1/tokenreviews", &body)
            .await;
        assert_eq!(response.status(), 201);
        let review: Value = response.json().await.unwrap();
        review["status"].clone()
    }

    pub async fn jwks(&self) -> String {
        let response = self.get("/openid/v1/jwks").await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Simulates a kube-apiserver restart and waits until it serves again. Panics unless
    /// connections were refused in between, so callers know they talk to the restarted server.
    pub async fn restart(&self, standin: &Process) {
        standin.send_hangup();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !standin.refuses_connections() {
            assert!(Instant::now() < deadline, "never went down");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.wait_ready(standin).await;
    }

    pub async fn wait_ready(&self, standin: &Process) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ready = self
                .http
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready again: {}",
                standin.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The decoded header and claims of a compact JWS.
pub fn decode(token: &str) -> (Value, Value) {
    let part = |i: usize| -> Value {
        let raw = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    (part(0), part(1))
}

/// The same claims, changed by `edit`, signed again by `key`: a validly signed variant.
pub fn resign(token: &str, key: &SigningKey, edit: impl FnOnce(&mut Value)) -> String {
    let (_, mut claims) = decode(token);
    edit(&mut claims);
    standin::jws::sign(&claims, key).unwrap()
}

/// The token with one byte of its signature flipped.
pub fn tamper_signature(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[10] ^= 0x01;
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes))
}
