//! A whole rotation published to an S3-compatible store (moto, read back through a signing
//! front) and to Azure Blob (azurite), both started by scripts/test.sh: the executor runs with
//! the real publisher and key files and no probe, as `keyrot rotate` does, on a sandbox-like plan
//! with waits of a second. After every step the targets are read back from outside and must
//! serve the keys the phase requires; the new key never signs before both serve it.

mod stores;

use std::time::{Duration, Instant};

use chrono::Utc;
use keyrot::adapters::key_files::KeyFilesOnDisk;
use keyrot::adapters::key_flags::FlagFileSwitch;
use keyrot::adapters::migration::ClusterEffects;
use keyrot::adapters::publish::TargetsPublisher;
use keyrot::adapters::restart::ProcessRestarter;
use keyrot::atomic_file::{self, Existing};
use keyrot::decision::{Phase, Probed};
use keyrot::executor::{Effects, run_until_waiting};
use keyrot::keys::SigningKey;
use keyrot::observe::{observe, observe_files};
use keyrot::plan::Plan;
use keyrot::state::{State, Trigger, TriggerKind};
use keyrot::targets::read_served_view;

/// The kids each target serves now, read as a verifier reads them.
fn served(plan: &Plan) -> Vec<(String, Vec<String>)> {
    plan.targets
        .iter()
        .map(|target| match read_served_view(&plan.issuer, target).kids {
            Probed::Seen(kids) => (target.name.clone(), kids),
            other => panic!("target {} could not be read: {other:?}", target.name),
        })
        .collect()
}

/// The plan's first key pair, as `keyrot init` writes it.
fn first_key(plan: &Plan) -> String {
    let key = SigningKey::generate(plan.key).unwrap();
    let files = &plan.apiserver;
    std::fs::create_dir_all(files.signing_key_file.parent().unwrap()).unwrap();
    let private = key.to_private_pem();
    atomic_file::write(
        &files.signing_key_file,
        private.as_bytes(),
        0o600,
        Existing::Refuse,
    )
    .unwrap();
    let public = key.public().to_spki_pem();
    atomic_file::write(
        &files.verification_bundle,
        public.as_bytes(),
        0o644,
        Existing::Refuse,
    )
    .unwrap();
    key.public().kid().to_string()
}

