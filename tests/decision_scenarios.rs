//! Decision-core scenarios: each test reads like the rotation it checks, on an injected clock.

mod harness;

use chrono::TimeDelta;
use harness::{Harness, OLD, canary_plan, plan, probed_plan};
use keyrot::decision::{Action, CanaryResult, Gate, Phase};
use keyrot::keys::Alg;
use keyrot::state::{Role, TriggerKind};

fn role_of(h: &Harness, kid: &str) -> Role {
    h.state
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .expect("key in the ring")
        .role
}

fn gates(decision: &keyrot::decision::Decision) -> Vec<Gate> {
    decision.blocked_by.iter().map(|b| b.gate).collect()
}

#[test]
fn first_use_adopts_the_keys_in_the_files_without_changing_them() {
    let mut h = Harness::new(plan());
    let before = h.world.clone();
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::Schedule]);
    assert_eq!(h.state.keys.len(), 1);
    assert_eq!(
        (h.state.keys[0].kid.as_str(), h.state.keys[0].role),
        (OLD, Role::Active)
    );
    assert_eq!(h.world.bundle, before.bundle);
    assert_eq!(h.world.signing, before.signing);
    assert_eq!(h.world.targets, before.targets);
    assert_eq!(h.state.adopted_at, Some(h.now));
}

#[test]
fn a_manual_rotation_stages_publishes_waits_promotes_waits_and_retires() {
    let mut h = Harness::new(plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);

    // Generate, stage and publish happen at once; promotion waits for caches to expire.
    let waiting = h.settle();
    let new = h.new_kid();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    assert_eq!(h.bundle_kids(), [OLD, new.as_str()]);
    assert_eq!(h.target_kids(), [OLD, new.as_str()]);
    assert_eq!(
        h.world.signing.kid, OLD,
        "nothing signs with the new key before the settle time"
    );
    assert_eq!(role_of(&h, &new), Role::Published);
    assert_eq!(waiting.wake_at, Some(h.now + h.plan.timings.publish_settle));

    // After the settle time the new key signs; the old one stays verifiable for retire_after.
    let promoted_at = waiting.wake_at.unwrap();
    let waiting = h.sleep_until_woken();
    assert_eq!(gates(&waiting), [Gate::RetireAfter]);
    assert_eq!(h.world.signing.kid, new);
    assert_eq!(h.world.apiserver_signing, new);
    assert_eq!(h.bundle_kids(), [OLD, new.as_str()]);
    assert_eq!(
        (role_of(&h, &new), role_of(&h, OLD)),
        (Role::Active, Role::Retiring)
    );
    assert_eq!(
        waiting.wake_at,
        Some(promoted_at + h.plan.timings.retire_after)
    );

    // After retire_after the old key leaves the bundle and the targets, and the rotation ends.
    let waiting = h.sleep_until_woken();
    assert_eq!(gates(&waiting), [Gate::Schedule]);
    assert!(h.state.rotation.is_none());
    assert_eq!(h.bundle_kids(), [new.as_str()]);
    assert_eq!(h.target_kids(), [new.as_str()]);
    assert_eq!(role_of(&h, OLD), Role::Retired);
    assert_eq!(h.state.last_rotation_completed_at, Some(h.now));
    let phases: Vec<&str> = h.log.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert!(
        phases
            .windows(2)
            .all(|w| phase_rank(w[0]) <= phase_rank(w[1]) || w[1] == "idle"),
        "{:?}",
        h.log
    );
}

fn phase_rank(name: &str) -> usize {
    Phase::ALL
        .iter()
        .position(|p| p.as_str() == name)
        .map_or(0, |i| i + 1)
}

#[test]
fn promotion_waits_while_a_target_does_not_serve_the_new_key_and_retries_after_the_timeout() {
    let mut h = Harness::new(plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.settle();
    // Someone (or a stale CDN) puts the old JWKS back.
    h.world.targets[0].1 = vec![OLD.to_string()];
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::TargetsServeKeys]);
    assert!(
        waiting.blocked_by[0]
            .reason
            .contains("web serves [old-kid]"),
        "{}",
        waiting.blocked_by[0].reason
    );
    assert_eq!(h.world.signing.kid, OLD);

    h.advance(h.plan.timings.gate_timeout);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::Backoff]);
    let rotation = h.state.rotation.as_ref().unwrap();
    assert_eq!(rotation.attempts, 1);
    assert!(
        rotation
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("targets-serve-keys")
    );

    // The retry republishes; the target serves the new key again and the settle time restarts.
    let waiting = h.sleep_until_woken();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    assert_eq!(h.target_kids(), [OLD, h.new_kid().as_str()]);
}

