//! `decide`: plan + state + observation + time -> the next actions, a wake-up time, closed gates.
//!
//! Level-triggered: every call derives what the files, the apiserver and the targets should hold
//! in the current phase from the observation, and asks for the first thing that differs. A crash
//! anywhere therefore only repeats an idempotent step. No I/O and no clock reads here.

use chrono::{DateTime, TimeDelta, Utc};

use super::action::{Action, AdoptedKey, Decision, Gate};
use super::canary::relying_parties_problem;
use super::due::next_rotation_due;
use super::observed::{Observed, Probed, TargetView};
use super::{Phase, key_path_for_adopted, key_path_for_rotation};
use crate::documents::{DiscoveryDocument, discovery_differences};
use crate::issuer::key_flags::KeyMode;
use crate::plan::Plan;
use crate::state::{Cause, Role, Rotation, State, Trigger, TriggerKind};

/// How often a closed gate is looked at again, at most and at least.
const POLL_MIN: TimeDelta = TimeDelta::seconds(1);
const POLL_MAX: TimeDelta = TimeDelta::seconds(30);

/// The next step for this plan, state and observation at time `now`.
pub fn decide(plan: &Plan, state: &State, observed: &Observed, now: DateTime<Utc>) -> Decision {
    if let Some(blocked) = check_cluster_keys(plan, observed) {
        return blocked;
    }
    if state.keys.is_empty() {
        return adopt(plan, observed);
    }
    if let Some(trigger) = state.triggers.first() {
        return on_trigger(trigger, plan, state, observed, now);
    }
    match &state.rotation {
        Some(rotation) => InRotation {
            plan,
            observed,
            rotation,
            now,
        }
        .next(),
        None => super::switch::next(state, observed, now)
            .or_else(|| super::migration::next(plan, state, observed, false, now))
            .unwrap_or_else(|| idle(plan, state, observed, now)),
    }
}

/// Both key files must exist and the signing key must be verifiable, or nothing is safe to do.
fn check_cluster_keys(plan: &Plan, observed: &Observed) -> Option<Decision> {
    let bundle = &plan.apiserver.verification_bundle;
    let signing_file = &plan.apiserver.signing_key_file;
    let reason = match (&observed.bundle, &observed.signing) {
        (None, _) => missing_key_file(plan, "verification key file", bundle),
        (_, None) => missing_key_file(plan, "signing key file", signing_file),
        (Some(keys), Some(signing)) => {
            let verifiable = keys
                .iter()
                .chain(&observed.extra)
                .any(|k| k.kid == signing.kid);
            if verifiable {
                return None;
            }
            format!(
                "the signing key {} is not among the verification keys: the cluster rejects every new token; \
                 add its public key to {}",
                signing.kid,
                bundle.display()
            )
        }
    };
    Some(Decision::wait(Gate::ClusterKeys, reason, None))
}

/// What to do about a missing key file. Only a new cluster or a sandbox lacks its keys: on a
/// running cluster the path or the node is wrong, and `keyrot init` would create keys the
/// apiserver does not use.
fn missing_key_file(plan: &Plan, what: &str, path: &std::path::Path) -> String {
    let advice = match plan.test_plan {
        true => "`keyrot init` creates a first key set",
        false => {
            "check the path against the apiserver's flags (--service-account-key-file, \
             --service-account-signing-key-file) and that this is a control-plane node; \
             `keyrot init` is only for a cluster that has no keys yet"
        }
    };
    format!("{what} {} is missing; {advice}", path.display())
}

/// First use: record what the files hold, change nothing in them.
fn adopt(plan: &Plan, observed: &Observed) -> Decision {
    let signing = observed
        .signing
        .as_ref()
        .expect("checked by check_cluster_keys");
    let mut keys: Vec<AdoptedKey> = Vec::new();
    for key in observed.bundle.iter().flatten().chain(&observed.extra) {
        if keys.iter().any(|k| k.kid == key.kid) {
            continue;
        }
        let role = if key.kid == signing.kid {
            Role::Active
        } else {
            Role::Published
        };
        keys.push(AdoptedKey {
            kid: key.kid.clone(),
            alg: key.alg,
            role,
        });
    }
    Decision::act(Action::Adopt {
        keys,
        copy_signing_key_to: key_path_for_adopted(plan, &signing.kid),
    })
}

