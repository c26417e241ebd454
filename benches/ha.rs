//! HA control planes: API calls and wall time of one rotation on 3 and 5 nodes (real processes:
//! a kube-apiserver stand-in and a `keyrot run` per node, the cluster API stand-in counting
//! every call), against the plan's configured waits; and the API calls of idle nodes per hour.
//!
//! `cargo bench --bench ha` measures (about seven minutes, five of them idle). Under
//! `cargo test` it only checks that it builds: the same rotations run as the e2e_ha tests.

mod common;
#[path = "../tests/e2e/mod.rs"]
mod e2e;
#[path = "../tests/ha_world/mod.rs"]
mod ha_world;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::measuring;
use ha_world::{HaWorld, Timings};
use serde_json::Value;

/// How long idle nodes are watched to count their calls.
const IDLE: Duration = Duration::from_secs(300);

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The calls keyrot makes (the client's TokenRequests and reviews go to the nodes directly).
fn keyrot_calls(counts: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    counts
        .iter()
        .filter(|(k, _)| {
            k.contains("configmaps") || k.contains("leases") || k.contains("endpointslices")
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn main() {
    if !measuring() {
        println!(
            "ha: measured only under `cargo bench --bench ha` (the e2e_ha tests run the same rotations)"
        );
        return;
    }
    let timings = Timings::default();
    println!(
        "configured waits: publishSettle {} + retireAfter {}; Lease {} / renew deadline {} / retry {}; apiserver restart 300 ms",
        timings.publish_settle,
        timings.retire_after,
        timings.lease_duration,
        timings.renew_deadline,
        timings.retry_period
    );
    for nodes in [3, 5] {
        let mut world = HaWorld::start(nodes, Timings::default());
        world.start_daemons();
        world.wait_until_joined();
        std::thread::sleep(Duration::from_secs(2));
        let before = world.counts();
        let started = Instant::now();
        assert!(world.keyrot(0, &["rotate"]).success);
        world.wait_for_completion(&Value::Null, Duration::from_secs(300));
        let wall = started.elapsed();
        let calls = keyrot_calls(&delta(&world.counts(), &before));
        let total: u64 = calls.values().sum();
        println!(
            "{nodes} nodes: rotation {:.1} s wall ({:.1} s beyond the 6 s of configured waits); \
             {total} API calls ({:.0} per node): {calls:?}",
            wall.as_secs_f64(),
            wall.as_secs_f64() - 6.0,
            total as f64 / nodes as f64
        );
        if nodes == 3 {
            std::thread::sleep(Duration::from_secs(5));
            let idle_before = world.counts();
            std::thread::sleep(IDLE);
            let idle = keyrot_calls(&delta(&world.counts(), &idle_before));
            let per_hour = idle.values().sum::<u64>() as f64 * 3600.0 / IDLE.as_secs_f64();
            println!(
                "3 idle nodes: {idle:?} in {IDLE:?}, {per_hour:.0} API calls per hour for the cluster"
            );
        }
    }
}