#[test]
fn a_target_serving_the_old_discovery_document_blocks_promotion_after_an_algorithm_change() {
    // The cluster signs with an ES256 key; the plan rotates to RSA, so the discovery document's
    // id_token_signing_alg_values_supported changes from [ES256] to [ES256, RS256].
    let mut h = Harness::new(plan());
    h.world.bundle[0].alg = Alg::ES256;
    h.world.signing.alg = Alg::ES256;
    h.settle();
    h.trigger(TriggerKind::Rotate);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    let published = h.world.targets[0].2.clone().unwrap();
    assert!(published.contains(r#"["ES256","RS256"]"#), "{published}");

    // A second writer (or a stale cache) puts the old discovery document back; the JWKS, with
    // both kids, stays right.
    let old_discovery = published.replace(r#"["ES256","RS256"]"#, r#"["ES256"]"#);
    h.world.targets[0].2 = Some(old_discovery);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::TargetsServeKeys]);
    assert_eq!(
        waiting.blocked_by[0].reason,
        format!(
            "expected [{OLD}, {new}]; web serves another discovery document: \
             id_token_signing_alg_values_supported is [\"ES256\"], expected [\"ES256\",\"RS256\"]",
            new = h.new_kid()
        )
    );
    assert_eq!(h.world.signing.kid, OLD, "nothing promoted");

    // After the gate's timeout the retry republishes both documents and promotion goes on.
    h.advance(h.plan.timings.gate_timeout);
    assert_eq!(gates(&h.settle()), [Gate::Backoff]);
    assert_eq!(gates(&h.sleep_until_woken()), [Gate::PublishSettle]);
    assert_eq!(h.world.targets[0].2.as_deref(), Some(published.as_str()));
    h.advance(h.plan.timings.publish_settle);
    h.settle();
    assert_eq!(h.world.signing.kid, h.new_kid());
}

#[test]
fn a_target_serving_no_discovery_document_blocks_promotion() {
    let mut h = Harness::new(plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.settle();
    h.world.targets[0].2 = None;
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::TargetsServeKeys]);
    assert!(
        waiting.blocked_by[0]
            .reason
            .ends_with("web serves no discovery document"),
        "{}",
        waiting.blocked_by[0].reason
    );
    assert_eq!(h.world.signing.kid, OLD);
}

#[test]
fn with_a_probe_staging_waits_until_the_apiserver_serves_the_new_key() {
    let mut h = Harness::new(probed_plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    // The restart is requested but the apiserver keeps its old keys (slow to come back).
    for _ in 0..10 {
        let decision = keyrot::decision::decide(&h.plan, &h.state, &h.world.observe(), h.now);
        let Some(action) = decision.actions.first() else {
            break;
        };
        if matches!(action, keyrot::decision::Action::Restart { .. }) {
            keyrot::decision::apply(&mut h.state, &h.plan, action, h.now);
            break;
        }
        h.step();
    }
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::ApiserverServesBundle]);
    assert!(waiting.wake_at.unwrap() <= h.now + TimeDelta::seconds(30));
    assert!(
        h.target_kids().is_empty(),
        "nothing is published before the apiserver serves the key"
    );
}

#[test]
fn a_phase_held_for_approval_waits_for_keyrot_approve() {
    let mut p = plan();
    p.approvals.insert(Phase::Promote);
    let mut h = Harness::new(p);
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.settle();
    let waiting = h.sleep_until_woken();
    assert_eq!(gates(&waiting), [Gate::Approval]);
    assert_eq!(waiting.wake_at, None, "only a person can release it");
    assert_eq!(h.world.signing.kid, OLD);

    h.trigger(TriggerKind::Approve);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::RetireAfter]);
    assert_eq!(h.world.signing.kid, h.new_kid());
}

