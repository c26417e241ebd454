//! Switching kube-apiserver between its key files and keyrot's external signer, as a change of
//! the core: a request (`keyrot switch-signer`, `--back`) recorded in the state, one step that
//! edits the flag file and restarts kube-apiserver, and a check of the apiserver afterwards.
//! Switching the other way while one is in progress is its rollback. Pure.
//!
//! Gates: `signer-serves` (kube-apiserver is never pointed at a signer that does not serve the
//! key files' set: it would mint no token, and verify none issued before), `apiserver-switched`
//! (after the edit, the apiserver serves the key files' keys and signs new tokens with the
//! signing key). No rotation or issuer migration runs beside a switch, nor a switch beside them.

use chrono::{DateTime, TimeDelta, Utc};

use super::action::{Action, Decision, Gate};
use super::observed::{Observed, Probed};
use crate::issuer::key_flags::KeyMode;
use crate::plan::{Plan, Restart};
use crate::state::State;

/// How often the core looks again while the signer or the restarted apiserver is not there yet.
const POLL: TimeDelta = TimeDelta::seconds(2);

/// How the core answers a request to switch to `to`: the actions with which it accepts it and
/// the outcome, or why not.
pub(super) fn on_request(
    plan: &Plan,
    state: &State,
    observed: &Observed,
    to: KeyMode,
) -> Result<(Vec<Action>, String), String> {
    if plan
        .signer
        .as_ref()
        .and_then(|s| s.switch.as_ref())
        .is_none()
    {
        return Err(
            "the plan has no signer.switch section: name the flag file keyrot switches".into(),
        );
    }
    if let Some(why) = super::migration::refused_during_rotation(state.rotation.as_ref()) {
        return Err(why);
    }
    if let Some(why) = state
        .issuer_migration
        .as_ref()
        .and_then(|record| super::migration::blocks_rotation(plan, record))
    {
        return Err(format!("one change at a time: {why}"));
    }
    let signer_restart = matches!(plan.apiserver.restart, Restart::ExternalSigner);
    match to {
        KeyMode::Signer if !signer_restart => {
            return Err(
                "set apiserver.restart: externalSigner first: once kube-apiserver takes \
                        its keys from the signer, a rotation reloads the signer instead of \
                        restarting it"
                    .into(),
            );
        }
        KeyMode::KeyFiles if signer_restart => {
            return Err(
                "set apiserver.restart to how kube-apiserver restarts (staticPod, \
                        systemdUnit or command) first: once it reads its key files again, a \
                        rotation must restart it"
                    .into(),
            );
        }
        _ => {}
    }
    let flags = observed.key_mode.as_ref().map(|v| v.flags.clone());
    match (&state.signer_switch, flags) {
        (Some(record), _) if record.to == to => Ok((
            Vec::new(),
            format!("continuing the switch to {}", to.as_str()),
        )),
        (None, Some(Ok(now))) if now == to => Ok((
            Vec::new(),
            format!("kube-apiserver takes its keys from {} already", to.as_str()),
        )),
        (_, Some(Err(why))) => Err(why),
        (recorded, _) => {
            let what = match recorded {
                Some(_) => "switch rolled back",
                None => "switch started",
            };
            Ok((
                vec![Action::StartSignerSwitch { to }],
                format!(
                    "{what}: kube-apiserver will take its keys from {}",
                    to.as_str()
                ),
            ))
        }
    }
}

/// What the core does next about a switch in record; `None` when none is.
pub(super) fn next(state: &State, observed: &Observed, now: DateTime<Utc>) -> Option<Decision> {
    let record = state.signer_switch.as_ref()?;
    let poll = now.checked_add_signed(POLL);
    let Some(view) = observed.key_mode.as_ref() else {
        return Some(Decision::wait(
            Gate::ApiserverSwitched,
            "a switch is recorded but the plan has no signer.switch section: put it back, or \
             remove signer_switch from the state file",
            None,
        ));
    };
    if record.flags_changed_at.is_none() {
        if let (KeyMode::Signer, Err(why)) = (record.to, &view.signer_serves) {
            return Some(Decision::wait(
                Gate::SignerServes,
                format!("kube-apiserver is pointed at the signer only once it serves: {why}"),
                poll,
            ));
        }
        return Some(Decision::act(Action::SwitchKeyFlags { to: record.to }));
    }
    match &view.flags {
        Ok(mode) if *mode == record.to => {}
        Ok(mode) => {
            return Some(Decision::wait(
                Gate::ApiserverSwitched,
                format!(
                    "the flag file gives kube-apiserver {} again, not {}: someone changed it; \
                     run `keyrot switch-signer` to switch again",
                    mode.as_str(),
                    record.to.as_str()
                ),
                None,
            ));
        }
        Err(why) => return Some(Decision::wait(Gate::ApiserverSwitched, why.clone(), None)),
    }
    if let Some(why) = apiserver_problem(observed) {
        return Some(Decision::wait(Gate::ApiserverSwitched, why, poll));
    }
    Some(Decision::act(Action::CompleteSignerSwitch))
}

/// Why the apiserver does not take its keys as the files say yet (it may be restarting), if it
/// does not; nothing to say without a probe.
fn apiserver_problem(observed: &Observed) -> Option<String> {
    let mut expected = observed.verification_kids();
    expected.sort();
    match &observed.apiserver {
        Probed::Failed(why) => return Some(format!("the apiserver did not answer: {why}")),
        Probed::Seen(served) => {
            let mut served = served.clone();
            served.sort();
            if served != expected {
                return Some(format!(
                    "the apiserver serves [{}], the key files hold [{}]",
                    served.join(", "),
                    expected.join(", ")
                ));
            }
        }
        Probed::NotConfigured => {}
    }
    let signing = observed.signing_kid();
    match &observed.token_kid {
        Probed::Failed(why) => Some(format!("no new token: {why}")),
        Probed::Seen(kid) if Some(kid.as_str()) != signing => Some(format!(
            "a new token is signed with {kid}, not the signing key {}",
            signing.unwrap_or("(none)")
        )),
        _ => None,
    }
}

/// Why no rotation may start: the plan reloads the signer instead of restarting kube-apiserver
/// (`restart: externalSigner`) while the flag file still has it read its key files, which it
/// would never read again.
pub fn rotation_would_not_reach_the_apiserver(plan: &Plan, observed: &Observed) -> Option<String> {
    let signer_restart = matches!(plan.apiserver.restart, Restart::ExternalSigner);
    let flags = observed.key_mode.as_ref().map(|v| &v.flags);
    (signer_restart && flags == Some(&Ok(KeyMode::KeyFiles))).then(|| {
        "the plan reloads the signer (restart: externalSigner), but kube-apiserver still reads \
         its key files: run `keyrot switch-signer` first"
            .to_string()
    })
}

/// Why no other change may start while a switch is recorded.
pub fn blocks_other_changes(state: &State) -> Option<String> {
    state.signer_switch.as_ref().map(|record| {
        format!(
            "one change at a time: kube-apiserver is being switched to {} (`keyrot switch-signer`)",
            record.to.as_str()
        )
    })
}
