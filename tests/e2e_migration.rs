//! End to end: `keyrot migrate-issuer` moves a kubeadm cluster's issuer to a public URL.
//!
//! The cluster is the stand-in running with the issuer flags of a kubeadm manifest (re-read at
//! every restart, as a kubelet restarts a static pod); the public URL is the HTTPS static server
//! serving the plan's local-directory target. The tests check what a person would: the exit
//! code and output, the manifest's bytes, which tokens the cluster and the STS-like verifier
//! accept.

mod e2e;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{KUBEADM_ISSUER, Run, Settings, World};

/// Exit status of a run that waits (grace period).
const WAITING: i32 = 3;
const GRACE: Duration = Duration::from_secs(5);

const KUBEADM_FLAGS: &str = "{ kubeadmManifest: manifests/kube-apiserver.yaml }";

/// A cluster on the kubeadm manifest, its plan migrating to `{static server}/{path}` with the
/// editor `flags` and dropping the old issuer after the grace period.
fn migrating_world(path: &str) -> (World, String) {
    migrating_world_with(path, KUBEADM_FLAGS, true)
}

fn migrating_world_with(path: &str, flags: &str, drop_old: bool) -> (World, String) {
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
",
        GRACE.as_secs()
    );
    let mut plan = world.plan_yaml();
    plan.push_str(&section);
    std::fs::write(world.plan_path(), plan).unwrap();
    (world, new_issuer)
}

fn manifest(world: &World) -> String {
    std::fs::read_to_string(world.path("manifests/kube-apiserver.yaml")).unwrap()
}

const FIXTURE: &str = include_str!("data/issuer/kubeadm-kube-apiserver.yaml");

/// The issuer flags of the manifest's command list, in order.
fn issuer_flags(world: &World) -> Vec<String> {
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

fn token_iss(token: &str) -> String {
    keyrot::adapters::probe::token_issuer(token).unwrap()
}

/// Every file under the world's directory (the stand-in's log aside), with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
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

fn assert_code(run: &Run, code: i32) {
    assert_eq!(run.code, Some(code), "{run:?}");
}

#[test]
fn the_issuer_moves_in_order_and_old_tokens_keep_working_until_the_old_issuer_is_dropped() {
    let (world, new_issuer) = migrating_world("e2e");
    let api = world.api();
    let old_token = world.block_on(api.token()).unwrap();
    assert_eq!(token_iss(&old_token), KUBEADM_ISSUER);

    // Steps 1 to 4; step 5 waits for the grace period.
    let first = world.keyrot(&["migrate-issuer"]);
    // keyrot recorded the flag change before it returned: the grace period ends before this.
    let grace_over = Instant::now() + GRACE;
    assert_code(&first, WAITING);
    for step in ["step 1:", "step 2:", "step 3:", "step 4:"] {
        assert!(first.stdout.contains(step), "no {step} in {first:?}");
    }
    assert!(first.stdout.contains("step 5 waits for the grace period"));
    let jwks_uri = format!("{new_issuer}/openid/v1/jwks");
    assert_eq!(
        issuer_flags(&world),
        [
            format!("service-account-issuer={new_issuer}"),
            format!("service-account-issuer={KUBEADM_ISSUER}"),
            format!("service-account-jwks-uri={jwks_uri}"),
            format!("api-audiences={new_issuer},{KUBEADM_ISSUER}"),
        ]
    );
    assert!(
        world
            .standin_log()
            .contains(&format!("issuing as {new_issuer}")),
        "{}",
        world.standin_log()
    );
    // The published discovery document is the new issuer's.
    let discovery: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(world.path("www/e2e/.well-known/openid-configuration")).unwrap(),
    )
    .unwrap();
    assert_eq!(discovery["issuer"], new_issuer.as_str());
    assert_eq!(discovery["jwks_uri"], jwks_uri.as_str());

    // A token from before the change still works in the cluster; a new one carries the new
    // issuer, works in the cluster and verifies through the STS against the public URL.
    assert_eq!(world.block_on(api.review(&old_token)).unwrap(), Ok(()));
    let new_token = world.block_on(api.token()).unwrap();
    assert_eq!(token_iss(&new_token), new_issuer);
    assert_eq!(world.block_on(api.review(&new_token)).unwrap(), Ok(()));
    let sts = world.sts();
    world.block_on(sts.verify(&new_token)).unwrap();
    assert!(world.block_on(sts.verify(&old_token)).is_err());

    // Run again within the grace period: nothing changes.
    let manifest_before = manifest(&world);
    let again = world.keyrot(&["migrate-issuer"]);
    assert_code(&again, WAITING);
    assert!(!again.stdout.contains("step 3:"), "{again:?}");
    assert_eq!(manifest(&world), manifest_before);

    // After the grace period: the old issuer is dropped, and with it tokens that name it.
    std::thread::sleep(grace_over.saturating_duration_since(Instant::now()));
    let drop = world.keyrot(&["migrate-issuer"]);
    assert_code(&drop, 0);
    assert!(drop.stdout.contains("issuer migration done"), "{drop:?}");
    assert_eq!(
        issuer_flags(&world),
        [
            format!("service-account-issuer={new_issuer}"),
            format!("service-account-jwks-uri={jwks_uri}"),
            format!("api-audiences={new_issuer}"),
        ]
    );
    let rejected = world.block_on(api.review(&old_token)).unwrap();
    assert!(rejected.is_err(), "the old issuer is still accepted");
    let newest = world.block_on(api.token()).unwrap();
    assert_eq!(world.block_on(api.review(&newest)).unwrap(), Ok(()));
    world.block_on(sts.verify(&newest)).unwrap();

    // Done is done: a further run changes nothing.
    let after = manifest(&world);
    let last = world.keyrot(&["migrate-issuer"]);
    assert_code(&last, 0);
    assert_eq!(manifest(&world), after);
    let progress: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(world.path("state/issuer-migration.json")).unwrap(),
    )
    .unwrap();
    assert!(progress["oldIssuerDroppedAt"].is_string(), "{progress:#}");
}