fn on_trigger(
    trigger: &Trigger,
    plan: &Plan,
    state: &State,
    observed: &Observed,
    now: DateTime<Utc>,
) -> Decision {
    let kind = trigger.kind;
    let refuse = |why: String| {
        Decision::act(Action::ConsumeTrigger {
            kind,
            outcome: format!("refused: {why}"),
        })
    };
    let accept = |action: Action, what: &str| Decision {
        actions: vec![
            action,
            Action::ConsumeTrigger {
                kind,
                outcome: what.to_string(),
            },
        ],
        ..Decision::default()
    };
    let rotation = state.rotation.as_ref();
    // Accepted with `actions` (possibly none: the change goes on by itself), or refused.
    let answer = |answer: Result<(Vec<Action>, String), String>| match answer {
        Ok((mut actions, outcome)) => {
            actions.push(Action::ConsumeTrigger { kind, outcome });
            Decision {
                actions,
                ..Decision::default()
            }
        }
        Err(why) => refuse(why),
    };
    match kind {
        TriggerKind::UseSigner => answer(super::switch::on_request(
            plan,
            state,
            observed,
            KeyMode::Signer,
        )),
        TriggerKind::UseKeyFiles => answer(super::switch::on_request(
            plan,
            state,
            observed,
            KeyMode::KeyFiles,
        )),
        TriggerKind::MigrateIssuer => {
            answer(super::migration::on_migrate_request(plan, state, observed))
        }
        TriggerKind::RollbackIssuerMigration => {
            answer(super::migration::on_rollback_request(plan, state, observed))
        }
        TriggerKind::Approve if super::migration::awaits_person(plan, state) => {
            if trigger.force {
                return refuse(
                    "the issuer migration waits for a person, not for a gate: --force does not \
                     apply"
                        .into(),
                );
            }
            // The approval is consumed first: the step it releases is decided with it, and a
            // check that fails asks for another approval rather than retrying this one.
            let step = super::migration::next(plan, state, observed, true, now);
            let mut actions = vec![Action::ConsumeTrigger {
                kind,
                outcome: "approved: the issuer migration goes on".into(),
            }];
            actions.extend(step.into_iter().flat_map(|d| d.actions));
            Decision {
                actions,
                ..Decision::default()
            }
        }
        // A second rotate continues the rotation in progress: how a person resumes one in the
        // foreground after keyrot was stopped. It starts nothing new, and is not an error.
        TriggerKind::Rotate => match rotation {
            // A person releases the next key kept ready: it promotes now.
            Some(r) if r.cause == Cause::NextKey => accept(
                Action::ReleaseNextKey,
                &format!(
                    "rotation {} promotes its next key as soon as it is ready (phase {})",
                    r.id, r.phase
                ),
            ),
            Some(r) => Decision::act(Action::ConsumeTrigger {
                kind,
                outcome: format!(
                    "rotation {} is already in progress (phase {}): continuing it",
                    r.id, r.phase
                ),
            }),
            None if let Some(why) = migration_blocks(plan, state) => refuse(why),
            None if let Some(why) = super::switch::blocks_other_changes(state) => refuse(why),
            None if let Some(why) =
                super::switch::rotation_would_not_reach_the_apiserver(plan, observed) =>
            {
                refuse(why)
            }
            None => match observed.signing_kid() {
                Some(old) => accept(
                    Action::StartRotation {
                        id: rotation_id(now),
                        cause: Cause::Manual,
                        old_kid: old.to_string(),
                        bundle: observed.bundle_kids(),
                    },
                    "rotation started",
                ),
                None => refuse("no signing key".into()),
            },
        },
        TriggerKind::Approve if trigger.force => match rotation {
            Some(r) => {
                let waiting = InRotation {
                    plan,
                    observed,
                    rotation: r,
                    now,
                }
                .next();
                match waiting.blocked_by.first().map(|b| b.gate) {
                    Some(Gate::Approval) => accept(
                        Action::Approve { phase: r.phase },
                        &format!("phase {} approved", r.phase),
                    ),
                    Some(gate) => accept(
                        Action::ForceGate { gate },
                        &format!("gate {gate} FORCED OPEN: keyrot did not see it pass"),
                    ),
                    None => refuse("the rotation is not waiting on a gate".into()),
                }
            }
            None => refuse("no rotation is in progress".into()),
        },
        TriggerKind::Approve => match rotation {
            Some(r) if !r.approved.contains(&r.phase) => accept(
                Action::Approve { phase: r.phase },
                &format!("phase {} approved", r.phase),
            ),
            Some(r) => refuse(format!("phase {} is already approved", r.phase)),
            None => refuse("no rotation is in progress".into()),
        },
        TriggerKind::Abort => match rotation {
            Some(r) if r.aborted => refuse("the rotation is already being aborted".into()),
            Some(r) if may_have_signed(r, observed) => refuse(format!(
                "rotation {} is in phase {}: the new key may have signed tokens; use rollback",
                r.id, r.phase
            )),
            Some(_) => accept(Action::Abort, "rotation aborted"),
            None => refuse("no rotation is in progress".into()),
        },
        TriggerKind::Rollback => match rotation {
            Some(r) if r.aborted || r.rolled_back => {
                refuse("the rotation is already being undone".into())
            }
            Some(r) if r.phase < Phase::Promote => refuse(format!(
                "rotation {} has not promoted yet (phase {}): use abort",
                r.id, r.phase
            )),
            Some(r) if !observed.bundle_kids().contains(&r.old_kid) => refuse(format!(
                "the old key {} has already left the verification bundle",
                r.old_kid
            )),
            Some(r) if old_private_key_missing(state, observed, &r.old_kid) => refuse(format!(
                "keyrot holds no private key for the old key {}",
                r.old_kid
            )),
            Some(_) => accept(Action::Rollback, "rolled back to the old key"),
            None => refuse("no rotation is in progress".into()),
        },
    }
}

