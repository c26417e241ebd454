//! The end-to-end fixture: one test's cluster (plan, key files, servers) and its clients.
//!
//! A plan in a temporary directory, the HTTPS server publishing its issuer documents, a
//! kube-apiserver stand-in on its key files, keyrot runs, and a client minting and verifying
//! tokens.
//!
//! Layout of a world's directory (relative paths in the plan resolve against it):
//!
//! - `plan.yaml`, `kubeconfig.yaml`; `state/`, `keys/`: keyrot's state and private keys;
//! - `pki/sa.pub`, `pki/sa.key`: the stand-in's `--service-account-key-file` and
//!   `--service-account-signing-key-file`, created by `keyrot init`;
//! - `www/`: served over HTTPS; the issuer is `https://127.0.0.1:PORT/e2e`, the target `www/e2e`;
//! - `tls/`: the test CA and server certificate shared by both servers; `standin.pid`,
//!   `standin.log`: what the restart command signals and what the stand-in said.
#![allow(dead_code)] // Each e2e test binary uses a different subset.

pub mod migration;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use keyrot::keys::SigningKey;
use keyrot::keys::reader::read_file;
use serde_json::{Value, json};
use standin::static_server::StaticServer;
use standin::sts::{Sts, StsError};

/// The audience workloads request and the STS-like verifier expects.
pub const AUDIENCE: &str = "sts.test";

/// How often the client mints a token.
pub const MINT_EVERY: Duration = Duration::from_millis(50);

/// The plan's knobs that tests change; everything else is fixed by [`World::plan_yaml`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// The plan's `key:` mapping.
    pub key: &'static str,
    /// The plan's `approvals:` list.
    pub approvals: &'static str,
    pub publish_settle: &'static str,
    pub retire_after: &'static str,
    pub gate_timeout: &'static str,
    pub retry_backoff: &'static str,
    pub retry_backoff_max: &'static str,
    /// The restart, run as `sh -c RESTART`; `{pid}` stands for the stand-in's PID file.
    pub restart: &'static str,
    /// More `targets:` list items (YAML, indented two spaces), after the local directory.
    pub extra_targets: String,
    /// The cluster runs from a kubeadm manifest (`manifests/kube-apiserver.yaml`, a copy of the
    /// kubeadm fixture): its issuer is the manifest's, not the public URL, nothing is published
    /// for it, and the stand-in takes its issuer flags from the manifest at every restart.
    pub kubeadm_manifest: bool,
    /// The cluster signs through keyrot's external signer: `keyrot run` serves it on
    /// `signer.sock` (`restart: externalSigner`) and the stand-in runs with
    /// `--service-account-signing-endpoint` instead of the key files.
    pub signer: bool,
    /// The plan's `keepNextKey`.
    pub keep_next_key: bool,
    /// With `signer`: the stand-in starts on its key files and takes its key and issuer flags
    /// from `manifests/kube-apiserver.yaml` (the kubeadm fixture, with this cluster's issuer and
    /// key files) at every restart, and the plan's `signer.switch` edits that manifest
    /// (`keyrot switch-signer`), keeping kubeadm patches in `patches/`.
    pub switchable: bool,
}

/// The issuer of the kubeadm manifest fixture, as kubeadm sets it.
pub const KUBEADM_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// What kube-apiserver's restart is here: the stand-in re-reads its key files on SIGHUP.
pub const RESTART_BY_HANGUP: &str = "kill -HUP $(cat {pid})";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            key: "{ algorithm: ES256 }",
            approvals: "[]",
            publish_settle: "1s",
            retire_after: "3s",
            gate_timeout: "10s",
            retry_backoff: "1s",
            retry_backoff_max: "4s",
            restart: RESTART_BY_HANGUP,
            extra_targets: String::new(),
            kubeadm_manifest: false,
            signer: false,
            keep_next_key: false,
            switchable: false,
        }
    }
}

