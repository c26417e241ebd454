//! `apply`: how each action changes keyrot's record, once the action has been carried out.
//!
//! Pure like `decide`: the executor, the dry run and the tests all use it, so the state they
//! record cannot drift apart.

use chrono::{DateTime, Utc};

use super::Phase;
use super::action::{Action, Gate};
use super::decide::retry_time;
use super::migration::record_migration_step;
use crate::migration::record::{Awaiting, ManualStep, MigrationRecord};
use crate::plan::Plan;
use crate::state::{
    Cause, GateRecord, KeyRecord, Loaded, Published, Role, RoleChange, Rotation,
    SignerSwitchRecord, State,
};

/// Records that `action` was carried out at `now`.
pub fn apply(state: &mut State, plan: &Plan, action: &Action, now: DateTime<Utc>) {
    match action {
        Action::Adopt {
            keys,
            copy_signing_key_to,
        } => {
            for key in keys {
                let private_key = (key.role == Role::Active).then(|| copy_signing_key_to.clone());
                state.keys.push(KeyRecord {
                    kid: key.kid.clone(),
                    alg: key.alg,
                    role: key.role,
                    private_key,
                    history: vec![RoleChange {
                        role: key.role,
                        at: now,
                    }],
                });
            }
            state.adopted_at = Some(now);
        }
        Action::ConsumeTrigger { .. } => {
            if !state.triggers.is_empty() {
                state.triggers.remove(0);
            }
        }
        Action::StartRotation {
            id,
            cause,
            old_kid,
            bundle,
        } => {
            state.rotation = Some(Rotation {
                id: id.clone(),
                started_at: now,
                cause: *cause,
                old_kid: old_kid.clone(),
                new_kid: None,
                phase: Phase::Generate,
                phase_started_at: now,
                rolled_back: false,
                new_key_may_sign: false,
                aborted: false,
                approved: Vec::new(),
                forced: Vec::new(),
                gates: Vec::new(),
                attempts: 0,
                retry_at: None,
                last_error: None,
                apiserver_loaded: None,
                last_good: Some(Loaded {
                    bundle: bundle.clone(),
                    signing: Some(old_kid.clone()),
                    at: now,
                }),
                fallback: None,
                published: None,
                published_confirmed_at: None,
                last_effect_at: None,
                promoted_at: None,
            });
            state.last_rotation_started_at = Some(now);
        }
        Action::Approve { phase } => {
            let r = rotation(state);
            r.approved.push(*phase);
            // The phase really begins now: its gate timeout counts from here.
            r.phase_started_at = now;
        }
        Action::ForceGate { gate } => {
            let r = rotation(state);
            r.forced.push(*gate);
            record_gate(r, gate.as_str(), true, "forced open by a person", now);
        }
        Action::Abort => abort(state, now),
        Action::Rollback => {
            let r = rotation(state);
            let new = r
                .new_kid
                .replace(r.old_kid.clone())
                .expect("rollback happens after promotion");
            r.old_kid = new;
            r.rolled_back = true;
            r.promoted_at = None;
            enter(r, Phase::Promote, now);
            // Files from before the rollback that lack either key (a retirement under way) are
            // no fallback: both keys have signed and stay verifiable until the new one retires.
            let both: Vec<String> = [Some(r.old_kid.clone()), r.new_kid.clone()]
                .into_iter()
                .flatten()
                .collect();
            if r.last_good
                .as_ref()
                .is_some_and(|l| !both.iter().all(|kid| l.bundle.contains(kid)))
            {
                r.last_good = None;
            }
        }
        Action::GenerateKey { .. }
        | Action::WriteBundle { .. }
        | Action::WriteSigningKey { .. } => {}
        Action::RecordNewKey { kid, alg, path } => {
            rotation(state).new_kid = Some(kid.clone());
            state.keys.push(KeyRecord {
                kid: kid.clone(),
                alg: *alg,
                role: Role::Next,
                private_key: Some(path.clone()),
                history: vec![RoleChange {
                    role: Role::Next,
                    at: now,
                }],
            });
        }
        Action::Restart {
            bundle, signing, ..
        } => {
            rotation(state).apiserver_loaded = Some(Loaded {
                bundle: bundle.clone(),
                signing: signing.clone(),
                at: now,
            });
        }
        Action::Publish { kids } => {
            let r = rotation(state);
            r.published = Some(Published {
                kids: kids.clone(),
                at: now,
            });
            r.published_confirmed_at = None;
        }
        Action::ConfirmPublished => {
            let r = rotation(state);
            r.published_confirmed_at = Some(now);
            if let Some(new) = r.new_kid.clone() {
                set_role(state, &new, Role::Published, now);
            }
        }
        Action::EnterPhase { phase } => enter_phase(state, *phase, now),
        Action::GateFailed {
            gate,
            reason,
            retry_at,
            fall_back,
        } => {
            let r = rotation(state);
            if *fall_back {
                r.fallback = r.last_good.clone();
            }
            r.attempts = r.attempts.saturating_add(1);
            r.retry_at = Some(*retry_at);
            r.last_error = Some(format!("{gate}: {reason}"));
            record_gate(r, gate.as_str(), false, reason, now);
            // The next attempt redoes the restart and the publication from scratch.
            r.apiserver_loaded = None;
            r.published = None;
            r.published_confirmed_at = None;
        }
        Action::DestroyPrivateKey { kid, .. } => {
            if let Some(key) = state.keys.iter_mut().find(|k| &k.kid == kid) {
                key.private_key = None;
            }
        }
        Action::CompleteRotation => complete(state, plan, now),
        Action::StartSignerSwitch { to } => {
            state.signer_switch = Some(SignerSwitchRecord {
                to: *to,
                requested_at: now,
                flags_changed_at: None,
            });
        }
        Action::SwitchKeyFlags { .. } => {
            if let Some(record) = state.signer_switch.as_mut() {
                record.flags_changed_at = Some(now);
            }
        }
        Action::CompleteSignerSwitch => state.signer_switch = None,
        Action::ReleaseNextKey => {
            if let Some(r) = state.rotation.as_mut() {
                r.cause = Cause::Manual;
            }
        }
        Action::StartMigration {
            old_issuer,
            new_issuer,
        } => {
            state.issuer_migration = Some(MigrationRecord::new(old_issuer, new_issuer));
        }
        Action::Migrate(step) => {
            if let Some(record) = state.issuer_migration.as_mut() {
                record_migration_step(record, *step, now);
            }
        }
        Action::StartMigrationRollback { restart } => {
            if let Some(record) = state.issuer_migration.as_mut() {
                record.rollback_started_at.get_or_insert(now);
                record.rollback_restarts = Some(*restart);
            }
        }
        Action::AskPersonToRestore => {
            if let Some(record) = state.issuer_migration.as_mut() {
                record.awaiting = Some(Awaiting::ManualChange {
                    step: ManualStep::Rollback,
                });
            }
        }
        Action::RestoreFlags { .. } | Action::CheckRestored | Action::ForgetMigration => {
            state.issuer_migration = None;
        }
    }
}

