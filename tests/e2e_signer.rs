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
    world.wait_for_completed_rotation();
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

#[test]
fn a_next_key_kept_ready_in_the_signer_signs_on_request_with_no_wait_and_no_rejected_token() {
    let world = World::start(Settings {
        signer: true,
        keep_next_key: true,
        ..Settings::default()
    });
    let old = world.signing_kid();
    let store = StateStore::new(world.path("state"));
    // The daemon stages and publishes the next key at once, then waits for a person (no
    // schedule): the rotation rests in publish with its caches settled.
    let ready = || {
        world
            .status_text()
            .contains("waiting  [schedule] the next key")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "no next key ready within 60 s:\n{}\n{}",
            world.status_text(),
            world.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let next = store
        .read()
        .unwrap()
        .unwrap()
        .rotation
        .and_then(|r| r.new_kid)
        .expect("the next key");
    // Verifiable everywhere before it signs: the apiserver and the published JWKS list it.
    assert!(world.served_jwks().unwrap().contains(&next));
    assert!(world.published_jwks().contains(&next));
    assert_eq!(world.signing_kid(), old);

    let traffic = world.start_traffic(None);
    std::thread::sleep(Duration::from_millis(500));
    let released = Instant::now();
    let rotate = world.keyrot(&["rotate"]);
    assert!(rotate.success, "{rotate:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while world.signing_kid() != next {
        assert!(Instant::now() < deadline, "{}", world.daemon_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = released.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let log = world.stop_traffic(traffic);
    let failures = log.failures();
    println!(
        "keepNextKey: the next key signed {took:.1?} after `keyrot rotate` (publishSettle is \
         {}), {} tokens minted and verified, {} failures",
        world.settings.publish_settle,
        log.minted.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(log.kid_runs(), [old, next]);
    assert!(!world.standin_log().contains("restarting"));
}

#[test]
fn the_apiserver_keeps_verifying_with_its_last_good_set_while_the_signer_is_killed_and_restarted() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    let seed = e2e::seed();
    println!("seed {seed} (E2E_SEED={seed} replays these kill delays)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut world = World::start(Settings {
        signer: true,
        retire_after: "6s",
        ..Settings::default()
    });
    let old = world.signing_kid();
    let traffic = world.start_traffic(None);
    std::thread::sleep(Duration::from_millis(500));
    let rotate = world.keyrot(&["rotate"]);
    assert!(rotate.success, "{rotate:?}");
    let store = StateStore::new(world.path("state"));
    let mut kills = Vec::new();
    while kills.len() < 6 {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let Some(rotation) = store.read().ok().flatten().and_then(|s| s.rotation) else {
            break;
        };
        kills.push(rotation.phase.to_string());
        world.kill_and_restart_daemon(Duration::from_millis(rng.random_range(100..600)));
    }
    world.wait_for_completed_rotation();
    std::thread::sleep(Duration::from_secs(3));
    let log = world.stop_traffic(traffic);
    // While the signer is down the apiserver cannot mint: those TokenRequests fail, as they do
    // in a real cluster. Every token it did mint must verify.
    let (down, other): (Vec<&String>, Vec<&String>) = log
        .mint_errors
        .iter()
        .partition(|e| e.contains("Sign") || e.contains("signer"));
    let rejected: Vec<String> = log
        .failures()
        .into_iter()
        .filter(|f| !log.mint_errors.contains(f))
        .collect();
    println!(
        "{} kills (phases {kills:?}): {} tokens minted and verified, {} TokenRequests failed \
         while the signer was down, {} refused during restarts",
        kills.len(),
        log.minted.len(),
        down.len(),
        log.mint_refused
    );
    assert!(other.is_empty(), "{other:#?}");
    assert!(rejected.is_empty(), "{rejected:#?}\n{}", world.daemon_log());
    let new = world.assert_converged();
    assert_eq!(log.kid_runs(), [old, new]);
    assert!(!world.standin_log().contains("restarting"));
}
