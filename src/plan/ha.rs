//! The `ha` section of a plan: this node's name, the coordination objects, the members and the
//! Lease timings, and what HA does not combine with yet.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;

use super::locate::FieldPath;
use super::raw::{RawHa, RawMembers, RawPlan};
use super::values::{Context, format_duration};
use super::{Ha, Members, Probe};

pub const NAMESPACE: &str = "kube-system";
pub const RING: &str = "keyrot-ring";
pub const LEASE: &str = "keyrot-leader";
/// client-go's usual timings (kube-controller-manager uses 15/10/2).
pub const LEASE_DURATION: TimeDelta = TimeDelta::seconds(60);
pub const RENEW_DEADLINE: TimeDelta = TimeDelta::seconds(40);
pub const RETRY_PERIOD: TimeDelta = TimeDelta::seconds(5);
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// `Some(None)` when the plan has no `ha` section.
pub fn ha(cx: &mut Context, raw: &RawPlan, probe: &Option<Probe>) -> Option<Option<Ha>> {
    let Some(written) = &raw.ha else {
        return Some(None);
    };
    let at = FieldPath::root().key("ha");
    refuse_combinations(cx, raw);
    let node_name = match &written.node_name {
        Some(name) => object_name(cx, &at.key("nodeName"), name),
        None => host_name(cx, &at.key("nodeName")),
    };
    let address = match &written.address {
        Some(text) => cx.text(&at.key("address"), text).map(Some),
        None => Some(None),
    };
    let kubeconfig = kubeconfig(cx, written, probe, &at);
    let namespace = name_or(
        cx,
        &at.key("namespace"),
        written.namespace.as_deref(),
        NAMESPACE,
    );
    let ring = name_or(cx, &at.key("ring"), written.ring.as_deref(), RING);
    let lease = name_or(cx, &at.key("lease"), written.lease.as_deref(), LEASE);
    let members = members(cx, written, &at, address.as_ref());
    let timings = timings(cx, written, &at);
    let (lease_duration, renew_deadline, retry_period) = timings?;
    Some(Some(Ha {
        node_name: node_name?,
        address: address?,
        kubeconfig: kubeconfig?,
        namespace: namespace?,
        ring: ring?,
        lease: lease?,
        members: members?,
        lease_duration,
        renew_deadline,
        retry_period,
    }))
}

/// What an HA plan cannot have yet: each is a single-node feature whose cluster-wide form is
/// not built (docs/ha.md says so).
fn refuse_combinations(cx: &mut Context, raw: &RawPlan) {
    let refusals = [
        (raw.signer.is_some(), "signer"),
        (raw.issuer_migration.is_some(), "issuerMigration"),
        (
            raw.approvals.as_ref().is_some_and(|a| !a.is_empty()),
            "approvals",
        ),
        (raw.keep_next_key == Some(true), "keepNextKey"),
        (raw.metrics.is_some(), "metrics"),
    ];
    for (written, field) in refusals {
        if written {
            cx.error(
                &FieldPath::root().key(field),
                "not available with an ha section yet (docs/ha.md): remove one of the two",
            );
        }
    }
}

fn kubeconfig(
    cx: &mut Context,
    written: &RawHa,
    probe: &Option<Probe>,
    at: &FieldPath,
) -> Option<PathBuf> {
    if let Some(path) = &written.kubeconfig {
        return cx.path(&at.key("kubeconfig"), path);
    }
    match probe {
        Some(Probe::Kubeconfig { path, .. }) => Some(path.clone()),
        // The probe's own error says what is wrong with it.
        None => None,
        Some(Probe::None) => {
            cx.error(
                &FieldPath::root().key("probe"),
                "an ha plan needs a probe: every node acknowledges what its own apiserver serves \
                 and signs with, and no rotation advances on anything less",
            );
            None
        }
    }
}

