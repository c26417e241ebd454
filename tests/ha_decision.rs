//! The HA decision core on a simulated control plane (`keyrot::ha::simulation`): whole rotations
//! across 3 and 5 nodes, and property tests that random interleavings and faults (keyrot killed,
//! nodes down, partitions, 409 storms, clock jumps) never break the barriers of docs/ha.md:
//! a key signs only once every apiserver, bundle and target has it, and stays everywhere until
//! retireAfter has passed since it last signed. Once the faults stop every rotation completes.

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use keyrot::decision::Gate;
use keyrot::decision::ha::{self, RingChange};
use keyrot::decision::lease::LeaseTimings;
use keyrot::ha::ring::KeyRole;
use keyrot::ha::simulation::{Cluster, Stepped};
use keyrot::plan::Plan;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const TIMINGS: LeaseTimings = LeaseTimings {
    lease_duration: Duration::from_secs(60),
    renew_deadline: Duration::from_secs(40),
    retry_period: Duration::from_secs(5),
};

fn plan() -> Plan {
    let mut plan = harness::probed_plan();
    plan.timings.publish_settle = TimeDelta::minutes(10);
    plan.timings.retire_after = TimeDelta::hours(24);
    plan
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("cp-{i}")).collect()
}

fn cluster(n: usize) -> Cluster {
    let names = names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Cluster::new(plan(), &refs, harness::t0(), TIMINGS)
}

/// A person runs `keyrot rotate` on `by` (the ring must exist).
fn request(cluster: &mut Cluster, by: &str) {
    let ring = ha::apply(
        cluster.ring.as_ref(),
        &RingChange::Request { by: by.into() },
        by,
        None,
        cluster.now,
    )
    .unwrap();
    cluster.ring = Some(ring);
}

/// What the invariants need to remember: when each key last signed a token on any node.
#[derive(Default)]
struct History {
    last_signed: BTreeMap<String, DateTime<Utc>>,
    /// The most apiservers restarting at once.
    most_restarting: usize,
}

impl History {
    /// Records who signs now and checks invariants 10 and 11 against the whole cluster.
    fn check(&mut self, cluster: &Cluster) -> Result<(), String> {
        let all: Vec<String> = cluster.nodes.keys().cloned().collect();
        self.check_members(cluster, &all)
    }

    /// The same, for the nodes `members` only (the others are not part of the cluster yet).
    fn check_members(&mut self, cluster: &Cluster, members: &[String]) -> Result<(), String> {
        let now = cluster.now;
        let nodes: Vec<(&String, &keyrot::ha::simulation::Node)> = cluster
            .nodes
            .iter()
            .filter(|(name, _)| members.contains(name))
            .collect();
        for (_, node) in &nodes {
            if node.apiserver.answers(node.machine_up) {
                self.last_signed.insert(node.apiserver.signs.clone(), now);
            }
        }
        let restarting = cluster
            .nodes
            .values()
            .filter(|n| n.apiserver.back_at.is_some())
            .count();
        self.most_restarting = self.most_restarting.max(restarting);
        let retire_after = cluster.plan.timings.retire_after;
        for (kid, last) in &self.last_signed {
            if now > *last + retire_after {
                continue;
            }
            for (name, node) in &nodes {
                if !node.bundle.contains(kid) {
                    return Err(format!(
                        "{name}'s bundle lacks {kid}, which signed at {last} (now {now})"
                    ));
                }
                if node.apiserver.answers(node.machine_up) && !node.apiserver.serves.contains(kid) {
                    return Err(format!(
                        "{name}'s apiserver does not serve {kid}, which signed at {last} (now {now})"
                    ));
                }
            }
            for (i, served) in cluster.targets.iter().enumerate() {
                if !served.contains(kid) {
                    return Err(format!(
                        "target {i} does not serve {kid}, which signed at {last} (now {now})"
                    ));
                }
            }
        }
        if restarting > 1 {
            return Err(format!("{restarting} apiservers restart at once"));
        }
        Ok(())
    }
}