/// Records, before an effect is carried out, that it is about to be. The executor persists this
/// first (invariant 6), so after a crash keyrot knows the effect may have happened: when, and
/// that what the apiserver loaded or the targets serve is unknown until it is redone.
pub fn record_intent(state: &mut State, action: &Action, now: DateTime<Utc>) {
    let Some(r) = state.rotation.as_mut() else {
        return;
    };
    r.last_effect_at = Some(r.last_effect_at.map_or(now, |t| t.max(now)));
    match action {
        Action::WriteSigningKey { kid } if r.new_kid.as_ref() == Some(kid) => {
            r.new_key_may_sign = true
        }
        Action::Restart { .. } => r.apiserver_loaded = None,
        Action::Publish { .. } => {
            r.published = None;
            r.published_confirmed_at = None;
        }
        _ => {}
    }
}

/// Records that carrying out `action` failed: the attempt counts and is retried after backoff.
pub fn apply_failure(
    state: &mut State,
    plan: &Plan,
    action: &Action,
    error: &str,
    now: DateTime<Utc>,
) {
    if let Some(r) = state.rotation.as_mut() {
        // While backing off, the only effects are the fallback's (see `decide`).
        let falling_back = r.fallback.is_some()
            && r.retry_at.is_some_and(|t| t > now)
            && !r.forced.contains(&Gate::Backoff);
        let failed_before = r.attempts;
        r.attempts = failed_before.saturating_add(1);
        r.retry_at = Some(retry_time(plan, failed_before, now));
        r.last_error = Some(format!("{}: {error}", action_name(action)));
        if falling_back {
            // The fallback failed too (a restart command that cannot reach a dead apiserver):
            // it was tried once; the next attempt comes at `retry_at`, not at once and forever.
            r.fallback = None;
        } else if matches!(action, Action::Restart { .. }) {
            // The apiserver may be down with the new files: it gets the last good ones back.
            r.fallback = r.last_good.clone();
        }
    }
}

