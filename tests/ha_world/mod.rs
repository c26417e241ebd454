//! The HA end-to-end fixture: a control plane of N nodes, each with its own key files, its own
//! kube-apiserver stand-in (restarted by SIGHUP) and its own `keyrot run`; one stand-in of the
//! cluster's Kubernetes API in front (Lease/ConfigMap semantics, watch, faults, a round-robin
//! load balancer over the node apiservers); the issuer's documents served over HTTPS; and a
//! client minting tokens on every node and reviewing each on every other node.
//!
//! Layout: `tls/` (test CA), `www/e2e/` (the target; issuer `https://127.0.0.1:PORT/e2e`),
//! `cp-N/` per node: `plan.yaml`, `pki/sa.{pub,key}`, `keys/`, `state/`, `probe.kubeconfig`
//! (its own apiserver), `cluster.kubeconfig` (its listener on the cluster API), `apiserver.pid`,
//! `apiserver.log`, `keyrot.log`.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use standin::static_server::StaticServer;
use standin::sts::Sts;

use crate::e2e::{self, AUDIENCE, Api, CallError, Running};

/// How often the client mints a token (on the next node in turn).
const MINT_EVERY: Duration = Duration::from_millis(40);

pub struct HaWorld {
    pub issuer: String,
    /// The plan's retireAfter: how long a token must stay verifiable after its key stopped.
    grace: Duration,
    pub names: Vec<String>,
    nodes: Vec<Node>,
    cluster: Child,
    /// The cluster API's main listener (the load balancer, as workloads reach it).
    pub front: String,
    control: String,
    clients: BTreeMap<String, String>,
    static_server: Option<StaticServer>,
    pub runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

struct Node {
    name: String,
    address: SocketAddr,
    apiserver: Option<Child>,
    daemon: Option<Running>,
}

/// The plan's waits, short for tests.
pub struct Timings {
    pub publish_settle: &'static str,
    pub retire_after: &'static str,
    pub lease_duration: &'static str,
    pub renew_deadline: &'static str,
    pub retry_period: &'static str,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            publish_settle: "2s",
            retire_after: "4s",
            lease_duration: "6s",
            renew_deadline: "4s",
            retry_period: "1s",
        }
    }
}

