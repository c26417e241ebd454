//! End to end: the parts of an issuer migration a person takes part in. With `flags: manual`
//! keyrot prints each change and goes on at `keyrot approve`, after checking the apiserver;
//! `keyrot migrate-issuer --rollback` puts the flags back, for an editor's file byte for byte.
//!
//! The cluster is the stand-in on a kubeadm manifest, re-read at every restart; the "person"
//! edits the manifest and sends the stand-in SIGHUP, as kubelet restarts a static pod.

mod e2e;

use std::time::Instant;

use e2e::migration::{
    FIXTURE, GRACE, KUBEADM_FLAGS, WAITING, assert_code, edit_by_hand_and_restart, issuer_flags,
    manifest, migrating_world, snapshot, token_iss,
};
use e2e::{KUBEADM_ISSUER, World};

/// The manifest with the issuer line replaced by `lines` (each a `--flag=value`).
fn manifest_with(lines: &[String]) -> String {
    let old = format!("    - --service-account-issuer={KUBEADM_ISSUER}\n");
    let new: String = lines.iter().map(|l| format!("    - {l}\n")).collect();
    FIXTURE.replace(&old, &new)
}

fn after_add(new_issuer: &str) -> Vec<String> {
    vec![
        format!("--service-account-issuer={new_issuer}"),
        format!("--service-account-issuer={KUBEADM_ISSUER}"),
        format!("--service-account-jwks-uri={new_issuer}/openid/v1/jwks"),
        format!("--api-audiences={new_issuer},{KUBEADM_ISSUER}"),
    ]
}

/// A shorter gate timeout, so a check that cannot pass fails quickly.
fn with_gate_timeout(world: &World, timeout: &str) {
    let plan = std::fs::read_to_string(world.plan_path()).unwrap();
    let plan = plan.replace("gateTimeout: 10s", &format!("gateTimeout: {timeout}"));
    std::fs::write(world.plan_path(), plan).unwrap();
}

