//! End to end: `keyrot migrate-issuer` killed (SIGKILL) at random points and run again until
//! the migration is done, while a client mints and verifies tokens every 50 ms.
//!
//! The plan keeps the old issuer accepted (dropOldIssuer: false), so every token must stay valid
//! in the cluster throughout, whichever issuer it names; tokens of the new issuer must also
//! verify at the public URL, as a cloud checks them. The delays come from a seeded RNG;
//! `E2E_SEED=N` replays them.

mod e2e;

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::KUBEADM_ISSUER;
use e2e::migration::{KUBEADM_FLAGS, issuer_flags, migrating_world};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Migrations to kill through, each in a cluster of its own.
const WORLDS: usize = 6;

/// The last step the migration record holds as done, as `keyrot status` reads it.
fn last_step_recorded(world: &e2e::World) -> &'static str {
    let status = world.status();
    let record = &status["issuer_migration"];
    let done = |field: &str| !record[field].is_null();
    match () {
        _ if record.is_null() => "nothing",
        _ if done("clusterVerifiedAt") => "cluster verified",
        _ if done("flagsChangedAt") => "flags changed",
        _ if done("verifiedAt") => "documents verified",
        _ if done("publishedAt") => "published",
        _ => "started",
    }
}

#[test]
fn issuer_migrations_killed_at_random_points_converge_without_rejecting_a_token() {
    let seed = e2e::seed();
    println!("seed {seed} (E2E_SEED={seed} replays these kill delays)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = 0;
    let mut minted = 0;
    let mut kills_after: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..WORLDS {
        let (world, new_issuer) = migrating_world("e2e", KUBEADM_FLAGS, false, "");
        let traffic = world.start_traffic(None);
        let mut done = false;
        for run in 0.. {
            // Delays that double from run to run (with a random start) sweep the migration from
            // before keyrot reads its plan to its last check, however fast the machine is. After
            // ten kills the run is let finish: whatever they left must then complete.
            let timeout = match run < 10 {
                true => Duration::from_millis(rng.random_range(1..8u64) << run),
                false => Duration::from_secs(60),
            };
            let mut keyrot = world.spawn_keyrot(&["migrate-issuer"]);
            let exit = keyrot.wait(timeout);
            let finished = keyrot.finish();
            if finished.killed {
                assert!(run < 10, "the uninterrupted run did not end: {finished:?}");
                kills += 1;
                *kills_after.entry(last_step_recorded(&world)).or_default() += 1;
                continue;
            }
            assert!(
                exit.is_some_and(|s| s.success()),
                "a run that was not killed must finish the migration: {finished:?}"
            );
            done = true;
            break;
        }
        assert!(done);
        // Converged: the new issuer issues, the old one stays accepted.
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
        // A last token of each kind after the migration.
        std::thread::sleep(Duration::from_millis(300));
        let log = world.stop_traffic(traffic);
        let mut failures: Vec<String> = log.mint_errors.clone();
        for m in &log.minted {
            if let Err(e) = &m.review {
                failures.push(format!("TokenReview rejected a token of {}: {e}", m.iss));
            }
            // The old issuer is not public: only tokens of the new one are checked as a cloud
            // would check them.
            if m.iss == new_issuer
                && let Err(e) = &m.sts
            {
                failures.push(format!("the STS rejected a token of {}: {e}", m.iss));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        let issuers: std::collections::BTreeSet<&str> =
            log.minted.iter().map(|m| m.iss.as_str()).collect();
        assert!(
            issuers.contains(new_issuer.as_str()),
            "no token of the new issuer was minted: {issuers:?}"
        );
        minted += log.minted.len();
    }
    println!(
        "{kills} kills over {WORLDS} migrations ({kills_after:?}), {minted} tokens minted, none \
         rejected"
    );
    assert!(
        kills >= WORLDS,
        "too few kills to mean anything: {kills_after:?}"
    );
}