/// One test's cluster: files, servers and the plan. Every child process is stopped on drop.
pub struct World {
    pub settings: Settings,
    pub issuer: String,
    standin: Option<Standin>,
    /// `keyrot run`, in signer mode: the signer the stand-in signs through.
    daemon: Option<Running>,
    static_server: Option<StaticServer>,
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl World {
    /// The whole setup: static server, plan, `keyrot init`, the documents published once (as an
    /// issuer that is already in use has them), the stand-in on the key files, its kubeconfig.
    pub fn start(settings: Settings) -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("www/e2e")).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let static_server = runtime
            .block_on(StaticServer::start(
                &dir.path().join("www"),
                listen,
                &dir.path().join("tls"),
            ))
            .unwrap();
        let issuer = format!("{}/e2e", static_server.url());
        let mut world = World {
            settings,
            issuer,
            standin: None,
            daemon: None,
            static_server: Some(static_server),
            runtime,
            dir,
        };
        // keyrot reads the kubeconfig whenever it opens its state, init included, but the
        // stand-in can start only on the key files init creates: until then the kubeconfig
        // names a port where nothing listens, and init's probes fail harmlessly.
        world.write_kubeconfig("https://127.0.0.1:1");
        if world.settings.switchable {
            std::fs::create_dir_all(world.path("manifests")).unwrap();
            let fixture = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/issuer/kubeadm-kube-apiserver.yaml"
            );
            let manifest = std::fs::read_to_string(fixture)
                .unwrap()
                .replace(KUBEADM_ISSUER, &world.issuer)
                .replace(
                    "/etc/kubernetes/pki/sa.pub",
                    &world.path("pki/sa.pub").display().to_string(),
                )
                .replace(
                    "/etc/kubernetes/pki/sa.key",
                    &world.path("pki/sa.key").display().to_string(),
                );
            std::fs::write(world.path("manifests/kube-apiserver.yaml"), manifest).unwrap();
        }
        if world.settings.kubeadm_manifest {
            std::fs::create_dir_all(world.path("manifests")).unwrap();
            let fixture = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/issuer/kubeadm-kube-apiserver.yaml"
            );
            std::fs::copy(fixture, world.path("manifests/kube-apiserver.yaml")).unwrap();
        }
        world.write_plan();
        let init = world.keyrot(&["init"]);
        assert!(init.success, "keyrot init failed: {init:?}");
        if !world.settings.kubeadm_manifest {
            world.publish_current_documents();
        }
        let mut listen = listen;
        if world.settings.signer {
            // The apiserver waits for its signer at start: keyrot run comes first, and reads
            // the kubeconfig when it starts, so the stand-in's port is chosen before.
            listen = free_address();
            world.write_kubeconfig(&format!("https://{listen}"));
            world.daemon = Some(world.spawn_keyrot(&["run"]));
            let socket = world.path("signer.sock");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !socket.exists() {
                assert!(
                    Instant::now() < deadline,
                    "keyrot run serves no signer socket"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        world.start_standin(listen);
        let url = world.standin_url();
        world.write_kubeconfig(&url);
        world
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn plan_path(&self) -> PathBuf {
        self.path("plan.yaml")
    }

    /// The issuer the cluster runs with at the start: the public URL, or the manifest's.
    pub fn cluster_issuer(&self) -> &str {
        match self.settings.kubeadm_manifest {
            true => KUBEADM_ISSUER,
            false => &self.issuer,
        }
    }

    /// The plan for the current settings.
    pub fn plan_yaml(&self) -> String {
        let s = &self.settings;
        let pid_file = self.path("standin.pid").display().to_string();
        let restart = s.restart.replace("{pid}", &pid_file);
        let argv = serde_json::to_string(&["sh", "-c", &restart]).unwrap();
        let (restart, mut signer) = match s.signer {
            true => (
                "externalSigner".to_string(),
                "signer:\n  socket: signer.sock\n  refreshHint: 2s\n  rotationRefreshHint: 1s\n  \
                 maxTokenExpiration: 1h\n"
                    .to_string(),
            ),
            false => (format!("{{ command: {argv} }}"), String::new()),
        };
        if s.switchable {
            signer.push_str(&format!(
                "  switch:\n    flags: {{ kubeadmManifest: manifests/kube-apiserver.yaml }}\n    \
                 kubeadmPatches: patches\n    restart: {{ command: {argv} }}\n"
            ));
        }
        format!(
            "cluster: e2e
flavour: custom
testPlan: true
key: {key}
stateDir: state
privateKeyDir: keys
apiserver:
  verificationKeyFile: pki/sa.pub
  signingKeyFile: pki/sa.key
  restart: {restart}
probe:
  kubeconfig: kubeconfig.yaml
  serviceAccount: {{ namespace: keyrot-system, name: keyrot-probe }}
  audience: keyrot-probe
issuer:
  url: {issuer}
targets:
  - name: e2e
    localDirectory: www/e2e
    cacheMaxAge: 1s
{extra_targets}timings:
  publishSettle: {settle}
  retireAfter: {retire}
  gateTimeout: {gate}
  retryBackoff: {backoff}
  retryBackoffMax: {backoff_max}
approvals: {approvals}
keepNextKey: {keep_next_key}
{signer}",
            key = s.key,
            issuer = self.cluster_issuer(),
            settle = s.publish_settle,
            retire = s.retire_after,
            gate = s.gate_timeout,
            backoff = s.retry_backoff,
            backoff_max = s.retry_backoff_max,
            approvals = s.approvals,
            extra_targets = s.extra_targets,
            keep_next_key = s.keep_next_key,
        )
    }

    /// Writes the plan for the current settings (tests edit a plan by changing them).
    pub fn write_plan(&self) {
        std::fs::write(self.plan_path(), self.plan_yaml()).unwrap();
    }

    fn write_kubeconfig(&self, server: &str) {
        let text = kubeconfig_text(server, &self.path("tls/ca.crt"), "token: any-token");
        std::fs::write(self.path("kubeconfig.yaml"), text).unwrap();
    }

    fn publish_current_documents(&self) {
        publish_documents(
            &self.path("www/e2e"),
            &self.path("pki/sa.pub"),
            &self.issuer,
        );
    }

    /// Starts the stand-in on the key files, listening on `listen` (port 0 picks one).
    pub fn start_standin(&mut self, listen: SocketAddr) {
        assert!(self.standin.is_none(), "one stand-in at a time");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("standin.log"))
            .unwrap();
        let arg = |rel: &str| self.path(rel).display().to_string();
        let issuer_flags = match (self.settings.kubeadm_manifest, self.settings.switchable) {
            (true, _) => vec![
                "--issuer-flags-manifest".to_string(),
                arg("manifests/kube-apiserver.yaml"),
            ],
            (false, true) => vec![
                "--issuer-flags-manifest".to_string(),
                arg("manifests/kube-apiserver.yaml"),
                "--key-flags-from-manifest".to_string(),
            ],
            (false, false) => vec!["--service-account-issuer".to_string(), self.issuer.clone()],
        };
        let key_flags = match (self.settings.signer, self.settings.switchable) {
            (_, true) => Vec::new(),
            (true, false) => vec![
                "--service-account-signing-endpoint".to_string(),
                arg("signer.sock"),
            ],
            (false, false) => vec![
                "--service-account-key-file".to_string(),
                arg("pki/sa.pub"),
                "--service-account-signing-key-file".to_string(),
                arg("pki/sa.key"),
            ],
        };
        let mut child = Command::new(standin_binary())
            .args(key_flags)
            .args(issuer_flags)
            .args(["--tls-dir", &arg("tls")])
            .args(["--pid-file", &arg("standin.pid")])
            .args(["--listen", &listen.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut standin = Standin {
            child,
            address: listen,
        };
        match line.trim().strip_prefix("listening on https://") {
            Some(address) => standin.address = address.parse().unwrap(),
            None => panic!(
                "the stand-in did not start: {}",
                std::fs::read_to_string(self.path("standin.log")).unwrap()
            ),
        }
        self.standin = Some(standin);
    }

    /// Stops the stand-in (SIGKILL) and returns the address it listened on.
    pub fn stop_standin(&mut self) -> SocketAddr {
        let standin = self.standin.take().expect("a running stand-in");
        let address = standin.address;
        drop(standin);
        address
    }

    /// The stand-in's exit status, if it has exited (it exits when a restart fails, or when
    /// something other than this fixture killed it).
    pub fn standin_exited(&mut self) -> Option<ExitStatus> {
        let standin = self.standin.as_mut().expect("a stand-in was started");
        standin.child.try_wait().unwrap()
    }

    pub fn standin_url(&self) -> String {
        let standin = self.standin.as_ref().expect("a running stand-in");
        format!("https://{}", standin.address)
    }

    /// SIGKILL to `keyrot run` (the signer with it), then a new one as systemd's
    /// `Restart=always` starts, after `pause`; returns once its signer socket is back.
    pub fn kill_and_restart_daemon(&mut self, pause: Duration) {
        let mut daemon = self.daemon.take().expect("keyrot run serves the signer");
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        std::thread::sleep(pause);
        let mut daemon = self.spawn_keyrot(&["run"]);
        let serving = daemon.wait_for_line("signer serving", Duration::from_secs(30));
        assert!(serving.is_some(), "keyrot run serves no signer again");
        self.daemon = Some(daemon);
    }

    /// Waits until the state records a completed rotation and none in progress, at most 90 s
    /// (keyrot run carries it out); panics with the daemon's log otherwise.
    pub fn wait_for_completed_rotation(&self) {
        let store = keyrot::state::StateStore::new(self.path("state"));
        let deadline = Instant::now() + Duration::from_secs(90);
        while !store
            .read()
            .ok()
            .flatten()
            .is_some_and(|s| s.rotation.is_none() && s.last_rotation_completed_at.is_some())
        {
            assert!(
                Instant::now() < deadline,
                "no completed rotation within 90 s:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGHUP to `keyrot run`: it reads the plan again.
    pub fn reload_daemon(&self) {
        let daemon = self.daemon.as_ref().expect("keyrot run serves the signer");
        let sent = Command::new("kill")
            .args(["-HUP", &daemon.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// What `keyrot run` logged so far, in signer mode.
    pub fn daemon_log(&self) -> String {
        let daemon = self.daemon.as_ref().expect("keyrot run serves the signer");
        let lines = daemon.lines.lock().unwrap();
        lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn standin_log(&self) -> String {
        std::fs::read_to_string(self.path("standin.log")).unwrap_or_default()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.path("tls/ca.crt")).unwrap()
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// A client of the stand-in's API, as a workload (or kubectl) would use it.
    pub fn api(&self) -> Api {
        self.api_at(&self.standin_url())
    }

    /// A client of another apiserver at `base`, trusting the test CA.
    pub fn api_at(&self, base: &str) -> Api {
        Api {
            base: base.to_string(),
            http: https_client(&self.ca_pem()),
        }
    }

    /// The STS-like verifier for this issuer and [`AUDIENCE`], fetching what is published.
    pub fn sts(&self) -> Sts {
        Sts::new(&self.issuer, AUDIENCE, &self.ca_pem()).unwrap()
    }

    /// Runs `keyrot ARGS... -c PLAN` to its end.
    pub fn keyrot(&self, args: &[&str]) -> Run {
        let plan = self.plan_path().display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-c", &plan]);
        run_keyrot(&all)
    }

    /// Starts `keyrot ARGS... -c PLAN` in the background, collecting its output lines.
    pub fn spawn_keyrot(&self, args: &[&str]) -> Running {
        let plan = self.plan_path().display().to_string();
        Running::start(args, &plan)
    }

    /// `keyrot status --output json`, which must succeed.
    pub fn status(&self) -> Value {
        let run = self.keyrot(&["status", "--output", "json"]);
        assert!(run.success, "keyrot status failed: {run:?}");
        serde_json::from_str(&run.stdout).unwrap()
    }

    /// `keyrot status` as people read it.
    pub fn status_text(&self) -> String {
        let run = self.keyrot(&["status"]);
        assert!(run.success, "keyrot status failed: {run:?}");
        run.stdout
    }

    /// The kids of the verification bundle, in file order.
    pub fn bundle_kids(&self) -> Vec<String> {
        read_file(&self.path("pki/sa.pub"))
            .unwrap()
            .keys()
            .map(|k| k.kid().to_string())
            .collect()
    }

    /// The kid of the signing key file.
    pub fn signing_kid(&self) -> String {
        let key = SigningKey::from_pem_file(&self.path("pki/sa.key")).unwrap();
        key.public().kid().to_string()
    }

    /// The published JWKS, as the target directory holds it.
    pub fn published_jwks(&self) -> String {
        std::fs::read_to_string(self.path("www/e2e/openid/v1/jwks")).unwrap()
    }

    /// The JWKS the stand-in serves now.
    pub fn served_jwks(&self) -> Result<String, CallError> {
        let api = self.api();
        self.block_on(api.get("/openid/v1/jwks"))
    }

    /// Checks that a rotation is over and everything agrees: one key in the bundle, the signing
    /// key, the one keyrot calls active, served by the stand-in byte for byte as published, and
    /// the discovery document names this issuer. Returns that kid.
    pub fn assert_converged(&self) -> String {
        let status = self.status();
        assert_eq!(status["phase"], Value::Null, "{status:#}");
        let signing = self.signing_kid();
        let alone = std::slice::from_ref(&signing);
        assert_eq!(self.bundle_kids(), alone);
        assert_eq!(keys_with_role(&status, "active"), alone);
        let published = self.published_jwks();
        assert_eq!(jwks_kids(&published), alone);
        let served = self.served_jwks().expect("the stand-in answers");
        assert_eq!(served, published, "served and published JWKS differ");
        let discovery: Value = serde_json::from_str(
            &std::fs::read_to_string(self.path("www/e2e/.well-known/openid-configuration"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(discovery["issuer"], self.issuer.as_str());
        assert_eq!(
            discovery["jwks_uri"],
            format!("{}/openid/v1/jwks", self.issuer)
        );
        signing
    }

    /// The safety every state must have, mid-rotation or not: the key that signs is verifiable
    /// in the cluster's files and in what the issuer publishes.
    pub fn assert_signing_key_verifiable(&self) {
        let signing = self.signing_kid();
        assert!(
            self.bundle_kids().contains(&signing),
            "signing key {signing} is not in the bundle {:?}",
            self.bundle_kids()
        );
        let published = jwks_kids(&self.published_jwks());
        assert!(
            published.contains(&signing),
            "signing key {signing} is not published: {published:?}"
        );
    }

    /// Mints tokens every [`MINT_EVERY`] until stopped, verifying each; `watch` is also
    /// verified again every few mints.
    pub fn start_traffic(&self, watch: Option<String>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let task = self
            .runtime
            .spawn(traffic(self.api(), self.sts(), watch, stop.clone()));
        Traffic { stop, task }
    }

    pub fn stop_traffic(&self, traffic: Traffic) -> TrafficLog {
        traffic.stop.store(true, Ordering::SeqCst);
        let mut log = self.block_on(traffic.task).unwrap();
        log.minted.sort_by_key(|m| m.at);
        log.watched.sort_by_key(|w| w.started);
        log
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The stand-in is killed by its own drop; the static server's task stops with its
        // handle, before the runtime that drives it goes away.
        self.standin.take();
        self.daemon.take();
        self.static_server.take();
    }
}

/// An address on 127.0.0.1 whose port was free a moment ago.
fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The stand-in process; killed (by its PID) and reaped on drop.
struct Standin {
    child: Child,
    address: SocketAddr,
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `kube-apiserver-standin` binary, up to date in the target directory that holds keyrot's.
pub fn standin_binary() -> PathBuf {
    standin_bin("kube-apiserver-standin")
}

/// The `kube-cluster-standin` binary (the HA tests' Kubernetes API), built with the other.
pub fn cluster_standin_binary() -> PathBuf {
    standin_bin("kube-cluster-standin")
}

/// One of the stand-in package's binaries.
///
/// Cargo gives a test the paths of its own package's binaries only (`CARGO_BIN_EXE_*`), and
/// artifact dependencies are not stable yet, so the tests ask cargo to build the stand-in's
/// binaries once per test process, with the same profile and target directory. When they are
/// fresh, as after `scripts/test.sh` built the workspace, this takes a fraction of a second.
fn standin_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let profile_dir = BUILT.get_or_init(|| {
        let profile_dir = Path::new(env!("CARGO_BIN_EXE_keyrot")).parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "keyrot-standin", "--bins"])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cannot build the stand-in: {status}");
        profile_dir.to_path_buf()
    });
    let binary = profile_dir.join(name);
    assert!(binary.is_file(), "{} is missing", binary.display());
    binary
}

/// The result of one `keyrot` run.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_keyrot(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_keyrot"))
        .args(args)
        .output()
        .expect("keyrot runs");
    Run {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A line keyrot printed, with the moment this process read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub stderr: bool,
    pub text: String,
}

/// A keyrot process in the background; killed (SIGKILL, by its PID) if still running on drop.
pub struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// How a background keyrot ended.
#[derive(Debug)]
pub struct Finished {
    /// `None` when this fixture killed it.
    pub code: Option<i32>,
    pub killed: bool,
    pub lines: Vec<Line>,
}

impl Finished {
    pub fn stdout(&self) -> String {
        self.text(false)
    }

    pub fn stderr(&self) -> String {
        self.text(true)
    }

    fn text(&self, stderr: bool) -> String {
        self.lines
            .iter()
            .filter(|l| l.stderr == stderr)
            .map(|l| format!("{}\n", l.text))
            .collect()
    }
}

impl Running {
    pub fn start(args: &[&str], plan: &str) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyrot"))
            .args(args)
            .args(["-c", plan])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyrot runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let readers = vec![
            collect_lines(stdout, false, lines.clone()),
            collect_lines(stderr, true, lines.clone()),
        ];
        Running {
            child,
            lines,
            readers,
        }
    }

    /// The first line containing `pattern`, waiting up to `timeout` while keyrot runs.
    pub fn wait_for_line(&mut self, pattern: &str, timeout: Duration) -> Option<Line> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.text.contains(pattern))
                .cloned();
            let exited = self.child.try_wait().unwrap().is_some();
            if found.is_some() || Instant::now() >= deadline || exited {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asks keyrot to stop, as systemd does (SIGTERM).
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// The exit status, if keyrot exits within `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What keyrot wrote to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.stderr)
            .map(|l| format!("{}\n", l.text))
            .collect()
    }

    /// Ends keyrot: SIGKILL unless it already exited; then everything it printed.
    pub fn finish(mut self) -> Finished {
        let killed = match self.child.try_wait().unwrap() {
            Some(_) => false,
            None => {
                self.child.kill().unwrap();
                true
            }
        };
        let status = self.child.wait().unwrap();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        Finished {
            code: status.code(),
            killed,
            lines,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    stderr: bool,
    lines: Arc<Mutex<Vec<Line>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for text in BufReader::new(stream).lines() {
            let Ok(text) = text else { return };
            lines.lock().unwrap().push(Line {
                at: Instant::now(),
                stderr,
                text,
            });
        }
    })
}

/// The phase keyrot entered at each moment, read from its progress lines: `generate` when it
/// starts a rotation, each `enter phase X`, and `done` when the rotation completes.
pub fn phase_changes(lines: &[Line]) -> Vec<(Instant, String)> {
    lines
        .iter()
        .filter(|l| !l.stderr)
        .filter_map(|l| {
            let phase = if l.text.contains("start a rotation") {
                "generate"
            } else if l.text.contains("rotation complete") {
                "done"
            } else {
                l.text.split("enter phase ").nth(1)?.trim()
            };
            Some((l.at, phase.to_string()))
        })
        .collect()
}

/// The phase at `at`: the last change seen at or before it, `before` if none was.
pub fn phase_at(changes: &[(Instant, String)], at: Instant) -> &str {
    changes
        .iter()
        .rev()
        .find(|(t, _)| *t <= at)
        .map_or("before", |(_, p)| p.as_str())
}

/// A call to the stand-in that did not get the answer it wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer: the connection was refused or cut, as while the apiserver restarts.
    Refused(String),
    /// An answer, but not the expected one.
    Answered(String),
}

/// The stand-in's API with a bearer token, as a workload's client would call it.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client of the API at `base` (https://ADDR) trusting the test CA `ca_pem`.
    pub fn at(base: &str, ca_pem: &[u8]) -> Api {
        Api {
            base: base.to_string(),
            http: https_client(ca_pem),
        }
    }

    pub async fn get(&self, path: &str) -> Result<String, CallError> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.call(request, 200).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        let text = self.call(request, 201).await?;
        serde_json::from_str(&text).map_err(|e| CallError::Answered(format!("{e}: {text}")))
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        expected: u16,
    ) -> Result<String, CallError> {
        let refused = |e: reqwest::Error| CallError::Refused(keyrot::http::chain(&e));
        let response = request
            .bearer_auth("any-token")
            .send()
            .await
            .map_err(refused)?;
        let status = response.status();
        let text = response.text().await.map_err(refused)?;
        if status.as_u16() != expected {
            return Err(CallError::Answered(format!("{status}: {text}")));
        }
        Ok(text)
    }

    /// A token for `default/default` with [`AUDIENCE`], signed by the current signing key.
    pub async fn token(&self) -> Result<String, CallError> {
        let request = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [AUDIENCE]},
        });
        let issued = self
            .post(
                "/api/v1/namespaces/default/serviceaccounts/default/token",
                &request,
            )
            .await?;
        issued["status"]["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| CallError::Answered(format!("no token in {issued}")))
    }

    /// A TokenReview for [`AUDIENCE`]: `Ok` when authenticated, else the apiserver's reason.
    pub async fn review(&self, token: &str) -> Result<Result<(), String>, CallError> {
        let review = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [AUDIENCE]},
        });
        let reviewed = self
            .post("/apis/authentication.k8s.io/v1/tokenreviews", &review)
            .await?;
        let status = &reviewed["status"];
        if status["authenticated"] == true {
            return Ok(Ok(()));
        }
        Ok(Err(status["error"]
            .as_str()
            .unwrap_or("no error")
            .to_string()))
    }

    /// A TokenReview that waits out a restart: refusals are retried (and counted in
    /// `refused`) for up to ten seconds.
    pub async fn review_through_restarts(
        &self,
        token: &str,
        refused: &AtomicUsize,
    ) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.review(token).await {
                Ok(verdict) => return verdict,
                Err(CallError::Answered(e)) => return Err(format!("TokenReview answered {e}")),
                Err(CallError::Refused(e)) if Instant::now() >= deadline => {
                    return Err(format!("no TokenReview answer for 10 s: {e}"));
                }
                Err(CallError::Refused(_)) => {
                    refused.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

fn https_client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).unwrap()])
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A token minted during the run, and how both verifiers judged it right after.
#[derive(Debug)]
pub struct Minted {
    pub at: Instant,
    pub kid: String,
    /// The token's `iss`: an issuer migration changes it.
    pub iss: String,
    pub review: Result<(), String>,
    pub sts: Result<(), StsError>,
}

/// One more verification of the watched token, with when each verifier answered.
#[derive(Debug)]
pub struct Watched {
    pub started: Instant,
    pub review_at: Instant,
    pub review: Result<(), String>,
    pub sts_at: Instant,
    pub sts: Result<(), StsError>,
}

/// Everything the client saw.
#[derive(Debug, Default)]
pub struct TrafficLog {
    pub minted: Vec<Minted>,
    /// TokenRequests that got no answer (the apiserver was restarting): no token, no failure.
    pub mint_refused: usize,
    /// TokenRequests answered with an error: failures.
    pub mint_errors: Vec<String>,
    /// TokenReviews that got no answer and were sent again.
    pub review_refused: usize,
    pub watched: Vec<Watched>,
}

impl TrafficLog {
    /// Every minted token that either verifier rejected, with the reasons.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self.mint_errors.clone();
        for m in &self.minted {
            if let Err(e) = &m.review {
                out.push(format!("TokenReview rejected a token of {}: {e}", m.kid));
            }
            if let Err(e) = &m.sts {
                out.push(format!("the STS rejected a token of {}: {e}", m.kid));
            }
        }
        out
    }

    /// The kids of minted tokens in minting order, each run of equal kids shown once.
    pub fn kid_runs(&self) -> Vec<String> {
        let mut runs: Vec<String> = Vec::new();
        for m in &self.minted {
            if runs.last() != Some(&m.kid) {
                runs.push(m.kid.clone());
            }
        }
        runs
    }
}

