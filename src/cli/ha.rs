//! The HA forms of `keyrot status`, `rotate` and `plan`, and `keyrot node remove`: each talks to
//! the cluster's API (the ring and the Lease), from any control-plane node.

use std::process::ExitCode;

use chrono::Utc;
use keyrot::decision::ha::{Expected, RingChange};
use keyrot::ha::api::ClusterApi;
use keyrot::ha::kube::KubeClusterApi;
use keyrot::ha::node::change_with_retries;
use keyrot::ha::ring::Ring;
use keyrot::plan::{Ha, Members, Plan};

use super::out::{out, outln};
use super::plan_args::{Output, PlanArg};

/// How many times a person's change is tried again when a daemon wrote the ring meanwhile.
const ATTEMPTS: u32 = 10;

fn api(ha: &Ha) -> anyhow::Result<KubeClusterApi> {
    Ok(KubeClusterApi::new(
        &ha.kubeconfig,
        &ha.namespace,
        &ha.ring,
        &ha.lease,
    )?)
}

/// Who asks: this node and the person (`sudo` keeps the name in SUDO_USER).
fn asker(ha: &Ha) -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()));
    format!("{} ({user})", ha.node_name)
}

fn expected(ha: &Ha, api: &dyn ClusterApi) -> Expected {
    match &ha.members {
        Members::Named(names) => Expected::Named(names.clone()),
        Members::EndpointSlice => {
            Expected::Addresses(api.apiserver_addresses().map_err(|e| e.to_string()))
        }
    }
}

pub fn status(plan: &Plan, ha: &Ha, output: Output) -> anyhow::Result<ExitCode> {
    let api = api(ha)?;
    let ring = match api.read_ring()? {
        Some(read) => Some(
            Ring::parse(&read.value)
                .map_err(|e| anyhow::anyhow!("ConfigMap {}/{}: {e}", ha.namespace, ha.ring))?,
        ),
        None => None,
    };
    let lease = api.read_lease()?.map(|l| l.value);
    let now = Utc::now();
    let status =
        keyrot::ha::status::status(plan, &ha.node_name, ring, lease, &expected(ha, &api), now);
    match output {
        Output::Text => out!("{}", keyrot::ha::status::render_text(&status, now)),
        Output::Json => outln!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rotate(ha: &Ha) -> anyhow::Result<ExitCode> {
    let api = api(ha)?;
    anyhow::ensure!(
        api.read_ring()?.is_some(),
        "no ring in {}/{} yet: start `keyrot run` on the control-plane nodes first",
        ha.namespace,
        ha.ring
    );
    let by = asker(ha);
    let ring = change_with_retries(
        &api,
        &RingChange::Request { by: by.clone() },
        &ha.node_name,
        ATTEMPTS,
    )?;
    match &ring.rotation {
        Some(r) => outln!(
            "rotation {} is in progress ({}, {}); nothing more to ask",
            r.id,
            r.phase,
            r.cause
        ),
        None => outln!(
            "rotation requested by {}: the keyrot that takes the Lease starts it; follow it with \
             `keyrot status`",
            ring.request.as_ref().map_or(by.as_str(), |r| r.by.as_str())
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Remove a control-plane node that is gone for good from the ring. Its keys retire (they may
/// have signed tokens still in use) and the rotation stops waiting for it. Recorded in the ring
/// with who did it and when; a node that runs keyrot again joins again.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum NodeCommand {
    /// Remove NAME from the ring (an explicit, recorded operator action).
    Remove(RemoveArgs),
}

#[derive(Debug, clap::Args)]
struct RemoveArgs {
    #[command(flatten)]
    plan: PlanArg,
    /// The node name as the ring lists it (`keyrot status` shows them).
    name: String,
    /// Remove it even though it acknowledged something within the last leaseDuration (it may
    /// still be running).
    #[arg(long)]
    force: bool,
}

pub fn node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let NodeCommand::Remove(args) = args.command;
    let plan = args.plan.load()?;
    let Some(ha) = &plan.ha else {
        anyhow::bail!(
            "{}: the plan has no ha section: a single control-plane node has no ring",
            args.plan.path.display()
        );
    };
    let api = api(ha)?;
    let read = api
        .read_ring()?
        .ok_or_else(|| anyhow::anyhow!("no ring in {}/{}", ha.namespace, ha.ring))?;
    let ring = Ring::parse(&read.value)
        .map_err(|e| anyhow::anyhow!("ConfigMap {}/{}: {e}", ha.namespace, ha.ring))?;
    let Some(member) = ring.members.get(&args.name) else {
        let known: Vec<&str> = ring.members.keys().map(String::as_str).collect();
        anyhow::bail!(
            "node {} is not a member of the ring (members: {})",
            args.name,
            known.join(", ")
        );
    };
    let recent = Utc::now() - member.ack.since
        < chrono::TimeDelta::from_std(ha.lease_duration).unwrap_or_default();
    anyhow::ensure!(
        !recent || args.force,
        "node {} acknowledged its apiserver's keys at {}, less than {:?} ago: it may still run. \
         Remove only a node that is gone for good (--force to do it anyway)",
        args.name,
        member.ack.since.to_rfc3339(),
        ha.lease_duration
    );
    let change = RingChange::RemoveNode {
        node: args.name.clone(),
        by: asker(ha),
    };
    let ring = change_with_retries(&api, &change, &ha.node_name, ATTEMPTS)?;
    let removal = ring.removals.last().expect("the removal was just recorded");
    tracing::warn!(
        "node {} removed from the ring by {}",
        removal.node,
        removal.by
    );
    outln!(
        "node {} removed by {} at {}{}",
        removal.node,
        removal.by,
        removal.at.to_rfc3339(),
        match removal.retired_kids.is_empty() {
            true => String::new(),
            false => format!(
                "; its keys [{}] retire after retireAfter",
                removal.retired_kids.join(", ")
            ),
        }
    );
    if let Members::Named(names) = &ha.members
        && names.contains(&args.name)
    {
        outln!(
            "note: ha.members in {} still names {}: remove it there on every node too",
            plan.path.display(),
            args.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn plan_timeline(plan: &Plan, ha: &Ha, output: Output) -> anyhow::Result<ExitCode> {
    let names: Vec<String> = match &ha.members {
        Members::Named(names) => names.iter().cloned().collect(),
        Members::EndpointSlice => (1..=3).map(|i| format!("node-{i}")).collect(),
    };
    let start = Utc::now();
    let entries = keyrot::ha::timeline::simulate(plan, ha, &names, start)
        .ok_or_else(|| anyhow::anyhow!("the simulated rotation did not complete"))?;
    match output {
        Output::Text => {
            outln!(
                "HA rotation of {} nodes ({}), simulated from one shared key, asked for now; \
                 nothing is changed:",
                names.len(),
                names.join(", ")
            );
            out!("{}", keyrot::ha::timeline::render_text(&entries));
        }
        Output::Json => outln!("{}", serde_json::to_string_pretty(&entries)?),
    }
    Ok(ExitCode::SUCCESS)
}
