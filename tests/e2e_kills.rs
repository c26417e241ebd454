//! End to end: rotations with keyrot killed (SIGKILL) at random points and run again, many times.
//!
//! keyrot promises that killing it at any instant is safe and that running it again continues
//! from what it observes. Here `keyrot rotate` is killed after a random delay, again and again,
//! while a client mints and verifies a token every 50 ms; each run after a kill resumes the
//! rotation in progress (its own Rotate request continues it) or, once one has
//! completed, starts the next. The delays come from a seeded RNG; the seed is printed, and
//! `E2E_SEED=N` replays the same delays (the timing of the processes still varies).

mod e2e;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{Settings, World};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

/// Kill points to reach; the issue asks for at least 50.
const KILLS: usize = 60;

/// keyrot's temp files (`.keyrot-*.tmp`) anywhere under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if name.starts_with(".keyrot-") && name.ends_with(".tmp") {
            found.push(path);
        }
    }
    found
}

/// Where the recorded state says the rotation is: its phase, or `idle`.
fn phase_of(status: &Value) -> String {
    status["phase"].as_str().unwrap_or("idle").to_string()
}

#[test]
fn rotations_killed_at_random_points_converge_without_rejecting_a_token() {
    let seed = e2e::seed();
    println!("seed {seed} (E2E_SEED={seed} replays these kill delays)");
    let mut rng = StdRng::seed_from_u64(seed);
    // RSA keys take tens of milliseconds to generate, so kills can land in generate too.
    let world = World::start(Settings {
        key: "{ algorithm: RS256, bits: 2048 }",
        ..Settings::default()
    });
    let mut active = vec![world.signing_kid()];
    let traffic = world.start_traffic(None);
    let started = Instant::now();

    let mut kills_per_phase: BTreeMap<String, usize> = BTreeMap::new();
    let mut kills = 0;
    let mut runs = 0;
    let mut swept = 0; // temp files of cut-short writes that a later run removed
    let mut completed_at = world.status()["last_rotation_completed_at"].clone();
    // The last run is never killed: whatever the kills left in progress must then complete.
    let mut last_run = false;
    while !last_run {
        last_run = kills >= KILLS;
        // From "before keyrot has read its plan" to "well into a gate's wait".
        let delay = Duration::from_millis(rng.random_range(10..1200));
        let timeout = if last_run {
            Duration::from_secs(60)
        } else {
            delay
        };
        let mut run = world.spawn_keyrot(&["rotate"]);
        let exit = run.wait(timeout);
        let run = run.finish();
        runs += 1;
        swept += run
            .stdout()
            .matches("an interrupted keyrot never finished")
            .count();
        // Whenever keyrot stops, the key that signs is verifiable in the cluster's files and in
        // what the issuer publishes (invariants 1 and 2, as the files show them).
        world.assert_signing_key_verifiable();
        let status = world.status();
        if run.killed {
            assert!(!last_run, "the uninterrupted run did not end: {run:?}");
            kills += 1;
            *kills_per_phase.entry(phase_of(&status)).or_default() += 1;
        } else {
            assert!(exit.is_some_and(|s| s.success()), "{run:?}");
        }
        if status["last_rotation_completed_at"] != completed_at {
            // A rotation completed: everything must agree before the next one starts.
            completed_at = status["last_rotation_completed_at"].clone();
            active.push(world.assert_converged());
        }
        if last_run && status["phase"] != Value::Null {
            last_run = false; // not yet converged: run once more, uninterrupted
        }
    }
    let took = started.elapsed();
    // Kills inside a write leave its temp file behind (one may hold a private key); the next
    // run removes them, so after the last one none is left.
    let left = temp_files(&world.path(""));
    assert!(left.is_empty(), "temp files left behind: {left:?}");
    let log = world.stop_traffic(traffic);
    let failures = log.failures();
    println!(
        "{kills} kills over {runs} runs and {} completed rotations in {took:.1?}; kills per \
         phase: {kills_per_phase:?}; {} tokens minted and verified twice each, {} failures; \
         refused while the stand-in restarted: {} TokenRequests, {} TokenReviews (sent again); \
         {swept} temp files of cut-short writes removed by the next run",
        active.len() - 1,
        log.minted.len(),
        failures.len(),
        log.mint_refused,
        log.review_refused,
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(kills >= KILLS);
    world.assert_converged();
    assert!(active.len() >= 3, "at least two rotations completed");
    for phase in ["stage", "publish", "promote", "retire"] {
        assert!(
            kills_per_phase.contains_key(phase),
            "no kill in phase {phase}: {kills_per_phase:?}"
        );
    }
    // Each rotation switched the signing kid once, to a key never used before.
    assert_eq!(log.kid_runs(), active);
    let mut unique = active.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), active.len(), "a key came back: {active:?}");
}
