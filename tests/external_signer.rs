//! keyrot's external JWT signer, seen the way kube-apiserver's plugin sees it (both packages),
//! and a whole rotation in signer mode with no restart.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::daemon::{Sandbox, wait_for_completed_rotation, wait_until};
use common::kube_plugin::{PACKAGES, Package, Plugin};
use keyrot::signer::Signer;
use keyrot::signer::keyset::{KeyFiles, KeySetError, Sources};

const RSA_PRIVATE: &str = "rsa-pkcs1-private.pem";
const RSA_PUBLIC: &str = "rsa-spki-public.pem";
const P256_PRIVATE: &str = "ec-p256-sec1-private.pem";
const P256_PUBLIC: &str = "ec-p256-spki-public.pem";
const P384_PRIVATE: &str = "ec-p384-sec1-private.pem";

/// A cluster's key files from the fixtures, and a plan that serves them through the signer.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    /// `bundle`: public fixtures in order; `signing`: the private fixture the signing file holds.
    fn new(bundle: &[&str], signing: &str) -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(files.path("pki")).unwrap();
        files.set_bundle(bundle);
        files.set_signing(signing);
        files
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn socket(&self) -> PathBuf {
        self.path("signer.sock")
    }

    /// Replaces a file by rename, as keyrot's writes do.
    fn replace(&self, rel: &str, contents: &[u8]) {
        let staged = self.path(&format!("{rel}.new"));
        std::fs::write(&staged, contents).unwrap();
        std::fs::rename(staged, self.path(rel)).unwrap();
    }

    fn set_bundle(&self, fixtures: &[&str]) {
        let text: String = fixtures
            .iter()
            .map(|f| common::read_string(&common::pem(f)))
            .collect();
        self.replace("pki/sa.pub", text.as_bytes());
    }

    fn set_signing(&self, fixture: &str) {
        self.replace(
            "pki/sa.key",
            common::read_string(&common::pem(fixture)).as_bytes(),
        );
    }

    fn plan(&self, extra: &str) -> keyrot::plan::Plan {
        let path = self.path("plan.yaml");
        let text = format!(
            "cluster: test\nflavour: custom\ntestPlan: true\nstateDir: state\nprivateKeyDir: keys\n\
             apiserver:\n  verificationKeyFile: pki/sa.pub\n  signingKeyFile: pki/sa.key\n  \
             restart: externalSigner\n\
             probe: none\nissuer:\n  url: https://issuer.example.com/test\n\
             targets:\n  - name: www\n    localDirectory: www\n    cacheMaxAge: 1s\n\
             signer:\n  socket: signer.sock\n  refreshHint: 2s\n  rotationRefreshHint: 1s\n  \
             maxTokenExpiration: 1h\n{extra}"
        );
        std::fs::write(&path, &text).unwrap();
        keyrot::plan::parse(&path, &text).unwrap()
    }

    fn start(&self, extra: &str) -> Signer {
        Signer::start(&self.plan(extra))
            .unwrap()
            .expect("the plan has a signer")
    }
}

fn claims() -> serde_json::Value {
    serde_json::json!({
        "iss": "https://issuer.example.com/test",
        "sub": "system:serviceaccount:default:probe",
        "aud": ["sts.example.com"],
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    })
}