/// Whether the rotation's new key can have signed a token: from the moment keyrot set out to write
/// it into a signing key file. Until then (a promote phase held for approval, say) abort is safe.
fn may_have_signed(r: &Rotation, observed: &Observed) -> bool {
    let new = r.new_kid.as_deref();
    let named = |key: &Option<crate::decision::KeyId>| key.as_ref().map(|k| k.kid.as_str()) == new;
    r.rolled_back
        || r.new_key_may_sign
        || r.phase > Phase::Promote
        || (new.is_some()
            && (named(&observed.signing) || named(&observed.controller_manager_signing)))
}

fn old_private_key_missing(state: &State, observed: &Observed, kid: &str) -> bool {
    let recorded = state
        .keys
        .iter()
        .any(|k| k.kid == kid && k.private_key.is_some());
    !recorded || observed.private_key(kid).is_none()
}

/// A rotation from the key that signs now.
fn start_rotation(cause: Cause, observed: &Observed, now: DateTime<Utc>) -> Action {
    Action::StartRotation {
        id: rotation_id(now),
        cause,
        bundle: observed.bundle_kids(),
        old_kid: observed
            .signing_kid()
            .expect("checked by check_cluster_keys")
            .to_string(),
    }
}

/// Why no rotation may start: the issuer migration in record, if it concerns the plan's issuer.
fn migration_blocks(plan: &Plan, state: &State) -> Option<String> {
    let record = state.issuer_migration.as_ref()?;
    super::migration::blocks_rotation(plan, record)
}

