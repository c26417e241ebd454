//! A whole HA control plane in memory: the ring and the Lease with compare-and-swap, each node's
//! key files and apiserver, the targets, a clock. Every node runs the real decision core and
//! lease rules; faults are the caller's to inject. The dry run's per-node timeline and the
//! property tests of the barriers run on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::api::LeaseRecord;
use super::ring::Ring;
use crate::decision::ha::{self, Expected, HaObserved, HaStep, LocalView, NodeEffect, RingChange};
use crate::decision::lease::{self, LeaseSight, LeaseStep, LeaseTimings};
use crate::decision::{Blocked, KeyId, Probed, TargetView};
use crate::keys::Alg;
use crate::plan::Plan;

/// One simulated control-plane node.
#[derive(Debug, Clone)]
pub struct Node {
    /// keyrot runs (false: the node is down, or its keyrot was killed and not restarted yet).
    pub keyrot_up: bool,
    /// The machine runs: when false its apiserver serves nothing either.
    pub machine_up: bool,
    /// Cut off from the Kubernetes API (its keyrot reads and writes nothing there).
    pub partitioned: bool,
    pub bundle: Vec<String>,
    pub signing: String,
    pub private_keys: Vec<(String, PathBuf)>,
    pub apiserver: Apiserver,
    pub sight: LeaseSight,
}

/// A node's apiserver: what it loaded at its last start.
#[derive(Debug, Clone)]
pub struct Apiserver {
    pub serves: Vec<String>,
    pub signs: String,
    /// Restarting: it answers nothing until then, and then loads the key files.
    pub back_at: Option<DateTime<Utc>>,
}

impl Apiserver {
    /// Whether it answers (and signs tokens) now.
    pub fn answers(&self, machine_up: bool) -> bool {
        machine_up && self.back_at.is_none()
    }
}

/// What one call of [`Cluster::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stepped {
    /// The node wrote the Lease (`holder` after the write).
    Lease {
        holder: Option<String>,
    },
    Ring(RingChange),
    Node(NodeEffect),
    Publish {
        kids: Vec<String>,
    },
    /// Nothing to do now; why.
    Waiting(Vec<Blocked>),
    /// A write lost a race or was refused; the node decides again next time.
    Refused(String),
    /// The node could not run (down, or cut off from the API).
    Offline,
}

/// The whole simulated cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub plan: Plan,
    pub now: DateTime<Utc>,
    start: DateTime<Utc>,
    pub ring: Option<Ring>,
    pub lease: Option<LeaseRecord>,
    lease_version: u64,
    pub nodes: BTreeMap<String, Node>,
    /// The kids each of the plan's targets serves.
    pub targets: Vec<Vec<String>>,
    pub expected: Expected,
    pub timings: LeaseTimings,
    /// How long an apiserver restart takes.
    pub restart_time: TimeDelta,
    /// The next ring write fails with a conflict (a 409 storm is several).
    pub conflicts: u32,
}

/// The public key text of a simulated kid (the core treats it as opaque).
fn public_key_of(kid: &str) -> String {
    format!("simulated public key {kid}")
}

impl Cluster {
    /// `names` share one signing key, as kubeadm's nodes do; every target serves it.
    pub fn new(plan: Plan, names: &[&str], now: DateTime<Utc>, timings: LeaseTimings) -> Cluster {
        let shared = "shared-0".to_string();
        let nodes = names
            .iter()
            .map(|name| {
                let node = Node {
                    keyrot_up: true,
                    machine_up: true,
                    partitioned: false,
                    bundle: vec![shared.clone()],
                    signing: shared.clone(),
                    private_keys: Vec::new(),
                    apiserver: Apiserver {
                        serves: vec![shared.clone()],
                        signs: shared.clone(),
                        back_at: None,
                    },
                    sight: LeaseSight::default(),
                };
                (name.to_string(), node)
            })
            .collect();
        let targets = plan.targets.iter().map(|_| vec![shared.clone()]).collect();
        Cluster {
            expected: Expected::Named(names.iter().map(|n| n.to_string()).collect()),
            plan,
            now,
            start: now,
            ring: None,
            lease: None,
            lease_version: 0,
            nodes,
            targets,
            timings,
            restart_time: TimeDelta::seconds(5),
            conflicts: 0,
        }
    }

