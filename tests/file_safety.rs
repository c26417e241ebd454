//! What root writes on a control-plane node: private key modes and owners, directory modes under
//! any umask, symlinks planted in targets, the key directory and the lock file, and plans that
//! would publish private files. Each test reproduces one problem in a scratch directory; the
//! suite runs as root (as CI does), since planting another user's file needs it.

mod common;

use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Run, keyrot, keyrot_ok, sandbox_plan};
use keyrot::adapters::KeyFiles;
use keyrot::adapters::key_files::KeyFilesOnDisk;

const NOBODY: u32 = 65534;

fn require_root() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "these tests plant files owned by other users: run the suite as root, as CI does"
    );
}

/// A sandbox-like cluster in a scratch directory: key files under `pki/`, state under
/// `state/`, keyrot's keys under `keys/`, one local target `www/`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        sandbox_plan(
            dir.path(),
            "publishSettle: 1s, retireAfter: 2s, gateTimeout: 5s, retryBackoff: 1s, retryBackoffMax: 2s",
        );
        Scratch { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn plan_path(&self) -> PathBuf {
        self.path("plan.yaml")
    }

    fn plan(&self) -> keyrot::plan::Plan {
        keyrot::plan::load(&self.plan_path()).unwrap()
    }

    fn keyrot(&self, command: &str) -> Run {
        keyrot([command, "-c", self.plan_path().to_str().unwrap()])
    }

    /// Runs `keyrot COMMAND -c PLAN` under `umask`.
    fn keyrot_under_umask(&self, umask: &str, command: &str) -> Run {
        let script = format!("umask {umask} && exec \"$0\" {command} -c \"$1\"");
        Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_keyrot")])
            .arg(self.plan_path())
            .output()
            .expect("sh runs")
            .into()
    }

    /// `keyrot init`: a first key set, recorded.
    fn init(&self) {
        keyrot_ok(["init", "-c", self.plan_path().to_str().unwrap()]);
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// A file owned by nobody, mode 0644, holding `bytes`: what a careless or hostile setup leaves.
fn nobody_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// The kid of keyrot's one private key after `init`.
fn adopted_kid(scratch: &Scratch) -> String {
    let plan = scratch.plan();
    let listing = keyrot::keys::private_dir::list(&plan.private_key_dir).unwrap();
    listing.keys[0].key.public().kid().to_string()
}

#[test]
fn promoted_private_key_is_not_written_through_a_symlinked_sa_key() {
    require_root();
    let scratch = Scratch::new();
    scratch.init();
    let kid = adopted_kid(&scratch);
    // sa.key becomes a symlink to a file of nobody's, mode 0644.
    let elsewhere = scratch.path("elsewhere.pem");
    nobody_file(&elsewhere, &fs::read(scratch.path("pki/sa.key")).unwrap());
    let before = fs::read(&elsewhere).unwrap();
    fs::remove_file(scratch.path("pki/sa.key")).unwrap();
    symlink(&elsewhere, scratch.path("pki/sa.key")).unwrap();

    let plan = scratch.plan();
    let err = KeyFilesOnDisk::new(&plan)
        .write_signing_key(&kid)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pki/sa.key is a symlink to"), "{err}");
    assert!(err.contains("elsewhere.pem"), "{err}");
    assert_eq!(fs::read(&elsewhere).unwrap(), before);
    assert_eq!(mode(&elsewhere), 0o644);
    assert!(
        fs::symlink_metadata(scratch.path("pki/sa.key"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn promoted_private_key_does_not_take_the_owner_of_the_file_it_replaces() {
    require_root();
    let scratch = Scratch::new();
    scratch.init();
    let kid = adopted_kid(&scratch);
    let sa_key = scratch.path("pki/sa.key");
    let before = fs::read(&sa_key).unwrap();
    std::os::unix::fs::chown(&sa_key, Some(NOBODY), Some(NOBODY)).unwrap();

    let plan = scratch.plan();
    let err = KeyFilesOnDisk::new(&plan)
        .write_signing_key(&kid)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sa.key is owned by uid 65534"), "{err}");
    assert_eq!(fs::read(&sa_key).unwrap(), before);
    assert_eq!(fs::metadata(&sa_key).unwrap().uid(), NOBODY);
}

#[test]
fn promoted_private_key_replacing_a_lax_root_file_comes_out_0600() {
    let scratch = Scratch::new();
    scratch.init();
    let kid = adopted_kid(&scratch);
    let sa_key = scratch.path("pki/sa.key");
    fs::set_permissions(&sa_key, Permissions::from_mode(0o6755)).unwrap();

    let plan = scratch.plan();
    KeyFilesOnDisk::new(&plan).write_signing_key(&kid).unwrap();
    let meta = fs::symlink_metadata(&sa_key).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
}

#[test]
fn init_under_umask_0_makes_no_world_writable_directory() {
    let scratch = Scratch::new();
    let run = scratch.keyrot_under_umask("000", "init");
    assert!(run.success, "{run:?}");
    assert_eq!(
        mode(&scratch.path("pki")),
        0o700,
        "the signing key's directory"
    );
    assert_eq!(mode(&scratch.path("pki/sa.key")), 0o600);
    assert_eq!(mode(&scratch.path("pki/sa.pub")), 0o644);
    assert_eq!(mode(&scratch.path("state")), 0o700);
    assert_eq!(mode(&scratch.path("keys")), 0o700);
    for file in fs::read_dir(scratch.path("keys")).unwrap() {
        assert_eq!(mode(&file.unwrap().path()), 0o600);
    }
}

#[test]
fn documents_published_under_umask_0077_are_readable_by_the_web_server() {
    let scratch = Scratch::new();
    scratch.init();
    fs::remove_dir_all(scratch.path("www")).ok();
    let run = scratch.keyrot_under_umask("077", "publish");
    assert!(run.success, "{run:?}");
    for dir in ["www", "www/.well-known", "www/openid", "www/openid/v1"] {
        assert_eq!(mode(&scratch.path(dir)), 0o755, "{dir}");
    }
    for doc in ["www/.well-known/openid-configuration", "www/openid/v1/jwks"] {
        assert_eq!(mode(&scratch.path(doc)), 0o644, "{doc}");
    }
    let run = scratch.keyrot_under_umask("000", "publish");
    assert!(run.success, "{run:?}");
    fs::remove_dir_all(scratch.path("www")).unwrap();
    let run = scratch.keyrot_under_umask("000", "publish");
    assert!(run.success, "{run:?}");
    assert_eq!(
        mode(&scratch.path("www/openid")),
        0o755,
        "not 0777 under umask 0"
    );
}

#[test]
fn symlinked_well_known_is_refused_and_nothing_is_written_where_it_points() {
    let scratch = Scratch::new();
    scratch.init();
    fs::remove_dir_all(scratch.path("www")).ok();
    fs::create_dir(scratch.path("www")).unwrap();
    let elsewhere = scratch.path("etc-elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, scratch.path("www/.well-known")).unwrap();

    let run = scratch.keyrot("publish");
    assert!(!run.success, "{run:?}");
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output.contains("www/.well-known is a symlink to"),
        "{output}"
    );
    assert!(output.contains("etc-elsewhere"), "{output}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn symlinked_document_is_refused_and_its_target_keeps_bytes_owner_and_mode() {
    require_root();
    let scratch = Scratch::new();
    scratch.init();
    keyrot_ok(["publish", "-c", scratch.plan_path().to_str().unwrap()]);
    let jwks = scratch.path("www/openid/v1/jwks");
    let elsewhere = scratch.path("someone-elses-file");
    nobody_file(&elsewhere, b"not a jwks");
    fs::remove_file(&jwks).unwrap();
    symlink(&elsewhere, &jwks).unwrap();

    let run = scratch.keyrot("publish");
    assert!(!run.success, "{run:?}");
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output.contains("openid/v1/jwks is a symlink to"),
        "{output}"
    );
    assert_eq!(fs::read(&elsewhere).unwrap(), b"not a jwks");
    assert_eq!(fs::metadata(&elsewhere).unwrap().uid(), NOBODY);
    assert_eq!(mode(&elsewhere), 0o644);
    // The dry run reads through nothing either, and says so.
    let run = keyrot([
        "publish",
        "--dry-run",
        "-c",
        scratch.plan_path().to_str().unwrap(),
    ]);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(output.contains("is a symlink to"), "{output}");
}

#[test]
fn symlinked_lock_file_is_refused_and_its_target_is_not_truncated() {
    let scratch = Scratch::new();
    scratch.init();
    let victim = scratch.path("victim");
    fs::write(&victim, b"precious bytes\n").unwrap();
    fs::remove_file(scratch.path("state/keyrot.lock")).unwrap();
    symlink(&victim, scratch.path("state/keyrot.lock")).unwrap();

    let run = scratch.keyrot("publish");
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr.contains("keyrot.lock is a symlink"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read(&victim).unwrap(), b"precious bytes\n");
}

#[test]
fn hard_linked_lock_file_is_refused() {
    let scratch = Scratch::new();
    scratch.init();
    let victim = scratch.path("victim");
    fs::write(&victim, b"precious bytes\n").unwrap();
    fs::remove_file(scratch.path("state/keyrot.lock")).unwrap();
    fs::hard_link(&victim, scratch.path("state/keyrot.lock")).unwrap();

    let run = scratch.keyrot("publish");
    assert!(!run.success, "{run:?}");
    assert!(run.stderr.contains("has 2 hard links"), "{}", run.stderr);
    assert_eq!(fs::read(&victim).unwrap(), b"precious bytes\n");
}

#[test]
fn state_directory_writable_by_others_is_refused() {
    let scratch = Scratch::new();
    scratch.init();
    fs::set_permissions(scratch.path("state"), Permissions::from_mode(0o777)).unwrap();
    let run = scratch.keyrot("publish");
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr
            .contains("state is writable by users other than its owner"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("chmod go-w"), "{}", run.stderr);
}

#[test]
fn private_key_directory_open_to_others_is_refused() {
    let scratch = Scratch::new();
    scratch.init();
    fs::set_permissions(scratch.path("keys"), Permissions::from_mode(0o755)).unwrap();
    let plan = scratch.plan();
    let spec = plan.key;
    let err = KeyFilesOnDisk::new(&plan)
        .generate(&scratch.path("keys/next.key"), spec)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("keys is open to users other than its owner"),
        "{err}"
    );
    assert!(!scratch.path("keys/next.key").exists());
}

#[test]
fn one_unreadable_key_file_in_the_key_directory_does_not_stop_status() {
    let scratch = Scratch::new();
    scratch.init();
    fs::write(scratch.path("keys/damaged.key"), b"not a key").unwrap();
    symlink("/etc/hostname", scratch.path("keys/planted.key")).unwrap();

    let run = scratch.keyrot("status");
    assert!(run.success, "{run:?}");
    assert!(run.stdout.contains("damaged.key"), "{}", run.stdout);
    assert!(
        run.stdout.contains("planted.key: is a symlink"),
        "{}",
        run.stdout
    );
    // Publishing still finds the keys it needs.
    keyrot_ok(["publish", "-c", scratch.plan_path().to_str().unwrap()]);
}

#[test]
fn plan_with_private_key_dir_inside_a_local_target_is_refused() {
    let scratch = Scratch::new();
    let plan = fs::read_to_string(scratch.plan_path()).unwrap();
    fs::write(
        scratch.plan_path(),
        plan.replace("privateKeyDir: keys", "privateKeyDir: www/keys"),
    )
    .unwrap();
    let run = scratch.keyrot("validate");
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr.contains("targets[0].localDirectory")
            && run.stderr.contains("would publish privateKeyDir"),
        "{}",
        run.stderr
    );
}

#[test]
fn plan_with_a_local_target_symlinked_to_the_key_directory_is_refused() {
    let scratch = Scratch::new();
    fs::create_dir(scratch.path("pki")).unwrap();
    symlink(scratch.path("pki"), scratch.path("www")).unwrap();
    let run = scratch.keyrot("validate");
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr
            .contains("would publish apiserver.signingKeyFile"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("(resolved: "), "{}", run.stderr);
}

#[test]
fn plan_with_a_local_target_inside_the_state_directory_is_refused() {
    let scratch = Scratch::new();
    let plan = fs::read_to_string(scratch.plan_path()).unwrap();
    fs::write(
        scratch.plan_path(),
        plan.replace("localDirectory: www", "localDirectory: state/www"),
    )
    .unwrap();
    let run = scratch.keyrot("validate");
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr.contains("lies inside stateDir"),
        "{}",
        run.stderr
    );
}

#[test]
fn plan_with_state_dir_symlinked_into_the_static_pod_directory_is_refused() {
    let scratch = Scratch::new();
    let manifests = scratch.path("manifests");
    fs::create_dir(&manifests).unwrap();
    fs::write(
        manifests.join("kube-apiserver.yaml"),
        "metadata:\n  name: x\n",
    )
    .unwrap();
    symlink(&manifests, scratch.path("statelink")).unwrap();
    let plan = fs::read_to_string(scratch.plan_path()).unwrap();
    let plan = plan
        .replace("stateDir: state", "stateDir: statelink/keyrot")
        .replace(
            "  restart: none",
            &format!(
                "  restart: {{ staticPod: {} }}",
                manifests.join("kube-apiserver.yaml").display()
            ),
        );
    fs::write(scratch.plan_path(), plan).unwrap();
    let run = scratch.keyrot("validate");
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr.contains("statelink/keyrot (resolved: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("static pod"), "{}", run.stderr);
}