/// Steps every node in turn, and when none has anything to do moves the clock to the next
/// wake-up, until the ring records a completed rotation or `max_steps` pass.
fn run_until_complete(
    cluster: &mut Cluster,
    history: &mut History,
    max_steps: usize,
) -> Vec<String> {
    let names: Vec<String> = cluster.nodes.keys().cloned().collect();
    let mut log = Vec::new();
    for _ in 0..max_steps {
        let mut acted = false;
        for name in &names {
            let stepped = cluster.step(name);
            history.check(cluster).unwrap();
            match &stepped {
                Stepped::Waiting(_) | Stepped::Offline => {}
                other => {
                    acted = true;
                    log.push(format!("{name}: {other:?}"));
                }
            }
        }
        let done = cluster
            .ring
            .as_ref()
            .is_some_and(|r| r.rotation.is_none() && r.last_completed.is_some());
        if done && cluster.quiet() {
            return log;
        }
        if !acted {
            let next = cluster
                .next_wake()
                .unwrap_or(cluster.now + TimeDelta::seconds(5));
            // While someone holds the Lease, renewals and takeovers count in seconds: never
            // jump past one.
            let held = cluster.lease.as_ref().is_some_and(|l| l.holder.is_some());
            cluster.now = match held {
                true => next.min(cluster.now + TimeDelta::seconds(5)),
                false => next,
            };
        }
    }
    let blocked: Vec<String> = names
        .iter()
        .map(|n| format!("{n}: {:?}", cluster.decide(n).0))
        .collect();
    panic!(
        "no completed rotation after {max_steps} steps; decisions: {}\nring: {}\nlast steps:\n{}",
        blocked.join("\n"),
        cluster
            .ring
            .as_ref()
            .map(|r| r.render())
            .unwrap_or_default(),
        log[log.len().saturating_sub(25)..].join("\n")
    );
}

fn assert_settled_on_own_keys(cluster: &Cluster) {
    let ring = cluster.ring.as_ref().unwrap();
    assert!(ring.turn.is_none(), "the restart turn is released");
    assert!(ring.keys.iter().all(|k| k.role == KeyRole::Signing));
    assert_eq!(ring.keys.len(), cluster.nodes.len(), "one key per node");
    let kids = ring.all_kids();
    for (name, node) in &cluster.nodes {
        let own = ring.signing_key_of(name).unwrap();
        assert_eq!(own.owners.len(), 1, "{name} signs with a key of its own");
        assert_eq!(node.signing, own.kid);
        assert_eq!(node.apiserver.signs, own.kid);
        assert_eq!(node.bundle, kids, "{name}'s bundle holds every node's key");
        assert_eq!(node.apiserver.serves, kids);
        let private: Vec<&String> = node.private_keys.iter().map(|(k, _)| k).collect();
        assert_eq!(
            private,
            [&own.kid],
            "{name} keeps only its own live private key"
        );
    }
    for served in &cluster.targets {
        assert_eq!(served, &kids);
    }
    assert!(
        cluster.lease.as_ref().unwrap().holder.is_none(),
        "the Lease is released"
    );
}

#[test]
fn a_three_node_rotation_moves_every_node_from_the_shared_key_to_its_own() {
    let mut cluster = cluster(3);
    let mut history = History::default();
    // First contact: the nodes create and join the ring; nobody leads, nothing restarts.
    for _ in 0..3 {
        for name in names(3) {
            cluster.step(&name);
        }
    }
    assert!(cluster.lease.is_none(), "no lease between rotations");
    let ring = cluster.ring.as_ref().unwrap();
    assert_eq!(ring.members.len(), 3);
    assert_eq!(ring.keys.len(), 1);
    assert_eq!(
        ring.keys[0].owners.len(),
        3,
        "the kubeadm key is shared by all three"
    );

    request(&mut cluster, "cp-2");
    let log = run_until_complete(&mut cluster, &mut history, 10_000);
    assert_settled_on_own_keys(&cluster);
    assert_eq!(
        history.most_restarting, 1,
        "restarts roll one node at a time"
    );
    let restarts = log.iter().filter(|l| l.contains("Node(Restart)")).count();
    // Stage, promote, retire: one restart per node each.
    assert_eq!(restarts, 9, "{}", log.join("\n"));
    let completed = cluster.ring.as_ref().unwrap().last_completed.unwrap();
    assert!(
        completed - harness::t0() >= TimeDelta::hours(24),
        "retireAfter was waited for"
    );
}