#[test]
fn no_rotation_starts_while_an_issuer_migration_is_recorded_for_the_plans_issuer() {
    let mut p = plan();
    p.schedule = Some(keyrot::plan::Schedule::parse("@daily", chrono_tz::UTC).unwrap());
    let mut h = Harness::new(p);
    h.settle();
    let record =
        keyrot::migration::record::MigrationRecord::new(&h.plan.issuer.url, "https://new.example");
    let why = keyrot::decision::migration::blocks_rotation(&h.plan, &record).unwrap();
    assert!(why.contains("under way"), "{why}");
    h.state.issuer_migration = Some(record);
    h.advance(TimeDelta::days(2));
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::IssuerMigration], "{waiting:?}");
    assert_eq!(waiting.wake_at, None);
    h.trigger(TriggerKind::Rotate);
    let refused = h.step();
    assert_eq!(
        refused.actions,
        [Action::ConsumeTrigger {
            kind: TriggerKind::Rotate,
            outcome: format!("refused: {why}"),
        }]
    );
    assert_eq!(gates(&h.settle()), [Gate::IssuerMigration]);
    assert_eq!(h.world.signing.kid, OLD);
    assert!(h.state.rotation.is_none());

    // Once the plan names the new issuer the record no longer concerns it: the overdue
    // scheduled rotation starts.
    h.plan.issuer.url = "https://new.example".to_string();
    h.step();
    assert!(h.state.rotation.is_some());
}

#[test]
fn abort_before_promotion_drops_the_new_key_everywhere() {
    let mut h = Harness::new(plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.settle();
    let new = h.new_kid();
    h.trigger(TriggerKind::Abort);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::Schedule]);
    assert!(h.state.rotation.is_none());
    assert_eq!(h.bundle_kids(), [OLD]);
    assert_eq!(h.target_kids(), [OLD]);
    assert_eq!(h.world.signing.kid, OLD);
    assert!(
        h.world.private_keys.iter().all(|(k, _)| k.kid != new),
        "the new private key is destroyed"
    );
    assert_eq!(
        (role_of(&h, &new), role_of(&h, OLD)),
        (Role::Retired, Role::Active)
    );
}

#[test]
fn abort_after_promotion_is_refused_and_says_to_roll_back() {
    let mut h = Harness::new(plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.sleep_until_woken();
    let new = h.new_kid();
    h.trigger(TriggerKind::Abort);
    h.step();
    assert!(h.state.triggers.is_empty());
    assert_eq!(h.world.signing.kid, new);
    assert!(h.state.rotation.is_some());
}

#[test]
fn rollback_after_promotion_signs_with_the_old_key_and_retires_the_new_one_later() {
    let mut h = Harness::new(plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.sleep_until_woken();
    let new = h.new_kid();
    assert_eq!(h.world.signing.kid, new);

    h.trigger(TriggerKind::Rollback);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::RetireAfter]);
    assert_eq!(h.world.signing.kid, OLD);
    assert_eq!(
        h.bundle_kids(),
        [OLD, new.as_str()],
        "the new key signed tokens: it stays verifiable"
    );
    assert!(h.state.rotation.as_ref().unwrap().rolled_back);

    h.sleep_until_woken();
    assert_eq!(h.bundle_kids(), [OLD]);
    assert_eq!(h.target_kids(), [OLD]);
    assert_eq!(role_of(&h, &new), Role::Retired);
}

#[test]
fn a_second_rotate_during_a_rotation_continues_it_and_starts_nothing_new() {
    let mut h = Harness::new(plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.settle();
    let id = h.state.rotation.as_ref().unwrap().id.clone();
    h.trigger(TriggerKind::Rotate);
    h.settle();
    assert_eq!(h.state.rotation.as_ref().unwrap().id, id);
    assert!(h.state.triggers.is_empty());
}

#[test]
fn a_signing_key_missing_from_the_bundle_blocks_everything() {
    let mut h = Harness::new(plan());
    h.world.bundle.clear();
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::ClusterKeys]);
    assert!(
        waiting.blocked_by[0]
            .reason
            .contains("rejects every new token")
    );
    assert!(
        h.state.keys.is_empty(),
        "nothing is adopted from a broken cluster"
    );
}