    /// The local monotonic clock every simulated node reads (no skew between them).
    fn monotonic(&self) -> Duration {
        (self.now - self.start).to_std().unwrap_or_default()
    }

    /// Apiservers that finished restarting load their key files.
    pub fn settle_apiservers(&mut self) {
        let now = self.now;
        for node in self.nodes.values_mut() {
            if node.apiserver.back_at.is_some_and(|at| at <= now) && node.machine_up {
                node.apiserver = Apiserver {
                    serves: node.bundle.clone(),
                    signs: node.signing.clone(),
                    back_at: None,
                };
            }
        }
    }

    fn observed_view(&self, name: &str, leading: bool) -> LocalView {
        let node = &self.nodes[name];
        let key = |kid: &String| KeyId {
            kid: kid.clone(),
            alg: Alg::ES256,
        };
        let mut public_keys = BTreeMap::new();
        for kid in node
            .bundle
            .iter()
            .chain([&node.signing])
            .chain(node.private_keys.iter().map(|(k, _)| k))
        {
            public_keys.insert(kid.clone(), public_key_of(kid));
        }
        let answers = node.apiserver.answers(node.machine_up);
        LocalView {
            bundle: Some(node.bundle.iter().map(key).collect()),
            signing: Some(key(&node.signing)),
            public_keys,
            private_keys: node
                .private_keys
                .iter()
                .map(|(kid, path)| (key(kid), path.clone()))
                .collect(),
            apiserver: match answers {
                true => Probed::Seen(node.apiserver.serves.clone()),
                false => Probed::Failed("connection refused".into()),
            },
            token_kid: match answers {
                true => Probed::Seen(node.apiserver.signs.clone()),
                false => Probed::Failed("connection refused".into()),
            },
            targets: match leading {
                true => self
                    .plan
                    .targets
                    .iter()
                    .zip(&self.targets)
                    .map(|(t, kids)| TargetView {
                        name: t.name.clone(),
                        kids: Probed::Seen(kids.clone()),
                        discovery: Probed::NotConfigured,
                    })
                    .collect(),
                false => Vec::new(),
            },
        }
    }

    /// The decision node `name` would take now, with its lease epoch if it leads.
    pub fn decide(&self, name: &str) -> (ha::HaDecision, Option<i32>) {
        let node = &self.nodes[name];
        let leading = lease::leading(name, &node.sight, self.timings, self.monotonic());
        let local = self.observed_view(name, leading.is_some());
        let observed = HaObserved {
            me: name,
            address: None,
            ring: self.ring.as_ref(),
            expected: &self.expected,
            local: &local,
            leading,
        };
        (ha::decide(&self.plan, &observed, self.now), leading)
    }