#[test]
fn a_five_node_cluster_rotates_twice_and_destroys_its_retired_private_keys() {
    let mut cluster = cluster(5);
    let mut history = History::default();
    for _ in 0..3 {
        for name in names(5) {
            cluster.step(&name);
        }
    }
    request(&mut cluster, "cp-1");
    run_until_complete(&mut cluster, &mut history, 20_000);
    let first: Vec<String> = cluster.ring.as_ref().unwrap().all_kids();
    request(&mut cluster, "cp-4");
    run_until_complete(&mut cluster, &mut history, 20_000);
    assert_settled_on_own_keys(&cluster);
    let second = cluster.ring.as_ref().unwrap().all_kids();
    assert!(
        first.iter().all(|k| !second.contains(k)),
        "every key rotated"
    );
}

#[test]
fn a_node_that_never_joined_blocks_the_rotation_by_name_and_nothing_is_promoted() {
    let mut cluster = cluster(3);
    cluster.expected =
        ha::Expected::Named(["cp-1", "cp-2", "cp-3", "cp-4"].map(String::from).into());
    let mut history = History::default();
    for _ in 0..3 {
        for name in names(3) {
            cluster.step(&name);
        }
    }
    request(&mut cluster, "cp-1");
    for _ in 0..200 {
        for name in names(3) {
            cluster.step(&name);
            history.check(&cluster).unwrap();
        }
        cluster.now += TimeDelta::seconds(5);
    }
    let ring = cluster.ring.as_ref().unwrap();
    assert!(
        ring.keys
            .iter()
            .all(|k| k.role != KeyRole::Next || !ring.members.is_empty())
    );
    for node in cluster.nodes.values() {
        assert_eq!(node.apiserver.signs, "shared-0", "nobody promotes");
    }
    let blocked: Vec<_> = names(3)
        .iter()
        .flat_map(|n| cluster.decide(n).0.blocked_by)
        .collect();
    assert!(
        blocked
            .iter()
            .any(|b| b.gate == Gate::Membership && b.reason.contains("cp-4")),
        "{blocked:?}\n{}",
        cluster.ring.as_ref().unwrap().render()
    );
}

#[test]
fn removing_a_dead_node_lets_the_rotation_finish_and_its_key_retires_not_vanishes() {
    let mut cluster = cluster(3);
    let mut history = History::default();
    for _ in 0..3 {
        for name in names(3) {
            cluster.step(&name);
        }
    }
    request(&mut cluster, "cp-1");
    // cp-3 dies for good right after the rotation starts.
    for _ in 0..10 {
        for name in names(3) {
            cluster.step(&name);
        }
    }
    let node = cluster.nodes.get_mut("cp-3").unwrap();
    node.machine_up = false;
    node.keyrot_up = false;
    for _ in 0..100 {
        for name in names(3) {
            cluster.step(&name);
        }
        cluster.now += TimeDelta::seconds(5);
    }
    assert!(
        cluster.ring.as_ref().unwrap().rotation.is_some(),
        "blocked, not skipped"
    );
    let ring = ha::apply(
        cluster.ring.as_ref(),
        &RingChange::RemoveNode {
            node: "cp-3".into(),
            by: "cp-1 (root)".into(),
        },
        "cp-1",
        None,
        cluster.now,
    )
    .unwrap();
    assert_eq!(ring.removals.last().unwrap().node, "cp-3");
    cluster.ring = Some(ring);
    cluster.nodes.remove("cp-3");
    cluster.expected = ha::Expected::Named(["cp-1", "cp-2", "cp-3"].map(String::from).into());
    run_until_complete(&mut cluster, &mut history, 10_000);
    assert_settled_on_own_keys(&cluster);
}

#[derive(Debug, Clone)]
enum Event {
    Step(usize),
    Advance(i64),
    KillKeyrot(usize),
    StartKeyrot(usize),
    MachineDown(usize),
    MachineUp(usize),
    Partition(usize),
    Heal(usize),
    ConflictStorm(u32),
    Request(usize),
}

fn event(nodes: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        20 => (0..nodes).prop_map(Event::Step),
        4 => (1i64..900).prop_map(Event::Advance),
        1 => (0..nodes).prop_map(Event::KillKeyrot),
        2 => (0..nodes).prop_map(Event::StartKeyrot),
        1 => (0..nodes).prop_map(Event::MachineDown),
        2 => (0..nodes).prop_map(Event::MachineUp),
        1 => (0..nodes).prop_map(Event::Partition),
        2 => (0..nodes).prop_map(Event::Heal),
        1 => (1u32..12).prop_map(Event::ConflictStorm),
        1 => (0..nodes).prop_map(Event::Request),
    ]
}