#[test]
fn retired_keys_beyond_keep_retired_are_forgotten() {
    let mut h = Harness::new(plan());
    h.settle();
    for _ in 0..4 {
        h.trigger(TriggerKind::Rotate);
        h.sleep_until_woken();
        h.sleep_until_woken();
        assert!(h.state.rotation.is_none());
    }
    let retired = h
        .state
        .keys
        .iter()
        .filter(|k| k.role == Role::Retired)
        .count();
    assert_eq!(retired, h.plan.keep_retired);
    assert_eq!(
        h.state
            .keys
            .iter()
            .filter(|k| k.role == Role::Active)
            .count(),
        1
    );
}

#[test]
fn abort_is_allowed_while_promotion_waits_for_approval_because_nothing_signed_yet() {
    let mut p = plan();
    p.approvals.insert(Phase::Promote);
    let mut h = Harness::new(p);
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.sleep_until_woken();
    assert_eq!(h.state.rotation.as_ref().unwrap().phase, Phase::Promote);
    let new = h.new_kid();
    h.trigger(TriggerKind::Abort);
    h.settle();
    assert!(h.state.rotation.is_none());
    assert_eq!(h.bundle_kids(), [OLD]);
    assert_eq!(role_of(&h, &new), Role::Retired);
}

#[test]
fn an_apiserver_that_does_not_come_back_after_staging_gets_the_previous_bundle_back() {
    let mut h = Harness::new(probed_plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    // Every restart with the new bundle crashes the apiserver.
    let mut crashes = 0;
    for _ in 0..50 {
        let decision = h.step();
        let restarted = decision
            .actions
            .iter()
            .any(|a| matches!(a, keyrot::decision::Action::Restart { .. }));
        if restarted && h.bundle_kids().len() == 2 {
            h.world.apiserver_up = false;
            crashes += 1;
        }
        if decision.actions.is_empty() {
            if gates(&decision) == [Gate::Backoff] {
                break;
            }
            h.now = decision.wake_at.unwrap();
        }
    }
    assert_eq!(crashes, 1);
    let rotation = h.state.rotation.as_ref().unwrap();
    assert_eq!(rotation.attempts, 1);
    assert!(
        rotation
            .last_error
            .as_deref()
            .unwrap()
            .contains("apiserver did not answer")
    );
    // During the backoff the apiserver runs, with the bundle it had before.
    assert_eq!(h.bundle_kids(), [OLD]);
    assert!(h.world.apiserver_up);
    assert_eq!(h.world.apiserver_bundle, [OLD]);

    // The retry stages again; this time the apiserver comes back and the rotation goes on.
    let waiting = h.sleep_until_woken();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    assert_eq!(h.bundle_kids().len(), 2);
}

#[test]
fn approve_with_force_opens_the_gate_the_rotation_waits_on_and_records_it() {
    let mut h = Harness::new(plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    h.state.triggers.push(keyrot::state::Trigger {
        kind: TriggerKind::Approve,
        requested_at: h.now,
        force: true,
    });
    let waiting = h.settle();
    assert_eq!(
        gates(&waiting),
        [Gate::RetireAfter],
        "promoted without waiting for the caches"
    );
    assert_eq!(h.world.signing.kid, h.new_kid());
    // The forced gate applied to its phase only: retire-after still holds.
    assert!(h.bundle_kids().contains(&OLD.to_string()));
}

#[test]
fn approve_without_force_does_not_open_a_timed_gate() {
    let mut h = Harness::new(plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.settle();
    h.trigger(TriggerKind::Approve);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    assert_eq!(h.world.signing.kid, OLD);
}

/// Each restart of a rotation (and of its rollback) with its phase and whether it restarts
/// kube-controller-manager, after settling and sleeping through every wait.
fn restarts_until_idle(h: &mut Harness) -> Vec<(String, bool)> {
    let mut restarts = Vec::new();
    for _ in 0..50 {
        let decision = h.step();
        let phase = h.state.rotation.as_ref().map(|r| r.phase.to_string());
        for action in &decision.actions {
            if let keyrot::decision::Action::Restart {
                controller_manager, ..
            } = action
            {
                restarts.push((phase.clone().unwrap_or_default(), *controller_manager));
            }
        }
        if decision.actions.is_empty() {
            if h.state.rotation.is_none() && h.state.triggers.is_empty() {
                return restarts;
            }
            h.now = decision.wake_at.expect("a timed wait");
        }
    }
    panic!("the rotation did not end: {:?}", h.log);
}

#[test]
fn controller_manager_restarts_only_when_its_key_file_changed() {
    let plan = keyrot::plan::Plan {
        controller_manager: Some(keyrot::plan::ControllerManager {
            private_key_file: "/etc/kubernetes/pki/sa.key".into(),
            restart: keyrot::plan::Restart::StaticPod {
                manifest: "/etc/kubernetes/manifests/kube-controller-manager.yaml".into(),
            },
        }),
        ..plan()
    };
    let mut h = Harness::new(plan.clone());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    let restarts = restarts_until_idle(&mut h);
    assert_eq!(
        restarts,
        [
            ("stage".to_string(), false),
            ("promote".to_string(), true),
            ("retire".to_string(), false)
        ],
        "only promotion changes the controller manager's key file"
    );

    // A rollback writes the old key back into its file: the controller manager restarts again.
    let mut h = Harness::new(plan);
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.sleep_until_woken();
    h.trigger(TriggerKind::Rollback);
    let restarts = restarts_until_idle(&mut h);
    assert!(
        restarts.first().is_some_and(|(_, cm)| *cm),
        "the rollback's restart includes the controller manager: {restarts:?}"
    );
    assert!(
        restarts.iter().skip(1).all(|(_, cm)| !cm),
        "retiring after the rollback leaves it alone: {restarts:?}"
    );
}

#[test]
fn a_missing_key_file_on_a_production_plan_does_not_suggest_keyrot_init() {
    let h = Harness::new(plan());
    let mut observed = h.world.observe();
    observed.bundle = None;
    let decision = keyrot::decision::decide(&h.plan, &h.state, &observed, h.now);
    let reason = &decision.blocked_by[0].reason;
    assert!(!reason.contains("`keyrot init` creates"), "{reason}");
    assert!(reason.contains("--service-account-key-file"), "{reason}");
    assert!(reason.contains("control-plane node"), "{reason}");

    let sandbox = keyrot::plan::Plan {
        test_plan: true,
        ..plan()
    };
    let decision = keyrot::decision::decide(&sandbox, &h.state, &observed, h.now);
    assert!(
        decision.blocked_by[0]
            .reason
            .contains("`keyrot init` creates a first key set")
    );
}

#[test]
fn a_clock_at_the_end_of_the_calendar_waits_forever_rather_than_panics() {
    // A clock set (or a state file written) a few minutes before the last time chrono holds:
    // every wait of the plan ends past it, so it never ends, and a failed gate never retries.
    let mut h = Harness::new(plan());
    h.now = chrono::DateTime::<chrono::Utc>::MAX_UTC - TimeDelta::minutes(1);
    h.settle();
    h.trigger(TriggerKind::Rotate);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    assert_eq!(waiting.wake_at, None);
    assert!(
        waiting.blocked_by[0].reason.ends_with("forever"),
        "{}",
        waiting.blocked_by[0].reason
    );

    // A target that stops serving the new key: the gate times out only at a time that never
    // comes, so it is looked at again and again, and nothing panics.
    h.world.targets[0].1 = vec![OLD.to_string()];
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::TargetsServeKeys]);
    assert!(waiting.wake_at.is_some_and(|t| t > h.now));
    h.now = waiting.wake_at.unwrap();
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::TargetsServeKeys]);
    assert_eq!(h.world.signing.kid, OLD);
}

