//! End to end: `keyrot migrate-issuer` moves a kubeadm cluster's issuer to a public URL.
//!
//! The cluster is the stand-in running with the issuer flags of a kubeadm manifest (re-read at
//! every restart, as a kubelet restarts a static pod); the public URL is the HTTPS static server
//! serving the plan's local-directory target. The tests check what a person would: the exit
//! code and output, the manifest's bytes, which tokens the cluster and the STS-like verifier
//! accept.

mod e2e;

use std::time::Instant;

use e2e::KUBEADM_ISSUER;
use e2e::migration::{
    FIXTURE, GRACE, KUBEADM_FLAGS, WAITING, assert_code, issuer_flags, manifest, snapshot,
    token_iss,
};

fn migrating_world(path: &str) -> (e2e::World, String) {
    e2e::migration::migrating_world(path, KUBEADM_FLAGS, true, "")
}

#[test]
fn the_issuer_moves_in_order_and_old_tokens_keep_working_until_the_old_issuer_is_dropped() {
    let (world, new_issuer) = migrating_world("e2e");
    let api = world.api();
    let old_token = world.block_on(api.token()).unwrap();
    assert_eq!(token_iss(&old_token), KUBEADM_ISSUER);

    // Steps 1 to 4; step 5 waits for the grace period.
    let first = world.keyrot(&["migrate-issuer"]);
    // keyrot recorded the flag change before it returned: the grace period ends before this.
    let grace_over = Instant::now() + GRACE;
    assert_code(&first, WAITING);
    for step in ["step 1:", "step 2:", "step 3:", "step 4:"] {
        assert!(first.stdout.contains(step), "no {step} in {first:?}");
    }
    assert!(first.stdout.contains("step 5 waits for the grace period"));
    // The same flags, as kubeadm's ClusterConfiguration needs them to survive an upgrade.
    assert!(
        first.stdout.contains(&format!(
            "    - name: service-account-issuer\n      value: {new_issuer}\n    \
             - name: service-account-issuer\n      value: {KUBEADM_ISSUER}\n"
        )),
        "{first:?}"
    );
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
    assert!(
        world
            .standin_log()
            .contains(&format!("issuing as {new_issuer}")),
        "{}",
        world.standin_log()
    );
    // The published discovery document is the new issuer's.
    let discovery: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(world.path("www/e2e/.well-known/openid-configuration")).unwrap(),
    )
    .unwrap();
    assert_eq!(discovery["issuer"], new_issuer.as_str());
    assert_eq!(discovery["jwks_uri"], jwks_uri.as_str());

    // A token from before the change still works in the cluster; a new one carries the new
    // issuer, works in the cluster and verifies through the STS against the public URL.
    assert_eq!(world.block_on(api.review(&old_token)).unwrap(), Ok(()));
    let new_token = world.block_on(api.token()).unwrap();
    assert_eq!(token_iss(&new_token), new_issuer);
    assert_eq!(world.block_on(api.review(&new_token)).unwrap(), Ok(()));
    let sts = world.sts();
    world.block_on(sts.verify(&new_token)).unwrap();
    assert!(world.block_on(sts.verify(&old_token)).is_err());

    // Run again within the grace period: nothing changes.
    let manifest_before = manifest(&world);
    let again = world.keyrot(&["migrate-issuer"]);
    assert_code(&again, WAITING);
    assert!(!again.stdout.contains("step 3:"), "{again:?}");
    assert_eq!(manifest(&world), manifest_before);

    // After the grace period: the old issuer is dropped, and with it tokens that name it.
    std::thread::sleep(grace_over.saturating_duration_since(Instant::now()));
    let drop = world.keyrot(&["migrate-issuer"]);
    assert_code(&drop, 0);
    assert!(drop.stdout.contains("issuer migration done"), "{drop:?}");
    assert_eq!(
        issuer_flags(&world),
        [
            format!("service-account-issuer={new_issuer}"),
            format!("service-account-jwks-uri={jwks_uri}"),
            format!("api-audiences={new_issuer}"),
        ]
    );
    let rejected = world.block_on(api.review(&old_token)).unwrap();
    assert!(rejected.is_err(), "the old issuer is still accepted");
    let newest = world.block_on(api.token()).unwrap();
    assert_eq!(world.block_on(api.review(&newest)).unwrap(), Ok(()));
    world.block_on(sts.verify(&newest)).unwrap();

    // Done is done: the preview says so, and a further run changes nothing.
    let preview = world.keyrot(&["migrate-issuer", "--dry-run"]);
    assert!(
        preview.stdout.contains("is done") && preview.stdout.contains("set issuer.url to it"),
        "{preview:?}"
    );
    let after = manifest(&world);
    let last = world.keyrot(&["migrate-issuer"]);
    assert_code(&last, 0);
    assert_eq!(manifest(&world), after);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(world.path("state/state.json")).unwrap())
            .unwrap();
    let progress = &state["issuer_migration"];
    assert!(progress["oldIssuerDroppedAt"].is_string(), "{state:#}");
}