fn play(nodes: usize, events: &[Event]) -> Result<(), TestCaseError> {
    let mut cluster = cluster(nodes);
    let names = names(nodes);
    let mut history = History::default();
    for _ in 0..3 {
        for name in &names {
            cluster.step(name);
        }
    }
    request(&mut cluster, "cp-1");
    for event in events {
        match *event {
            Event::Step(i) => {
                cluster.step(&names[i]);
            }
            Event::Advance(seconds) => cluster.now += TimeDelta::seconds(seconds),
            Event::KillKeyrot(i) => {
                let node = cluster.nodes.get_mut(&names[i]).unwrap();
                node.keyrot_up = false;
                // What keyrot knew of the Lease dies with it.
                node.sight = Default::default();
            }
            Event::StartKeyrot(i) => cluster.nodes.get_mut(&names[i]).unwrap().keyrot_up = true,
            Event::MachineDown(i) => {
                let node = cluster.nodes.get_mut(&names[i]).unwrap();
                node.machine_up = false;
                node.sight = Default::default();
            }
            Event::MachineUp(i) => {
                let now = cluster.now;
                let node = cluster.nodes.get_mut(&names[i]).unwrap();
                if !node.machine_up {
                    node.machine_up = true;
                    // It boots: its apiserver starts from the files on disk.
                    node.apiserver.back_at = Some(now);
                }
            }
            Event::Partition(i) => cluster.nodes.get_mut(&names[i]).unwrap().partitioned = true,
            Event::Heal(i) => cluster.nodes.get_mut(&names[i]).unwrap().partitioned = false,
            Event::ConflictStorm(n) => cluster.conflicts += n,
            Event::Request(i) => {
                if cluster.ring.is_some() {
                    request(&mut cluster, &names[i]);
                }
            }
        }
        cluster.settle_apiservers();
        history.check(&cluster).map_err(TestCaseError::fail)?;
    }
    // The faults stop: everything comes back, and the rotation in progress (or a new one)
    // completes with every invariant kept on the way.
    for node in cluster.nodes.values_mut() {
        node.keyrot_up = true;
        node.partitioned = false;
        if !node.machine_up {
            node.machine_up = true;
            node.apiserver.back_at = Some(cluster.now);
        }
    }
    cluster.conflicts = 0;
    if cluster.ring.as_ref().is_some_and(|r| r.rotation.is_none()) {
        request(&mut cluster, "cp-2");
    }
    let before = cluster.ring.as_ref().and_then(|r| r.last_completed);
    let mut guard = 0;
    while cluster.ring.as_ref().and_then(|r| r.last_completed) == before {
        run_until_complete(&mut cluster, &mut history, 20_000);
        guard += 1;
        prop_assert!(guard < 3);
    }
    assert_settled_on_own_keys(&cluster);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_interleaving_or_fault_breaks_the_barriers_on_three_nodes(
        events in proptest::collection::vec(event(3), 0..400)
    ) {
        play(3, &events)?;
    }

    #[test]
    fn no_interleaving_or_fault_breaks_the_barriers_on_five_nodes(
        events in proptest::collection::vec(event(5), 0..400)
    ) {
        play(5, &events)?;
    }
}