    /// Node `name` reads the API, decides, and takes one step, as its executor would.
    pub fn step(&mut self, name: &str) -> Stepped {
        self.settle_apiservers();
        let monotonic = self.monotonic();
        {
            let node = &self.nodes[name];
            if !node.keyrot_up || !node.machine_up || node.partitioned {
                return Stepped::Offline;
            }
        }
        let (lease, version) = (self.lease.clone(), self.lease_version);
        let node = self.nodes.get_mut(name).expect("a known node");
        node.sight.saw(lease, Some(version.to_string()), monotonic);
        let (decision, _) = self.decide(name);
        let sight = &self.nodes[name].sight;
        let floor = self.ring.as_ref().map_or(0, |r| r.leader_epoch);
        let lease_step = lease::next_step(
            name,
            decision.leader_work,
            floor,
            sight,
            self.timings,
            monotonic,
            self.now,
        );
        let (decision, leading) = match lease_step {
            LeaseStep::Create(record) | LeaseStep::Replace(record) => {
                let wrote = self.write_lease(name, record, monotonic);
                // As the executor does: a node that just took or renewed the Lease acts on it
                // at once; one that released it is done.
                if wrote
                    != (Stepped::Lease {
                        holder: Some(name.to_string()),
                    })
                {
                    return wrote;
                }
                self.decide(name)
            }
            LeaseStep::Wait { .. } => (
                decision,
                lease::leading(name, sight, self.timings, monotonic),
            ),
        };
        let Some(step) = decision.step else {
            return Stepped::Waiting(decision.blocked_by);
        };
        match step {
            HaStep::Ring(change) => self.write_ring(name, change, leading),
            HaStep::Node(effect) => {
                self.act(name, &effect);
                if effect == NodeEffect::Restart {
                    // The executor records the restart at once (a crash in between only
                    // makes the node restart once more).
                    let recorded = self.write_ring(name, RingChange::RecordRestart, leading);
                    if let Stepped::Refused(why) = recorded {
                        return Stepped::Refused(why);
                    }
                }
                Stepped::Node(effect)
            }
            HaStep::Publish { kids } => {
                for served in &mut self.targets {
                    *served = kids.clone();
                }
                Stepped::Publish { kids }
            }
        }
    }

    fn write_lease(&mut self, name: &str, record: LeaseRecord, monotonic: Duration) -> Stepped {
        let holder = record.holder.clone();
        self.lease = Some(record.clone());
        self.lease_version += 1;
        let version = self.lease_version.to_string();
        let node = self.nodes.get_mut(name).expect("a known node");
        node.sight.wrote(record, version, monotonic);
        Stepped::Lease { holder }
    }

    fn write_ring(&mut self, name: &str, change: RingChange, epoch: Option<i32>) -> Stepped {
        if self.conflicts > 0 {
            self.conflicts -= 1;
            return Stepped::Refused("409 Conflict".into());
        }
        match ha::apply(self.ring.as_ref(), &change, name, epoch, self.now) {
            Ok(ring) => {
                self.ring = Some(ring);
                Stepped::Ring(change)
            }
            Err(e) => Stepped::Refused(e.0),
        }
    }

    fn act(&mut self, name: &str, effect: &NodeEffect) {
        let now = self.now;
        let restart_time = self.restart_time;
        let node = self.nodes.get_mut(name).expect("a known node");
        match effect {
            NodeEffect::GenerateKey { path, .. } => {
                let rotation = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                node.private_keys
                    .push((format!("{name}-{rotation}"), path.clone()));
            }
            NodeEffect::WriteBundle { kids } => node.bundle = kids.clone(),
            NodeEffect::WriteSigningKey { kid } => node.signing = kid.clone(),
            NodeEffect::Restart => node.apiserver.back_at = Some(now + restart_time),
            NodeEffect::DestroyPrivateKey { kid, .. } => {
                node.private_keys.retain(|(k, _)| k != kid)
            }
        }
    }

    /// Whether no node has anything to do now (every decision waits, every lease write done).
    pub fn quiet(&self) -> bool {
        self.nodes.keys().all(|name| {
            let node = &self.nodes[name];
            if !node.keyrot_up || !node.machine_up || node.partitioned {
                return true;
            }
            let (decision, _) = self.decide(name);
            let holds = self.lease.as_ref().and_then(|l| l.holder.as_deref()) == Some(name);
            // A holder with nothing left to lead still has its release to write.
            let release_due = holds && !decision.leader_work;
            decision.step.is_none() && !release_due
        })
    }

    /// The earliest time any node's decision may change by itself.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        let mut wakes: Vec<DateTime<Utc>> = self
            .nodes
            .keys()
            .filter_map(|name| self.decide(name).0.wake_at)
            .collect();
        wakes.extend(self.nodes.values().filter_map(|n| n.apiserver.back_at));
        wakes.into_iter().filter(|w| *w > self.now).min()
    }
}