/// The migration's record in the state file, if one is kept.
fn progress(world: &World) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(world.path("state/state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    Some(state["issuer_migration"].clone()).filter(|record| !record.is_null())
}

#[test]
fn with_manual_flags_each_change_waits_for_approve_which_checks_it_was_made() {
    let (world, new_issuer) = migrating_world("e2e", "manual", true, "");
    with_gate_timeout(&world, "2s");
    let jwks_uri = format!("{new_issuer}/openid/v1/jwks");

    let first = world.keyrot(&["migrate-issuer"]);
    assert_code(&first, WAITING);
    assert!(
        first.stdout.contains(&format!(
            "+--service-account-issuer={new_issuer}\n --service-account-issuer={KUBEADM_ISSUER}\n\
             +--service-account-jwks-uri={jwks_uri}\n"
        )),
        "{first:?}"
    );
    assert!(
        first.stdout.contains("then run `keyrot approve`"),
        "{first:?}"
    );
    assert_eq!(manifest(&world), FIXTURE);

    // Approving before the change is made: the apiserver still issues the old issuer, so the
    // approval is refused and the step keeps waiting.
    let early = world.keyrot(&["approve"]);
    assert_code(&early, 1);
    assert!(
        early.stderr.contains("approved, but")
            && early.stderr.contains(&format!("expected {new_issuer:?}"))
            && early.stderr.contains("run `keyrot approve` again"),
        "{early:?}"
    );
    assert_eq!(
        progress(&world).unwrap()["awaiting"]["manual-change"]["step"],
        "add"
    );

    // The person makes the change. Running migrate-issuer again does not take that as done:
    // it waits for the approval and says so again.
    edit_by_hand_and_restart(&world, &manifest_with(&after_add(&new_issuer)), &new_issuer);
    let again = world.keyrot(&["migrate-issuer"]);
    assert_code(&again, WAITING);
    assert!(again.stdout.contains("keyrot approve"), "{again:?}");
    assert!(!again.stdout.contains("step 4:"), "{again:?}");

    let approve = world.keyrot(&["approve"]);
    // keyrot recorded the flag change before it returned: the grace period ends before this.
    let grace_over = Instant::now() + GRACE;
    assert_code(&approve, WAITING);
    assert!(approve.stdout.contains("step 3: approved"), "{approve:?}");
    assert!(approve.stdout.contains("step 4:"), "{approve:?}");
    assert!(
        approve.stdout.contains("step 5 waits for the grace period"),
        "{approve:?}"
    );
    let token = world.block_on(world.api().token()).unwrap();
    assert_eq!(token_iss(&token), new_issuer);

    // After the grace period the drop is printed and waits for approval too.
    std::thread::sleep(grace_over.saturating_duration_since(Instant::now()));
    let drop = world.keyrot(&["migrate-issuer"]);
    assert_code(&drop, WAITING);
    assert!(
        drop.stdout.contains(&format!(
            " --service-account-issuer={new_issuer}\n---service-account-issuer={KUBEADM_ISSUER}\n"
        )),
        "{drop:?}"
    );
    assert!(progress(&world).unwrap()["oldIssuerDroppedAt"].is_null());
    let dropped = vec![
        format!("--service-account-issuer={new_issuer}"),
        format!("--service-account-jwks-uri={jwks_uri}"),
        format!("--api-audiences={new_issuer}"),
    ];
    edit_by_hand_and_restart(&world, &manifest_with(&dropped), &new_issuer);
    let done = world.keyrot(&["approve"]);
    assert_code(&done, 0);
    assert!(done.stdout.contains("issuer migration done"), "{done:?}");
    let record = progress(&world).unwrap();
    assert!(record["oldIssuerDroppedAt"].is_string(), "{record:#}");
    assert!(record["awaiting"].is_null(), "{record:#}");
}

#[test]
fn a_rollback_after_the_old_issuer_was_dropped_restores_the_manifest_byte_for_byte() {
    let (world, new_issuer) = migrating_world("e2e", KUBEADM_FLAGS, true, "");
    let api = world.api();
    let old_token = world.block_on(api.token()).unwrap();
    let first = world.keyrot(&["migrate-issuer"]);
    let grace_over = Instant::now() + GRACE;
    assert_code(&first, WAITING);
    std::thread::sleep(grace_over.saturating_duration_since(Instant::now()));
    assert_code(&world.keyrot(&["migrate-issuer"]), 0);
    let new_token = world.block_on(api.token()).unwrap();
    assert_eq!(token_iss(&new_token), new_issuer);
    assert!(world.block_on(api.review(&old_token)).unwrap().is_err());

    // The preview shows the way back and writes nothing.
    let before = snapshot(&world.path(""));
    let preview = world.keyrot(&["migrate-issuer", "--rollback", "--dry-run"]);
    assert_code(&preview, 0);
    for line in [
        format!("-    - --service-account-issuer={new_issuer}\n"),
        format!("+    - --service-account-issuer={KUBEADM_ISSUER}\n"),
        format!("issues as {KUBEADM_ISSUER} again"),
    ] {
        assert!(preview.stdout.contains(&line), "no {line:?} in {preview:?}");
    }
    assert_eq!(snapshot(&world.path("")), before);

    let rollback = world.keyrot(&["migrate-issuer", "--rollback"]);
    assert_code(&rollback, 0);
    assert!(
        rollback.stdout.contains("warning: tokens issued since"),
        "{rollback:?}"
    );
    assert!(
        rollback
            .stdout
            .contains(&format!("issues as {KUBEADM_ISSUER} again")),
        "{rollback:?}"
    );
    assert_eq!(manifest(&world), FIXTURE);
    let backups = std::fs::read_dir(world.path("state/issuer-backups")).unwrap();
    assert_eq!(backups.count(), 0, "backups left behind");
    assert!(progress(&world).is_none());
    // Only the old issuer is accepted again: tokens from before the migration work, tokens
    // issued with the new issuer do not.
    let token = world.block_on(api.token()).unwrap();
    assert_eq!(token_iss(&token), KUBEADM_ISSUER);
    assert_eq!(world.block_on(api.review(&old_token)).unwrap(), Ok(()));
    assert!(world.block_on(api.review(&new_token)).unwrap().is_err());

    // Nothing is left to roll back; the migration can start again from step 1.
    let nothing = world.keyrot(&["migrate-issuer", "--rollback"]);
    assert_code(&nothing, 1);
    assert!(
        nothing.stderr.contains("no issuer migration is recorded"),
        "{nothing:?}"
    );
    let again = world.keyrot(&["migrate-issuer"]);
    assert_code(&again, WAITING);
    assert!(again.stdout.contains("step 1:"), "{again:?}");
}

#[test]
fn a_manual_rollback_prints_the_way_back_and_approve_checks_it() {
    let (world, new_issuer) = migrating_world("e2e", "manual", false, "");
    assert_code(&world.keyrot(&["migrate-issuer"]), WAITING);
    edit_by_hand_and_restart(&world, &manifest_with(&after_add(&new_issuer)), &new_issuer);
    assert_code(&world.keyrot(&["approve"]), 0);

    let rollback = world.keyrot(&["migrate-issuer", "--rollback"]);
    assert_code(&rollback, WAITING);
    assert!(
        rollback.stdout.contains(&format!(
            "--service-account-issuer={new_issuer}\n --service-account-issuer={KUBEADM_ISSUER}\n"
        )) && rollback.stdout.contains("put them back by hand"),
        "{rollback:?}"
    );
    // A rollback under way is not a migration to go on with.
    let forward = world.keyrot(&["migrate-issuer"]);
    assert_code(&forward, 1);
    assert!(forward.stderr.contains("being rolled back"), "{forward:?}");

    edit_by_hand_and_restart(&world, FIXTURE, KUBEADM_ISSUER);
    let approve = world.keyrot(&["approve"]);
    assert_code(&approve, 0);
    assert!(approve.stdout.contains("rollback: approved"), "{approve:?}");
    assert!(progress(&world).is_none());
    let token = world.block_on(world.api().token()).unwrap();
    assert_eq!(token_iss(&token), KUBEADM_ISSUER);
}

#[test]
fn with_several_apiservers_each_accepts_the_new_issuer_before_any_issues_with_it() {
    let (world, new_issuer) = migrating_world("e2e", KUBEADM_FLAGS, false, "  acceptFirst: true\n");
    let here = world.api();
    // Another control-plane node whose apiserver already issues with the new issuer.
    let other = e2e::migration::OtherApiserver::start(&world, &[&new_issuer, KUBEADM_ISSUER]);
    let there = world.api_at(&other.url);
    let from_there = world.block_on(there.token()).unwrap();
    assert_eq!(token_iss(&from_there), new_issuer);
    // Before the migration this node rejects it: the window acceptFirst closes.
    assert!(world.block_on(here.review(&from_there)).unwrap().is_err());

    let preview = world.keyrot(&["migrate-issuer", "--dry-run"]);
    assert_code(&preview, 0);
    let accept_line = format!(
        "     - --service-account-issuer={KUBEADM_ISSUER}\n+    - --service-account-issuer={new_issuer}\n"
    );
    let order = [
        accept_line.as_str(),
        "step 3 then waits for `keyrot approve` once every apiserver accepts",
        "(after add-issuer)",
        "step 4: check",
    ];
    let mut rest = preview.stdout.as_str();
    for expected in order {
        let at = rest
            .find(expected)
            .unwrap_or_else(|| panic!("{expected:?} in {preview:?}"));
        rest = &rest[at + expected.len()..];
    }

    let first = world.keyrot(&["migrate-issuer"]);
    assert_code(&first, WAITING);
    assert!(
        first.stdout.contains(&format!(
            "this apiserver accepts {new_issuer} and still issues as {KUBEADM_ISSUER}"
        )) && first
            .stdout
            .contains("then `keyrot approve` on each node in turn"),
        "{first:?}"
    );
    assert_eq!(
        issuer_flags(&world),
        [
            format!("service-account-issuer={KUBEADM_ISSUER}"),
            format!("service-account-issuer={new_issuer}"),
            format!("api-audiences={KUBEADM_ISSUER},{new_issuer}"),
        ]
    );
    let from_here = world.block_on(here.token()).unwrap();
    assert_eq!(token_iss(&from_here), KUBEADM_ISSUER);
    assert_eq!(world.block_on(here.review(&from_there)).unwrap(), Ok(()));
    assert_eq!(world.block_on(there.review(&from_here)).unwrap(), Ok(()));

    // `keyrot status` tells where the migration stands and what it waits for.
    let status = world.status_text();
    assert!(
        status.contains(&format!(
            "issuer   migration {KUBEADM_ISSUER} -> {new_issuer}: "
        )) && status.contains(
            "(step 2); waits for `keyrot approve`: every apiserver to accept the new issuer"
        ) && status.contains("waiting  [approval] step 3 waits until every apiserver accepts"),
        "{status}"
    );

    // Run again before the approval: it waits, changing nothing.
    let accepted = manifest(&world);
    assert_code(&world.keyrot(&["migrate-issuer"]), WAITING);
    assert_eq!(manifest(&world), accepted);

    let approve = world.keyrot(&["approve"]);
    assert_code(&approve, 0);
    assert!(
        approve
            .stdout
            .contains("step 3: approved: every apiserver accepts"),
        "{approve:?}"
    );
    // The same flags a migration without acceptFirst ends with.
    assert_eq!(
        issuer_flags(&world),
        [
            format!("service-account-issuer={new_issuer}"),
            format!("service-account-issuer={KUBEADM_ISSUER}"),
            format!("service-account-jwks-uri={new_issuer}/openid/v1/jwks"),
            format!("api-audiences={new_issuer},{KUBEADM_ISSUER}"),
        ]
    );
    let newest = world.block_on(here.token()).unwrap();
    assert_eq!(token_iss(&newest), new_issuer);
    for token in [&from_here, &from_there, &newest] {
        assert_eq!(world.block_on(here.review(token)).unwrap(), Ok(()));
        assert_eq!(world.block_on(there.review(token)).unwrap(), Ok(()));
    }

    // The rollback goes back past the accept step to the original bytes.
    assert_code(&world.keyrot(&["migrate-issuer", "--rollback"]), 0);
    assert_eq!(manifest(&world), FIXTURE);
}