impl HaWorld {
    /// `n` nodes sharing one signing key (as kubeadm's nodes do), its documents published, every
    /// apiserver running; no keyrot yet.
    pub fn start(n: usize, timings: Timings) -> HaWorld {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("www/e2e")).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let static_server = runtime
            .block_on(StaticServer::start(
                &dir.path().join("www"),
                "127.0.0.1:0".parse().unwrap(),
                &dir.path().join("tls"),
            ))
            .unwrap();
        let issuer = format!("{}/e2e", static_server.url());
        let names: Vec<String> = (1..=n).map(|i| format!("cp-{i}")).collect();
        let shared = keyrot::keys::SigningKey::generate(
            keyrot::keys::GenerateSpec::new(keyrot::keys::Alg::ES256, None).unwrap(),
        )
        .unwrap();
        for name in &names {
            let pki = dir.path().join(name).join("pki");
            std::fs::create_dir_all(&pki).unwrap();
            shared
                .write_pair(
                    &pki.join("sa.key"),
                    &pki.join("sa.pub"),
                    keyrot::atomic_file::Existing::Refuse,
                )
                .unwrap();
        }
        e2e::publish_documents(
            &dir.path().join("www/e2e"),
            &dir.path().join(&names[0]).join("pki/sa.pub"),
            &issuer,
        );
        let mut world = HaWorld {
            grace: humantime::parse_duration(timings.retire_after).unwrap(),
            issuer,
            names: names.clone(),
            nodes: names
                .iter()
                .map(|name| Node {
                    name: name.clone(),
                    address: "127.0.0.1:0".parse().unwrap(),
                    apiserver: None,
                    daemon: None,
                })
                .collect(),
            cluster: Command::new("true").spawn().unwrap(),
            front: String::new(),
            control: String::new(),
            clients: BTreeMap::new(),
            static_server: Some(static_server),
            runtime,
            dir,
        };
        for i in 0..n {
            world.start_apiserver(i);
        }
        world.start_cluster_api();
        for (i, name) in names.iter().enumerate() {
            world.write_kubeconfig(&format!("{name}/probe.kubeconfig"), &world.apiserver_url(i));
            world.write_kubeconfig(&format!("{name}/cluster.kubeconfig"), &world.clients[name]);
            world.write_plan(i, &timings);
        }
        world
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn plan_path(&self, i: usize) -> PathBuf {
        self.path(&format!("{}/plan.yaml", self.names[i]))
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.path("tls/ca.crt")).unwrap()
    }

    pub fn apiserver_url(&self, i: usize) -> String {
        format!("https://{}", self.nodes[i].address)
    }

    /// Starts node `i`'s apiserver on its key files, on the address it had before (if any).
    pub fn start_apiserver(&mut self, i: usize) {
        let name = self.names[i].clone();
        let arg = |rel: &str| self.path(&format!("{name}/{rel}")).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(arg("apiserver.log"))
            .unwrap();
        let listen = self.nodes[i].address;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(e2e::standin_binary())
                .args(["--service-account-key-file", &arg("pki/sa.pub")])
                .args(["--service-account-signing-key-file", &arg("pki/sa.key")])
                .args(["--service-account-issuer", &self.issuer])
                .args(["--tls-dir", &self.path("tls").display().to_string()])
                .args(["--pid-file", &arg("apiserver.pid")])
                .args(["--listen", &listen.to_string()])
                .args(["--restart-delay", "300ms"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log.try_clone().unwrap())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            if let Some(address) = line.trim().strip_prefix("listening on https://") {
                self.nodes[i].address = address.parse().unwrap();
                self.nodes[i].apiserver = Some(child);
                return;
            }
            let _ = child.wait();
            // The port of a killed apiserver may take a moment to be free again.
            assert!(
                Instant::now() < deadline,
                "{name}'s apiserver did not start: {}",
                std::fs::read_to_string(arg("apiserver.log")).unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_cluster_api(&mut self) {
        let mut command = Command::new(e2e::cluster_standin_binary());
        command
            .args(["--tls-dir", &self.path("tls").display().to_string()])
            .args([
                "--pid-file",
                &self.path("cluster.pid").display().to_string(),
            ]);
        for i in 0..self.nodes.len() {
            command.args(["--node", &self.apiserver_url(i)]);
        }
        for name in &self.names {
            command.args(["--client-listener", name]);
        }
        let log = std::fs::File::create(self.path("cluster.log")).unwrap();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut read = || {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line.trim().to_string()
        };
        let front = read();
        self.front = front
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the cluster API did not start: {front}"))
            .to_string();
        self.control = read().strip_prefix("control on ").unwrap().to_string();
        for name in self.names.clone() {
            let line = read();
            let url = line
                .strip_prefix(&format!("client {name} on "))
                .unwrap_or_else(|| panic!("unexpected line {line}"))
                .to_string();
            self.clients.insert(name, url);
        }
        self.cluster = child;
    }

    fn write_kubeconfig(&self, relative: &str, server: &str) {
        let text = e2e::kubeconfig_text(server, &self.path("tls/ca.crt"), "token: any-token");
        std::fs::write(self.path(relative), text).unwrap();
    }

    fn write_plan(&self, i: usize, t: &Timings) {
        let name = &self.names[i];
        let pid = self
            .path(&format!("{name}/apiserver.pid"))
            .display()
            .to_string();
        let argv =
            serde_json::to_string(&["sh", "-c", &format!("kill -HUP $(cat {pid})")]).unwrap();
        let members = serde_json::to_string(&self.names).unwrap();
        let plan = format!(
            "cluster: ha-e2e
flavour: custom
testPlan: true
key: {{ algorithm: ES256 }}
stateDir: state
privateKeyDir: keys
apiserver:
  verificationKeyFile: pki/sa.pub
  signingKeyFile: pki/sa.key
  restart: {{ command: {argv} }}
probe:
  kubeconfig: probe.kubeconfig
  serviceAccount: {{ namespace: keyrot-system, name: keyrot-probe }}
  audience: keyrot-probe
issuer:
  url: {issuer}
targets:
  - name: e2e
    localDirectory: {www}
    cacheMaxAge: 1s
timings:
  publishSettle: {settle}
  retireAfter: {retire}
  gateTimeout: 10s
  retryBackoff: 1s
  retryBackoffMax: 4s
ha:
  nodeName: {name}
  kubeconfig: cluster.kubeconfig
  members: {members}
  leaseDuration: {lease}
  renewDeadline: {renew}
  retryPeriod: {retry}
",
            issuer = self.issuer,
            www = self.path("www/e2e").display(),
            settle = t.publish_settle,
            retire = t.retire_after,
            lease = t.lease_duration,
            renew = t.renew_deadline,
            retry = t.retry_period,
        );
        std::fs::write(self.plan_path(i), plan).unwrap();
    }

    /// Starts `keyrot run` on node `i` (its output kept in the node's `keyrot.log`).
    pub fn start_daemon(&mut self, i: usize) {
        let plan = self.plan_path(i).display().to_string();
        self.nodes[i].daemon = Some(Running::start(&["run"], &plan));
    }

    pub fn start_daemons(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_daemon(i);
        }
    }

    /// SIGKILL of node `i`'s keyrot; its output is appended to its `keyrot.log`.
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(daemon) = self.nodes[i].daemon.take() {
            let finished = daemon.finish();
            self.append_log(i, &finished.stderr());
        }
    }

    pub fn daemon_running(&self, i: usize) -> bool {
        self.nodes[i].daemon.is_some()
    }

    /// The machine goes down: its apiserver and its keyrot are killed.
    pub fn node_down(&mut self, i: usize) {
        self.kill_daemon(i);
        if let Some(mut apiserver) = self.nodes[i].apiserver.take() {
            let _ = apiserver.kill();
            let _ = apiserver.wait();
        }
    }

    /// The machine comes back: its apiserver starts from its files, then its keyrot.
    pub fn node_up(&mut self, i: usize) {
        self.start_apiserver(i);
        self.start_daemon(i);
    }

    fn append_log(&self, i: usize, text: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{}/keyrot.log", self.names[i])))
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// Everything node `i`'s keyrot said so far (earlier runs included).
    pub fn daemon_log(&self, i: usize) -> String {
        let mut text = std::fs::read_to_string(self.path(&format!("{}/keyrot.log", self.names[i])))
            .unwrap_or_default();
        if let Some(daemon) = &self.nodes[i].daemon {
            text.push_str(&daemon.stderr_so_far());
        }
        text
    }

    /// A fault of the cluster API: `down`, `up`, `conflicts/N`, `partition/NAME`, `heal/NAME`.
    pub fn fault(&self, what: &str) {
        let url = format!("{}/{what}", self.control);
        let status = self
            .runtime
            .block_on(reqwest::Client::new().post(&url).send())
            .unwrap()
            .status();
        assert!(status.is_success(), "{url}: {status}");
    }

    /// The Lease's spec, read straight from the cluster API (quicker than a status).
    fn lease_spec(&self) -> Option<Value> {
        let api = Api::at(&self.front, &self.ca_pem());
        let path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/keyrot-leader";
        let text = self.runtime.block_on(api.get(path)).ok()?;
        let lease: Value = serde_json::from_str(&text).ok()?;
        Some(lease["spec"].clone())
    }

    /// Waits until the ring lists every node, each with an acknowledgement.
    pub fn wait_until_joined(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status(0);
            let joined = status["ring"]["members"].as_object().is_some_and(|m| {
                m.len() == self.names.len() && m.values().all(|v| !v["ack"]["signs"].is_null())
            });
            if joined {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{status:#}\n{}",
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Who holds the Lease now.
    pub fn lease_holder(&self) -> Option<String> {
        self.lease_spec()?["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
    }

    /// The Lease's leaseTransitions: how many times another node took it.
    pub fn lease_transitions(&self) -> i64 {
        self.lease_spec()
            .and_then(|spec| spec["leaseTransitions"].as_i64())
            .unwrap_or(0)
    }

    /// The cluster API's request counts by verb and resource.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let url = format!("{}/counts", self.control);
        self.runtime
            .block_on(async { reqwest::get(&url).await.unwrap().json().await.unwrap() })
    }

    /// `keyrot ARGS -c PLAN-of-node-i`.
    pub fn keyrot(&self, i: usize, args: &[&str]) -> e2e::Run {
        let plan = self.plan_path(i).display().to_string();
        let mut all = args.to_vec();
        all.extend(["-c", &plan]);
        e2e::run_keyrot(&all)
    }

    /// `keyrot status --output json` from node `i` (the ring, the Lease, what waits).
    pub fn status(&self, i: usize) -> Value {
        let run = self.keyrot(i, &["status", "--output", "json"]);
        assert!(run.success, "keyrot status failed: {run:?}");
        serde_json::from_str(&run.stdout).unwrap()
    }

    /// Waits until the ring's `lastCompleted` differs from `before` and the cluster is quiet: no
    /// rotation, no restart turn, nobody holding the Lease.
    pub fn wait_for_completion(&self, before: &Value, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(0);
            let ring = &status["ring"];
            // Quiet: the leader released the Lease after completing (its next step).
            if ring["lastCompleted"] != *before
                && ring["rotation"].is_null()
                && ring["turn"].is_null()
                && status["lease"]["holder"].is_null()
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no completed rotation within {timeout:?}: {}\n{}",
                serde_json::to_string_pretty(&status).unwrap(),
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of every node's keyrot, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for (i, name) in self.names.iter().enumerate() {
            let log = self.daemon_log(i);
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {name}\n"));
            for line in &lines[lines.len().saturating_sub(25)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The kids node `i`'s bundle file holds.
    pub fn bundle_kids(&self, i: usize) -> Vec<String> {
        let path = self.path(&format!("{}/pki/sa.pub", self.names[i]));
        keyrot::keys::reader::read_file(&path)
            .unwrap()
            .keys()
            .map(|k| k.kid().to_string())
            .collect()
    }

    pub fn published_kids(&self) -> Vec<String> {
        let jwks = std::fs::read_to_string(self.path("www/e2e/openid/v1/jwks")).unwrap();
        e2e::jwks_kids(&jwks)
    }

    /// Mints a token on each node in turn and reviews it on every node (through restarts), and
    /// at the issuer's published documents, until stopped.
    pub fn start_traffic(&self) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let apis: Vec<Api> = (0..self.nodes.len())
            .map(|i| Api::at(&self.apiserver_url(i), &self.ca_pem()))
            .collect();
        let front = Api::at(&self.front, &self.ca_pem());
        let sts = Sts::new(&self.issuer, AUDIENCE, &self.ca_pem()).unwrap();
        let log = Arc::new(Mutex::new(TrafficLog::default()));
        let task = self.runtime.spawn(traffic(
            apis,
            front,
            sts,
            self.grace,
            stop.clone(),
            log.clone(),
        ));
        Traffic { stop, task, log }
    }

    pub fn stop_traffic(&self, traffic: Traffic) -> TrafficLog {
        traffic.stop.store(true, Ordering::SeqCst);
        self.runtime.block_on(traffic.task).unwrap();
        std::mem::take(&mut *traffic.log.lock().unwrap())
    }
}

impl Drop for HaWorld {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.daemon.take();
            if let Some(mut apiserver) = node.apiserver.take() {
                let _ = apiserver.kill();
                let _ = apiserver.wait();
            }
        }
        let _ = self.cluster.kill();
        let _ = self.cluster.wait();
        self.static_server.take();
    }
}

/// What the client saw.
#[derive(Debug, Default)]
pub struct TrafficLog {
    /// Tokens minted, by the kid that signed them.
    pub minted: BTreeMap<String, usize>,
    /// TokenReviews that authenticated a token.
    pub accepted: usize,
    /// TokenReviews (or the STS-like verifier) that rejected a token: each is a failure.
    pub rejected: Vec<String>,
    /// TokenRequests and TokenReviews that got no answer (an apiserver restarting or down):
    /// retried, no failure.
    pub unanswered: usize,
    /// Tokens verified at the published documents.
    pub verified_upstream: usize,
    /// Reviews, on every node, of tokens minted 1.5 s earlier (after restarts in between).
    pub old_token_reviews: usize,
}

pub struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<TrafficLog>>,
}

/// Reviews `token` on `api`, waiting out a restart (up to 20 s): `None` when the node never
/// answered (down), else the verdict.
async fn review(api: &Api, token: &str, unanswered: &AtomicUsize) -> Option<Result<(), String>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match api.review(token).await {
            Ok(verdict) => return Some(verdict),
            Err(CallError::Answered(e)) => return Some(Err(format!("TokenReview answered {e}"))),
            Err(CallError::Refused(_)) if Instant::now() >= deadline => return None,
            Err(CallError::Refused(_)) => {
                unanswered.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn traffic(
    apis: Vec<Api>,
    front: Api,
    sts: Sts,
    grace: Duration,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<TrafficLog>>,
) {
    let unanswered = Arc::new(AtomicUsize::new(0));
    let mut ticks = tokio::time::interval(MINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = Vec::new();
    // Tokens minted in the last seconds: every tenth tick one minted about 1.5 s before is
    // reviewed again on every node. Its key stopped signing after it was minted, so until
    // `grace` (the plan's retireAfter) has passed since it was minted no node may reject it.
    let mut recent: std::collections::VecDeque<(Instant, String)> = Default::default();
    for tick in 0usize.. {
        ticks.tick().await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let from = tick % apis.len();
        // Every fifth token through the load balancer, as workloads get theirs.
        let minter = if tick % 5 == 4 { &front } else { &apis[from] };
        let token = match minter.token().await {
            Ok(token) => token,
            Err(CallError::Refused(_)) => {
                unanswered.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            // The load balancer's 502 or 503: the node it chose went away mid-request.
            Err(CallError::Answered(e)) if e.starts_with("502") || e.starts_with("503") => {
                unanswered.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Err(CallError::Answered(e)) => {
                log.lock()
                    .unwrap()
                    .rejected
                    .push(format!("TokenRequest: {e}"));
                continue;
            }
        };
        let kid = keyrot::adapters::probe::token_kid(&token).unwrap();
        *log.lock().unwrap().minted.entry(kid.clone()).or_default() += 1;
        recent.push_back((Instant::now(), token.clone()));
        while recent
            .front()
            .is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(3))
        {
            recent.pop_front();
        }
        let again = recent
            .iter()
            .find(|(at, _)| at.elapsed() >= Duration::from_millis(1500))
            .filter(|_| tick % 10 == 0)
            .cloned();
        let (apis, sts, log, unanswered) =
            (apis.clone(), sts.clone(), log.clone(), unanswered.clone());
        tasks.push(tokio::spawn(async move {
            for (j, api) in apis.iter().enumerate() {
                match review(api, &token, &unanswered).await {
                    Some(Ok(())) => log.lock().unwrap().accepted += 1,
                    Some(Err(e)) => log
                        .lock()
                        .unwrap()
                        .rejected
                        .push(format!("cp-{} rejected a token of {kid}: {e}", j + 1)),
                    None => {}
                }
            }
            match sts.verify(&token).await {
                Ok(_) => log.lock().unwrap().verified_upstream += 1,
                Err(e) => log.lock().unwrap().rejected.push(format!(
                    "the published documents rejected a token of {kid}: {e}"
                )),
            }
            if let Some((minted_at, old)) = again {
                for (j, api) in apis.iter().enumerate() {
                    let verdict = review(api, &old, &unanswered).await;
                    // Past the grace a rejection is allowed: the key may have retired.
                    let within_grace = minted_at.elapsed() < grace;
                    match verdict {
                        Some(Ok(())) => log.lock().unwrap().old_token_reviews += 1,
                        Some(Err(e)) if within_grace => log.lock().unwrap().rejected.push(format!(
                            "cp-{} rejected a token minted {:?} ago: {e}",
                            j + 1,
                            minted_at.elapsed()
                        )),
                        Some(Err(_)) | None => {}
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    log.lock().unwrap().unanswered = unanswered.load(Ordering::SeqCst);
}