#[test]
fn both_packages_get_answers_that_pass_kube_apiservers_checks() {
    for (signing, alg, signing_public) in [
        (RSA_PRIVATE, "RS256", RSA_PUBLIC),
        (P256_PRIVATE, "ES256", P256_PUBLIC),
    ] {
        let files = Files::new(&[RSA_PUBLIC, P256_PUBLIC], signing);
        let _signer = files.start("");
        let expected_kids = [
            common::openssl_kid(&common::pem(RSA_PUBLIC), true),
            common::openssl_kid(&common::pem(P256_PUBLIC), true),
        ];
        let signing_kid = common::openssl_kid(&common::pem(signing_public), true);
        for package in PACKAGES {
            let mut plugin = Plugin::start(&files.socket(), package).unwrap();
            let set = plugin.cache.clone().unwrap();
            assert_eq!(
                set.kids(),
                expected_kids,
                "{package:?}: kube's kids, bundle order"
            );
            assert!(set.keys.iter().all(|k| !k.exclude), "{package:?}");
            assert_eq!(
                set.refresh_hint,
                Duration::from_secs(2),
                "{package:?}: no rotation"
            );
            assert_eq!(plugin.max_token_expiration().unwrap(), 3600, "{package:?}");
            let token = plugin.mint(&claims()).unwrap();
            let header = token.split('.').next().unwrap();
            let (header_alg, kid) = common::kube_plugin::strict_header(header).unwrap();
            assert_eq!(
                (header_alg.as_str(), kid.as_str()),
                (alg, signing_kid.as_str())
            );
            assert_eq!(plugin.verify(&token).unwrap(), signing_kid, "{package:?}");
            // The payload travels untouched: the token's middle segment is what was sent.
            let payload = token.split('.').nth(1).unwrap();
            let decoded: serde_json::Value = serde_json::from_slice(
                &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(decoded, claims());
        }
    }
}

#[test]
fn a_changed_set_is_fetched_after_the_refresh_hint_and_an_unknown_kid_fetches_at_once() {
    let files = Files::new(&[RSA_PUBLIC], RSA_PRIVATE);
    let sources = Sources::of(&files.plan(""));
    let _signer = files.start("");
    for package in PACKAGES {
        // Each package on a fresh cluster state: the set holds the RSA key only.
        files.set_bundle(&[RSA_PUBLIC]);
        files.set_signing(RSA_PRIVATE);
        keyrot::signer::client::wait_until_serving(
            &files.socket(),
            &sources,
            Duration::from_secs(30),
        )
        .unwrap();
        let mut stale = Plugin::start(&files.socket(), package).unwrap();
        let mut plugin = Plugin::start(&files.socket(), package).unwrap();
        let wait = |plugin: &mut Plugin, want: usize| {
            // As kube: fetch again once the hint has passed, keep the last good set meanwhile.
            wait_until(Duration::from_secs(30), || {
                std::thread::sleep(plugin.cache.as_ref().unwrap().refresh_hint);
                plugin.fetch_keys().map(|s| s.keys.len()).unwrap_or(0) == want
            })
        };
        let first = plugin.cache.clone().unwrap();
        assert_eq!(first.keys.len(), 1, "{package:?}");

        files.set_bundle(&[RSA_PUBLIC, P256_PUBLIC]);
        assert!(
            wait(&mut plugin, 2),
            "{package:?}: the staged key is listed"
        );
        let staged = plugin.cache.clone().unwrap();
        assert!(staged.data_timestamp > first.data_timestamp, "{package:?}");

        // Promotion, and the bundle rewritten with the same keys: the listed set is the same,
        // so its timestamp is too; only the signing key changes.
        files.set_bundle(&[RSA_PUBLIC, P256_PUBLIC]);
        files.set_signing(P256_PRIVATE);
        let new_kid = common::openssl_kid(&common::pem(P256_PUBLIC), true);
        let mut token = String::new();
        assert!(
            wait_until(Duration::from_secs(30), || {
                token = plugin.mint(&claims()).unwrap();
                plugin.verify(&token).unwrap() == new_kid
            }),
            "{package:?}: the promoted key signs"
        );
        assert_eq!(plugin.fetch_keys().unwrap(), staged, "{package:?}");

        // A plugin that has not refreshed meets the new kid and fetches once, at once.
        let before = stale.fetches;
        assert_eq!(stale.verify(&token).unwrap(), new_kid, "{package:?}");
        assert_eq!(stale.fetches, before + 1, "{package:?}");
    }
}

#[test]
fn a_signing_key_missing_from_the_bundle_never_signs_and_the_last_good_set_stays() {
    let files = Files::new(&[RSA_PUBLIC], RSA_PRIVATE);
    // Refused before the socket exists: no apiserver ever meets this set.
    files.set_signing(P256_PRIVATE);
    let plan = files.plan("");
    match Signer::start(&plan) {
        Err(keyrot::signer::SignerError::Keys(KeySetError::ActiveNotListed { kid, .. })) => {
            assert_eq!(kid, common::openssl_kid(&common::pem(P256_PUBLIC), true))
        }
        other => panic!(
            "started with an unlisted signing key: {:?}",
            other.map(|_| ())
        ),
    }
    assert!(!files.socket().exists());

    files.set_signing(RSA_PRIVATE);
    let _signer = files.start("");
    let mut plugin = Plugin::start(&files.socket(), Package::V1).unwrap();
    let rsa_kid = common::openssl_kid(&common::pem(RSA_PUBLIC), true);
    files.set_signing(P256_PRIVATE);
    // keyrot's own check says what is wrong, and a person is needed.
    let sources = Sources::of(&plan);
    assert!(matches!(
        keyrot::signer::client::wait_until_serving(
            &files.socket(),
            &sources,
            Duration::from_secs(1)
        ),
        Err(keyrot::signer::client::ServingError::Keys(
            KeySetError::ActiveNotListed { .. }
        ))
    ));
    // Over many of the watcher's looks, every token is still the listed key's.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let token = plugin.mint(&claims()).unwrap();
        assert_eq!(plugin.verify(&token).unwrap(), rsa_kid);
    }
    assert_eq!(plugin.fetch_keys().unwrap().kids(), [rsa_kid.as_str()]);
}