#[test]
fn a_dry_run_prints_the_documents_and_the_flag_diff_and_writes_nothing() {
    let (world, new_issuer) = migrating_world("e2e");
    let before = snapshot(&world.path(""));
    let run = world.keyrot(&["migrate-issuer", "--dry-run"]);
    assert_code(&run, 0);
    assert!(
        run.stdout.contains(&format!("\"issuer\":\"{new_issuer}\"")),
        "{run:?}"
    );
    assert!(run.stdout.contains(&format!(
        "+    - --service-account-issuer={new_issuer}\n     - --service-account-issuer={KUBEADM_ISSUER}\n"
    )));
    assert!(run.stdout.contains(&format!(
        "-    - --service-account-issuer={KUBEADM_ISSUER}\n"
    )));
    // `keyrot plan` shows the same preview after the rotation's.
    let plan = world.keyrot(&["plan"]);
    assert!(
        plan.stdout
            .contains("issuer migration (keyrot migrate-issuer):"),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains(&format!("+    - --service-account-issuer={new_issuer}\n"))
    );
    assert_eq!(snapshot(&world.path("")), before);
    assert_eq!(manifest(&world), FIXTURE);
}

#[test]
fn documents_that_are_not_publicly_served_stop_the_migration_before_the_flags() {
    // The target directory is served at /e2e, not at /unserved: a cloud would get 404.
    let (world, new_issuer) = migrating_world("unserved");
    let run = world.keyrot(&["migrate-issuer"]);
    assert_code(&run, 1);
    assert!(
        run.stderr
            .contains("step 2 (verify the new issuer's documents) failed"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&format!(
            "GET {new_issuer}/.well-known/openid-configuration: answered 404"
        )),
        "{run:?}"
    );
    assert!(run.stderr.contains("nothing after it was changed"));
    assert_eq!(manifest(&world), FIXTURE);
    let token = world.block_on(world.api().token()).unwrap();
    assert_eq!(token_iss(&token), KUBEADM_ISSUER);
    // Run again: step 1 is recorded, step 2 fails the same way, the flags stay.
    let again = world.keyrot(&["migrate-issuer"]);
    assert_code(&again, 1);
    assert!(!again.stdout.contains("step 1:"), "{again:?}");
    assert_eq!(manifest(&world), FIXTURE);
}

#[test]
fn a_manifest_the_editor_cannot_read_stops_the_migration_before_anything_changes() {
    let (world, _) = migrating_world("e2e");
    let broken = include_str!("data/issuer/kubeadm-not-parseable.yaml");
    std::fs::write(world.path("manifests/kube-apiserver.yaml"), broken).unwrap();
    let before = snapshot(&world.path(""));
    let run = world.keyrot(&["migrate-issuer"]);
    assert_code(&run, 1);
    // Found before anything is published: the flags are read first.
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.contains("error: ")
            && run.stderr.contains("the manifest does not parse as YAML"),
        "{run:?}"
    );
    assert_eq!(snapshot(&world.path("")), before);
    assert_eq!(manifest(&world), broken);
    assert!(!world.path("state/issuer-backups").exists());
    let token = world.block_on(world.api().token()).unwrap();
    assert_eq!(token_iss(&token), KUBEADM_ISSUER);
}

