//! End to end in signer mode: the stand-in apiserver signs through keyrot's external signer
//! (`--service-account-signing-endpoint`: TokenRequest through Sign, its JWKS and TokenReview
//! from FetchKeys) while a client mints and verifies tokens; a whole rotation restarts nothing
//! and rejects no token, in the cluster or at the published issuer.

mod e2e;

use std::time::{Duration, Instant};

use e2e::{Settings, World};
use keyrot::state::StateStore;

#[test]
fn a_rotation_through_the_external_signer_restarts_nothing_and_rejects_no_token() {
    let world = World::start(Settings {
        signer: true,
        ..Settings::default()
    });
    let old = world.signing_kid();
    let traffic = world.start_traffic(None);
    std::thread::sleep(Duration::from_millis(500));

    // Handed to the running daemon, which serves the signer.
    let started = Instant::now();
    let rotate = world.keyrot(&["rotate"]);
    assert!(rotate.success, "{rotate:?}");
    let store = StateStore::new(world.path("state"));
    let completed = || {
        store
            .read()
            .ok()
            .flatten()
            .is_some_and(|s| s.rotation.is_none() && s.last_rotation_completed_at.is_some())
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !completed() {
        assert!(
            Instant::now() < deadline,
            "no completed rotation within 90 s:\n{}",
            world.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    // The stand-in learns the retired set at its next refresh (the rotation's hint is 1 s).
    std::thread::sleep(Duration::from_secs(3));
    let log = world.stop_traffic(traffic);
    let failures = log.failures();
    println!(
        "signer-mode rotation took {took:.1?}: {} tokens minted through the signer and verified \
         by TokenReview and the STS-like verifier, {} failures",
        log.minted.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}\n{}", world.daemon_log());
    assert!(!log.minted.is_empty());

    let new = world.assert_converged();
    assert_ne!(new, old);
    assert_eq!(log.kid_runs(), [old, new], "the signing kid switched once");
    // Nothing restarted the apiserver: the stand-in never went down.
    let standin = world.standin_log();
    assert!(!standin.contains("restarting"), "{standin}");
    assert_eq!(log.mint_refused + log.review_refused, 0);
    // The apiserver holds the set the signer serves now, by its own gauge.
    let signer_set = keyrot::signer::client::served_data_timestamp(&world.path("signer.sock"))
        .expect("the signer answers");
    let metrics = world.block_on(world.api().get("/metrics")).unwrap();
    let gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("apiserver_externaljwt_fetch_keys_data_timestamp "))
        .expect("the stand-in exposes the gauge")
        .parse::<f64>()
        .unwrap();
    assert_eq!(
        keyrot::decision::stamp_millis(gauge),
        keyrot::decision::stamp_millis(signer_set)
    );
    let waits = world.daemon_log().matches("not fetched yet").count();
    println!("the stage and retire gates waited {waits} times for the apiserver to fetch the set");
}