#[test]
fn the_controller_managers_own_key_is_listed_verify_only_and_never_signs() {
    let files = Files::new(&[RSA_PUBLIC], RSA_PRIVATE);
    std::fs::copy(common::pem(P384_PRIVATE), files.path("pki/kcm.key")).unwrap();
    let _signer =
        files.start("controllerManager:\n  privateKeyFile: pki/kcm.key\n  restart: none\n");
    let mut plugin = Plugin::start(&files.socket(), Package::V1alpha1).unwrap();
    let set = plugin.cache.clone().unwrap();
    let kcm_kid = common::openssl_kid(&common::pem(P384_PRIVATE), false);
    let rsa_kid = common::openssl_kid(&common::pem(RSA_PUBLIC), true);
    let listed: Vec<(&str, bool)> = set
        .keys
        .iter()
        .map(|k| (k.kid.as_str(), k.exclude))
        .collect();
    assert_eq!(
        listed,
        [(rsa_kid.as_str(), false), (kcm_kid.as_str(), true)]
    );
    let token = plugin.mint(&claims()).unwrap();
    assert_eq!(plugin.verify(&token).unwrap(), rsa_kid);
}

/// Connects as `uid`:`gid`, sends an HTTP/2 preface and SETTINGS frame, and returns how many
/// bytes the server answered before closing or 5 s passed.
fn bytes_answered_to(socket: &Path, uid: u32, gid: u32) -> usize {
    // A refused peer sees the connection closed: the send fails or the read returns nothing.
    let client = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
try:
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    print(len(s.recv(4096)))
except (BrokenPipeError, ConnectionResetError, socket.timeout):
    print(0)
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", client, socket.to_str().unwrap()])
        .uid(uid)
        .gid(gid)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_socket_is_0600_and_refuses_peers_of_another_uid() {
    let files = Files::new(&[RSA_PUBLIC], RSA_PRIVATE);
    let _signer = files.start("");
    let meta = std::fs::metadata(files.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    // Made reachable on purpose, so that only the peer check stands in the way.
    std::fs::set_permissions(files.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(files.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(bytes_answered_to(&files.socket(), 65534, 65534), 0);
    // The same bytes from root get the server's SETTINGS frame.
    assert!(bytes_answered_to(&files.socket(), 0, 0) > 0);
    assert!(Plugin::start(&files.socket(), Package::V1).is_ok());
}

#[test]
fn a_named_group_gets_a_0660_socket_and_is_answered() {
    let files = Files::new(&[RSA_PUBLIC], RSA_PRIVATE);
    let _signer = files.start("");
    drop(_signer);
    assert!(
        !files.socket().exists(),
        "a stopped signer removes its socket"
    );
    let plan = files.plan("");
    let mut with_group = plan.clone();
    with_group.signer.as_mut().unwrap().group = Some(keyrot::plan::SignerGroup {
        name: "65534".into(),
        gid: 65534,
    });
    let _signer = Signer::start(&with_group).unwrap().unwrap();
    let meta = std::fs::metadata(files.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), 65534);
    std::fs::set_permissions(files.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(bytes_answered_to(&files.socket(), 65534, 65534) > 0);
    // Another uid outside the group is still refused.
    std::fs::set_permissions(files.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(bytes_answered_to(&files.socket(), 65533, 65533), 0);
}

#[test]
fn signer_plan_problems_name_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.yaml");
    let base = "cluster: test\nflavour: custom\nstateDir: state\n\
                apiserver:\n  verificationKeyFile: pki/sa.pub\n  signingKeyFile: pki/sa.key\n  \
                restart: externalSigner\n\
                probe: none\nissuer:\n  url: https://issuer.example.com/test\n\
                targets:\n  - name: www\n    localDirectory: www\n    cacheMaxAge: 1s\n";
    let problems = |extra: &str| {
        let text = format!("{base}{extra}");
        keyrot::plan::parse(&path, &text).unwrap_err().to_string()
    };
    let file = path.display().to_string();
    let without = problems("");
    assert!(
        without.contains(&format!(
            "{file}:7:12: apiserver.restart: externalSigner needs a signer section"
        )),
        "{without}"
    );
    let short = problems("signer:\n  socket: /run/keyrot/signer.sock\n  maxTokenExpiration: 5m\n");
    assert!(
        short.contains(&format!(
            "{file}:17:23: signer.maxTokenExpiration: 5m is shorter than 10m"
        )),
        "{short}"
    );
    // Outside a test plan the old key must outlive the longest token.
    let long = problems("signer:\n  socket: /run/keyrot/signer.sock\n  maxTokenExpiration: 48h\n");
    assert!(
        long.contains("signer.maxTokenExpiration: 2d is longer than timings.retireAfter 1d")
            || long
                .contains("signer.maxTokenExpiration: 48h is longer than timings.retireAfter 24h"),
        "{long}"
    );
    let hints =
        problems("signer:\n  socket: s.sock\n  refreshHint: 10s\n  rotationRefreshHint: 1m\n");
    assert!(
        hints.contains(&format!(
            "{file}:18:24: signer.rotationRefreshHint: 1m is longer"
        )),
        "{hints}"
    );
    let missing = problems("signer:\n  group: root\n");
    assert!(missing.contains("signer.socket: required"), "{missing}");
    let long_path = format!("signer:\n  socket: /{}/s.sock\n", "d".repeat(120));
    assert!(problems(&long_path).contains("a unix socket path holds at most 107"));
    let group = problems("signer:\n  socket: s.sock\n  group: no-such-group-here\n");
    assert!(group.contains("no group \"no-such-group-here\""), "{group}");
}

/// A whole rotation run by the daemon in signer mode: no process restarts, the signer never
/// restarted, and a plugin minting and verifying throughout sees no failure.
#[test]
fn a_whole_rotation_in_signer_mode_needs_no_restart_and_breaks_no_token() {
    let sandbox = Sandbox::with_restart(
        "externalSigner",
        "signer:\n  socket: signer.sock\n  refreshHint: 2s\n  rotationRefreshHint: 1s\n  \
         maxTokenExpiration: 10m\n\
         timings: { publishSettle: 1s, retireAfter: 2s, gateTimeout: 20s, retryBackoff: 1s, retryBackoffMax: 2s }\n",
    );
    let socket = sandbox.dir.path().join("signer.sock");
    let daemon = sandbox.start(&[]);
    daemon.wait_for_log("waiting [schedule]", Duration::from_secs(10));
    let socket_inode = std::fs::metadata(&socket).unwrap().ino();

    let stop = Arc::new(AtomicBool::new(false));
    let minting = std::thread::spawn({
        let stop = stop.clone();
        let socket = socket.clone();
        move || {
            let mut plugin = Plugin::start(&socket, Package::V1).unwrap();
            let first = plugin.mint(&claims()).unwrap();
            let old_kid = plugin.verify(&first).unwrap();
            let mut last_fetch = Instant::now();
            let mut kids: Vec<String> = vec![old_kid.clone()];
            let mut failures = Vec::new();
            let mut old_left = false;
            let mut minted = 0;
            while !stop.load(Ordering::SeqCst) {
                if last_fetch.elapsed() >= plugin.cache.as_ref().unwrap().refresh_hint {
                    if let Err(e) = plugin.fetch_keys() {
                        failures.push(e);
                    }
                    last_fetch = Instant::now();
                }
                let listed = plugin
                    .cache
                    .as_ref()
                    .unwrap()
                    .kids()
                    .contains(&old_kid.as_str());
                if !listed {
                    old_left = true;
                }
                match plugin.mint(&claims()).and_then(|t| plugin.verify(&t)) {
                    Ok(kid) => {
                        minted += 1;
                        if kids.last() != Some(&kid) {
                            kids.push(kid);
                        }
                    }
                    Err(e) => failures.push(e),
                }
                // The token from before the rotation verifies for as long as its key is listed.
                if listed && let Err(e) = plugin.verify(&first) {
                    failures.push(format!("the first token: {e}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (kids, failures, old_left, minted)
        }
    });

    common::keyrot_ok(["rotate", "-c", sandbox.plan_arg()]);
    let state = wait_for_completed_rotation(&sandbox, &daemon, Duration::from_secs(60));
    // Let the plugin see the retired set once more.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let (kids, failures, old_left, minted) = minting.join().unwrap();
    println!("signer-mode rotation: {minted} tokens minted and verified, kids {kids:?}");
    assert!(failures.is_empty(), "{failures:?}\n{}", daemon.log());
    assert_eq!(kids.len(), 2, "the kid switches exactly once: {kids:?}");
    assert!(old_left, "the old key left the set after retirement");
    let signing = state
        .keys
        .iter()
        .find(|k| k.role == keyrot::state::Role::Active)
        .unwrap();
    assert_eq!(kids[1], signing.kid);
    assert_eq!(std::fs::metadata(&socket).unwrap().ino(), socket_inode);
    assert!(
        !daemon.log().contains("signer: key files not served"),
        "{}",
        daemon.log()
    );
    daemon.stop();
}

#[test]
fn key_files_are_read_as_the_file_mode_apiserver_reads_them() {
    // Duplicates once, in flag order: the bundle, then the extra files.
    let files = Files::new(&[RSA_PUBLIC, P256_PUBLIC, RSA_PUBLIC], P256_PRIVATE);
    std::fs::copy(common::pem(P384_PRIVATE), files.path("pki/extra.pem")).unwrap();
    let plan = files.plan("");
    let mut sources = Sources::of(&plan);
    sources.verification.push(files.path("pki/extra.pem"));
    let read = KeyFiles::read(&sources).unwrap();
    let kids: Vec<&str> = read.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(
        kids,
        [
            common::openssl_kid(&common::pem(RSA_PUBLIC), true),
            common::openssl_kid(&common::pem(P256_PUBLIC), true),
            common::openssl_kid(&common::pem(P384_PRIVATE), false),
        ]
    );
    assert!(read.keys.iter().all(|k| !k.verify_only));
    assert!(!read.rotating, "no state: no rotation");
}

#[test]
fn the_signer_serves_while_keyrots_state_file_is_refused() {
    // The apiserver cannot mint a token without its signer: a state file keyrot refuses (a
    // person must repair it) must not take the signer down with it.
    let sandbox = Sandbox::with_restart(
        "externalSigner",
        "signer:\n  socket: signer.sock\n  refreshHint: 2s\n  rotationRefreshHint: 1s\n  \
         maxTokenExpiration: 10m\n",
    );
    let first = sandbox.start(&[]);
    first.wait_for_log("waiting [schedule]", Duration::from_secs(10));
    first.stop();
    let state_path = sandbox.state_dir().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let key = state["keys"][0].clone();
    state["keys"].as_array_mut().unwrap().push(key);
    std::fs::write(&state_path, serde_json::to_string_pretty(&state).unwrap()).unwrap();

    let daemon = sandbox.start(&[]);
    daemon.wait_for_log(
        "not acting until the state file is repaired",
        Duration::from_secs(10),
    );
    let socket = sandbox.dir.path().join("signer.sock");
    let mut plugin = Plugin::start(&socket, Package::V1).unwrap();
    let token = plugin.mint(&claims()).unwrap();
    let kid = plugin.verify(&token).unwrap();
    assert!(
        plugin
            .cache
            .as_ref()
            .unwrap()
            .kids()
            .contains(&kid.as_str()),
        "the token's key is in the set the signer lists"
    );
    daemon.stop();
}
