//! End to end: abort, rollback and the failures a rotation meets, each ending in a safe state.
//!
//! Each test drives the real `keyrot` against the stand-in and the published issuer, then checks
//! what a person would look at: the exit code, the lines keyrot printed, `keyrot status`, the key
//! files, what the apiserver serves and what is published, and which tokens verify.

mod e2e;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::{Finished, Settings, World, jwks_kids, keys_with_role};
use standin::sts::StsError;

/// Long enough for any step here on a loaded machine; the tests wait for lines, not for time.
const PATIENCE: Duration = Duration::from_secs(30);

/// The first `keyrot` line containing `text`, for the report and the asserts.
fn line<'a>(run: &'a Finished, text: &str) -> &'a str {
    run.lines
        .iter()
        .map(|l| l.text.as_str())
        .find(|l| l.contains(text))
        .unwrap_or_else(|| {
            panic!(
                "no line with {text:?} in:\n{}{}",
                run.stdout(),
                run.stderr()
            )
        })
}

/// Prints a run the way a person saw it (shown with `--nocapture`).
fn show(what: &str, run: &Finished) {
    println!(
        "== {what}: exit {:?}{}\n{}{}",
        run.code,
        if run.killed { " (killed)" } else { "" },
        run.stdout(),
        run.stderr()
    );
}

/// A run of `keyrot ARGS`, to its end, as a [`Finished`].
fn keyrot(world: &World, args: &[&str]) -> Finished {
    let mut running = world.spawn_keyrot(args);
    running.wait(PATIENCE).expect("keyrot ends");
    let run = running.finish();
    show(&args.join(" "), &run);
    run
}

/// Checks a token through TokenReview and the STS-like verifier.
fn verify(world: &World, token: &str) -> (Result<(), String>, Result<(), StsError>) {
    let (api, sts) = (world.api(), world.sts());
    world.block_on(async {
        let review = api.review(token).await.expect("the stand-in answers");
        (review, sts.verify(token).await.map(|_| ()))
    })
}

fn token(world: &World) -> String {
    world.block_on(world.api().token()).unwrap()
}

fn token_kid(token: &str) -> String {
    keyrot::adapters::probe::token_kid(token).unwrap()
}

/// The one kid `role` has in `keyrot status`.
fn kid_with_role(world: &World, role: &str) -> String {
    let kids = keys_with_role(&world.status(), role);
    assert_eq!(kids.len(), 1, "{role}: {kids:?}");
    kids[0].clone()
}

#[test]
fn abort_before_promotion_leaves_the_old_key_alone_everywhere() {
    let world = World::start(Settings {
        approvals: "[promote]",
        ..Settings::default()
    });
    let old = world.signing_kid();
    let before = token(&world);

    let rotate = keyrot(&world, &["rotate"]);
    assert_eq!(rotate.code, Some(0));
    line(&rotate, "[approval] phase promote is held for approval");
    let status = world.status();
    assert_eq!(status["phase"], "promote");
    assert_eq!(status["blocked_by"][0]["gate"], "approval");
    let new = kid_with_role(&world, "published");
    assert_eq!(world.bundle_kids(), [old.clone(), new.clone()]);
    assert_eq!(
        jwks_kids(&world.published_jwks()),
        [old.clone(), new.clone()]
    );
    assert_eq!(
        token_kid(&token(&world)),
        old,
        "the new key does not sign yet"
    );

    let abort = keyrot(&world, &["abort"]);
    assert_eq!(abort.code, Some(0));
    line(&abort, "Abort: rotation aborted");
    line(&abort, "rotation complete");
    assert_eq!(world.assert_converged(), old);
    let status = world.status();
    assert_eq!(
        keys_with_role(&status, "retired"),
        std::slice::from_ref(&new)
    );
    assert!(world.status_text().contains("rotation none in progress"));
    // keyrot destroyed the new key's private copy; only the old key's is left.
    let private: Vec<_> = std::fs::read_dir(world.path("keys")).unwrap().collect();
    assert_eq!(private.len(), 1);
    assert_eq!(verify(&world, &before), (Ok(()), Ok(())));
    assert_eq!(token_kid(&token(&world)), old);

    // Nothing left to abort: refused, and said so.
    let again = keyrot(&world, &["abort"]);
    line(&again, "Abort: refused: no rotation is in progress");
}