/// The running client; see [`World::start_traffic`].
pub struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<TrafficLog>,
}

/// Mints on every tick and verifies each token in its own task, so a slow verification (one
/// waiting out a restart) never delays the next mint.
async fn traffic(api: Api, sts: Sts, watch: Option<String>, stop: Arc<AtomicBool>) -> TrafficLog {
    let refused = Arc::new(AtomicUsize::new(0));
    let mut log = TrafficLog::default();
    let mut minted = Vec::new();
    let mut watched = Vec::new();
    let mut ticks = tokio::time::interval(MINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for tick in 0u64.. {
        ticks.tick().await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match api.token().await {
            Ok(token) => {
                let at = Instant::now();
                let (api, sts, refused) = (api.clone(), sts.clone(), refused.clone());
                minted.push(tokio::spawn(async move {
                    let review = api.review_through_restarts(&token, &refused).await;
                    let sts = sts.verify(&token).await.map(|_| ());
                    let kid = keyrot::adapters::probe::token_kid(&token).unwrap();
                    let iss = keyrot::adapters::probe::token_issuer(&token).unwrap();
                    Minted {
                        at,
                        kid,
                        iss,
                        review,
                        sts,
                    }
                }));
            }
            Err(CallError::Refused(_)) => log.mint_refused += 1,
            Err(CallError::Answered(e)) => log.mint_errors.push(format!("TokenRequest: {e}")),
        }
        // The watched token every fourth tick: often enough to see each change of the keys.
        if let Some(token) = watch.clone().filter(|_| tick % 4 == 0) {
            let (api, sts, refused) = (api.clone(), sts.clone(), refused.clone());
            watched.push(tokio::spawn(async move {
                let started = Instant::now();
                let review = api.review_through_restarts(&token, &refused).await;
                let review_at = Instant::now();
                let sts = sts.verify(&token).await.map(|_| ());
                Watched {
                    started,
                    review_at,
                    review,
                    sts_at: Instant::now(),
                    sts,
                }
            }));
        }
    }
    for task in minted {
        log.minted.push(task.await.unwrap());
    }
    for task in watched {
        log.watched.push(task.await.unwrap());
    }
    log.review_refused = refused.load(Ordering::SeqCst);
    log
}

/// The kids of a JWKS body, in order.
pub fn jwks_kids(jwks: &str) -> Vec<String> {
    keyrot::targets::jwks_kids(jwks.as_bytes()).unwrap()
}

/// The kids `keyrot status --output json` gives `role`.
pub fn keys_with_role(status: &Value, role: &str) -> Vec<String> {
    status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["role"] == role)
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// A kubeconfig naming `server`, trusting the test CA `ca`, for a user written as `user` (its
/// YAML value, e.g. `token: any-token`, or `{}` for none).
pub fn kubeconfig_text(server: &str, ca: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: keyrot
  user:
    {user}
contexts:
- name: c
  context:
    cluster: c
    user: keyrot
current-context: c
",
        ca = ca.display()
    )
}

