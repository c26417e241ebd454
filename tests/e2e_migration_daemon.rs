//! End to end: an issuer migration with `keyrot run` running. The daemon holds the state lock,
//! so `keyrot migrate-issuer` hands the migration to it and prints what it did; once the grace
//! period is over the daemon drops the old issuer by itself, as the plan says.

mod e2e;

use std::time::{Duration, Instant};

use e2e::KUBEADM_ISSUER;
use e2e::migration::{
    GRACE, KUBEADM_FLAGS, WAITING, assert_code, issuer_flags, migrating_world, token_iss,
};

#[test]
fn the_daemon_carries_out_the_migration_and_drops_the_old_issuer_when_the_grace_period_ends() {
    let (world, new_issuer) = migrating_world("e2e", KUBEADM_FLAGS, true, "");
    let api = world.api();
    let old_token = world.block_on(api.token()).unwrap();
    let mut daemon = world.spawn_keyrot(&["run"]);
    assert!(
        daemon
            .wait_for_line("waiting [", Duration::from_secs(10))
            .is_some()
    );

    // The flags change after this instant: the grace period cannot end before GRACE from it.
    let asked = Instant::now();
    let handed = world.keyrot(&["migrate-issuer"]);
    println!("steps 1 to 4 through the daemon took {:?}", asked.elapsed());
    assert_code(&handed, WAITING);
    for expected in [
        "step 1:",
        "step 3: kube-apiserver restarted",
        "step 4:",
        "step 5 waits for the grace period",
        "(carried out by the running keyrot daemon)",
    ] {
        assert!(
            handed.stdout.contains(expected),
            "no {expected:?} in {handed:?}"
        );
    }
    let token = world.block_on(api.token()).unwrap();
    assert_eq!(token_iss(&token), new_issuer);

    // Keys do not rotate meanwhile: the daemon refuses.
    let rotate = world.keyrot(&["rotate"]);
    assert_code(&rotate, 1);
    assert!(
        rotate.stdout.contains("the issuer migration from")
            && rotate.stdout.contains("(by the running keyrot daemon)"),
        "{rotate:?}"
    );

    // Nobody runs the command again: the daemon drops the old issuer when the grace period ends.
    let dropped = format!("step 5: {KUBEADM_ISSUER} dropped");
    let line = daemon.wait_for_line(&dropped, GRACE + Duration::from_secs(20));
    assert!(line.is_some(), "the daemon did not drop the old issuer");
    let dropped_at = line.unwrap().at;
    assert!(
        dropped_at >= asked + GRACE,
        "dropped before the grace period ended"
    );
    println!(
        "the daemon dropped the old issuer {:?} after the command started (grace period {GRACE:?})",
        dropped_at - asked
    );
    assert_eq!(
        issuer_flags(&world),
        [
            format!("service-account-issuer={new_issuer}"),
            format!("service-account-jwks-uri={new_issuer}/openid/v1/jwks"),
            format!("api-audiences={new_issuer}"),
        ]
    );
    assert!(world.block_on(api.review(&old_token)).unwrap().is_err());
    let status = world.status_text();
    assert!(status.contains("old issuer dropped"), "{status}");

    // Done: a run through the daemon says so and changes nothing.
    let again = world.keyrot(&["migrate-issuer"]);
    assert_code(&again, 0);
    assert!(again.stdout.contains("issuer migration done"), "{again:?}");

    // The rollback goes through the daemon too, its failures to standard error.
    let rollback = world.keyrot(&["migrate-issuer", "--rollback"]);
    assert_code(&rollback, 0);
    assert!(
        rollback.stdout.contains("rollback: done") && !rollback.stdout.contains("migration done"),
        "{rollback:?}"
    );
    assert_eq!(e2e::migration::manifest(&world), e2e::migration::FIXTURE);
    let nothing = world.keyrot(&["migrate-issuer", "--rollback"]);
    assert_code(&nothing, 1);
    assert!(
        nothing.stderr.contains("no issuer migration is recorded"),
        "{nothing:?}"
    );

    daemon.terminate();
    let stopped = daemon.wait(Duration::from_secs(10)).expect("keyrot stops");
    assert!(stopped.success(), "{stopped:?}");
}

#[test]
fn with_manual_flags_approve_reaches_the_daemon_which_checks_the_change() {
    let (world, new_issuer) = migrating_world("e2e", "manual", false, "");
    let mut daemon = world.spawn_keyrot(&["run"]);
    assert!(
        daemon
            .wait_for_line("waiting [", Duration::from_secs(10))
            .is_some()
    );
    let first = world.keyrot(&["migrate-issuer"]);
    assert_code(&first, WAITING);
    assert!(
        first.stdout.contains("then run `keyrot approve`")
            && first
                .stdout
                .contains("(carried out by the running keyrot daemon)"),
        "{first:?}"
    );

    let jwks_uri = format!("{new_issuer}/openid/v1/jwks");
    let changed = e2e::migration::FIXTURE.replace(
        &format!("    - --service-account-issuer={KUBEADM_ISSUER}\n"),
        &format!(
            "    - --service-account-issuer={new_issuer}\n    \
             - --service-account-issuer={KUBEADM_ISSUER}\n    \
             - --service-account-jwks-uri={jwks_uri}\n    \
             - --api-audiences={new_issuer},{KUBEADM_ISSUER}\n"
        ),
    );
    e2e::migration::edit_by_hand_and_restart(&world, &changed, &new_issuer);
    let approve = world.keyrot(&["approve"]);
    assert_code(&approve, 0);
    for expected in [
        "step 3: approved",
        "step 4:",
        "issuer migration done",
        "(carried out by the running keyrot daemon)",
    ] {
        assert!(
            approve.stdout.contains(expected),
            "no {expected:?} in {approve:?}"
        );
    }
    daemon.terminate();
    assert!(daemon.wait(Duration::from_secs(10)).unwrap().success());
}