#[test]
fn rollback_after_promotion_signs_with_the_old_key_and_keeps_both_verifiable() {
    let world = World::start(Settings {
        approvals: "[retire]",
        ..Settings::default()
    });
    let old = world.signing_kid();
    let old_token = token(&world);

    let rotate = keyrot(&world, &["rotate"]);
    assert_eq!(rotate.code, Some(0));
    line(&rotate, "[approval] phase retire is held for approval");
    let new = world.signing_kid();
    assert_ne!(new, old);
    let new_token = token(&world);
    assert_eq!(token_kid(&new_token), new);

    // The new key has signed: abort is refused, rollback is the way back.
    let abort = keyrot(&world, &["abort"]);
    line(&abort, "the new key may have signed tokens; use rollback");
    assert_eq!(world.signing_kid(), new);

    let rollback = keyrot(&world, &["rollback"]);
    assert_eq!(rollback.code, Some(0));
    line(&rollback, "Rollback: rolled back to the old key");
    line(&rollback, "[approval] phase retire is held for approval");
    assert_eq!(world.signing_kid(), old);
    assert_eq!(token_kid(&token(&world)), old, "the old key signs again");
    let status = world.status();
    assert_eq!(status["phase"], "retire");
    assert_eq!(status["rotation"]["rolled_back"], true);
    assert_eq!(
        keys_with_role(&status, "active"),
        std::slice::from_ref(&old)
    );
    assert_eq!(
        keys_with_role(&status, "retiring"),
        std::slice::from_ref(&new)
    );
    // Tokens of both keys verify until the new key retires.
    assert_eq!(world.bundle_kids(), [old.clone(), new.clone()]);
    assert_eq!(verify(&world, &old_token), (Ok(()), Ok(())));
    assert_eq!(verify(&world, &new_token), (Ok(()), Ok(())));

    let approve = keyrot(&world, &["approve"]);
    assert_eq!(approve.code, Some(0));
    line(&approve, "[retire-after] tokens signed by");
    line(&approve, "rotation complete");
    assert_eq!(world.assert_converged(), old);
    assert_eq!(verify(&world, &old_token), (Ok(()), Ok(())));
    let (review, sts) = verify(&world, &new_token);
    assert!(review.unwrap_err().contains(&new));
    assert_eq!(sts, Err(StsError::UnknownKid(new.clone())));
}

