//! The consistency rules of a state that parsed: what the decision core relies on and never
//! re-checks. A hand-edited or damaged file that breaks one is refused on load, naming the field,
//! instead of reaching the core (where it would panic or act on a key that is not there).

use std::collections::BTreeSet;

use super::{Role, State};
use crate::phase::Phase;

/// One broken rule: the field (as a path in the file, e.g. `rotation.new_kid`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Inconsistency {
    pub field: String,
    pub problem: String,
}

/// The first rule `state` breaks, if any.
pub fn check(state: &State) -> Result<(), Inconsistency> {
    let broken = |field: String, problem: String| Err(Inconsistency { field, problem });
    let mut seen = BTreeSet::new();
    for (i, key) in state.keys.iter().enumerate() {
        if !seen.insert(key.kid.as_str()) {
            return broken(
                format!("keys[{i}].kid"),
                format!("{} is listed twice", key.kid),
            );
        }
    }
    let active: Vec<&str> = state
        .keys
        .iter()
        .filter(|k| k.role == Role::Active)
        .map(|k| k.kid.as_str())
        .collect();
    if active.len() > 1 {
        return broken(
            "keys".into(),
            format!(
                "{} keys are active ({}): one key signs",
                active.len(),
                active.join(", ")
            ),
        );
    }
    if let Some(m) = &state.issuer_migration {
        // Each step is recorded only once the one before it is: the core decides the next step
        // from the first one missing, so a gap would skip a check.
        let steps = [
            ("published_at", m.published_at.is_some()),
            ("verified_at", m.verified_at.is_some()),
            ("flags_changed_at", m.flags_changed_at.is_some()),
            ("cluster_verified_at", m.cluster_verified_at.is_some()),
            ("old_issuer_dropped_at", m.old_issuer_dropped_at.is_some()),
        ];
        for pair in steps.windows(2) {
            let [(before, done_before), (after, done_after)] = pair else {
                continue;
            };
            if *done_after && !done_before {
                return broken(
                    format!("issuer_migration.{after}"),
                    format!(
                        "is set, but issuer_migration.{before} is not: steps are recorded in order"
                    ),
                );
            }
        }
        if m.rollback_restarts.is_some() && m.rollback_started_at.is_none() {
            return broken(
                "issuer_migration.rollback_restarts".into(),
                "is set, but issuer_migration.rollback_started_at is not".into(),
            );
        }
    }
    let Some(r) = &state.rotation else {
        return Ok(());
    };
    let known = |kid: &str| state.keys.iter().any(|k| k.kid == kid);
    if !known(&r.old_kid) {
        return broken(
            "rotation.old_kid".into(),
            format!("{} is not in keys", r.old_kid),
        );
    }
    match &r.new_kid {
        Some(kid) if !known(kid) => {
            return broken("rotation.new_kid".into(), format!("{kid} is not in keys"));
        }
        None if r.phase > Phase::Generate => {
            return broken(
                "rotation.phase".into(),
                format!(
                    "{} comes after generate, but rotation.new_kid is missing: the new key is \
                     recorded when it is generated",
                    r.phase
                ),
            );
        }
        _ => {}
    }
    if r.promoted_at.is_some() && r.phase < Phase::Promote {
        return broken(
            "rotation.promoted_at".into(),
            format!(
                "is set, but rotation.phase is {}: a key is promoted only in phase promote",
                r.phase
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::decision::{Action, apply};
    use crate::keys::Alg;
    use crate::state::{Cause, KeyRecord};

    fn key(kid: &str, role: Role) -> KeyRecord {
        KeyRecord {
            kid: kid.into(),
            alg: Alg::ES256,
            role,
            private_key: None,
            history: Vec::new(),
        }
    }

    /// A rotation of "old" started by the core itself, then set to `phase` and `new_kid`.
    fn rotating(phase: Phase, new_kid: Option<&str>) -> State {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut state = State {
            keys: vec![key("old", Role::Active), key("new", Role::Staged)],
            ..State::default()
        };
        let start = Action::StartRotation {
            id: "r1".into(),
            cause: Cause::Manual,
            old_kid: "old".into(),
            bundle: vec!["old".into()],
        };
        let plan = crate::plan::parse(
            std::path::Path::new("/etc/keyrot/plan.yaml"),
            "cluster: c\nflavour: kubeadm\nissuer: { url: \"https://oidc.example.com\" }\n\
             targets: [{ name: web, localDirectory: /srv/www }]\n",
        )
        .unwrap();
        apply(&mut state, &plan, &start, at);
        let r = state.rotation.as_mut().unwrap();
        r.phase = phase;
        r.new_kid = new_kid.map(str::to_string);
        state
    }

    fn field_of(state: &State) -> String {
        check(state).unwrap_err().field
    }

    #[test]
    fn a_consistent_rotation_passes() {
        assert_eq!(check(&rotating(Phase::Publish, Some("new"))), Ok(()));
        assert_eq!(check(&State::default()), Ok(()));
    }

    #[test]
    fn a_new_key_that_is_not_in_the_key_list_is_named() {
        let state = rotating(Phase::Stage, Some("ghost"));
        let err = check(&state).unwrap_err();
        assert_eq!(err.field, "rotation.new_kid");
        assert!(err.problem.contains("ghost"), "{err}");
    }

    #[test]
    fn an_old_key_that_is_not_in_the_key_list_is_named() {
        let mut state = rotating(Phase::Stage, Some("new"));
        state.rotation.as_mut().unwrap().old_kid = "ghost".into();
        assert_eq!(field_of(&state), "rotation.old_kid");
    }

    #[test]
    fn a_phase_past_generate_without_a_new_key_is_named() {
        assert_eq!(field_of(&rotating(Phase::Promote, None)), "rotation.phase");
        assert_eq!(check(&rotating(Phase::Generate, None)), Ok(()));
    }

    #[test]
    fn a_promotion_time_before_the_promote_phase_is_named() {
        let mut state = rotating(Phase::Stage, Some("new"));
        state.rotation.as_mut().unwrap().promoted_at = Some(Utc::now());
        assert_eq!(field_of(&state), "rotation.promoted_at");
    }

    #[test]
    fn an_issuer_migration_step_recorded_before_the_one_it_follows_is_named() {
        use crate::migration::record::MigrationRecord;
        let mut state = rotating(Phase::Publish, Some("new"));
        state.rotation = None;
        let mut record = MigrationRecord::new("https://old.example", "https://new.example");
        record.published_at = Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        state.issuer_migration = Some(record.clone());
        assert_eq!(check(&state), Ok(()));
        record.flags_changed_at = record.published_at;
        state.issuer_migration = Some(record.clone());
        assert_eq!(field_of(&state), "issuer_migration.flags_changed_at");
        record.flags_changed_at = None;
        record.rollback_restarts = Some(true);
        state.issuer_migration = Some(record);
        assert_eq!(field_of(&state), "issuer_migration.rollback_restarts");
    }

    #[test]
    fn duplicate_kids_and_two_active_keys_are_named() {
        let mut state = State {
            keys: vec![key("a", Role::Active), key("a", Role::Retired)],
            ..State::default()
        };
        assert_eq!(field_of(&state), "keys[1].kid");
        state.keys[1] = key("b", Role::Active);
        assert_eq!(field_of(&state), "keys");
    }
}