fn idle(plan: &Plan, state: &State, observed: &Observed, now: DateTime<Utc>) -> Decision {
    if let Some(why) = migration_blocks(plan, state) {
        return Decision::wait(Gate::IssuerMigration, why, None);
    }
    if let Some(why) = super::switch::rotation_would_not_reach_the_apiserver(plan, observed) {
        return Decision::wait(Gate::ApiserverSwitched, why, None);
    }
    if plan.keep_next_key {
        // The next key is staged and published at once; promotion waits for the schedule.
        return Decision::act(start_rotation(Cause::NextKey, observed, now));
    }
    let Some(schedule) = &plan.schedule else {
        return Decision::wait(
            Gate::Schedule,
            "no schedule: rotations start with `keyrot rotate`",
            None,
        );
    };
    match next_rotation_due(plan, state, now) {
        Some(due) if due <= now => Decision::act(start_rotation(Cause::Schedule, observed, now)),
        Some(due) => Decision::wait(
            Gate::Schedule,
            format!("next scheduled rotation at {}", crate::describe::time(due)),
            Some(due),
        ),
        None => Decision::wait(
            Gate::Schedule,
            format!("schedule {:?} never fires again", schedule.expression()),
            None,
        ),
    }
}

/// One rotation's progress through its phases.
struct InRotation<'a> {
    plan: &'a Plan,
    observed: &'a Observed,
    rotation: &'a Rotation,
    now: DateTime<Utc>,
}

