//! Switching kube-apiserver between its key files and keyrot's signer as a change of the one
//! engine, without I/O: what the core answers and decides, carried out by the executor against
//! the in-memory cluster.

mod harness;

use harness::engine::Engine;
use keyrot::decision::{Gate, Probed, decide};
use keyrot::executor::Pause;
use keyrot::issuer::key_flags::KeyMode;
use keyrot::plan::Plan;
use keyrot::state::TriggerKind;

/// A kubeadm plan whose signer can switch the manifest; `restart` is apiserver.restart.
fn plan(restart: &str) -> Plan {
    let text = format!(
        "cluster: c\nflavour: kubeadm\nissuer: {{ url: \"https://oidc.example.com/c\" }}\n\
         targets: [{{ name: web, localDirectory: /var/www/oidc }}]\n\
         apiserver: {{ restart: {restart} }}\n\
         signer:\n  socket: /run/keyrot/signer.sock\n  switch:\n    \
         flags: {{ kubeadmManifest: /etc/kubernetes/manifests/kube-apiserver.yaml }}\n    \
         kubeadmPatches: /etc/kubernetes/keyrot-patches\n"
    );
    keyrot::plan::parse(std::path::Path::new("/etc/keyrot/plan.yaml"), &text).unwrap()
}

fn engine(restart: &str, mode: KeyMode) -> Engine {
    let engine = Engine::new(plan(restart));
    engine.world.0.borrow_mut().key_mode = Some(mode);
    engine
}

fn mode(engine: &Engine) -> Option<KeyMode> {
    engine.world.0.borrow().key_mode
}

#[test]
fn a_switch_to_the_signer_edits_the_flags_checks_the_apiserver_and_is_done() {
    let mut e = engine("externalSigner", KeyMode::KeyFiles);
    e.ask(TriggerKind::UseSigner);
    let waiting = e.run().unwrap();
    assert_eq!(
        e.last_answer(),
        "switch started: kube-apiserver will take its keys from the external signer"
    );
    assert_eq!(mode(&e), Some(KeyMode::Signer));
    assert_eq!(e.state.signer_switch, None, "checked and done");
    assert!(
        waiting
            .blocked_by
            .iter()
            .all(|b| b.gate != Gate::SignerServes)
    );
    // Asked again: nothing to do.
    e.ask(TriggerKind::UseSigner);
    e.run().unwrap();
    assert_eq!(
        e.last_answer(),
        "kube-apiserver takes its keys from the external signer already"
    );
}

#[test]
fn the_switch_waits_for_the_signer_and_for_the_restarted_apiserver() {
    let e = engine("externalSigner", KeyMode::KeyFiles);
    let mut state = e.state.clone();
    state.signer_switch = Some(keyrot::state::SignerSwitchRecord {
        to: KeyMode::Signer,
        requested_at: e.now.get(),
        flags_changed_at: None,
    });
    let mut observed = e.world.0.borrow().observe();
    let view = observed.key_mode.as_mut().unwrap();
    view.signer_serves = Err("nothing listens on /run/keyrot/signer.sock".into());
    let waiting = decide(&e.plan, &state, &observed, e.now.get());
    assert_eq!(waiting.blocked_by[0].gate, Gate::SignerServes);
    assert!(waiting.wake_at.is_some(), "looked at again soon");
    assert!(waiting.actions.is_empty(), "the flags are not touched");

    // Edited; the restarted apiserver does not answer yet, then signs with another key.
    state.signer_switch.as_mut().unwrap().flags_changed_at = Some(e.now.get());
    let mut observed = e.world.0.borrow().observe();
    observed.key_mode.as_mut().unwrap().flags = Ok(KeyMode::Signer);
    observed.apiserver = Probed::Failed("connection refused".into());
    let restarting = decide(&e.plan, &state, &observed, e.now.get());
    assert_eq!(restarting.blocked_by[0].gate, Gate::ApiserverSwitched);
    assert!(restarting.wake_at.is_some());
    observed.apiserver = Probed::Seen(observed.verification_kids());
    observed.token_kid = Probed::Seen("someone-else".into());
    let wrong_key = decide(&e.plan, &state, &observed, e.now.get());
    assert!(
        wrong_key.blocked_by[0]
            .reason
            .contains("not the signing key"),
        "{wrong_key:?}"
    );
}