fn members(
    cx: &mut Context,
    written: &RawHa,
    at: &FieldPath,
    address: Option<&Option<String>>,
) -> Option<Members> {
    let at = at.key("members");
    match &written.members {
        None => {
            cx.missing(
                &at,
                "the control-plane nodes every rotation waits for: a list of node names, or \
                 endpointSlice",
            );
            None
        }
        Some(RawMembers::Word(word)) if word == "endpointSlice" => {
            if let Some(None) = address {
                cx.error(
                    &FieldPath::root().key("ha").key("address"),
                    "required with members: endpointSlice: the address this node's apiserver \
                     advertises, as the kubernetes EndpointSlice lists it",
                );
                return None;
            }
            Some(Members::EndpointSlice)
        }
        Some(RawMembers::Word(word)) => {
            cx.error(
                &at,
                format!("{word:?}: expected a list of node names, or endpointSlice"),
            );
            None
        }
        Some(RawMembers::Names(names)) => {
            let mut set = BTreeSet::new();
            let mut ok = true;
            for (i, name) in names.iter().enumerate() {
                match object_name(cx, &at.index(i), name) {
                    Some(name) if !set.insert(name.clone()) => {
                        cx.error(&at.index(i), format!("{name} is listed twice"));
                        ok = false;
                    }
                    Some(_) => {}
                    None => ok = false,
                }
            }
            if set.is_empty() && ok {
                cx.error(&at, "lists no node");
                return None;
            }
            ok.then_some(Members::Named(set))
        }
    }
}

fn timings(
    cx: &mut Context,
    written: &RawHa,
    at: &FieldPath,
) -> Option<(Duration, Duration, Duration)> {
    let duration = cx.duration(
        &at.key("leaseDuration"),
        written.lease_duration.as_ref(),
        LEASE_DURATION,
    );
    let deadline = cx.duration(
        &at.key("renewDeadline"),
        written.renew_deadline.as_ref(),
        RENEW_DEADLINE,
    );
    let retry = cx.duration(
        &at.key("retryPeriod"),
        written.retry_period.as_ref(),
        RETRY_PERIOD,
    );
    let (duration, deadline, retry) = (duration?, deadline?, retry?);
    // client-go's own checks (NewLeaderElector): the leader must stop acting before anyone may
    // take over, and renew more than once before it stops.
    let mut ok = true;
    if deadline >= duration {
        cx.error(
            &at.key("renewDeadline"),
            format!(
                "{} is not shorter than leaseDuration {}: a leader must stop acting before \
                 another node may take its Lease over",
                format_duration(deadline),
                format_duration(duration)
            ),
        );
        ok = false;
    }
    if retry >= deadline || retry < TimeDelta::seconds(1) {
        cx.error(
            &at.key("retryPeriod"),
            format!(
                "{} must be at least 1s and shorter than renewDeadline {}",
                format_duration(retry),
                format_duration(deadline)
            ),
        );
        ok = false;
    }
    let std = |d: TimeDelta| d.to_std().expect("validated durations are not negative");
    ok.then(|| (std(duration), std(deadline), std(retry)))
}

/// A Kubernetes object name (RFC 1123 subdomain), as node names, namespaces and ConfigMap and
/// Lease names are.
fn object_name(cx: &mut Context, at: &FieldPath, written: &str) -> Option<String> {
    let valid = !written.is_empty()
        && written.len() <= 253
        && written.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    match valid {
        true => Some(written.to_string()),
        false => {
            cx.error(
                at,
                format!(
                    "{written:?} is not a Kubernetes object name: lower-case letters, digits, \
                     '-' and '.', starting and ending with a letter or digit"
                ),
            );
            None
        }
    }
}

fn name_or(
    cx: &mut Context,
    at: &FieldPath,
    written: Option<&str>,
    default: &str,
) -> Option<String> {
    match written {
        Some(name) => object_name(cx, at, name),
        None => Some(default.to_string()),
    }
}

/// kubelet's default node name: the host name, lower-cased.
fn host_name(cx: &mut Context, at: &FieldPath) -> Option<String> {
    match std::fs::read_to_string(HOSTNAME_FILE) {
        Ok(name) => object_name(cx, at, &name.trim().to_lowercase()),
        Err(e) => {
            cx.error(
                at,
                format!("not written, and the host name cannot be read from {HOSTNAME_FILE}: {e}"),
            );
            None
        }
    }
}