/// The one blocked gate's reason.
fn reason(decision: &keyrot::decision::Decision) -> &str {
    &decision.blocked_by[0].reason
}

#[test]
fn a_relying_party_is_asked_only_after_the_settle_time_and_its_acceptance_lets_the_new_key_sign() {
    let mut h = Harness::new(canary_plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    assert!(
        h.world.canaries.is_empty(),
        "no cloud is asked while caches may hold the old JWKS: {:?}",
        h.world.canaries
    );

    let waiting = h.sleep_until_woken();
    let new = h.new_kid();
    assert_eq!(gates(&waiting), [Gate::RetireAfter]);
    assert_eq!(h.world.signing.kid, new);
    assert_eq!(
        h.world.canaries[0].result,
        CanaryResult::Accepted { kid: new.clone() }
    );
}

#[test]
fn a_relying_party_with_a_stale_jwks_blocks_promotion_until_it_refreshes() {
    let mut h = Harness::new(canary_plan());
    h.settle();
    h.world.relying_parties[0].cached = Some(vec![OLD.to_string()]);
    h.trigger(TriggerKind::Rotate);
    h.settle();
    let waiting = h.sleep_until_woken();
    let new = h.new_kid();
    assert_eq!(gates(&waiting), [Gate::RelyingPartiesAccept]);
    assert!(
        reason(&waiting).contains(&format!(
            "web refused a token signed by {new}: no key with kid"
        )),
        "{}",
        reason(&waiting)
    );
    assert_eq!(
        h.world.signing.kid, OLD,
        "nothing signs before the cloud accepts"
    );
    let look_again = waiting.wake_at.unwrap();
    assert!(look_again > h.now && look_again <= h.now + h.plan.timings.gate_timeout);

    // Still stale at the next look: still blocked, and the exchange was tried again.
    h.now = look_again;
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::RelyingPartiesAccept]);
    assert_eq!(h.world.signing.kid, OLD);

    // The cloud refreshes its cache: the next exchange passes and the new key signs.
    h.world.relying_parties[0].cached = None;
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::RetireAfter]);
    assert_eq!(h.world.signing.kid, new);
}

