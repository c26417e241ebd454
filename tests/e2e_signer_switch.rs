//! End to end: a cluster switched from its key files to keyrot's external signer and back with
//! `keyrot switch-signer`, while a client mints and verifies tokens; a rotation in between
//! restarts nothing. The stand-in takes its key flags from the kubeadm-style manifest keyrot
//! edits, at every restart, as the kubelet runs a static pod.

mod e2e;

use std::time::Duration;

use e2e::{Settings, World};

fn manifest(world: &World) -> String {
    std::fs::read_to_string(world.path("manifests/kube-apiserver.yaml")).unwrap()
}

#[test]
fn a_cluster_moves_to_the_signer_rotates_without_restarts_and_moves_back_rejecting_no_token() {
    let world = World::start(Settings {
        signer: true,
        switchable: true,
        ..Settings::default()
    });
    let before = manifest(&world);
    assert!(before.contains("--service-account-key-file="));
    let old = world.signing_kid();
    let traffic = world.start_traffic(None);
    std::thread::sleep(Duration::from_millis(500));

    // Preview first: the diff and the kubeadm patches, nothing written.
    let preview = world.keyrot(&["switch-signer", "--dry-run"]);
    assert!(preview.success, "{preview:?}");
    assert!(
        preview.stdout.starts_with("Dry run of the switch of "),
        "{preview:?}"
    );
    assert!(
        preview
            .stdout
            .contains("+    - --service-account-signing-endpoint="),
        "{preview:?}"
    );
    assert!(
        preview.stdout.contains("$deleteFromPrimitiveList/command"),
        "{preview:?}"
    );
    assert_eq!(manifest(&world), before);
    assert!(!world.path("patches").exists());

    let switched = world.keyrot(&["switch-signer"]);
    assert!(switched.success, "{switched:?}\n{}", world.daemon_log());
    assert!(
        switched
            .stdout
            .contains("kube-apiserver takes its keys from keyrot's signer"),
        "{switched:?}"
    );
    let now = manifest(&world);
    assert!(now.contains("--service-account-signing-endpoint="), "{now}");
    assert!(!now.contains("--service-account-key-file="), "{now}");
    let patches: Vec<_> = std::fs::read_dir(world.path("patches"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(
        world
            .standin_log()
            .contains("keys from the external signer")
    );

    // A rotation through the signer: nothing restarts.
    let restarts_before = world.standin_log().matches("restarting").count();
    let rotate = world.keyrot(&["rotate"]);
    assert!(rotate.success, "{rotate:?}");
    world.wait_for_completed_rotation();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        world.standin_log().matches("restarting").count(),
        restarts_before
    );
    let new = world.signing_kid();
    assert_ne!(new, old);

    // Back: the plan's rotations restart the apiserver again (the switch's own restart), then
    // the flags go back.
    let plan = world.plan_yaml();
    let restart = plan
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with("restart: { command:"))
        .unwrap()
        .to_string();
    let back_plan = plan.replacen("restart: externalSigner", &restart, 1);
    assert_ne!(back_plan, plan);
    std::fs::write(world.plan_path(), back_plan).unwrap();
    world.reload_daemon();
    std::thread::sleep(Duration::from_secs(1));
    let back = world.keyrot(&["switch-signer", "--back"]);
    assert!(back.success, "{back:?}\n{}", world.daemon_log());
    let after = manifest(&world);
    assert!(after.contains("--service-account-key-file="), "{after}");
    assert!(
        !after.contains("--service-account-signing-endpoint"),
        "{after}"
    );
    assert_eq!(std::fs::read_dir(world.path("patches")).unwrap().count(), 0);

    std::thread::sleep(Duration::from_millis(500));
    let log = world.stop_traffic(traffic);
    let failures = log.failures();
    println!(
        "switched to the signer and back with a rotation between: {} tokens minted and verified, \
         {} failures; refused while the stand-in restarted: {} TokenRequests, {} TokenReviews",
        log.minted.len(),
        failures.len(),
        log.mint_refused,
        log.review_refused
    );
    assert!(failures.is_empty(), "{failures:#?}\n{}", world.daemon_log());
    assert_eq!(log.kid_runs(), [old, new]);
}