/// Keeps writing `jwks` over the published JWKS, as a second publisher (a config-management run,
/// another node) would, until dropped.
struct SecondWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SecondWriter {
    fn start(path: &Path, jwks: String) -> SecondWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let (path, flag) = (path.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let temp = path.with_file_name(".second-writer");
            while !flag.load(Ordering::SeqCst) {
                // Whole files only, as keyrot writes them: keyrot must see a stale JWKS, not a
                // torn one.
                std::fs::write(&temp, &jwks).unwrap();
                std::fs::rename(&temp, &path).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        SecondWriter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SecondWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

#[test]
fn a_gate_that_stays_closed_is_retried_with_backoff_and_never_promotes() {
    let world = World::start(Settings {
        gate_timeout: "2s",
        retry_backoff: "1s",
        retry_backoff_max: "2s",
        ..Settings::default()
    });
    let old = world.signing_kid();
    let jwks_path = world.path("www/e2e/openid/v1/jwks");
    let writer = SecondWriter::start(&jwks_path, world.published_jwks());

    let mut running = world.spawn_keyrot(&["rotate"]);
    let second_failure = running.wait_for_line("attempt 2 failed", PATIENCE);
    let rotate = running.finish();
    show("rotate, killed after two failed attempts", &rotate);
    assert!(
        second_failure.is_some() && rotate.killed,
        "keyrot kept retrying"
    );
    // The second writer is caught either by the gate (the target serves its JWKS, not the
    // expected one) or, when it writes between keyrot's write and the read-back that follows,
    // by the publication itself; both are failed attempts that block promotion.
    let caught = |error: &str| {
        error.starts_with("targets-serve-keys: expected") || {
            error.starts_with("publish: ") && error.contains("a second writer")
        }
    };
    let attempts: Vec<&str> = rotate
        .lines
        .iter()
        .filter_map(|l| {
            l.text
                .split_once("waiting  [backoff] attempt ")
                .map(|(_, a)| a)
        })
        .collect();
    assert!(!attempts.is_empty(), "no failed attempt shown");
    for attempt in &attempts {
        let (_, error) = attempt.split_once(" failed: ").expect("a failed attempt");
        assert!(
            caught(error),
            "an attempt failed for another reason: {attempt}"
        );
    }
    if rotate
        .stdout()
        .contains("waiting  [targets-serve-keys] expected [")
    {
        let closed = line(&rotate, "waiting  [targets-serve-keys] expected [");
        assert!(closed.contains("e2e serves ["), "{closed}");
    }
    assert!(!rotate.stdout().contains("enter phase promote"));

    let status = world.status();
    println!("{}", world.status_text());
    assert_eq!(status["phase"], "publish");
    assert!(status["rotation"]["attempts"].as_u64().unwrap() >= 2);
    let last_error = status["last_error"].as_str().unwrap();
    assert!(caught(last_error), "{last_error}");
    assert!(
        world
            .status_text()
            .contains(&format!("error    {}", &last_error[..20]))
    );
    // Safe: the old key signs, and it is what the second writer keeps publishing.
    assert_eq!(world.signing_kid(), old);
    world.assert_signing_key_verifiable();

    // Once the second writer stops, the same command finishes the rotation.
    drop(writer);
    let resumed = keyrot(&world, &["rotate"]);
    assert_eq!(resumed.code, Some(0));
    line(
        &resumed,
        "already in progress (phase publish): continuing it",
    );
    line(&resumed, "rotation complete");
    assert_ne!(world.assert_converged(), old);
}

#[test]
fn an_apiserver_that_does_not_come_back_gets_the_previous_bundle_back() {
    // A restart that stops the apiserver for good: the PID file goes with it, so a second try
    // fails instead of signalling whatever process has that PID by then.
    let mut world = World::start(Settings {
        restart: "pid=$(cat {pid}) && rm {pid} && kill -TERM $pid",
        gate_timeout: "2s",
        retry_backoff: "1s",
        retry_backoff_max: "2s",
        ..Settings::default()
    });
    let old = world.signing_kid();
    let old_bundle = std::fs::read(world.path("pki/sa.pub")).unwrap();

    let mut running = world.spawn_keyrot(&["rotate"]);
    let backing_off = running.wait_for_line("waiting  [backoff]", PATIENCE);
    let still_running = running.wait(Duration::from_millis(500)).is_none();
    let rotate = running.finish();
    show("rotate, killed while backing off", &rotate);
    assert!(backing_off.is_some(), "no backoff");
    assert!(
        still_running,
        "the foreground rotation gave up instead of waiting"
    );
    assert!(world.standin_exited().is_some(), "the restart stopped it");
    line(
        &rotate,
        "waiting  [apiserver-serves-bundle] apiserver did not answer",
    );
    let timed_out = line(&rotate, "FAILED gate apiserver-serves-bundle");
    assert!(
        timed_out.ends_with("until then the apiserver gets its last good key files back"),
        "{timed_out}"
    );
    line(&rotate, "FAILED restart:");

    // The previous files are back, byte for byte, and the status says why.
    assert_eq!(std::fs::read(world.path("pki/sa.pub")).unwrap(), old_bundle);
    assert_eq!(world.signing_kid(), old);
    let status = world.status();
    println!("{}", world.status_text());
    assert_eq!(status["phase"], "stage");
    assert!(status["rotation"]["attempts"].as_u64().unwrap() >= 2);
    let last_error = status["last_error"].as_str().unwrap();
    assert!(last_error.starts_with("restart: "), "{last_error}");
    assert_eq!(status["blocked_by"][0]["gate"], "backoff");

    // A person brings the apiserver back on the files keyrot restored and fixes the restart
    // command; the next run retries the stage and completes.
    let address = world.stop_standin();
    world.start_standin(address);
    assert_eq!(
        jwks_kids(&world.served_jwks().unwrap()),
        std::slice::from_ref(&old)
    );
    world.settings.restart = e2e::RESTART_BY_HANGUP;
    world.write_plan();
    let resumed = keyrot(&world, &["rotate"]);
    assert_eq!(resumed.code, Some(0));
    line(&resumed, "rotation complete");
    assert_ne!(world.assert_converged(), old);
}

#[test]
fn an_unwritable_target_stops_the_rotation_before_promotion_and_is_named() {
    let world = World::start(Settings {
        retry_backoff: "1s",
        retry_backoff_max: "2s",
        ..Settings::default()
    });
    let old = world.signing_kid();
    // A file where the target directory should be: even root cannot create directories in it.
    let target = world.path("www/e2e");
    std::fs::remove_dir_all(&target).unwrap();
    std::fs::write(&target, "not a directory").unwrap();

    let mut running = world.spawn_keyrot(&["rotate"]);
    let second_failure = running.wait_for_line("attempt 2 failed", PATIENCE);
    let rotate = running.finish();
    show("rotate, killed after two failed attempts", &rotate);
    assert!(
        second_failure.is_some() && rotate.killed,
        "keyrot kept retrying"
    );
    let failed = line(&rotate, "FAILED publish: target e2e: ");
    assert!(failed.contains("Not a directory"), "{failed}");
    assert!(!rotate.stdout().contains("enter phase promote"));

    let status = world.status();
    println!("{}", world.status_text());
    assert_eq!(status["phase"], "publish");
    let last_error = status["last_error"].as_str().unwrap();
    assert!(
        last_error.starts_with("publish: target e2e: "),
        "{last_error}"
    );
    // Safe: the new key is only verifiable; the old one signs.
    assert_eq!(world.signing_kid(), old);
    let new = kid_with_role(&world, "staged");
    assert_eq!(world.bundle_kids(), [old.clone(), new.clone()]);

    std::fs::remove_file(&target).unwrap();
    std::fs::create_dir(&target).unwrap();
    let resumed = keyrot(&world, &["rotate"]);
    assert_eq!(resumed.code, Some(0));
    line(&resumed, "rotation complete");
    assert_eq!(world.assert_converged(), new);
}

#[test]
fn a_plan_edited_mid_rotation_takes_effect_at_the_next_run() {
    let mut world = World::start(Settings {
        publish_settle: "60s",
        ..Settings::default()
    });
    let old = world.signing_kid();

    let mut running = world.spawn_keyrot(&["rotate"]);
    let settling = running.wait_for_line("waiting  [publish-settle]", PATIENCE);
    let rotate = running.finish();
    show("rotate, killed while caches settle", &rotate);
    let settling = settling.expect("the rotation waits for caches").text;
    let until = settling.rsplit(' ').next().unwrap();
    let until = chrono::DateTime::parse_from_rfc3339(until).unwrap();
    let status = world.status();
    assert_eq!(status["blocked_by"][0]["gate"], "publish-settle");

    // A broken edit is refused with its place in the file; the rotation stays where it was.
    let state = std::fs::read(world.path("state/state.json")).unwrap();
    world.settings.publish_settle = "500ms";
    world.write_plan();
    let refused = keyrot(&world, &["rotate"]);
    assert_eq!(refused.code, Some(1));
    let problem = line(&refused, "timings.publishSettle");
    assert!(problem.contains("plan.yaml:"), "{problem}");
    assert_eq!(
        std::fs::read(world.path("state/state.json")).unwrap(),
        state
    );

    // A valid edit: caches now settle within a second, so the next run promotes at once,
    // long before the old plan's deadline.
    world.settings.publish_settle = "1s";
    world.write_plan();
    // `keyrot status` reads the plan afresh too: nothing blocks any more, or (if the edit came
    // within a second of the read-back) caches settle 59 s sooner than the old plan said.
    let status = world.status();
    assert_eq!(status["phase"], "publish");
    if let Some(blocked) = status["blocked_by"].as_array().unwrap().first() {
        let moved = blocked["until"].as_str().unwrap();
        let moved = chrono::DateTime::parse_from_rfc3339(moved).unwrap();
        assert!(moved < until - chrono::TimeDelta::seconds(30), "{blocked}");
    }
    let resumed = keyrot(&world, &["rotate"]);
    assert_eq!(resumed.code, Some(0));
    line(
        &resumed,
        "already in progress (phase publish): continuing it",
    );
    line(&resumed, "gate passed: enter phase promote");
    line(&resumed, "rotation complete");
    assert!(chrono::Utc::now() < until, "finished before {until}");
    assert_ne!(world.assert_converged(), old);
}