#[test]
fn a_refusing_relying_party_fails_the_attempt_with_the_clouds_words_and_the_retry_publishes_again()
{
    let mut h = Harness::new(canary_plan());
    h.settle();
    let words = "InvalidIdentityToken: Incorrect token audience";
    h.world.relying_parties[0].refusal = Some(words.to_string());
    h.trigger(TriggerKind::Rotate);
    h.settle();
    let waiting = h.sleep_until_woken();
    assert_eq!(gates(&waiting), [Gate::RelyingPartiesAccept]);
    assert!(reason(&waiting).ends_with(words), "{}", reason(&waiting));

    // The gate timeout counts from the end of the settle time, not from the phase start.
    h.advance(h.plan.timings.gate_timeout - TimeDelta::seconds(1));
    assert_eq!(gates(&h.settle()), [Gate::RelyingPartiesAccept]);
    h.advance(TimeDelta::seconds(1));
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::Backoff]);
    let rotation = h.state.rotation.as_ref().unwrap();
    assert_eq!(rotation.attempts, 1);
    let last_error = rotation.last_error.as_deref().unwrap();
    assert!(
        last_error.starts_with("relying-parties-accept: ") && last_error.ends_with(words),
        "{last_error}"
    );

    // The retry publishes again and waits for caches once more before asking again.
    h.world.relying_parties[0].refusal = None;
    let waiting = h.sleep_until_woken();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    assert_eq!(h.world.signing.kid, OLD);
    let waiting = h.sleep_until_woken();
    assert_eq!(gates(&waiting), [Gate::RetireAfter]);
}

#[test]
fn a_target_without_a_canary_is_not_waited_for() {
    let mut plan = canary_plan();
    let mut second = plan.targets[0].clone();
    second.name = "plain".into();
    second.canary = None;
    plan.targets.push(second);
    let mut h = Harness::new(plan);
    h.settle();
    h.trigger(TriggerKind::Rotate);
    h.settle();
    let waiting = h.sleep_until_woken();
    assert_eq!(gates(&waiting), [Gate::RetireAfter]);
    assert_eq!(h.world.canaries.len(), 1, "{:?}", h.world.canaries);
}

