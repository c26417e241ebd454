//! The faults a test injects into the cluster stand-in, and the API calls it counts.
//!
//! A cut (the whole API down, or one client listener partitioned) closes connections without an
//! answer, in-flight watches included: what a client sees when a network path dies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Which connections are cut now.
#[derive(Debug, Clone, Default)]
struct Cuts {
    down: bool,
    partitioned: BTreeSet<String>,
}

impl Cuts {
    fn cuts(&self, listener: Option<&str>) -> bool {
        self.down || listener.is_some_and(|name| self.partitioned.contains(name))
    }
}

#[derive(Debug)]
pub struct Faults {
    cuts: watch::Sender<Cuts>,
    /// How many of the next writes of ConfigMaps and Leases answer 409.
    conflicts: AtomicU64,
    /// Client listeners cut the moment their client writes itself into a Lease (a leader
    /// partitioned right after it took or renewed its Lease, mid-phase).
    armed: Mutex<BTreeSet<String>>,
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            cuts: watch::channel(Cuts::default()).0,
            conflicts: AtomicU64::new(0),
            armed: Mutex::default(),
            counts: Mutex::default(),
        }
    }
}

impl Faults {
    pub fn set_down(&self, down: bool) {
        self.cuts.send_modify(|cuts| cuts.down = down);
    }

    pub fn partition(&self, listener: &str) {
        self.cuts.send_modify(|cuts| {
            cuts.partitioned.insert(listener.to_string());
        });
    }

    pub fn heal(&self, listener: &str) {
        self.cuts.send_modify(|cuts| {
            cuts.partitioned.remove(listener);
        });
    }

    /// Cuts `listener` as soon as its client next writes a Lease holding it.
    pub fn partition_when_leading(&self, listener: &str) {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        armed.insert(listener.to_string());
    }

    /// A client of `listener` wrote a Lease naming a holder: cut it if armed.
    pub fn lease_written_by(&self, listener: &str) {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if armed.remove(listener) {
            drop(armed);
            self.partition(listener);
        }
    }

    /// Whether connections to `listener` (`None`: the main one) are cut now.
    pub fn is_cut(&self, listener: Option<&str>) -> bool {
        self.cuts.borrow().cuts(listener)
    }

    /// Returns once connections to `listener` are cut.
    pub async fn cut(&self, listener: Option<&str>) {
        let mut cuts = self.cuts.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail while we are borrowed.
        let _ = cuts.wait_for(|cuts| cuts.cuts(listener)).await;
    }

    pub fn add_conflicts(&self, n: u64) {
        self.conflicts.fetch_add(n, Ordering::SeqCst);
    }

    /// Whether this write is one of the storm's: takes one from the count if so.
    pub fn take_conflict(&self) -> bool {
        self.conflicts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Counts one API call, as `VERB RESOURCE` (kube's audit verbs: get, list, watch, ...).
    pub fn count(&self, call: String) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(call).or_default() += 1;
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_answers_exactly_its_count() {
        let faults = Faults::default();
        faults.add_conflicts(2);
        assert!(faults.take_conflict());
        assert!(faults.take_conflict());
        assert!(!faults.take_conflict());
    }

    #[test]
    fn an_armed_listener_is_cut_by_its_first_lease_write_only() {
        let faults = Faults::default();
        faults.partition_when_leading("node-a");
        faults.lease_written_by("node-b");
        assert!(!faults.is_cut(Some("node-b")));
        faults.lease_written_by("node-a");
        assert!(faults.is_cut(Some("node-a")));
        faults.heal("node-a");
        faults.lease_written_by("node-a");
        assert!(!faults.is_cut(Some("node-a")), "armed once");
    }

    #[test]
    fn a_partition_cuts_one_listener_and_down_cuts_all() {
        let faults = Faults::default();
        faults.partition("node-a");
        assert!(faults.is_cut(Some("node-a")));
        assert!(!faults.is_cut(Some("node-b")));
        assert!(!faults.is_cut(None));
        faults.set_down(true);
        assert!(faults.is_cut(None) && faults.is_cut(Some("node-b")));
        faults.set_down(false);
        faults.heal("node-a");
        assert!(!faults.is_cut(Some("node-a")));
    }
}
