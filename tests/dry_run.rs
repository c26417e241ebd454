//! The dry run's timeline: every phase in order, the waits with their earliest times, and the
//! keys before and after, simulated from an observation without touching anything.

mod harness;

use harness::{OLD, fresh_world, plan, t0};
use keyrot::decision::{Gate, Phase};
use keyrot::dry_run::{StepKind, render_text, simulate};

#[test]
fn shows_the_whole_rotation_with_its_waits_and_the_keys_after() {
    let plan = plan();
    let observed = fresh_world(&plan).observe();
    let run = simulate(&plan, None, &observed, t0());

    assert_eq!(run.blocked, None);
    assert_eq!(run.notes, ["no schedule: assumed `keyrot rotate` now"]);
    assert_eq!(run.before.verification_bundle, [OLD]);
    assert_eq!(run.after.signing, "<new key 1>");
    assert_eq!(run.after.verification_bundle, ["<new key 1>"]);
    assert_eq!(run.after.targets[0].kids, ["<new key 1>"]);

    let waits: Vec<(Gate, chrono::DateTime<chrono::Utc>)> = run
        .timeline
        .iter()
        .filter_map(|s| match &s.what {
            StepKind::Wait { gate, until, .. } => Some((*gate, until.unwrap())),
            _ => None,
        })
        .collect();
    let settled = t0() + plan.timings.publish_settle;
    assert_eq!(
        waits,
        [
            (Gate::PublishSettle, settled),
            (Gate::RetireAfter, settled + plan.timings.retire_after)
        ]
    );

    let phases: Vec<Phase> = run.timeline.iter().filter_map(|s| s.phase).collect();
    assert!(phases.is_sorted(), "phases run in order: {phases:?}");
    assert_eq!(phases.first(), Some(&Phase::Generate));
    assert_eq!(phases.last(), Some(&Phase::Retire));

    let text = render_text(&run);
    assert!(text.contains("wait [publish-settle]"), "{text}");
    assert!(
        text.contains("write /etc/kubernetes/pki/sa.pub: [old-kid, <new key 1>]"),
        "{text}"
    );
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
}

#[test]
fn an_approval_is_shown_as_a_wait_and_assumed() {
    let mut plan = plan();
    plan.approvals.insert(Phase::Promote);
    let observed = fresh_world(&plan).observe();
    let run = simulate(&plan, None, &observed, t0());
    assert!(run.timeline.iter().any(|s| matches!(
        s.what,
        StepKind::Wait {
            gate: Gate::Approval,
            ..
        }
    )));
    assert!(run.notes.iter().any(|n| n.contains("keyrot approve")));
    assert_eq!(run.blocked, None);
}

#[test]
fn a_cluster_without_key_files_is_reported_blocked() {
    let plan = plan();
    let mut observed = fresh_world(&plan).observe();
    observed.signing = None;
    let run = simulate(&plan, None, &observed, t0());
    assert!(run.blocked.as_deref().unwrap().contains("keyrot init"));
    assert!(run.timeline.is_empty());
}

#[test]
fn the_json_form_names_every_step() {
    let plan = plan();
    let observed = fresh_world(&plan).observe();
    let run = simulate(&plan, None, &observed, t0());
    let json: serde_json::Value = serde_json::to_value(&run).unwrap();
    let steps = json["timeline"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .all(|s| s["kind"] == "action" || s["kind"] == "wait")
    );
    assert!(steps.iter().any(|s| s["gate"] == "retire-after"));
    assert_eq!(json["after"]["signing"], "<new key 1>");
}

#[test]
fn mid_rotation_it_shows_only_what_remains() {
    let mut h = harness::Harness::new(plan());
    h.settle();
    h.trigger(keyrot::state::TriggerKind::Rotate);
    h.settle();
    let new = h.new_kid();
    let run = simulate(&h.plan, Some(&h.state), &h.world.observe(), h.now);
    assert_eq!(run.blocked, None);
    assert!(run.notes.is_empty(), "no trigger assumed: {:?}", run.notes);
    let phases: Vec<Phase> = run.timeline.iter().filter_map(|s| s.phase).collect();
    assert_eq!(phases.first(), Some(&Phase::Publish));
    assert!(!phases.contains(&Phase::Generate));
    assert_eq!(run.after.signing, new);
    assert_eq!(run.after.verification_bundle, [new]);
}

#[test]
fn every_restart_is_shown_and_the_controller_manager_only_when_its_key_changes() {
    let plan = keyrot::plan::Plan {
        apiserver: keyrot::plan::Apiserver {
            restart: keyrot::plan::Restart::StaticPod {
                manifest: "/etc/kubernetes/manifests/kube-apiserver.yaml".into(),
            },
            ..plan().apiserver
        },
        controller_manager: Some(keyrot::plan::ControllerManager {
            private_key_file: "/etc/kubernetes/pki/sa.key".into(),
            restart: keyrot::plan::Restart::StaticPod {
                manifest: "/etc/kubernetes/manifests/kube-controller-manager.yaml".into(),
            },
        }),
        ..plan()
    };
    let observed = fresh_world(&plan).observe();
    let run = simulate(&plan, None, &observed, t0());
    let text = render_text(&run);
    let restarts: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("restart the apiserver"))
        .collect();
    assert_eq!(restarts.len(), 3, "stage, promote, retire: {text}");
    let with_cm: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("kube-controller-manager.yaml"))
        .collect();
    assert_eq!(
        with_cm.len(),
        1,
        "only promotion changes its key file: {text}"
    );
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
}