/// What `keyrot discovery` and `keyrot jwks` print for `bundle`, written to the target directory
/// `target` without their final newline, as kube-apiserver serves them: the documents of an
/// issuer already in use.
pub fn publish_documents(target: &Path, bundle: &Path, issuer: &str) {
    let bundle = bundle.display().to_string();
    let discovery = run_keyrot(&["discovery", "--issuer", issuer, &bundle]);
    let jwks = run_keyrot(&["jwks", &bundle]);
    assert!(discovery.success && jwks.success, "{discovery:?} {jwks:?}");
    std::fs::create_dir_all(target.join(".well-known")).unwrap();
    std::fs::create_dir_all(target.join("openid/v1")).unwrap();
    std::fs::write(
        target.join(".well-known/openid-configuration"),
        discovery.stdout.trim_end_matches('\n'),
    )
    .unwrap();
    std::fs::write(
        target.join("openid/v1/jwks"),
        jwks.stdout.trim_end_matches('\n'),
    )
    .unwrap();
}

/// A xorshift generator from [`seed`], which it prints: `next(n)` is a number below `n`, the
/// same sequence for the same seed (`E2E_SEED=N` replays a failing run).
pub fn random() -> impl FnMut(u64) -> u64 {
    let seed = seed();
    eprintln!("seed {seed} (E2E_SEED={seed} replays the random delays)");
    let mut state = seed | 1;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

/// The seed of a test's random kill delays: `E2E_SEED` to replay a run, else the clock.
pub fn seed() -> u64 {
    match std::env::var("E2E_SEED") {
        Ok(seed) => seed.parse().expect("E2E_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}
