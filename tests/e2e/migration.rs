//! Issuer migrations end to end: a cluster on a kubeadm manifest whose plan moves its issuer to
//! a path of the HTTPS static server, and what the tests read back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Run, Settings, World};

/// Exit status of a run that waits (grace period, or a person).
pub const WAITING: i32 = 3;
pub const GRACE: Duration = Duration::from_secs(5);
pub const KUBEADM_FLAGS: &str = "{ kubeadmManifest: manifests/kube-apiserver.yaml }";
/// The manifest every migrating world starts with.
pub const FIXTURE: &str = include_str!("../data/issuer/kubeadm-kube-apiserver.yaml");

/// A cluster on the kubeadm manifest, its plan migrating to `{static server}/{path}` with the
/// editor `flags`, dropping the old issuer after the grace period when `drop_old`; `extra` is
/// appended to the `issuerMigration` section.
pub fn migrating_world(path: &str, flags: &str, drop_old: bool, extra: &str) -> (World, String) {
    let world = World::start(Settings {
        kubeadm_manifest: true,
        ..Settings::default()
    });
    let public = world.issuer.rsplit_once('/').unwrap().0.to_string();
    let new_issuer = format!("{public}/{path}");
    let section = format!(
        "issuerMigration:
  newIssuer: {new_issuer}
  flags: {flags}
  gracePeriod: {}s
  dropOldIssuer: {drop_old}
  publicCaFile: tls/ca.crt
{extra}",
        GRACE.as_secs()
    );
    let mut plan = world.plan_yaml();
    plan.push_str(&section);
    std::fs::write(world.plan_path(), plan).unwrap();
    (world, new_issuer)
}

pub fn manifest(world: &World) -> String {
    std::fs::read_to_string(world.path("manifests/kube-apiserver.yaml")).unwrap()
}

/// The issuer flags of the manifest's command list, in order.
pub fn issuer_flags(world: &World) -> Vec<String> {
    manifest(world)
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("- --"))
        .filter(|f| {
            [
                "service-account-issuer=",
                "service-account-jwks-uri=",
                "api-audiences=",
            ]
            .iter()
            .any(|p| f.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

pub fn token_iss(token: &str) -> String {
    keyrot::adapters::probe::token_issuer(token).unwrap()
}

/// Every file under the world's directory (the stand-in's log aside), with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.ends_with("standin.log") {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

pub fn assert_code(run: &Run, code: i32) {
    assert_eq!(run.code, Some(code), "{run:?}");
}

/// What a person does by hand: writes the manifest, restarts kube-apiserver (SIGHUP to the
/// stand-in) and waits until the stand-in says it issues as `issuer`.
pub fn edit_by_hand_and_restart(world: &World, manifest: &str, issuer: &str) {
    let restarts = world.standin_log().matches("issuing as").count();
    std::fs::write(world.path("manifests/kube-apiserver.yaml"), manifest).unwrap();
    let pid = std::fs::read_to_string(world.path("standin.pid")).unwrap();
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .unwrap();
    assert!(hangup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = world.standin_log();
        let last = log.lines().rfind(|l| l.contains("issuing as"));
        if log.matches("issuing as").count() > restarts
            && last.is_some_and(|l| l.contains(&format!("issuing as {issuer}")))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Another control-plane node: a second stand-in on the same key files, issuing with the first
/// of `issuers` and accepting all of them. Killed when dropped.
pub struct OtherApiserver {
    child: std::process::Child,
    pub url: String,
}

impl OtherApiserver {
    pub fn start(world: &World, issuers: &[&str]) -> OtherApiserver {
        use std::io::BufRead;
        let arg = |rel: &str| world.path(rel).display().to_string();
        let mut command = std::process::Command::new(super::standin_binary());
        command
            .args(["--service-account-key-file", &arg("pki/sa.pub")])
            .args(["--service-account-signing-key-file", &arg("pki/sa.key")])
            .args(["--tls-dir", &arg("tls")])
            .args(["--listen", "127.0.0.1:0"]);
        for issuer in issuers {
            command.args(["--service-account-issuer", issuer]);
        }
        let mut child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the second stand-in did not start: {line:?}"));
        OtherApiserver {
            child,
            url: address.to_string(),
        }
    }
}

impl Drop for OtherApiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