#[test]
fn a_rotation_keeps_s3_and_azure_serving_the_keys_each_phase_needs() {
    let servers = stores::servers();
    let dir = tempfile::tempdir().unwrap();
    let prefix = stores::unique("rotation");
    let container = "keyrot-rotation";
    stores::azure_container(&servers, container);
    let bare = stores::write_plan(
        dir.path(),
        &stores::s3_target(&servers, "s3", &prefix, None),
    );
    let front = stores::s3_front(&keyrot::plan::load(&bare).unwrap().targets[0]);
    let targets = stores::s3_target(&servers, "s3", &prefix, Some(&front))
        + &stores::azure_target(&servers, "azure", container, &prefix);
    let plan = keyrot::plan::load(&stores::write_plan(dir.path(), &targets)).unwrap();

    let old = first_key(&plan);
    let mut state = State::default();
    state.triggers.push(Trigger {
        kind: TriggerKind::Rotate,
        requested_at: Utc::now(),
        force: false,
    });
    let (mut key_files, mut restarter, mut publisher, mut migration, mut key_flags) = (
        KeyFilesOnDisk::new(&plan),
        ProcessRestarter::new(&plan),
        TargetsPublisher::new(&plan),
        ClusterEffects::new(&plan),
        FlagFileSwitch::new(&plan),
    );
    let mut effects = Effects {
        key_files: &mut key_files,
        restarter: &mut restarter,
        publisher: &mut publisher,
        migration: &mut migration,
        key_flags: &mut key_flags,
    };

    let started = Instant::now();
    let mut phases_checked = Vec::new();
    let mut new: Option<String> = None;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the rotation did not complete in 90 s; phases seen: {phases_checked:?}"
        );
        let decision = run_until_waiting(
            &plan,
            &mut state,
            &mut effects,
            &mut || observe(&plan, None, &State::default()),
            &mut |_| Ok(()),
            &Utc::now,
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("the executor stopped: {e}"));

        let files = observe_files(&plan).unwrap();
        let signing = files.signing_kid().unwrap().to_string();
        let phase = state.rotation.as_ref().map(|r| r.phase);
        if let Some(kid) = state.rotation.as_ref().and_then(|r| r.new_kid.clone()) {
            new = Some(kid);
        }
        let served = served(&plan);
        // Invariant 2: a key signs only once every target serves it.
        for (name, kids) in &served {
            assert!(
                kids.contains(&signing),
                "{name} serves [{}] while {signing} signs (phase {phase:?})",
                kids.join(", ")
            );
        }
        let both = [old.clone(), new.clone().unwrap_or_default()];
        let confirmed = state
            .rotation
            .as_ref()
            .is_some_and(|r| r.published_confirmed_at.is_some());
        match phase {
            // Confirmed means read back with both keys; caches settle from here on.
            Some(Phase::Publish) if confirmed => {
                for (name, kids) in &served {
                    assert_eq!(kids, &both, "{name} while caches settle");
                }
            }
            Some(Phase::Promote) => {
                for (name, kids) in &served {
                    assert_eq!(kids, &both, "{name} during promote");
                }
            }
            Some(Phase::Retire) => {
                for (name, kids) in &served {
                    assert!(
                        kids == &both || kids == &both[1..],
                        "{name} during retire serves [{}]",
                        kids.join(", ")
                    );
                }
            }
            _ => {}
        }
        if phases_checked.last() != Some(&phase) {
            phases_checked.push(phase);
        }
        if state.rotation.is_none() && state.triggers.is_empty() {
            break;
        }
        let wake = decision
            .wake_at
            .unwrap_or_else(|| panic!("waiting for nothing in phase {phase:?}: {decision:?}"));
        std::thread::sleep((wake - Utc::now()).to_std().unwrap_or_default());
    }

    let new = new.expect("a new key was generated");
    // Without a probe, promotion passes at once; the waits are the settling and retire-after.
    for phase in [Phase::Publish, Phase::Retire] {
        assert!(
            phases_checked.contains(&Some(phase)),
            "phase {phase:?} not seen between steps: {phases_checked:?}"
        );
    }
    let files = observe_files(&plan).unwrap();
    assert_eq!(files.signing_kid(), Some(new.as_str()));
    assert_eq!(files.bundle_kids(), std::slice::from_ref(&new));
    for (name, kids) in served(&plan) {
        assert_eq!(
            kids,
            std::slice::from_ref(&new),
            "{name} after the rotation"
        );
    }
}

/// A target that cannot be written (its container does not exist) is never skipped: the new
/// key does not sign, the rotation stays in publish, and the failure names the target.
#[test]
fn a_broken_target_holds_the_rotation_before_promotion() {
    let servers = stores::servers();
    let dir = tempfile::tempdir().unwrap();
    let prefix = stores::unique("broken");
    let targets = "  - name: www\n    localDirectory: www\n    cacheMaxAge: 1s\n".to_string()
        + &stores::azure_target(&servers, "azure", "keyrot-no-such-container", &prefix);
    let plan = keyrot::plan::load(&stores::write_plan(dir.path(), &targets)).unwrap();
    let old = first_key(&plan);
    let mut state = State::default();
    state.triggers.push(Trigger {
        kind: TriggerKind::Rotate,
        requested_at: Utc::now(),
        force: false,
    });
    let (mut key_files, mut restarter, mut publisher, mut migration, mut key_flags) = (
        KeyFilesOnDisk::new(&plan),
        ProcessRestarter::new(&plan),
        TargetsPublisher::new(&plan),
        ClusterEffects::new(&plan),
        FlagFileSwitch::new(&plan),
    );
    let mut effects = Effects {
        key_files: &mut key_files,
        restarter: &mut restarter,
        publisher: &mut publisher,
        migration: &mut migration,
        key_flags: &mut key_flags,
    };
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let decision = run_until_waiting(
            &plan,
            &mut state,
            &mut effects,
            &mut || observe(&plan, None, &State::default()),
            &mut |_| Ok(()),
            &Utc::now,
            &mut |_| {},
        )
        .unwrap();
        if let Some(wake) = decision.wake_at {
            std::thread::sleep(
                (wake - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(until - Instant::now()),
            );
        }
    }
    let rotation = state.rotation.as_ref().expect("still rotating");
    assert_eq!(rotation.phase, Phase::Publish);
    assert!(rotation.attempts >= 1, "the failure counts an attempt");
    let error = rotation.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("target azure:"), "{error}");
    assert!(error.contains("keyrot-no-such-container"), "{error}");
    assert_eq!(
        observe_files(&plan).unwrap().signing_kid(),
        Some(old.as_str())
    );
}
