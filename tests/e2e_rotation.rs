//! End to end: one whole rotation against the stand-in while a client mints and verifies tokens.
//!
//! The proof of the design's promise: from generate to retire, no token the cluster issues is
//! rejected by the cluster (TokenReview) or by a cloud reading the published issuer (the STS-like
//! verifier), the signing kid switches once, and a token from before the rotation verifies until
//! its key retires and never after.

mod e2e;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::{Line, Settings, World, phase_at, phase_changes};
use standin::sts::StsError;

/// The first line keyrot printed whose text contains every one of `words`.
fn line_with<'a>(lines: &'a [Line], words: &[&str]) -> &'a Line {
    lines
        .iter()
        .find(|l| words.iter().all(|w| l.text.contains(w)))
        .unwrap_or_else(|| panic!("no line with {words:?}"))
}

#[test]
fn a_full_rotation_rejects_no_token_and_switches_the_signing_kid_once() {
    let world = World::start(Settings::default());
    let old = world.signing_kid();
    let watched = world.block_on(world.api().token()).unwrap();
    let traffic = world.start_traffic(Some(watched));
    // Tokens from before the rotation, and after it, are part of the proof.
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let mut rotate = world.spawn_keyrot(&["rotate"]);
    let exit = rotate.wait(Duration::from_secs(60));
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(600));
    let log = world.stop_traffic(traffic);
    let run = rotate.finish();
    println!("{}", run.stdout());
    assert!(exit.is_some_and(|s| s.success()), "{run:?}");
    assert!(run.stderr().is_empty(), "{}", run.stderr());

    // Every token verified, through both verifiers.
    let failures = log.failures();
    let changes = phase_changes(&run.lines);
    let mut per_phase: BTreeMap<&str, usize> = BTreeMap::new();
    for minted in &log.minted {
        *per_phase.entry(phase_at(&changes, minted.at)).or_default() += 1;
    }
    println!(
        "rotation took {took:.1?}: {} tokens minted and verified twice each, {} failures; \
         refused while the stand-in restarted: {} TokenRequests, {} TokenReviews (sent again); \
         tokens per phase: {per_phase:?}; the watched token checked {} times",
        log.minted.len(),
        failures.len(),
        log.mint_refused,
        log.review_refused,
        log.watched.len(),
    );
    assert!(failures.is_empty(), "{failures:#?}");

    // The client kept minting through every phase that lasts. `generate` passes in the same step
    // that starts the rotation (a few milliseconds to create a P-256 key) and changes nothing
    // the cluster or a verifier reads, so it is reported, not required.
    for phase in ["before", "stage", "publish", "promote", "retire", "done"] {
        assert!(
            per_phase.get(phase).is_some_and(|&n| n > 0),
            "no token minted in phase {phase}: {per_phase:?}"
        );
    }

    // The signing kid switched exactly once, from the old key to the one now in place.
    let new = world.assert_converged();
    assert_ne!(new, old);
    assert_eq!(log.kid_runs(), [old.clone(), new.clone()]);
    let restarts = world.standin_log().matches("restarted:").count();
    assert_eq!(restarts, 3, "stage, promote and retire each restart once");

    // The token minted before the rotation: accepted by both verifiers until keyrot takes the
    // old key out of the bundle, rejected by both once the rotation is complete, and never
    // accepted again once rejected.
    let entered_retire = line_with(&run.lines, &["enter phase retire"]).at;
    let removed = run
        .lines
        .iter()
        .find(|l| l.at > entered_retire && l.text.contains("pki/sa.pub"))
        .expect("retire writes the bundle")
        .at;
    let done = line_with(&run.lines, &["rotation complete"]).at;
    for check in log.watched.iter().filter(|w| w.sts_at < removed) {
        assert_eq!(check.review, Ok(()), "{check:?}");
        assert_eq!(check.sts, Ok(()), "{check:?}");
    }
    let during_retire_wait = log
        .watched
        .iter()
        .filter(|w| w.started > entered_retire && w.sts_at < removed)
        .count();
    assert!(
        during_retire_wait > 0,
        "not checked while the old key retired"
    );
    let after = log.watched.iter().filter(|w| w.started > done).count();
    assert!(after > 0, "not checked after the rotation");
    for check in log.watched.iter().filter(|w| w.started > done) {
        let review = check.review.as_ref().unwrap_err();
        assert!(review.contains(&old), "{review}");
        assert_eq!(check.sts, Err(StsError::UnknownKid(old.clone())));
    }
    // Checks run concurrently: each verifier's verdicts are put in the order it gave them.
    let mut reviews: Vec<(Instant, bool)> = log
        .watched
        .iter()
        .map(|w| (w.review_at, w.review.is_ok()))
        .collect();
    let mut sts: Vec<(Instant, bool)> = log
        .watched
        .iter()
        .map(|w| (w.sts_at, w.sts.is_ok()))
        .collect();
    for (verifier, verdicts) in [("TokenReview", &mut reviews), ("STS", &mut sts)] {
        verdicts.sort();
        let accepted: Vec<bool> = verdicts.iter().map(|(_, ok)| *ok).collect();
        let first_rejection = accepted.iter().position(|a| !a).unwrap();
        assert!(
            accepted[first_rejection..].iter().all(|a| !a),
            "{verifier} accepted the old token again after rejecting it: {accepted:?}"
        );
    }
}