#[test]
fn in_signer_mode_staging_waits_until_the_apiserver_fetched_the_signers_set() {
    use keyrot::decision::{KeySetStamps, Probed, decide};
    let mut h = Harness::new(probed_plan());
    h.settle();
    h.trigger(TriggerKind::Rotate);
    // Up to the stage gate: the new key is in the bundle and the apiserver's JWKS.
    for _ in 0..20 {
        let in_stage = h
            .state
            .rotation
            .as_ref()
            .is_some_and(|r| r.phase == Phase::Stage)
            && h.world.apiserver_bundle.len() == 2;
        if in_stage {
            break;
        }
        h.step();
    }
    assert_eq!(h.state.rotation.as_ref().unwrap().phase, Phase::Stage);
    let with_stamps = |signer: i64, apiserver: Probed<i64>| {
        let mut observed = h.world.observe();
        observed.key_sets = Some(KeySetStamps {
            signer: Probed::Seen(signer),
            apiserver,
        });
        decide(&h.plan, &h.state, &observed, h.now)
    };
    // The JWKS lists the new key, but the apiserver still holds an older set of the signer's.
    let lagging = with_stamps(2_000, Probed::Seen(1_000));
    assert_eq!(gates(&lagging), [Gate::ApiserverServesBundle]);
    let reason = &lagging.blocked_by[0].reason;
    assert!(reason.contains("not fetched yet"), "{reason}");
    // Metrics the probe cannot read keep it closed too: observed, never assumed.
    let unreadable = with_stamps(2_000, Probed::Failed("403 Forbidden".into()));
    assert_eq!(gates(&unreadable), [Gate::ApiserverServesBundle]);
    assert!(unreadable.blocked_by[0].reason.contains("403 Forbidden"));
    // Fetched: the rotation goes on to publishing.
    let fetched = with_stamps(2_000, Probed::Seen(2_000));
    assert!(
        !gates(&fetched).contains(&Gate::ApiserverServesBundle),
        "{fetched:?}"
    );
}

#[test]
fn keeping_the_next_key_stages_and_publishes_it_at_once_and_promotes_it_on_schedule() {
    use keyrot::plan::Schedule;
    use keyrot::state::Cause;
    // Daily at 03:00; the harness starts at 12:00, so the first promotion is tomorrow 03:00.
    let schedule = Schedule::parse("0 3 * * *", chrono_tz::UTC).unwrap();
    let plan = keyrot::plan::Plan {
        keep_next_key: true,
        schedule: Some(schedule),
        ..plan()
    };
    let mut h = Harness::new(plan);
    let start = h.now;
    // First use: the keys are adopted and the next key goes out at once.
    let waiting = h.settle();
    assert_eq!(gates(&waiting), [Gate::PublishSettle]);
    let next = h.new_kid();
    assert_eq!(h.bundle_kids(), [OLD, next.as_str()]);
    assert_eq!(h.target_kids(), [OLD, next.as_str()]);
    assert_eq!(h.state.rotation.as_ref().unwrap().cause, Cause::NextKey);

    // Settled: it waits for the schedule, still not signing.
    let ready = h.sleep_until_woken();
    assert_eq!(gates(&ready), [Gate::Schedule]);
    let reason = &ready.blocked_by[0].reason;
    assert!(reason.contains("is ready"), "{reason}");
    let due = ready.wake_at.expect("the schedule's next time");
    assert_eq!(
        due,
        start
            .date_naive()
            .succ_opt()
            .unwrap()
            .and_hms_opt(3, 0, 0)
            .unwrap()
            .and_utc()
    );
    assert_eq!(h.world.signing.kid, OLD);

    // At 03:00 it signs at once: no publishSettle wait, its caches settled hours ago.
    h.now = due;
    let after = h.settle();
    assert_eq!(h.world.signing.kid, next, "promoted at the scheduled time");
    assert_eq!(gates(&after), [Gate::RetireAfter]);

    // Once the old key retired, the key after it is staged and published right away.
    let again = h.sleep_until_woken();
    assert_eq!(gates(&again), [Gate::PublishSettle]);
    assert!(h.state.last_rotation_completed_at.is_some());
    let following = h.new_kid();
    assert_ne!(following, next);
    assert_eq!(h.bundle_kids(), [next.as_str(), following.as_str()]);
}

#[test]
fn keyrot_rotate_promotes_the_next_key_kept_ready_without_waiting_for_the_schedule() {
    let plan = keyrot::plan::Plan {
        keep_next_key: true,
        ..plan()
    };
    let mut h = Harness::new(plan);
    h.settle();
    let next = h.new_kid();
    let ready = h.sleep_until_woken();
    assert_eq!(
        gates(&ready),
        [Gate::Schedule],
        "no schedule: it waits for a person"
    );
    h.trigger(TriggerKind::Rotate);
    h.settle();
    assert_eq!(h.world.signing.kid, next);
}