impl InRotation<'_> {
    fn next(&self) -> Decision {
        let r = self.rotation;
        let backing_off = r
            .retry_at
            .filter(|t| *t > self.now && !self.forced(Gate::Backoff));
        if let Some(retry_at) = backing_off {
            let fallback = r.fallback.as_ref();
            if let Some(step) =
                fallback.and_then(|fb| self.converge_files(&fb.bundle, fb.signing.as_deref()))
            {
                return step;
            }
            let why = r.last_error.clone().unwrap_or_else(|| "retrying".into());
            return Decision::wait(
                Gate::Backoff,
                format!("attempt {} failed: {why}", r.attempts),
                Some(retry_at),
            );
        }
        if self.plan.approvals.contains(&r.phase) && !r.approved.contains(&r.phase) {
            return Decision::wait(
                Gate::Approval,
                format!(
                    "phase {} is held for approval: run `keyrot approve`",
                    r.phase
                ),
                None,
            );
        }
        match (r.phase, &r.new_kid) {
            (Phase::Generate, _) => self.generate(),
            (_, None) => unreachable!("a rotation past generate always has its new key"),
            (Phase::Stage, Some(new)) => self.stage(new),
            (Phase::Publish, Some(new)) => self.publish(new),
            (Phase::Promote, Some(new)) => self.promote(new),
            (Phase::Retire, Some(new)) => self.retire(new),
        }
    }

    fn generate(&self) -> Decision {
        let path = key_path_for_rotation(self.plan, &self.rotation.id);
        match self.observed.private_key_at(&path) {
            Some(key) => Decision {
                actions: vec![
                    Action::RecordNewKey {
                        kid: key.kid.clone(),
                        alg: key.alg,
                        path,
                    },
                    Action::EnterPhase {
                        phase: Phase::Stage,
                    },
                ],
                ..Decision::default()
            },
            None => Decision::act(Action::GenerateKey {
                path,
                spec: self.plan.key,
            }),
        }
    }

    /// The new key joins the bundle; the apiserver must serve it.
    fn stage(&self, new: &str) -> Decision {
        let bundle = self.bundle_with(new, None);
        if let Some(step) = self.converge_files(&bundle, None) {
            return step;
        }
        match self.apiserver_gate(&bundle) {
            Ok(()) => Decision::act(Action::EnterPhase {
                phase: Phase::Publish,
            }),
            Err(reason) => self.closed(Gate::ApiserverServesBundle, reason),
        }
    }

    /// Every target serves the JWKS with the new key; caches of the old one expire.
    fn publish(&self, new: &str) -> Decision {
        let bundle = self.bundle_with(new, None);
        if let Some(step) = self
            .converge_files(&bundle, None)
            .or_else(|| self.converge_targets(&bundle))
        {
            return step;
        }
        let Some(confirmed) = self.rotation.published_confirmed_at else {
            return Decision::act(Action::ConfirmPublished);
        };
        // A time past the end of the calendar never comes.
        let settled_at = confirmed.checked_add_signed(self.plan.timings.publish_settle);
        if settled_at.is_none_or(|t| t > self.now) && !self.forced(Gate::PublishSettle) {
            let reason = format!(
                "caches may hold the previous JWKS {}",
                crate::describe::until(settled_at)
            );
            return Decision::wait(Gate::PublishSettle, reason, settled_at);
        }
        if let Some(reason) = relying_parties_problem(self.plan, self.observed, new)
            && !self.forced(Gate::RelyingPartiesAccept)
        {
            // The canaries are first exchanged once caches settled: the attempt starts then.
            let since = settled_at
                .filter(|t| *t <= self.now)
                .map_or(self.attempt_started(), |t| t.max(self.attempt_started()));
            return self.closed_since(Gate::RelyingPartiesAccept, reason, since);
        }
        if self.rotation.cause == Cause::NextKey {
            return self.next_key_ready(new);
        }
        Decision::act(Action::EnterPhase {
            phase: Phase::Promote,
        })
    }

    /// `keepNextKey`: the next key is staged, published and settled; it signs when the schedule
    /// comes (counted from when this rotation started, right after the last one completed) or
    /// when a person runs `keyrot rotate`.
    fn next_key_ready(&self, new: &str) -> Decision {
        let Some(schedule) = &self.plan.schedule else {
            return Decision::wait(
                Gate::Schedule,
                format!("the next key {new} is ready: `keyrot rotate` promotes it"),
                None,
            );
        };
        match schedule.next_after(self.rotation.started_at) {
            Some(due) if due <= self.now => Decision::act(Action::EnterPhase {
                phase: Phase::Promote,
            }),
            Some(due) => Decision::wait(
                Gate::Schedule,
                format!(
                    "the next key {new} is ready; it signs at {}",
                    crate::describe::time(due)
                ),
                Some(due),
            ),
            None => Decision::wait(
                Gate::Schedule,
                format!(
                    "the next key {new} is ready; schedule {:?} never fires again: `keyrot \
                     rotate` promotes it",
                    schedule.expression()
                ),
                None,
            ),
        }
    }

    /// The signing key file becomes the new key; new tokens must carry its kid.
    fn promote(&self, new: &str) -> Decision {
        let bundle = self.bundle_with(new, None);
        if let Some(step) = self
            .converge_files(&bundle, Some(new))
            .or_else(|| self.converge_targets(&bundle))
        {
            return step;
        }
        if let Err(reason) = self.apiserver_gate(&bundle) {
            return self.closed(Gate::ApiserverServesBundle, reason);
        }
        match &self.observed.token_kid {
            _ if self.forced(Gate::NewKeySigns) => {}
            Probed::NotConfigured => {}
            Probed::Seen(kid) if kid == new => {}
            Probed::Seen(kid) => {
                return self.closed(
                    Gate::NewKeySigns,
                    format!("new tokens carry kid {kid}, expected {new}"),
                );
            }
            Probed::Failed(why) => {
                return self.closed(Gate::NewKeySigns, format!("token request failed: {why}"));
            }
        }
        Decision::act(Action::EnterPhase {
            phase: Phase::Retire,
        })
    }

    /// After retire_after, the old key leaves the bundle and every target; its private key goes.
    fn retire(&self, new: &str) -> Decision {
        let r = self.rotation;
        if !r.aborted && !self.forced(Gate::RetireAfter) {
            let promoted = r.promoted_at.unwrap_or(r.phase_started_at);
            let retire_at = promoted.checked_add_signed(self.plan.timings.retire_after);
            if retire_at.is_none_or(|t| t > self.now) {
                let reason = format!(
                    "tokens signed by {} may be in use {}",
                    r.old_kid,
                    crate::describe::until(retire_at)
                );
                return Decision::wait(Gate::RetireAfter, reason, retire_at);
            }
        }
        let bundle = self.bundle_with(new, Some(&r.old_kid));
        if let Some(step) = self.converge_files(&bundle, Some(new)) {
            return step;
        }
        if let Err(reason) = self.apiserver_gate(&bundle) {
            return self.closed(Gate::ApiserverServesBundle, reason);
        }
        if let Some(step) = self.converge_targets(&bundle) {
            return step;
        }
        if let Some((_, path)) = self.observed.private_key(&r.old_kid) {
            return Decision::act(Action::DestroyPrivateKey {
                kid: r.old_kid.clone(),
                path: path.clone(),
            });
        }
        Decision::act(Action::CompleteRotation)
    }

    /// The bundle as observed, with `add` appended if missing and `remove` taken out. Keys keyrot
    /// does not manage stay where they are.
    fn bundle_with(&self, add: &str, remove: Option<&str>) -> Vec<String> {
        let mut kids: Vec<String> = self
            .observed
            .bundle_kids()
            .into_iter()
            .filter(|k| Some(k.as_str()) != remove)
            .collect();
        if !kids.iter().any(|k| k == add) {
            kids.push(add.to_string());
        }
        kids
    }

    /// The next file write or restart needed for the apiserver to run with `bundle` and, from
    /// promotion on, to sign with `signing`. The bundle is always written before the signing key,
    /// so the signing key is verifiable before anything signs with it (invariant 1).
    fn converge_files(&self, bundle: &[String], signing: Option<&str>) -> Option<Decision> {
        let observed = self.observed;
        let current = observed.bundle_kids();
        if current != bundle {
            // Each write on its own keeps the signing key verifiable (invariant 1): a bundle
            // without the key that signs now waits until the signing file names a key it keeps,
            // written first when the current bundle verifies it, else after a bundle of both.
            let signs_now = observed.signing_kid();
            let verifiable = |kids: &[String], kid: &str| {
                kids.iter().any(|k| k == kid) || observed.extra.iter().any(|k| k.kid == kid)
            };
            let keeps_signing_key = signs_now.is_none_or(|kid| verifiable(bundle, kid));
            if keeps_signing_key {
                return Some(Decision::act(Action::WriteBundle {
                    kids: bundle.to_vec(),
                }));
            }
            if let Some(kid) = signing.filter(|kid| signs_now != Some(*kid)) {
                if verifiable(&current, kid) {
                    return Some(Decision::act(Action::WriteSigningKey {
                        kid: kid.to_string(),
                    }));
                }
                let mut both = current.clone();
                both.extend(bundle.iter().filter(|k| !current.contains(k)).cloned());
                return Some(Decision::act(Action::WriteBundle { kids: both }));
            }
            return Some(Decision::wait(
                Gate::ClusterKeys,
                format!(
                    "the bundle [{}] would not verify the signing key {}: not written",
                    bundle.join(", "),
                    signs_now.unwrap_or_default()
                ),
                None,
            ));
        }
        if let Some(kid) = signing {
            let cm_differs = self.plan.controller_manager.is_some()
                && observed
                    .controller_manager_signing
                    .as_ref()
                    .map(|k| k.kid.as_str())
                    != Some(kid);
            if observed.signing_kid() != Some(kid) || cm_differs {
                return Some(Decision::act(Action::WriteSigningKey {
                    kid: kid.to_string(),
                }));
            }
        }
        let signing_now = observed.signing_kid().map(str::to_string);
        let loaded = self.rotation.apiserver_loaded.as_ref();
        if loaded.is_none_or(|l| l.bundle != bundle || l.signing != signing_now) {
            // kube-controller-manager reads only its private key file, which changes with the
            // signing key: it restarts only when that may differ from what it last loaded.
            let key_unchanged = match loaded {
                Some(l) => l.signing == signing_now,
                None => {
                    !self.rotation.new_key_may_sign
                        && !self.rotation.rolled_back
                        && signing_now.as_deref() == Some(self.rotation.old_kid.as_str())
                }
            };
            return Some(Decision::act(Action::Restart {
                bundle: bundle.to_vec(),
                signing: signing_now,
                controller_manager: self.plan.controller_manager.is_some() && !key_unchanged,
            }));
        }
        None
    }

    /// Publishes when the last publication differs from what every target should serve, then
    /// waits for every target to serve exactly that.
    fn converge_targets(&self, bundle: &[String]) -> Option<Decision> {
        let kids = self.jwks_kids(bundle);
        if self
            .rotation
            .published
            .as_ref()
            .is_none_or(|p| p.kids != kids)
        {
            return Some(Decision::act(Action::Publish { kids }));
        }
        let discovery = self.discovery_for(&kids);
        let wrong: Vec<String> = self
            .observed
            .targets
            .iter()
            .filter_map(|t| match &t.kids {
                Probed::Seen(seen) if *seen == kids => discovery_problem(t, &discovery),
                Probed::Seen(seen) => Some(format!("{} serves [{}]", t.name, seen.join(", "))),
                Probed::Failed(why) => Some(format!("{}: {why}", t.name)),
                Probed::NotConfigured => Some(format!("{} was not read back", t.name)),
            })
            .collect();
        if wrong.is_empty() || self.forced(Gate::TargetsServeKeys) {
            return None;
        }
        let reason = format!("expected [{}]; {}", kids.join(", "), wrong.join("; "));
        Some(self.closed(Gate::TargetsServeKeys, reason))
    }

    /// The discovery document keyrot publishes with a JWKS of `kids`: its algorithms follow
    /// the keys, so a rotation to another algorithm changes it.
    fn discovery_for(&self, kids: &[String]) -> String {
        let observed = self.observed;
        let keys = || {
            observed
                .bundle
                .iter()
                .flatten()
                .chain(&observed.extra)
                .chain(observed.private_keys.iter().map(|(k, _)| k))
        };
        let algs = kids
            .iter()
            .filter_map(|kid| keys().find(|k| &k.kid == kid).map(|k| k.alg));
        let issuer = &self.plan.issuer;
        DiscoveryDocument::for_algs(&issuer.url, &issuer.jwks_uri, algs).render()
    }

    /// The kids every JWKS lists: the bundle, then the extra verification files.
    fn jwks_kids(&self, bundle: &[String]) -> Vec<String> {
        bundle
            .iter()
            .cloned()
            .chain(self.observed.extra.iter().map(|k| k.kid.clone()))
            .collect()
    }

    /// Without a probe, the recorded restart is the evidence; with one, the served keys are.
    fn apiserver_gate(&self, bundle: &[String]) -> Result<(), String> {
        match &self.observed.apiserver {
            _ if self.forced(Gate::ApiserverServesBundle) => Ok(()),
            Probed::NotConfigured => Ok(()),
            Probed::Failed(why) => Err(format!("apiserver did not answer: {why}")),
            Probed::Seen(served) => {
                let mut expected = self.jwks_kids(bundle);
                let mut served_sorted = served.clone();
                expected.sort();
                served_sorted.sort();
                if served_sorted != expected {
                    return Err(format!(
                        "apiserver serves [{}], expected [{}]",
                        served.join(", "),
                        expected.join(", ")
                    ));
                }
                self.apiserver_holds_signer_set()
            }
        }
    }

    /// With an external signer: the apiserver fetched the set the signer serves now (its
    /// `apiserver_externaljwt_fetch_keys_data_timestamp` reached the set's data_timestamp), so
    /// verify-only keys, which its JWKS leaves out, are loaded too.
    fn apiserver_holds_signer_set(&self) -> Result<(), String> {
        let Some(stamps) = &self.observed.key_sets else {
            return Ok(());
        };
        match (&stamps.signer, &stamps.apiserver) {
            (Probed::Failed(why), _) => Err(format!("keyrot's signer did not answer: {why}")),
            (_, Probed::Failed(why)) => Err(format!("apiserver's key set: {why}")),
            (Probed::Seen(signer), Probed::Seen(apiserver)) if apiserver < signer => Err(format!(
                "the apiserver holds the signer's key set of {}, the signer serves one of {}: \
                 not fetched yet",
                stamp(*apiserver),
                stamp(*signer)
            )),
            _ => Ok(()),
        }
    }

    /// Whether a person forced `gate` open in the current phase.
    fn forced(&self, gate: Gate) -> bool {
        self.rotation.forced.contains(&gate)
    }

    /// When the current attempt began acting: the phase start (an approved phase starts when
    /// approved), the retry time after a failure, or for retirement the end of retire_after.
    fn attempt_started(&self) -> DateTime<Utc> {
        let r = self.rotation;
        let retire_at = (r.phase == Phase::Retire && !r.aborted)
            .then(|| {
                let promoted = r.promoted_at.unwrap_or(r.phase_started_at);
                promoted.checked_add_signed(self.plan.timings.retire_after)
            })
            .flatten();
        [Some(r.phase_started_at), r.retry_at, retire_at]
            .into_iter()
            .flatten()
            .max()
            .expect("phase start is always set")
    }

    /// A gate that is closed: look again soon, or count a failed attempt once it times out.
    fn closed(&self, gate: Gate, reason: String) -> Decision {
        self.closed_since(gate, reason, self.attempt_started())
    }

    /// As [`Self::closed`], for a gate first looked at `since`.
    fn closed_since(&self, gate: Gate, reason: String, since: DateTime<Utc>) -> Decision {
        let r = self.rotation;
        // Past the end of the calendar, the deadline never comes: the gate is only polled.
        let deadline = since.checked_add_signed(self.plan.timings.gate_timeout);
        if deadline.is_some_and(|deadline| self.now >= deadline) {
            return Decision::act(Action::GateFailed {
                gate,
                reason,
                retry_at: retry_time(self.plan, r.attempts, self.now),
                fall_back: matches!(self.observed.apiserver, Probed::Failed(_)),
            });
        }
        let poll = (self.plan.timings.gate_timeout / 20).clamp(POLL_MIN, POLL_MAX);
        let look_again = self.now.checked_add_signed(poll);
        Decision::wait(
            gate,
            reason,
            [deadline, look_again].into_iter().flatten().min(),
        )
    }
}

