//! The external signer killed (SIGKILL) at random points of a rotation and started again the
//! way systemd's `Restart=always` does, while a client that behaves like kube-apiserver's
//! plugin mints and verifies tokens every 20 ms.
//!
//! While the signer is down the apiserver cannot mint (those refusals are expected and counted),
//! but verification goes on with the last good key set it fetched: no token minted by the
//! signer may ever be rejected, before, during or after a kill, and the rotation converges.
//! The delays come from a seeded RNG; `E2E_SEED=N` replays them.

mod common;
mod e2e;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, Sandbox, wait_for_completed_rotation, wait_until};
use common::kube_plugin::{Package, Plugin};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Kills during the rotation, at most.
const KILLS: usize = 8;

fn claims() -> serde_json::Value {
    serde_json::json!({
        "iss": "https://issuer.example.com/test",
        "sub": "system:serviceaccount:default:default",
        "aud": ["https://issuer.example.com/test"],
        "exp": 4_102_444_800u64,
        "iat": 1_700_000_000u64,
    })
}

/// What the plugin saw.
#[derive(Default)]
struct Seen {
    minted: usize,
    /// Sign calls refused because the signer was down: the apiserver's TokenRequests fail then.
    refused_while_down: usize,
    /// Tokens the last good key set verified while the signer was down.
    verified_while_down: usize,
    /// Kids that signed, in order.
    kids: Vec<String>,
    failures: Vec<String>,
}

/// The signer is not answering: nobody accepts on the socket (gRPC's Unavailable), or the
/// connection broke under a call in flight.
fn signer_down(error: &str) -> bool {
    error.contains("currently unavailable") || error.contains("transport error")
}

/// Mints and verifies until `stop`, keeping the last good key set across the signer's outages.
fn churn(socket: &std::path::Path, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let mut plugin = None;
    let mut last_fetch = Instant::now();
    let mut last_token: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        let plugin = match &mut plugin {
            Some(plugin) => plugin,
            None => match Plugin::start(socket, Package::V1) {
                Ok(started) => plugin.insert(started),
                // Not up yet: an apiserver would wait for its first key set.
                Err(_) => continue,
            },
        };
        let hint = plugin.cache.as_ref().map(|c| c.refresh_hint);
        if hint.is_some_and(|h| last_fetch.elapsed() >= h) {
            // A failed refresh keeps the last good set, as kube-apiserver's key cache does.
            match plugin.fetch_keys() {
                Err(e) if !signer_down(&e) => seen.failures.push(e),
                _ => {}
            }
            last_fetch = Instant::now();
        }
        match plugin.mint(&claims()) {
            Ok(token) => {
                seen.minted += 1;
                match plugin.verify(&token) {
                    Ok(kid) => {
                        if seen.kids.last() != Some(&kid) {
                            seen.kids.push(kid);
                        }
                    }
                    Err(e) => seen.failures.push(format!("a fresh token rejected: {e}")),
                }
                last_token = Some(token);
            }
            Err(e) if signer_down(&e) => {
                seen.refused_while_down += 1;
                // The signer is down: the token minted last still verifies from the cache.
                if let Some(token) = &last_token {
                    match plugin.verify(token) {
                        Ok(_) => seen.verified_while_down += 1,
                        Err(e) => seen
                            .failures
                            .push(format!("rejected while the signer was down: {e}")),
                    }
                }
            }
            Err(e) => seen.failures.push(e),
        }
    }
    seen
}

#[test]
fn a_signer_killed_at_random_points_restarts_and_no_token_it_minted_is_rejected() {
    let seed = e2e::seed();
    println!("seed {seed} (E2E_SEED={seed} replays these kill delays)");
    let mut rng = StdRng::seed_from_u64(seed);
    let sandbox = Sandbox::with_restart(
        "externalSigner",
        "signer:\n  socket: signer.sock\n  refreshHint: 2s\n  rotationRefreshHint: 1s\n  \
         maxTokenExpiration: 10m\n\
         timings: { publishSettle: 2s, retireAfter: 6s, gateTimeout: 20s, retryBackoff: 1s, \
         retryBackoffMax: 2s }\n",
    );
    let socket = sandbox.dir.path().join("signer.sock");
    let start = || -> Daemon {
        let daemon = sandbox.start(&[]);
        daemon.wait_for_log("running plan", Duration::from_secs(20));
        daemon
    };
    let mut daemon = start();

    let stop = Arc::new(AtomicBool::new(false));
    let churning = std::thread::spawn({
        let (stop, socket) = (stop.clone(), socket.clone());
        move || churn(&socket, &stop)
    });
    assert!(
        wait_until(Duration::from_secs(20), || socket.exists()),
        "the signer's socket appears"
    );
    common::keyrot_ok(["rotate", "-c", sandbox.plan_arg()]);

    let mut down_for = Duration::ZERO;
    let mut kills = 0;
    while kills < KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1200)));
        // Only a rotation under way is interrupted; once it completes the killing stops.
        let Some(rotation) = sandbox.state().rotation else {
            break;
        };
        daemon.signal("KILL");
        daemon.wait_exit(Duration::from_secs(5));
        // systemd's RestartSec: the apiserver meets a signer that is gone for a moment.
        let pause = Duration::from_millis(rng.random_range(100..600));
        std::thread::sleep(pause);
        down_for += pause;
        println!("kill {kills}: in phase {}", rotation.phase);
        kills += 1;
        daemon = start();
    }
    let state = wait_for_completed_rotation(&sandbox, &daemon, Duration::from_secs(90));
    // Let the plugin refresh onto the retired set once more.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let seen = churning.join().unwrap();
    println!(
        "{kills} kills, down for {} ms in all: {} tokens minted and verified, {} Sign calls \
         refused while the signer was down, {} tokens verified from the last good set meanwhile",
        down_for.as_millis(),
        seen.minted,
        seen.refused_while_down,
        seen.verified_while_down
    );
    let first: Vec<_> = seen.failures.iter().take(5).collect();
    assert!(
        seen.failures.is_empty(),
        "{} failures, the first {first:?}\n{}",
        seen.failures.len(),
        daemon.log()
    );
    assert!(
        seen.verified_while_down > 0,
        "the last good set verified tokens while the signer was down"
    );
    assert!(seen.minted > 0);
    let active = state
        .keys
        .iter()
        .find(|k| k.role == keyrot::state::Role::Active)
        .unwrap();
    assert_eq!(
        seen.kids.last(),
        Some(&active.kid),
        "the new key signs in the end: {:?}",
        seen.kids
    );
    assert_eq!(seen.kids.len(), 2, "the kid switched once: {:?}", seen.kids);
    daemon.stop();
}