/// A short name for logs and errors.
pub fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Adopt { .. } => "adopt",
        Action::ConsumeTrigger { .. } => "consume-trigger",
        Action::StartRotation { .. } => "start-rotation",
        Action::Approve { .. } => "approve",
        Action::ForceGate { .. } => "force-gate",
        Action::Abort => "abort",
        Action::Rollback => "rollback",
        Action::GenerateKey { .. } => "generate-key",
        Action::RecordNewKey { .. } => "record-new-key",
        Action::WriteBundle { .. } => "write-bundle",
        Action::WriteSigningKey { .. } => "write-signing-key",
        Action::Restart { .. } => "restart",
        Action::Publish { .. } => "publish",
        Action::ConfirmPublished => "confirm-published",
        Action::EnterPhase { .. } => "enter-phase",
        Action::GateFailed { .. } => "gate-failed",
        Action::DestroyPrivateKey { .. } => "destroy-private-key",
        Action::CompleteRotation => "complete-rotation",
        Action::ReleaseNextKey => "release-next-key",
        Action::StartSignerSwitch { .. } => "start-signer-switch",
        Action::SwitchKeyFlags { .. } => "switch-key-flags",
        Action::CompleteSignerSwitch => "complete-signer-switch",
        Action::StartMigration { .. } => "start-issuer-migration",
        Action::Migrate(step) => super::migration::step_name(*step),
        Action::StartMigrationRollback { .. } => "start-issuer-migration-rollback",
        Action::RestoreFlags { .. } | Action::AskPersonToRestore | Action::CheckRestored => {
            "step 9 (roll back)"
        }
        Action::ForgetMigration => "forget-issuer-migration",
    }
}

fn rotation(state: &mut State) -> &mut Rotation {
    state
        .rotation
        .as_mut()
        .expect("the decision core asks for this only during a rotation")
}

fn enter(r: &mut Rotation, phase: Phase, now: DateTime<Utc>) {
    if r.apiserver_loaded.is_some() {
        r.last_good = r.apiserver_loaded.clone();
    }
    r.fallback = None;
    r.forced.clear();
    r.phase = phase;
    r.phase_started_at = now;
    r.attempts = 0;
    r.retry_at = None;
    r.last_error = None;
    r.gates.clear();
    r.published_confirmed_at = None;
}

/// The gate of the current phase passed: the keys take their new roles.
fn enter_phase(state: &mut State, phase: Phase, now: DateTime<Utc>) {
    let r = rotation(state);
    let passed = r.phase;
    let (old, new) = (r.old_kid.clone(), r.new_kid.clone());
    enter(r, phase, now);
    record_gate(r, passed.as_str(), true, "passed", now);
    if phase == Phase::Retire {
        // retire_after counts from the last effect (the restart that made the new key sign) or
        // from now, whichever is later: a clock set back in between must not shorten the wait.
        r.promoted_at = Some(r.last_effect_at.map_or(now, |at| at.max(now)));
    }
    let Some(new) = new else { return };
    match phase {
        Phase::Generate | Phase::Stage | Phase::Promote => {}
        Phase::Publish => set_role(state, &new, Role::Staged, now),
        Phase::Retire => {
            set_role(state, &new, Role::Active, now);
            set_role(state, &old, Role::Retiring, now);
        }
    }
}

/// Before promotion the new key never signed: it is retired at once, the old key keeps signing.
fn abort(state: &mut State, now: DateTime<Utc>) {
    let r = rotation(state);
    let Some(new) = r.new_kid.clone() else {
        // Nothing was generated yet: nothing to undo.
        state.rotation = None;
        return;
    };
    r.new_kid = Some(std::mem::replace(&mut r.old_kid, new));
    r.aborted = true;
    enter(r, Phase::Retire, now);
}

fn complete(state: &mut State, plan: &Plan, now: DateTime<Utc>) {
    let Some(r) = state.rotation.take() else {
        return;
    };
    set_role(state, &r.old_kid, Role::Retired, now);
    state.last_rotation_completed_at = Some(now);
    let retired: Vec<usize> = (0..state.keys.len())
        .filter(|&i| state.keys[i].role == Role::Retired)
        .collect();
    let excess = retired.len().saturating_sub(plan.keep_retired);
    for &i in retired[..excess].iter().rev() {
        state.keys.remove(i);
    }
}

fn set_role(state: &mut State, kid: &str, role: Role, now: DateTime<Utc>) {
    if let Some(key) = state
        .keys
        .iter_mut()
        .find(|k| k.kid == kid && k.role != role)
    {
        key.role = role;
        key.history.push(RoleChange { role, at: now });
    }
}

fn record_gate(r: &mut Rotation, gate: &str, passed: bool, reason: &str, now: DateTime<Utc>) {
    r.gates.push(GateRecord {
        gate: gate.to_string(),
        passed,
        reason: reason.to_string(),
        at: now,
    });
}
