//! The relying-parties-accept gate: what the canary exchanges must have shown before promotion,
//! and when an observer exchanges canaries at all (the one rule both follow).

use chrono::{DateTime, Utc};

use super::observed::{CanaryResult, Observed};
use super::{Gate, Phase};
use crate::plan::Plan;
use crate::state::State;

/// The kid a canary token is signed with now, when the rotation waits for its relying parties:
/// in the publish phase, once every target was read back and caches had `publishSettle` to
/// expire, and not while a request or a retry's backoff comes first. `None`: exchange nothing,
/// so no cloud is asked before it can see the new key, nor after the gate passed.
pub fn canary_due<'a>(plan: &Plan, state: &'a State, now: DateTime<Utc>) -> Option<&'a str> {
    if !plan.targets.iter().any(|t| t.canary.is_some()) || !state.triggers.is_empty() {
        return None;
    }
    let r = state.rotation.as_ref()?;
    let waiting = r.phase == Phase::Publish
        && !r.aborted
        && !r.forced.contains(&Gate::RelyingPartiesAccept)
        && r.retry_at.is_none_or(|t| t <= now);
    let confirmed = r.published_confirmed_at?;
    let settled = r.forced.contains(&Gate::PublishSettle)
        || confirmed
            .checked_add_signed(plan.timings.publish_settle)
            .is_some_and(|t| t <= now);
    if !(waiting && settled) {
        return None;
    }
    r.new_kid.as_deref()
}

/// Why promotion must wait for the relying parties, if it must: each configured canary needs a
/// token signed by `new` accepted; a refusal is quoted as the cloud worded it.
pub(super) fn relying_parties_problem(
    plan: &Plan,
    observed: &Observed,
    new: &str,
) -> Option<String> {
    let problems: Vec<String> = plan
        .targets
        .iter()
        .filter(|t| t.canary.is_some())
        .filter_map(|t| {
            let result = observed
                .canaries
                .iter()
                .find(|c| c.target == t.name)
                .map(|c| &c.result);
            match result {
                Some(CanaryResult::Accepted { kid }) if kid == new => None,
                Some(CanaryResult::Refused { kid, error }) if kid == new => Some(format!(
                    "{} refused a token signed by {new}: {error}",
                    t.name
                )),
                _ => Some(format!(
                    "{}: no canary signed by {new} exchanged yet",
                    t.name
                )),
            }
        })
        .collect();
    (!problems.is_empty()).then(|| problems.join("; "))
}
