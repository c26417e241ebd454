//! A `keyrot run` child process for the daemon tests: a sandbox plan, the log it writes, signals.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyrot::state::{State, StateStore};

/// A sandbox-like plan in a temporary directory, with waits of a second; `extra` is appended.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub plan: PathBuf,
}

impl Sandbox {
    /// Writes the plan and runs `keyrot init`, so the cluster has a first key set.
    pub fn new(extra: &str) -> Sandbox {
        Sandbox::with_restart("none", extra)
    }

    /// As [`Sandbox::new`], with the apiserver's `restart` set to `restart`.
    pub fn with_restart(restart: &str, extra: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.yaml");
        let sandbox = Sandbox { dir, plan };
        sandbox.write_plan_with(restart, extra);
        super::keyrot_ok(["init", "-c", sandbox.plan_arg()]);
        sandbox
    }

    /// Replaces the plan with the base plan plus `extra`.
    pub fn write_plan(&self, extra: &str) {
        self.write_plan_with("none", extra);
    }

    fn write_plan_with(&self, restart: &str, extra: &str) {
        let text = format!(
            "cluster: test\nflavour: custom\ntestPlan: true\nkey: {{ algorithm: ES256 }}\n\
             stateDir: state\nprivateKeyDir: keys\n\
             apiserver:\n  verificationKeyFile: pki/sa.pub\n  signingKeyFile: pki/sa.key\n  restart: {restart}\n\
             probe: none\nissuer:\n  url: https://issuer.example.com/test\n\
             targets:\n  - name: www\n    localDirectory: www\n    cacheMaxAge: 1s\n\
             {extra}"
        );
        std::fs::write(&self.plan, text).unwrap();
    }

    pub fn plan_arg(&self) -> &str {
        self.plan.to_str().unwrap()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn state(&self) -> State {
        StateStore::new(self.state_dir())
            .read()
            .unwrap()
            .expect("a state file")
    }

    /// Starts `keyrot run` on this plan with extra environment variables.
    pub fn start(&self, env: &[(&str, &str)]) -> Daemon {
        self.start_with(&[], env)
    }

    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyrot"))
            .args(["run", "-c", self.plan_arg()])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyrot run starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon {
            child,
            log,
            exited: None,
        }
    }
}

/// A running `keyrot run`; killed on drop if a test failed before stopping it.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    exited: Option<ExitStatus>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far, one line per entry.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `text`; panics with the log after `timeout`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        let found = wait_until(timeout, || self.log().contains(text));
        assert!(
            found,
            "no log line with {text:?} within {timeout:?}:\n{}",
            self.log()
        );
    }

    /// How many log lines contain `text`.
    pub fn count_log(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Sends a signal by name (`TERM`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} failed");
    }

    pub fn is_running(&mut self) -> bool {
        self.exited.is_none() && self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit; panics after `timeout`. Returns how it exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.exited = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "keyrot run did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for exit 0.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(5));
        assert_eq!(status.code(), Some(0), "{}", self.log());
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; says which.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the sandbox's state records a completed rotation; panics after `timeout`.
pub fn wait_for_completed_rotation(sandbox: &Sandbox, daemon: &Daemon, timeout: Duration) -> State {
    let done = wait_until(timeout, || {
        let state = sandbox.state();
        state.rotation.is_none() && state.last_rotation_completed_at.is_some()
    });
    assert!(
        done,
        "no completed rotation within {timeout:?}:\n{}",
        daemon.log()
    );
    sandbox.state()
}

/// A 6-field cron line (seconds first) that fires once a day, `ahead` from now (UTC), and that
/// time.
pub fn cron_in(ahead: Duration) -> (String, chrono::DateTime<chrono::Utc>) {
    use chrono::{SubsecRound, Timelike};
    let at = (chrono::Utc::now() + ahead).trunc_subsecs(0);
    let line = format!("{} {} {} * * *", at.second(), at.minute(), at.hour());
    (line, at)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port; the body of a 200 response.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_string()
}