#[test]
fn a_dry_run_prints_the_documents_and_the_flag_diff_and_writes_nothing() {
    let (world, new_issuer) = migrating_world("e2e");
    let before = snapshot(&world.path(""));
    let run = world.keyrot(&["migrate-issuer", "--dry-run"]);
    assert_code(&run, 0);
    assert!(
        run.stdout.contains(&format!("\"issuer\":\"{new_issuer}\"")),
        "{run:?}"
    );
    assert!(run.stdout.contains(&format!(
        "+    - --service-account-issuer={new_issuer}\n     - --service-account-issuer={KUBEADM_ISSUER}\n"
    )));
    assert!(run.stdout.contains(&format!(
        "-    - --service-account-issuer={KUBEADM_ISSUER}\n"
    )));
    // `keyrot plan` shows the same preview after the rotation's.
    let plan = world.keyrot(&["plan"]);
    assert!(
        plan.stdout
            .contains("issuer migration (keyrot migrate-issuer):"),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains(&format!("+    - --service-account-issuer={new_issuer}\n"))
    );
    assert_eq!(snapshot(&world.path("")), before);
    assert_eq!(manifest(&world), FIXTURE);
}

#[test]
fn documents_that_are_not_publicly_served_stop_the_migration_before_the_flags() {
    // The target directory is served at /e2e, not at /unserved: a cloud would get 404.
    let (world, new_issuer) = migrating_world("unserved");
    let run = world.keyrot(&["migrate-issuer"]);
    assert_code(&run, 1);
    assert!(
        run.stderr
            .contains("step 2 (verify the new issuer's documents) failed"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&format!(
            "GET {new_issuer}/.well-known/openid-configuration: answered 404"
        )),
        "{run:?}"
    );
    assert!(run.stderr.contains("nothing after it was changed"));
    assert_eq!(manifest(&world), FIXTURE);
    let token = world.block_on(world.api().token()).unwrap();
    assert_eq!(token_iss(&token), KUBEADM_ISSUER);
    // Run again: step 1 is recorded, step 2 fails the same way, the flags stay.
    let again = world.keyrot(&["migrate-issuer"]);
    assert_code(&again, 1);
    assert!(!again.stdout.contains("step 1:"), "{again:?}");
    assert_eq!(manifest(&world), FIXTURE);
}

#[test]
fn a_manifest_the_editor_cannot_read_stops_the_migration_at_step_3_unchanged() {
    let (world, _) = migrating_world("e2e");
    let broken = include_str!("data/issuer/kubeadm-not-parseable.yaml");
    std::fs::write(world.path("manifests/kube-apiserver.yaml"), broken).unwrap();
    let run = world.keyrot(&["migrate-issuer"]);
    assert_code(&run, 1);
    assert!(run.stdout.contains("step 2:"), "{run:?}");
    assert!(
        run.stderr
            .contains("step 3 (change the flags and restart) failed"),
        "{run:?}"
    );
    assert!(run.stderr.contains("nothing was changed"), "{run:?}");
    assert_eq!(manifest(&world), broken);
    assert!(!world.path("state/issuer-backups").exists());
    let token = world.block_on(world.api().token()).unwrap();
    assert_eq!(token_iss(&token), KUBEADM_ISSUER);
}

#[test]
fn with_manual_flags_keyrot_prints_the_change_and_goes_on_once_it_is_made() {
    let (world, new_issuer) = migrating_world_with("e2e", "manual", false);
    let first = world.keyrot(&["migrate-issuer"]);
    assert_code(&first, WAITING);
    let jwks_uri = format!("{new_issuer}/openid/v1/jwks");
    assert!(
        first.stdout.contains(&format!(
            "+--service-account-issuer={new_issuer}\n --service-account-issuer={KUBEADM_ISSUER}\n\
             +--service-account-jwks-uri={jwks_uri}\n"
        )),
        "{first:?}"
    );
    assert!(first.stdout.contains("run `keyrot migrate-issuer` again"));
    assert_eq!(manifest(&world), FIXTURE);

    // The person makes the change and restarts kube-apiserver.
    let old_line = format!("    - --service-account-issuer={KUBEADM_ISSUER}\n");
    let new_lines = format!(
        "    - --service-account-issuer={new_issuer}\n{old_line}    \
         - --service-account-jwks-uri={jwks_uri}\n    \
         - --api-audiences={new_issuer},{KUBEADM_ISSUER}\n"
    );
    std::fs::write(
        world.path("manifests/kube-apiserver.yaml"),
        FIXTURE.replace(&old_line, &new_lines),
    )
    .unwrap();
    let pid = std::fs::read_to_string(world.path("standin.pid")).unwrap();
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .unwrap();
    assert!(hangup.success());
    let restarted = format!("issuing as {new_issuer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.standin_log().contains(&restarted) {
        assert!(Instant::now() < deadline, "{}", world.standin_log());
        std::thread::sleep(Duration::from_millis(20));
    }

    let second = world.keyrot(&["migrate-issuer"]);
    assert_code(&second, 0);
    assert!(second.stdout.contains("step 4:"), "{second:?}");
    assert!(second.stdout.contains("step 5: skipped"), "{second:?}");
    let token = world.block_on(world.api().token()).unwrap();
    assert_eq!(token_iss(&token), new_issuer);
}
