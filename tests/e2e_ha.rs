//! HA control planes end to end: three nodes, each with its own apiserver stand-in, key files
//! and `keyrot run`, coordinated through a stand-in of the cluster's Kubernetes API. Tokens are
//! minted on every node (and through the load balancer) and reviewed on every node and at the
//! published documents during whole rotations: 0 rejected, with and without faults.

mod e2e;
mod ha_world;

use std::time::{Duration, Instant};

use ha_world::{HaWorld, Timings};
use serde_json::Value;

/// Rotations here take seconds; a loaded CI machine gets a generous bound.
const ROTATION_BOUND: Duration = Duration::from_secs(180);

fn signing_kids(status: &Value) -> Vec<(String, String)> {
    status["ring"]["members"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                m["ack"]["signs"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn ring_kids(status: &Value) -> Vec<String> {
    status["ring"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// After a completed rotation: every node signs with a key of its own, every bundle and the
/// published JWKS hold exactly the ring's keys, nobody holds the Lease.
fn assert_converged(world: &HaWorld, status: &Value) {
    let kids = ring_kids(status);
    assert_eq!(
        kids.len(),
        world.names.len(),
        "one key per node: {status:#}"
    );
    let signing = signing_kids(status);
    for (i, (name, kid)) in signing.iter().enumerate() {
        assert!(
            kids.contains(kid),
            "{name} signs with {kid}, not a ring key"
        );
        assert!(
            signing.iter().filter(|(_, k)| k == kid).count() == 1,
            "{name} shares its key"
        );
        assert_eq!(world.bundle_kids(i), kids, "{name}'s bundle");
    }
    assert_eq!(world.published_kids(), kids, "the published JWKS");
    assert!(
        status["lease"]["holder"].is_null(),
        "the Lease is released: {status:#}"
    );
}

fn assert_no_rejections(log: &ha_world::TrafficLog) {
    assert!(
        log.rejected.is_empty(),
        "{} rejections, first: {:?}",
        log.rejected.len(),
        log.rejected.iter().take(5).collect::<Vec<_>>()
    );
    assert!(log.accepted > 100, "too little traffic: {log:?}");
    assert!(log.verified_upstream > 30, "too little traffic: {log:?}");
    assert!(
        log.old_token_reviews > 10,
        "the first token was not reviewed again: {log:?}"
    );
}

#[test]
fn three_nodes_rotate_from_the_shared_key_to_their_own_with_no_token_rejected_anywhere() {
    let mut world = HaWorld::start(3, Timings::default());
    world.start_daemons();
    // First contact: the ring is created and joined; nobody leads between rotations.
    world.wait_until_joined();
    let status = world.status(0);
    assert!(
        status["lease"].is_null() || status["lease"]["holder"].is_null(),
        "{status:#}"
    );
    let before = world.status(0)["ring"]["lastCompleted"].clone();
    let traffic = world.start_traffic();
    std::thread::sleep(Duration::from_secs(1));
    let asked = world.keyrot(1, &["rotate"]);
    assert!(asked.success, "{asked:?}");
    assert!(
        asked.stdout.contains("rotation requested by cp-2"),
        "{}",
        asked.stdout
    );
    let status = world.wait_for_completion(&before, ROTATION_BOUND);
    std::thread::sleep(Duration::from_secs(1));
    let log = world.stop_traffic(traffic);
    assert_converged(&world, &status);
    assert_no_rejections(&log);
    assert!(
        log.minted.len() >= 4,
        "tokens of the shared key and of each node's key: {log:?}"
    );
    // The text status names every node with what it serves and signs with.
    let text = world.keyrot(2, &["status"]);
    assert!(text.success, "{text:?}");
    for name in &world.names {
        assert!(
            text.stdout.contains(&format!("  {name}")),
            "{}",
            text.stdout
        );
    }
    assert!(text.stdout.contains("leader: none"), "{}", text.stdout);
    eprintln!("3-node rotation: {log:?}; API calls {:?}", world.counts());
}

#[test]
fn a_node_down_blocks_the_rotation_by_name_and_it_resumes_when_the_node_returns() {
    let mut world = HaWorld::start(3, Timings::default());
    world.start_daemons();
    world.wait_until_joined();
    let traffic = world.start_traffic();
    world.node_down(2);
    assert!(world.keyrot(0, &["rotate"]).success);
    // The others stage what they can, but nobody promotes: cp-3 has no new key.
    let deadline = Instant::now() + Duration::from_secs(60);
    let blocked = loop {
        let status = world.status(1);
        let named = status["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["reason"].as_str().unwrap_or("").contains("cp-3"))
            .cloned();
        if let Some(blocked) = named {
            break blocked;
        }
        assert!(
            Instant::now() < deadline,
            "{status:#}\n{}",
            world.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(blocked["gate"], "members-generate", "{blocked}");
    std::thread::sleep(Duration::from_secs(5));
    let status = world.status(0);
    assert_eq!(
        status["ring"]["rotation"]["phase"], "generate",
        "{status:#}"
    );
    let shared = &signing_kids(&status)[0].1;
    assert!(
        signing_kids(&status).iter().all(|(_, k)| k == shared),
        "nobody promoted"
    );
    world.node_up(2);
    let status = world.wait_for_completion(&Value::Null, ROTATION_BOUND);
    std::thread::sleep(Duration::from_secs(1));
    let log = world.stop_traffic(traffic);
    assert_converged(&world, &status);
    assert_no_rejections(&log);
}

#[test]
fn killed_daemons_a_partitioned_leader_409_storms_and_the_api_down_converge_with_no_token_rejected()
{
    let mut world = HaWorld::start(3, Timings::default());
    world.start_daemons();
    world.wait_until_joined();
    let traffic = world.start_traffic();
    let mut next = e2e::random();
    // The leader, cut off from the API the moment it writes itself into the Lease (mid-phase:
    // it took the Lease to act): it must stop acting before another node may take the Lease
    // over, and the others go on once it is back.
    let leader = "cp-1".to_string();
    world.fault(&format!("partition-when-leading/{leader}"));
    assert!(world.keyrot(0, &["rotate"]).success);
    let deadline = Instant::now() + Duration::from_secs(60);
    while world.lease_holder().as_deref() != Some(leader.as_str()) {
        assert!(
            Instant::now() < deadline,
            "{leader} never led\n{}",
            world.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cut_at = Instant::now();
    // Cut off, it cannot renew: once the leaseDuration has passed (6 s) another node with
    // leader work takes the Lease over, a new fencing epoch.
    let epoch = world.lease_transitions();
    let deadline = Instant::now() + Duration::from_secs(60);
    while world.lease_transitions() == epoch {
        assert!(
            Instant::now() < deadline,
            "nobody took over from {leader}\n{}",
            world.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took_over_after = cut_at.elapsed();
    world.fault(&format!("heal/{leader}"));
    // A 409 storm, then each daemon killed (SIGKILL) at a random moment and started again.
    world.fault("conflicts/25");
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(200 + next(1200)));
        world.kill_daemon(i);
        std::thread::sleep(Duration::from_millis(next(600)));
        world.start_daemon(i);
    }
    // The API down for a while: nothing advances on stale reads, everything resumes after.
    world.fault("down");
    std::thread::sleep(Duration::from_secs(3));
    world.fault("up");
    let status = world.wait_for_completion(&Value::Null, ROTATION_BOUND);
    std::thread::sleep(Duration::from_secs(1));
    let log = world.stop_traffic(traffic);
    assert_converged(&world, &status);
    assert_no_rejections(&log);
    let leader_log = world.daemon_log(world.names.iter().position(|n| *n == leader).unwrap());
    eprintln!(
        "faults: {leader} partitioned while leading; the Lease taken over after {took_over_after:?} \
         (epoch {epoch} -> {}); traffic {log:?}",
        world.lease_transitions()
    );
    // client-go's rule: nobody takes a Lease over before its duration has passed.
    assert!(
        took_over_after >= Duration::from_secs(5),
        "{took_over_after:?}"
    );
    assert!(
        leader_log.contains("the Kubernetes API is unavailable"),
        "the partitioned leader saw the API unavailable:\n{leader_log}"
    );
}

#[test]
fn a_node_gone_for_good_is_removed_by_name_and_the_rotation_completes_without_it() {
    let mut world = HaWorld::start(3, Timings::default());
    // The dry run needs no cluster: every node's simulated timeline.
    let plan = world.keyrot(0, &["plan"]);
    assert!(plan.success, "{plan:?}");
    for line in [
        "cp-1  restarts its apiserver",
        "cp-3  writes",
        "the rotation is complete",
    ] {
        assert!(
            plan.stdout.contains(line),
            "{line:?} missing:\n{}",
            plan.stdout
        );
    }
    // Before any keyrot ran there is no ring: `keyrot rotate` says what to do first.
    let early = world.keyrot(0, &["rotate"]);
    assert!(!early.success, "{early:?}");
    assert!(
        early.stderr.contains("start `keyrot run`"),
        "{}",
        early.stderr
    );
    world.start_daemons();
    world.wait_until_joined();
    world.node_down(2);
    // It acknowledged moments ago: it may still run, so a removal needs --force now.
    let refused = world.keyrot(0, &["node", "remove", "cp-3"]);
    assert!(!refused.success, "{refused:?}");
    assert!(
        refused.stderr.contains("may still run"),
        "{}",
        refused.stderr
    );
    assert!(world.keyrot(0, &["rotate"]).success);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        world.status(0)["ring"]["rotation"]["phase"],
        "generate",
        "blocked on cp-3"
    );
    let removed = world.keyrot(1, &["node", "remove", "cp-3", "--force"]);
    assert!(removed.success, "{removed:?}");
    assert!(
        removed.stdout.contains("node cp-3 removed by cp-2"),
        "{}",
        removed.stdout
    );
    assert!(
        removed.stdout.contains("ha.members"),
        "the plan still names it: {}",
        removed.stdout
    );
    let status = world.wait_for_completion(&Value::Null, ROTATION_BOUND);
    let ring = &status["ring"];
    assert_eq!(ring["members"].as_object().unwrap().len(), 2, "{status:#}");
    assert_eq!(ring["removals"][0]["node"], "cp-3");
    assert_eq!(
        ring["removals"][0]["by"]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("cp-2")
    );
    let kids = ring_kids(&status);
    assert_eq!(kids.len(), 2, "the two remaining nodes' keys: {status:#}");
    for i in 0..2 {
        assert_eq!(world.bundle_kids(i), kids);
    }
    assert_eq!(world.published_kids(), kids);
}

#[test]
fn daemons_killed_at_random_points_throughout_a_rotation_converge_with_no_token_rejected() {
    let mut world = HaWorld::start(3, Timings::default());
    world.start_daemons();
    world.wait_until_joined();
    let traffic = world.start_traffic();
    let mut next = e2e::random();
    assert!(world.keyrot(0, &["rotate"]).success);
    // SIGKILL every 0.2 to 1.5 s until the rotation completes: the Lease holder whenever
    // someone holds it, else the node in its restart turn (between its file writes, restart and
    // acknowledgement), else a random node; each started again 0 to 0.6 s later.
    let deadline = Instant::now() + ROTATION_BOUND;
    let (mut kills, mut leader_kills, mut turn_kills) = (0, 0, 0);
    loop {
        std::thread::sleep(Duration::from_millis(200 + next(1300)));
        let status = world.status(0);
        if status["ring"]["lastCompleted"].is_string() && status["ring"]["rotation"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{status:#}\n{}",
            world.logs_tail()
        );
        let position = |name: &str| world.names.iter().position(|n| n == name).unwrap();
        let in_turn = status["ring"]["turn"]["node"].as_str().map(str::to_string);
        let victim = match (world.lease_holder(), in_turn) {
            (Some(holder), _) => {
                leader_kills += 1;
                position(&holder)
            }
            (None, Some(node)) => {
                turn_kills += 1;
                position(&node)
            }
            (None, None) => next(3) as usize,
        };
        world.kill_daemon(victim);
        kills += 1;
        std::thread::sleep(Duration::from_millis(next(600)));
        world.start_daemon(victim);
    }
    let status = world.wait_for_completion(&Value::Null, ROTATION_BOUND);
    std::thread::sleep(Duration::from_secs(1));
    let log = world.stop_traffic(traffic);
    assert_converged(&world, &status);
    assert_no_rejections(&log);
    assert!(kills >= 3, "only {kills} kills");
    eprintln!(
        "{kills} kills ({leader_kills} of the Lease holder, {turn_kills} in a restart turn); \
         traffic {log:?}"
    );
}
