//! The dry run of an HA plan: the coming rotation as a per-node timeline, from a simulated
//! control plane whose nodes run the real core (`simulation`). Changes nothing anywhere.

use chrono::{DateTime, TimeDelta, Utc};

use super::node::describe_change;
use super::simulation::{Cluster, Stepped};
use crate::decision::ha::{NodeEffect, RingChange};
use crate::decision::lease::LeaseTimings;
use crate::plan::{Ha, Plan};

/// One step of one node, at a time after the start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Seconds after the rotation was asked for.
    pub after_seconds: i64,
    pub node: String,
    pub what: String,
}

/// Simulates a rotation of `names` (sharing one key, as after `kubeadm join`) asked for at
/// `start`, until it completes; `None` if it does not within a generous number of steps (the
/// plan's waits cannot be met, which validation should have said).
pub fn simulate(
    plan: &Plan,
    ha: &Ha,
    names: &[String],
    start: DateTime<Utc>,
) -> Option<Vec<Entry>> {
    let timings = LeaseTimings {
        lease_duration: ha.lease_duration,
        renew_deadline: ha.renew_deadline,
        retry_period: ha.retry_period,
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut cluster = Cluster::new(plan.clone(), &refs, start, timings);
    for _ in 0..3 {
        for name in names {
            cluster.step(name);
        }
    }
    let ring = cluster.ring.as_ref()?;
    let request = RingChange::Request {
        by: names.first()?.clone(),
    };
    cluster.ring =
        Some(crate::decision::ha::apply(Some(ring), &request, &names[0], None, start).ok()?);
    let mut entries = Vec::new();
    let mut holder: Option<String> = None;
    for _ in 0..100_000 {
        let mut acted = false;
        for name in names {
            let stepped = cluster.step(name);
            let what = match stepped {
                Stepped::Lease { holder: now } => {
                    let line = match (&holder, &now) {
                        (None, Some(_)) => Some("takes the Lease".to_string()),
                        (Some(_), None) => Some("releases the Lease".to_string()),
                        _ => None,
                    };
                    holder = now;
                    line
                }
                Stepped::Ring(change) => Some(describe_change(&change)),
                Stepped::Node(effect) => Some(describe_effect(plan, &effect)),
                Stepped::Publish { kids } => {
                    Some(format!("publishes [{}] to every target", kids.join(", ")))
                }
                Stepped::Waiting(_) | Stepped::Refused(_) | Stepped::Offline => None,
            };
            if let Some(what) = what {
                acted = true;
                entries.push(Entry {
                    after_seconds: (cluster.now - start).num_seconds(),
                    node: name.clone(),
                    what,
                });
            }
        }
        let done = cluster
            .ring
            .as_ref()
            .is_some_and(|r| r.rotation.is_none() && r.last_completed.is_some());
        if done && cluster.quiet() {
            return Some(entries);
        }
        if !acted {
            let held = cluster.lease.as_ref().is_some_and(|l| l.holder.is_some());
            let next = cluster
                .next_wake()
                .unwrap_or(cluster.now + TimeDelta::seconds(5));
            cluster.now = match held {
                true => next.min(cluster.now + TimeDelta::seconds(5)),
                false => next,
            };
        }
    }
    None
}

fn describe_effect(plan: &Plan, effect: &NodeEffect) -> String {
    match effect {
        NodeEffect::GenerateKey { path, spec } => {
            format!("generates its new {} key at {}", spec.alg(), path.display())
        }
        NodeEffect::WriteBundle { kids } => format!(
            "writes {} with [{}]",
            plan.apiserver.verification_bundle.display(),
            kids.join(", ")
        ),
        NodeEffect::WriteSigningKey { kid } => format!(
            "writes {} with its key {kid}",
            plan.apiserver.signing_key_file.display()
        ),
        NodeEffect::Restart => "restarts its apiserver".into(),
        NodeEffect::DestroyPrivateKey { kid, .. } => format!("destroys the private key of {kid}"),
    }
}

/// The timeline as text, one line per step: time after the start, node, what.
pub fn render_text(entries: &[Entry]) -> String {
    let width = entries.iter().map(|e| e.node.len()).max().unwrap_or(4);
    let mut out = String::new();
    for e in entries {
        out.push_str(&format!(
            "{:>10}  {:<width$}  {}\n",
            offset(e.after_seconds),
            e.node,
            e.what
        ));
    }
    out
}

fn offset(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("+{s}s"),
        (0, _) => format!("+{m}m{s:02}s"),
        _ => format!("+{h}h{m:02}m{s:02}s"),
    }
}