#[test]
fn switching_back_while_a_switch_is_in_progress_rolls_it_back() {
    let mut e = engine("externalSigner", KeyMode::KeyFiles);
    e.ask(TriggerKind::UseSigner);
    // Stopped right after the request was taken: the switch is recorded, nothing edited.
    assert!(matches!(e.run_stopping_after(1).unwrap(), Pause::Stopped));
    assert!(e.state.signer_switch.is_some());
    // Back to the key files needs a plan whose rotations restart the apiserver again.
    e.ask(TriggerKind::UseKeyFiles);
    e.run_stopping_after(1).unwrap();
    let refusal = e.last_answer();
    assert!(refusal.contains("set apiserver.restart"), "{refusal}");
    e.plan = plan("{ staticPod: /etc/kubernetes/manifests/kube-apiserver.yaml }");
    e.ask(TriggerKind::UseKeyFiles);
    e.run().unwrap();
    assert_eq!(
        e.last_answer(),
        "switch rolled back: kube-apiserver will take its keys from key files"
    );
    assert_eq!(mode(&e), Some(KeyMode::KeyFiles));
    assert_eq!(e.state.signer_switch, None);
}

#[test]
fn one_change_at_a_time_with_rotations() {
    // A rotation in record refuses a switch (here back to the key files).
    let mut e = engine("externalSigner", KeyMode::Signer);
    e.ask(TriggerKind::Rotate);
    e.run_stopping_after(1).unwrap();
    assert!(e.state.rotation.is_some());
    e.ask(TriggerKind::UseKeyFiles);
    e.run_stopping_after(1).unwrap();
    assert!(
        e.answers
            .borrow()
            .iter()
            .any(|a| a.starts_with("refused: key rotation")),
        "{:?}",
        e.answers.borrow()
    );
    assert_eq!(mode(&e), Some(KeyMode::Signer));

    // A switch in record refuses a rotation.
    let mut e = engine("externalSigner", KeyMode::KeyFiles);
    e.ask(TriggerKind::UseSigner);
    e.run_stopping_after(1).unwrap();
    e.ask(TriggerKind::Rotate);
    e.run().unwrap();
    assert!(
        e.answers
            .borrow()
            .iter()
            .any(|a| a.starts_with("refused: one change at a time")),
        "{:?}",
        e.answers.borrow()
    );
    assert!(e.state.rotation.is_none());
}

#[test]
fn a_plan_whose_rotations_would_restart_a_signer_mode_apiserver_is_refused() {
    let mut e = engine(
        "{ staticPod: /etc/kubernetes/manifests/kube-apiserver.yaml }",
        KeyMode::KeyFiles,
    );
    e.ask(TriggerKind::UseSigner);
    e.run().unwrap();
    let refusal = e.last_answer();
    assert!(refusal.contains("externalSigner first"), "{refusal}");
    assert_eq!(mode(&e), Some(KeyMode::KeyFiles));
}

#[test]
fn the_dry_run_shows_the_switch_through_the_same_core() {
    let e = engine("externalSigner", KeyMode::KeyFiles);
    let observed = e.world.0.borrow().observe();
    let run = keyrot::dry_run::simulate_request(
        &e.plan,
        Some(&e.state),
        &observed,
        e.now.get(),
        TriggerKind::UseSigner,
        &mut |_| None,
    );
    assert_eq!(run.blocked, None, "{run:?}");
    let actions: Vec<String> = run
        .timeline
        .iter()
        .filter_map(|s| match &s.what {
            keyrot::dry_run::StepKind::Action { action, .. } => Some(action.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        actions,
        [
            "start-signer-switch",
            "switch-key-flags",
            "complete-signer-switch"
        ]
    );
}

#[test]
fn no_rotation_starts_while_the_plan_reloads_a_signer_the_apiserver_does_not_use_yet() {
    let mut e = engine("externalSigner", KeyMode::KeyFiles);
    e.ask(TriggerKind::Rotate);
    e.run().unwrap();
    let refusal = e.last_answer();
    assert!(
        refusal.contains("run `keyrot switch-signer` first"),
        "{refusal}"
    );
    assert!(e.state.rotation.is_none());
    // Switched: rotations go.
    e.ask(TriggerKind::UseSigner);
    e.run().unwrap();
    e.ask(TriggerKind::Rotate);
    e.run().unwrap();
    assert_eq!(e.last_answer(), "rotation started");
    assert!(e.state.rotation.is_some());
}

#[test]
fn keyrot_status_names_a_switch_in_progress_and_what_it_waits_for() {
    let mut e = engine("externalSigner", KeyMode::KeyFiles);
    e.ask(TriggerKind::UseSigner);
    e.run_stopping_after(1).unwrap();
    let mut observed = e.world.0.borrow().observe();
    observed.key_mode.as_mut().unwrap().signer_serves = Err("no socket".into());
    let status = keyrot::status::status(&e.plan, Some(&e.state), &observed, e.now.get());
    assert!(status.in_progress);
    let text = keyrot::status::render_text(&status, e.now.get());
    assert!(
        text.contains("switch   kube-apiserver to the external signer, asked "),
        "{text}"
    );
    assert!(text.contains("waiting  [signer-serves]"), "{text}");
}