/// What is wrong with the discovery document a target serving the right kids has, if anything.
fn discovery_problem(target: &TargetView, expected: &str) -> Option<String> {
    let name = &target.name;
    match &target.discovery {
        Probed::NotConfigured => None,
        Probed::Failed(why) => Some(format!("{name}: discovery document: {why}")),
        Probed::Seen(None) => Some(format!("{name} serves no discovery document")),
        Probed::Seen(Some(served)) => discovery_differences(expected, served)
            .map(|what| format!("{name} serves another discovery document: {what}")),
    }
}

/// A rotation's id: its start time, unique because rotations never overlap.
fn rotation_id(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// When retry number `attempts + 1` comes: `now` plus the backoff, or the last time the calendar
/// holds when that is past its end (the retry never comes, and nothing panics on the way).
pub fn retry_time(plan: &Plan, attempts: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    now.checked_add_signed(backoff(plan, attempts))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The delay before retry number `attempts + 1`: doubling from `retry_backoff`, capped.
pub fn backoff(plan: &Plan, attempts: u32) -> TimeDelta {
    let t = &plan.timings;
    let factor = 1i32.checked_shl(attempts.min(30)).unwrap_or(i32::MAX);
    t.retry_backoff
        .checked_mul(factor)
        .unwrap_or(t.retry_backoff_max)
        .min(t.retry_backoff_max)
}

/// A data_timestamp (milliseconds since the epoch) as people read it.
fn stamp(millis: i64) -> String {
    DateTime::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{millis} ms"))
}