#[test]
fn a_canary_is_shown_as_its_own_step_per_target_before_promotion() {
    let mut plan = harness::canary_plan();
    let mut plain = plan.targets[0].clone();
    plain.name = "plain".into();
    plain.canary = None;
    plan.targets.push(plain);
    let observed = fresh_world(&plan).observe();
    let run = simulate(&plan, None, &observed, t0());
    assert_eq!(run.blocked, None);

    let canaries: Vec<(&str, Option<Phase>)> = run
        .timeline
        .iter()
        .filter_map(|s| match &s.what {
            StepKind::Action {
                action,
                description,
                changes,
                ..
            } if action == "exchange-canary" => {
                assert!(!changes, "a canary changes nothing");
                Some((description.as_str(), s.phase))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        canaries,
        [(
            "web: a canary token signed by <new key 1> (sub system:serviceaccount:keyrot-system:keyrot-canary, \
             aud sts.amazonaws.com) must be accepted by AWS STS AssumeRoleWithWebIdentity for \
             arn:aws:iam::123456789012:role/keyrot-canary",
            Some(Phase::Publish)
        )]
    );
    let position = |what: &str| {
        run.timeline
            .iter()
            .position(|s| {
                matches!(&s.what, StepKind::Action { action, description, .. }
                if action == what || description.contains(what))
            })
            .unwrap_or_else(|| panic!("no step {what}"))
    };
    let settled_wait = run
        .timeline
        .iter()
        .position(|s| {
            matches!(
                &s.what,
                StepKind::Wait {
                    gate: Gate::PublishSettle,
                    ..
                }
            )
        })
        .unwrap();
    assert!(settled_wait < position("exchange-canary"));
    assert!(position("exchange-canary") < position("enter phase promote"));
    assert!(render_text(&run).contains("web: a canary token signed by"));
}

/// `plan()` with an issuer migration whose flags a person changes.
fn migrating_plan() -> keyrot::plan::Plan {
    let text = "cluster: c\nflavour: kubeadm\nissuer: { url: \"https://issuer.example.com\" }\n\
                targets: [{ name: web, localDirectory: /srv/oidc }]\n\
                issuerMigration:\n  newIssuer: \"https://new.example\"\n  flags: manual\n  \
                gracePeriod: 48h\n  dropOldIssuer: true\n";
    let parsed = keyrot::plan::parse(std::path::Path::new("/etc/keyrot/plan.yaml"), text).unwrap();
    keyrot::plan::Plan {
        issuer_migration: parsed.issuer_migration,
        ..plan()
    }
}

/// The dry run of a request of `kind` to the migrating plan's issuer migration, on first use.
fn simulated(kind: keyrot::state::TriggerKind) -> keyrot::dry_run::DryRun {
    let plan = migrating_plan();
    let observed = fresh_world(&plan).observe();
    keyrot::dry_run::simulate_request(&plan, None, &observed, t0(), kind, &mut |_| None)
}

/// The dry run's timeline in a few words: each step's action name or its wait's gate.
fn steps(run: &keyrot::dry_run::DryRun) -> Vec<String> {
    run.timeline
        .iter()
        .map(|s| match &s.what {
            StepKind::Action { action, .. } => action.clone(),
            StepKind::Wait { gate, .. } => format!("wait {gate}"),
        })
        .collect()
}

#[test]
fn an_issuer_migration_is_previewed_by_the_same_core_step_by_step_with_its_waits() {
    let run = simulated(keyrot::state::TriggerKind::MigrateIssuer);
    assert_eq!(run.blocked, None, "{run:?}");
    assert_eq!(
        steps(&run),
        [
            "adopt",
            "start-issuer-migration",
            "step 1 (publish for the new issuer)",
            "step 2 (verify the new issuer's documents)",
            "step 3 (change the flags and restart)",
            "wait approval",
            "step 3 (change the flags and restart)",
            "step 4 (verify the cluster)",
            "wait old-issuer-grace",
            "step 5 (drop the old issuer)",
            "wait approval",
            "step 5 (drop the old issuer)",
            "wait issuer-migration",
        ]
    );
    // The drop comes once the grace period is over, as the daemon would wake for it.
    let drop = run
        .timeline
        .iter()
        .find(
            |s| matches!(&s.what, StepKind::Action { action, .. } if action.starts_with("step 5")),
        )
        .unwrap();
    assert_eq!(drop.at, t0() + chrono::TimeDelta::hours(48));
    assert_eq!(
        run.notes,
        ["assumed the change asked for, then `keyrot approve`"; 2]
    );
}

#[test]
fn an_issuer_migration_refused_by_the_core_shows_why_and_no_step() {
    // Nothing recorded: a rollback has nothing to do.
    let run = simulated(keyrot::state::TriggerKind::RollbackIssuerMigration);
    assert_eq!(
        steps(&run),
        ["adopt"],
        "first use records the keys, nothing more"
    );
    let blocked = run.blocked.unwrap();
    assert!(blocked.contains("nothing to roll back"), "{blocked}");
}

#[test]
fn keeping_the_next_key_is_previewed_up_to_its_promotion() {
    let plan = keyrot::plan::Plan {
        keep_next_key: true,
        ..plan()
    };
    let observed = fresh_world(&plan).observe();
    let run = simulate(&plan, None, &observed, t0());
    assert_eq!(run.blocked, None, "{run:?}");
    let shown = steps(&run);
    let at = |name: &str| {
        shown
            .iter()
            .position(|s| s == name)
            .unwrap_or_else(|| panic!("no {name} in {shown:?}"))
    };
    // Settled first, then released by the assumed `keyrot rotate`, then promoted.
    assert!(
        at("wait publish-settle") < at("release-next-key"),
        "{shown:?}"
    );
    assert!(
        at("release-next-key") < at("write-signing-key"),
        "{shown:?}"
    );
    assert_eq!(run.notes, ["no schedule: assumed `keyrot rotate` now"]);
    assert_eq!(run.after.signing, "<new key 1>");
}