#[test]
fn tokens_that_may_live_longer_lengthen_the_grace_period_before_the_drop() {
    let (world, _) = e2e::migration::migrating_world(
        "e2e",
        KUBEADM_FLAGS,
        true,
        "  longestTokenLifetime: 48h\n",
    );
    // The plan names tokens living 48 h: longer than the 5 s grace period it asks for.
    let planned = world.keyrot(&["migrate-issuer", "--dry-run"]);
    assert_code(&planned, 0);
    assert!(
        planned.stdout.contains(
            "step 5: after 48h (longestTokenLifetime 48h, longer than gracePeriod 5s), drop"
        ),
        "{planned:?}"
    );
    // kube-apiserver may issue tokens living 30 days: that wins.
    let capped = manifest(&world).replace(
        "    - --secure-port=6443\n",
        "    - --secure-port=6443\n    - --service-account-max-token-expiration=720h\n",
    );
    std::fs::write(world.path("manifests/kube-apiserver.yaml"), capped).unwrap();
    let run = world.keyrot(&["migrate-issuer"]);
    assert_code(&run, WAITING);
    let waiting = run.stdout.lines().last().unwrap();
    assert!(
        waiting.starts_with(
            "step 5 waits for the grace period (--service-account-max-token-expiration=720h in "
        ),
        "{run:?}"
    );
    // The drop is due 30 days after the flag change, not 5 seconds.
    let due = waiting
        .split(" after ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let due = chrono::DateTime::parse_from_rfc3339(due).unwrap();
    let days = (due.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((719..=720).contains(&days), "{waiting}");
}

#[test]
fn keys_rotate_only_once_the_plan_names_the_new_issuer_and_then_publish_for_it() {
    let (world, new_issuer) = e2e::migration::migrating_world("e2e", KUBEADM_FLAGS, false, "");
    assert_code(&world.keyrot(&["migrate-issuer"]), 0);
    let published = world.published_jwks();

    // The plan still names the old issuer: a rotation would publish its discovery document over
    // the new one's, so none starts.
    let refused = world.keyrot(&["rotate"]);
    assert_code(&refused, 1);
    let said = format!("{refused:?}");
    assert!(
        said.contains(&format!("the issuer migration to {new_issuer} is done"))
            && said.contains("set issuer.url to it"),
        "{refused:?}"
    );
    assert_eq!(world.published_jwks(), published);

    // With the plan updated as the migration's docs say, keys rotate and the documents stay
    // the new issuer's.
    let updated = world.plan_yaml().replace(
        &format!("url: {KUBEADM_ISSUER}"),
        &format!("url: {new_issuer}"),
    );
    std::fs::write(world.plan_path(), updated).unwrap();
    let rotate = world.keyrot(&["rotate"]);
    assert_code(&rotate, 0);
    assert!(rotate.stdout.contains("rotation complete"), "{rotate:?}");
    let discovery: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(world.path("www/e2e/.well-known/openid-configuration")).unwrap(),
    )
    .unwrap();
    assert_eq!(discovery["issuer"], new_issuer.as_str());
    let token = world.block_on(world.api().token()).unwrap();
    assert_eq!(token_iss(&token), new_issuer);
    world.block_on(world.sts().verify(&token)).unwrap();
    assert_ne!(world.published_jwks(), published);
}

#[test]
fn a_plan_naming_another_issuer_than_the_manifests_changes_nothing() {
    let (world, _) = migrating_world("e2e");
    let other = "https://kubernetes.default.svc.corp.example";
    let edited = FIXTURE.replace(
        &format!("--service-account-issuer={KUBEADM_ISSUER}"),
        &format!("--service-account-issuer={other}"),
    );
    std::fs::write(world.path("manifests/kube-apiserver.yaml"), &edited).unwrap();
    let before = snapshot(&world.path(""));
    for args in [&["migrate-issuer", "--dry-run"][..], &["migrate-issuer"]] {
        let run = world.keyrot(args);
        assert_code(&run, 1);
        assert!(
            run.stderr.contains(&format!(
                "gives kube-apiserver --service-account-issuer [\"{other}\"], but the plan's \
                 issuer.url is \"{KUBEADM_ISSUER}\""
            )),
            "{run:?}"
        );
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    assert_eq!(snapshot(&world.path("")), before);
}

#[test]
fn a_migration_recorded_by_a_release_before_state_format_2_is_carried_on() {
    let (world, new_issuer) = migrating_world("e2e");
    // What such a release left after steps 1 and 2: a state file of format 1 and the record
    // beside it, in `issuer-migration.json` (this fixture's bytes are that release's format).
    let state_path = world.path("state/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["version"] = 1.into();
    std::fs::write(&state_path, serde_json::to_string_pretty(&state).unwrap()).unwrap();
    let published = "2026-11-30T10:00:00Z";
    let legacy = world.path("state/issuer-migration.json");
    std::fs::write(
        &legacy,
        format!(
            "{{\n  \"oldIssuer\": \"{KUBEADM_ISSUER}\",\n  \"newIssuer\": \"{new_issuer}\",\n  \
             \"publishedAt\": \"{published}\",\n  \"verifiedAt\": \"{published}\",\n  \
             \"flagsChangedAt\": null,\n  \"clusterVerifiedAt\": null,\n  \
             \"oldIssuerDroppedAt\": null\n}}\n"
        ),
    )
    .unwrap();

    // `status` reads it as it is, without changing anything.
    let status = world.status_text();
    assert!(status.contains("documents verified"), "{status}");
    assert!(legacy.exists());

    // The migration goes on from step 3: steps 1 and 2 are not done again.
    let run = world.keyrot(&["migrate-issuer"]);
    assert_code(&run, WAITING);
    assert!(!run.stdout.contains("step 1:"), "{run:?}");
    assert!(!run.stdout.contains("step 2:"), "{run:?}");
    assert!(run.stdout.contains("step 4:"), "{run:?}");
    assert_eq!(
        issuer_flags(&world)[0],
        format!("service-account-issuer={new_issuer}")
    );

    // The record now lives in the state file, which is format 2; the old file is gone.
    assert!(!legacy.exists(), "issuer-migration.json is retired");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert_eq!(state["version"], 2);
    assert_eq!(state["issuer_migration"]["publishedAt"], published);
    assert!(
        state["issuer_migration"]["clusterVerifiedAt"].is_string(),
        "{state:#}"
    );
}
