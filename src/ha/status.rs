//! `keyrot status` on an HA control plane: every node's view from the ring (keys served, signing
//! kid, last acknowledgement), the Lease, the rotation and what it waits for. Read from any node.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::api::LeaseRecord;
use super::ring::{KeyRole, Ring};
use crate::decision::Blocked;
use crate::decision::ha::{Expected, HaStep, leader_view, next_due};
use crate::plan::Plan;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HaStatus {
    pub cluster: String,
    /// The node this was read from.
    pub node: String,
    /// `None`: no keyrot joined yet (no ring).
    pub ring: Option<Ring>,
    pub lease: Option<LeaseView>,
    /// What the leader does next, or why it waits.
    pub next: Option<String>,
    pub blocked: Vec<BlockedView>,
    pub next_scheduled: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseView {
    pub holder: Option<String>,
    pub epoch: i32,
    pub renewed: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockedView {
    pub gate: String,
    pub reason: String,
}

pub fn status(
    plan: &Plan,
    node: &str,
    ring: Option<Ring>,
    lease: Option<LeaseRecord>,
    expected: &Expected,
    now: DateTime<Utc>,
) -> HaStatus {
    let view = ring.as_ref().map(|r| leader_view(plan, r, expected, now));
    let next = view
        .as_ref()
        .and_then(|v| v.step.as_ref())
        .map(describe_step);
    let blocked = view
        .map(|v| v.blocked_by)
        .unwrap_or_default()
        .into_iter()
        .map(|Blocked { gate, reason }| BlockedView {
            gate: gate.to_string(),
            reason,
        })
        .collect();
    HaStatus {
        cluster: plan.cluster.clone(),
        node: node.to_string(),
        next_scheduled: ring.as_ref().and_then(|r| next_due(plan, r)),
        ring,
        lease: lease.map(|l| LeaseView {
            holder: l.holder,
            epoch: l.transitions,
            renewed: l.renew_time,
        }),
        next,
        blocked,
    }
}

fn describe_step(step: &HaStep) -> String {
    match step {
        HaStep::Ring(change) => super::node::describe_change(change),
        HaStep::Node(effect) => format!("{effect:?}"),
        HaStep::Publish { kids } => format!("publish [{}]", kids.join(", ")),
    }
}

/// The status as text: the Lease, the rotation, one block per node, the keys.
pub fn render_text(status: &HaStatus, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "cluster {} (HA), read from node {}\n",
        status.cluster, status.node
    );
    let Some(ring) = &status.ring else {
        out.push_str(
            "no ring yet: no keyrot has joined (start `keyrot run` on each control-plane node)\n",
        );
        return out;
    };
    match status
        .lease
        .as_ref()
        .and_then(|l| l.holder.as_ref().map(|h| (h, l)))
    {
        Some((holder, lease)) => out.push_str(&format!(
            "leader: {holder} (epoch {}, renewed {})\n",
            lease.epoch,
            lease.renewed.map_or("never".into(), |t| ago(t, now))
        )),
        None => out.push_str("leader: none (nobody needs to lead now)\n"),
    }
    match &ring.rotation {
        Some(r) => {
            out.push_str(&format!(
                "rotation {}: {} since {} ({})\n",
                r.id,
                r.phase,
                ago(r.phase_since, now),
                r.cause
            ));
            if let Some(p) = &r.published {
                out.push_str(&format!(
                    "  published [{}] {}\n",
                    p.kids.join(", "),
                    ago(p.at, now)
                ));
            }
        }
        None => out.push_str(&format!(
            "no rotation in progress; last completed: {}\n",
            ring.last_completed.map_or("never".into(), |t| ago(t, now))
        )),
    }
    if let Some(request) = &ring.request {
        out.push_str(&format!(
            "requested by {} {}\n",
            request.by,
            ago(request.at, now)
        ));
    }
    if let Some(turn) = &ring.turn {
        out.push_str(&format!(
            "restart turn: {} since {}{}\n",
            turn.node,
            ago(turn.since, now),
            turn.restarted
                .map_or(String::new(), |t| format!(", restarted {}", ago(t, now)))
        ));
    }
    if let Some(next) = &status.next {
        out.push_str(&format!("next: {next}\n"));
    }
    for b in &status.blocked {
        out.push_str(&format!("waiting: {}: {}\n", b.gate, b.reason));
    }
    if let Some(at) = status.next_scheduled {
        out.push_str(&format!("next scheduled rotation: {}\n", at.to_rfc3339()));
    }
    out.push_str("\nnodes:\n");
    for (name, member) in &ring.members {
        let own: Vec<String> = ring
            .keys
            .iter()
            .filter(|k| k.owners.contains(name))
            .map(|k| format!("{} ({})", k.kid, k.role.as_str()))
            .collect();
        out.push_str(&format!(
            "  {name}{}\n    serves:  [{}]\n    signs:   {}\n    last ack: {}\n    keys:    {}\n",
            member
                .address
                .as_ref()
                .map_or(String::new(), |a| format!(" ({a})")),
            member.ack.serves.join(", "),
            member.ack.signs.as_deref().unwrap_or("(not seen)"),
            ago(member.ack.since, now),
            match own.is_empty() {
                true => "none".to_string(),
                false => own.join(", "),
            }
        ));
    }
    out.push_str("\nkeys (ring order = bundle and JWKS order):\n");
    for key in &ring.keys {
        let owners: Vec<&str> = key.owners.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "  {} {} {} since {}, owners [{}]\n",
            key.kid,
            key.alg,
            key.role.as_str(),
            ago(key.since, now),
            owners.join(", ")
        ));
    }
    let shared = ring
        .keys
        .iter()
        .any(|k| k.role == KeyRole::Signing && k.owners.len() > 1);
    if shared {
        out.push_str(
            "  (a signing key several nodes share: the next rotation gives each its own)\n",
        );
    }
    if !ring.removals.is_empty() {
        out.push_str("\nremoved nodes:\n");
        for r in &ring.removals {
            out.push_str(&format!(
                "  {} by {} at {}{}\n",
                r.node,
                r.by,
                r.at.to_rfc3339(),
                match r.retired_kids.is_empty() {
                    true => String::new(),
                    false => format!(", its keys retiring: [{}]", r.retired_kids.join(", ")),
                }
            ));
        }
    }
    out
}

fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let span = |s: i64| match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    };
    match seconds {
        s if s >= 0 => format!("{} ({} ago)", at.to_rfc3339(), span(s)),
        s => format!("{} (in {})", at.to_rfc3339(), span(-s)),
    }
}