#[test]
fn a_node_does_not_promote_while_a_member_that_joined_late_lacks_a_key_that_will_sign() {
    let mut cluster = cluster(3);
    let mut history = History::default();
    cluster.nodes.get_mut("cp-3").unwrap().keyrot_up = false;
    cluster.expected = ha::Expected::Named(["cp-1", "cp-2"].map(String::from).into());
    for _ in 0..3 {
        for name in names(2) {
            cluster.step(&name);
        }
    }
    request(&mut cluster, "cp-1");
    // Run until the leader enters promote with two members.
    for _ in 0..2_000 {
        for name in names(2) {
            cluster.step(&name);
            history.check_members(&cluster, &names(2)).unwrap();
        }
        let promoting = cluster
            .ring
            .as_ref()
            .and_then(|r| r.rotation.as_ref())
            .is_some_and(|r| r.phase == keyrot::decision::Phase::Promote);
        if promoting {
            break;
        }
        cluster.now = cluster
            .next_wake()
            .unwrap_or(cluster.now + TimeDelta::seconds(5));
    }
    // cp-3 joins now (the plan named it late): nobody may sign with a new key before cp-3's
    // apiserver serves it, whatever phase the leader reached.
    cluster.nodes.get_mut("cp-3").unwrap().keyrot_up = true;
    cluster.expected = ha::Expected::Named(["cp-1", "cp-2", "cp-3"].map(String::from).into());
    cluster.step("cp-3");
    assert!(cluster.ring.as_ref().unwrap().members.contains_key("cp-3"));
    for name in names(2) {
        let (decision, _) = cluster.decide(&name);
        assert!(
            !matches!(
                decision.step,
                Some(ha::HaStep::Node(ha::NodeEffect::WriteSigningKey { .. }))
            ),
            "{name} promotes before cp-3 serves its key: {decision:?}"
        );
    }
    run_until_complete(&mut cluster, &mut history, 20_000);
    assert_settled_on_own_keys(&cluster);
}

#[test]
fn a_node_whose_apiserver_does_not_answer_waits_without_taking_the_restart_turn() {
    let mut cluster = cluster(3);
    for _ in 0..3 {
        for name in names(3) {
            cluster.step(&name);
        }
    }
    // cp-2's apiserver stops answering (a broken probe identity, a hung process): its files
    // are what the ring wants, so a restart would change nothing.
    let hour = cluster.now + TimeDelta::hours(1);
    cluster.nodes.get_mut("cp-2").unwrap().apiserver.back_at = Some(hour);
    let (decision, _) = cluster.decide("cp-2");
    assert_eq!(decision.step, None, "{decision:?}");
    let blocked = &decision.blocked_by[0];
    assert_eq!(blocked.gate, Gate::ApiserverServesBundle);
    assert!(
        blocked.reason.contains("does not answer"),
        "{}",
        blocked.reason
    );
    assert_eq!(
        decision.wake_at,
        Some(cluster.now + cluster.plan.timings.retry_backoff)
    );
    assert!(cluster.step("cp-2") != Stepped::Ring(RingChange::TakeTurn));
    assert!(cluster.ring.as_ref().unwrap().turn.is_none());
}

#[test]
fn a_node_whose_signing_file_names_a_leaving_key_changes_it_before_its_bundle_drops_that_key() {
    let mut cluster = cluster(3);
    for _ in 0..3 {
        for name in names(3) {
            cluster.step(&name);
        }
    }
    request(&mut cluster, "cp-1");
    // Run until the retiring keys' removal opens, nobody in a turn.
    for _ in 0..20_000 {
        let opened = cluster
            .ring
            .as_ref()
            .and_then(|r| r.rotation.as_ref())
            .is_some_and(|r| r.retire_opened.is_some());
        if opened && cluster.ring.as_ref().unwrap().turn.is_none() {
            break;
        }
        let acted = names(3)
            .iter()
            .any(|n| !matches!(cluster.step(n), Stepped::Waiting(_) | Stepped::Offline));
        if !acted {
            cluster.now = cluster
                .next_wake()
                .unwrap_or(cluster.now + TimeDelta::seconds(5));
        }
    }
    let ring = cluster.ring.as_ref().unwrap();
    assert!(ring.rotation.as_ref().unwrap().retire_opened.is_some());
    // cp-1's signing file names the retiring shared key again (a restored backup, say).
    let retiring = ring.kids_in(KeyRole::Retiring)[0].clone();
    cluster.nodes.get_mut("cp-1").unwrap().signing = retiring.clone();
    let mut file_effects = Vec::new();
    for _ in 0..6 {
        if let Stepped::Node(effect) = cluster.step("cp-1") {
            file_effects.push(effect);
        }
        let node = &cluster.nodes["cp-1"];
        assert!(
            node.bundle.contains(&node.signing),
            "cp-1's bundle {:?} does not verify its signing key {}",
            node.bundle,
            node.signing
        );
    }
    assert!(
        matches!(file_effects.first(), Some(ha::NodeEffect::WriteSigningKey { kid }) if *kid != retiring),
        "{file_effects:?}"
    );
}
