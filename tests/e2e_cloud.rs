//! End to end with cloud targets: a whole rotation that also publishes to S3 (moto) and Azure
//! Blob (azurite), started by scripts/test.sh, while a client mints and verifies tokens. The
//! rotation waits for every target's read-back from outside before the new key signs; no token
//! is rejected, and afterwards every target serves exactly the new key.

mod e2e;
mod stores;

use std::time::Duration;

use e2e::{Settings, World};

#[test]
fn a_rotation_published_to_s3_and_azure_rejects_no_token() {
    let servers = stores::servers();
    let prefix = stores::unique("e2e");
    let container = "keyrot-e2e";
    stores::azure_container(&servers, container);
    // moto answers unsigned discovery GETs itself: the S3 target is read through a signing front,
    // as a bucket behind a CDN with origin access is.
    let scratch = tempfile::tempdir().unwrap();
    let bare = stores::write_plan(
        scratch.path(),
        &stores::s3_target(&servers, "s3", &prefix, None),
    );
    let front = stores::s3_front(&keyrot::plan::load(&bare).unwrap().targets[0]);
    let settings = Settings {
        extra_targets: stores::s3_target(&servers, "s3", &prefix, Some(&front))
            + &stores::azure_target(&servers, "azure", container, &prefix),
        ..Settings::default()
    };
    let world = World::start(settings);
    let old = world.signing_kid();
    let traffic = world.start_traffic(None);
    std::thread::sleep(Duration::from_millis(300));

    let mut rotate = world.spawn_keyrot(&["rotate"]);
    let exit = rotate.wait(Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(300));
    let log = world.stop_traffic(traffic);
    let run = rotate.finish();
    println!("{}", run.stdout());
    assert!(exit.is_some_and(|s| s.success()), "{run:?}");

    let failures = log.failures();
    println!(
        "{} tokens minted and verified twice each, {} failures; {} TokenRequests refused while \
         the stand-in restarted",
        log.minted.len(),
        failures.len(),
        log.mint_refused
    );
    assert!(failures.is_empty(), "{failures:#?}");
    let new = world.assert_converged();
    assert_ne!(new, old);
    assert_eq!(log.kid_runs(), [old, new.clone()]);

    // Every target, the cloud ones read anonymously from outside, serves exactly the new key,
    // and so does the apiserver: `keyrot verify` finds no difference.
    let verify = world.keyrot(&["verify"]);
    assert!(verify.success, "{verify:?}");
    for target in ["target e2e", "target s3", "target azure"] {
        assert!(
            verify
                .stdout
                .lines()
                .any(|l| l.starts_with(target) && l.contains(": ok:")),
            "{target} not ok:\n{}",
            verify.stdout
        );
    }
    assert!(
        verify
            .stdout
            .contains(&format!("the apiserver serves [{new}]")),
        "{}",
        verify.stdout
    );
}
