//! Leader election on a `coordination.k8s.io` Lease, in client-go's manner
//! (`tools/leaderelection/leaderelection.go`): expiry is judged from the local monotonic instant
//! at which the Lease was last seen to change, never from the timestamps written in it (clocks
//! of other nodes may be skewed); a leader stops acting at its renew deadline, before anyone
//! else can judge its Lease expired; the holder is the node name; every write is a replace at
//! the read resourceVersion. `leaseTransitions` is the fencing epoch the ring's leader writes
//! carry. Pure: the caller passes both clocks.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ha::api::LeaseRecord;

/// The three durations of client-go's `LeaderElectionConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long others wait after the Lease last changed before taking it over.
    pub lease_duration: Duration,
    /// How long the leader keeps acting after its last successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews, and others look again.
    pub retry_period: Duration,
}

/// What this node knows of the Lease: the record last read and the local monotonic instant at
/// which it was first seen so (client-go's `observedRecord` / `observedTime`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseSight {
    /// `None`: the Lease does not exist (or was never read).
    pub record: Option<LeaseRecord>,
    pub resource_version: Option<String>,
    /// Monotonic time of the first read that returned `record`.
    pub changed_at: Duration,
    /// Monotonic time of this node's last successful write of the Lease as its holder.
    pub renewed_at: Option<Duration>,
}

impl LeaseSight {
    /// Takes a fresh read into account: the observed time moves only when the record changed.
    pub fn saw(
        &mut self,
        record: Option<LeaseRecord>,
        resource_version: Option<String>,
        now: Duration,
    ) {
        if record != self.record {
            self.changed_at = now;
        }
        self.record = record;
        self.resource_version = resource_version;
    }

    /// A write this node made succeeded: it is what the Lease now holds.
    pub fn wrote(&mut self, record: LeaseRecord, resource_version: String, now: Duration) {
        let holder_me = record.holder.is_some();
        self.record = Some(record);
        self.resource_version = Some(resource_version);
        self.changed_at = now;
        self.renewed_at = holder_me.then_some(now);
    }

    /// A write failed (409, or no answer): this node's renewal did not happen.
    pub fn lost(&mut self) {
        self.resource_version = None;
    }
}

/// What to do about the Lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// Create the Lease (it does not exist) holding it.
    Create(LeaseRecord),
    /// Replace the Lease at the read version with this record (acquire, renew or release).
    Replace(LeaseRecord),
    /// Nothing to write now; look again at `retry` (monotonic).
    Wait { retry: Duration },
}

/// Whether this node leads, and with which epoch, at monotonic `now`: only while its last
/// renewal is younger than the renew deadline.
pub fn leading(me: &str, sight: &LeaseSight, timings: LeaseTimings, now: Duration) -> Option<i32> {
    let record = sight.record.as_ref()?;
    let renewed = sight.renewed_at?;
    (record.holder.as_deref() == Some(me) && now < renewed + timings.renew_deadline)
        .then_some(record.transitions)
}

/// When another node's hold on the Lease ends as judged here (monotonic); `None` when nobody
/// holds it.
pub fn held_until(sight: &LeaseSight) -> Option<Duration> {
    let record = sight.record.as_ref()?;
    record.holder.as_ref()?;
    let seconds = u64::try_from(record.lease_duration_seconds).unwrap_or(0);
    Some(sight.changed_at + Duration::from_secs(seconds))
}

/// The next Lease step for node `me`: `want` says whether there is leader work (a rotation in
/// progress, requested or due). `floor` is the highest epoch a leader wrote the ring with: an
/// epoch this node takes is above it, even if the Lease was deleted and created again (its
/// `leaseTransitions` back at 0), so a ring write with a stale epoch stays refused. `wall` is
/// written into the record for people to read.
pub fn next_step(
    me: &str,
    want: bool,
    floor: i32,
    sight: &LeaseSight,
    timings: LeaseTimings,
    now: Duration,
    wall: DateTime<Utc>,
) -> LeaseStep {
    let above_floor = |transitions: i32| transitions.max(floor).saturating_add(1);
    let duration_seconds = i32::try_from(timings.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(record) = &sight.record else {
        return match want {
            true => LeaseStep::Create(LeaseRecord {
                holder: Some(me.to_string()),
                lease_duration_seconds: duration_seconds,
                acquire_time: Some(wall),
                renew_time: Some(wall),
                transitions: match floor {
                    0 => 0,
                    floor => above_floor(floor),
                },
            }),
            false => LeaseStep::Wait {
                retry: now + timings.retry_period,
            },
        };
    };
    let mine = record.holder.as_deref() == Some(me);
    if mine {
        if !want {
            // client-go's release: empty holder, a one-second duration, same transitions.
            return LeaseStep::Replace(LeaseRecord {
                holder: None,
                lease_duration_seconds: 1,
                acquire_time: Some(wall),
                renew_time: Some(wall),
                transitions: record.transitions,
            });
        }
        if record.transitions < floor {
            // The Lease was created again below the ring's epoch: take a new epoch above it.
            return LeaseStep::Replace(LeaseRecord {
                acquire_time: Some(wall),
                renew_time: Some(wall),
                lease_duration_seconds: duration_seconds,
                transitions: above_floor(record.transitions),
                ..record.clone()
            });
        }
        let due = sight.renewed_at.map_or(now, |at| at + timings.retry_period);
        if now < due && leading(me, sight, timings, now).is_some() {
            return LeaseStep::Wait { retry: due };
        }
        return LeaseStep::Replace(LeaseRecord {
            renew_time: Some(wall),
            lease_duration_seconds: duration_seconds,
            ..record.clone()
        });
    }
    if !want {
        return LeaseStep::Wait {
            retry: now + timings.retry_period,
        };
    }
    if let Some(until) = held_until(sight)
        && now < until
    {
        return LeaseStep::Wait { retry: until };
    }
    LeaseStep::Replace(LeaseRecord {
        holder: Some(me.to_string()),
        lease_duration_seconds: duration_seconds,
        acquire_time: Some(wall),
        renew_time: Some(wall),
        transitions: above_floor(record.transitions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: LeaseTimings = LeaseTimings {
        lease_duration: Duration::from_secs(60),
        renew_deadline: Duration::from_secs(40),
        retry_period: Duration::from_secs(5),
    };

    fn wall() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn held_by(holder: &str, transitions: i32) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            lease_duration_seconds: 60,
            acquire_time: Some(wall()),
            renew_time: Some(wall()),
            transitions,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_missing_lease_is_created_only_when_there_is_leader_work() {
        let sight = LeaseSight::default();
        assert!(matches!(
            next_step("a", false, 0, &sight, T, secs(0), wall()),
            LeaseStep::Wait { .. }
        ));
        let LeaseStep::Create(record) = next_step("a", true, 0, &sight, T, secs(0), wall()) else {
            panic!("expected a create");
        };
        assert_eq!(record.holder.as_deref(), Some("a"));
        assert_eq!(record.transitions, 0);
    }

    #[test]
    fn expiry_is_judged_from_when_the_lease_was_seen_to_change_not_from_its_renew_time() {
        let mut sight = LeaseSight::default();
        // The record claims a renewal far in the past (a skewed clock): irrelevant.
        let mut record = held_by("b", 3);
        record.renew_time = DateTime::from_timestamp(0, 0);
        sight.saw(Some(record.clone()), Some("7".into()), secs(100));
        assert_eq!(
            next_step("a", true, 0, &sight, T, secs(159), wall()),
            LeaseStep::Wait { retry: secs(160) }
        );
        // The same record read again does not move the observed time.
        sight.saw(Some(record), Some("7".into()), secs(150));
        let LeaseStep::Replace(taken) = next_step("a", true, 0, &sight, T, secs(160), wall())
        else {
            panic!("expected a takeover");
        };
        assert_eq!(taken.holder.as_deref(), Some("a"));
        assert_eq!(taken.transitions, 4, "a takeover is a new fencing epoch");
    }

    #[test]
    fn a_renewal_seen_by_others_pushes_their_takeover_back() {
        let mut sight = LeaseSight::default();
        sight.saw(Some(held_by("b", 1)), Some("1".into()), secs(0));
        let mut renewed = held_by("b", 1);
        renewed.renew_time = Some(wall() + chrono::TimeDelta::seconds(5));
        sight.saw(Some(renewed), Some("2".into()), secs(50));
        assert_eq!(
            next_step("a", true, 0, &sight, T, secs(70), wall()),
            LeaseStep::Wait { retry: secs(110) }
        );
    }

    #[test]
    fn the_leader_stops_acting_at_its_renew_deadline_before_anyone_can_take_over() {
        let mut sight = LeaseSight::default();
        sight.wrote(held_by("a", 2), "5".into(), secs(10));
        assert_eq!(leading("a", &sight, T, secs(49)), Some(2));
        assert_eq!(leading("a", &sight, T, secs(50)), None);
        // Another node that saw the same write at the same instant waits until 70 s.
        let mut other = LeaseSight::default();
        other.saw(Some(held_by("a", 2)), Some("5".into()), secs(10));
        assert_eq!(held_until(&other), Some(secs(70)));
        assert!(secs(50) < secs(70));
    }

    #[test]
    fn the_leader_renews_every_retry_period_and_releases_when_the_work_is_done() {
        let mut sight = LeaseSight::default();
        sight.wrote(held_by("a", 2), "5".into(), secs(10));
        assert_eq!(
            next_step("a", true, 0, &sight, T, secs(12), wall()),
            LeaseStep::Wait { retry: secs(15) }
        );
        let LeaseStep::Replace(renewal) = next_step("a", true, 0, &sight, T, secs(15), wall())
        else {
            panic!("expected a renewal");
        };
        assert_eq!(renewal.transitions, 2, "a renewal keeps the epoch");
        let LeaseStep::Replace(release) = next_step("a", false, 0, &sight, T, secs(16), wall())
        else {
            panic!("expected a release");
        };
        assert_eq!(release.holder, None);
        assert_eq!(release.lease_duration_seconds, 1);
    }

    #[test]
    fn a_lease_created_again_after_a_deletion_takes_an_epoch_above_the_rings() {
        // The ring was last written by a leader of epoch 7; the Lease was deleted since.
        let LeaseStep::Create(created) =
            next_step("a", true, 7, &LeaseSight::default(), T, secs(0), wall())
        else {
            panic!("expected a create");
        };
        assert_eq!(created.transitions, 8);
        // A holder whose Lease is below the ring's epoch takes a new epoch above it.
        let mut sight = LeaseSight::default();
        sight.wrote(held_by("a", 0), "3".into(), secs(1));
        let LeaseStep::Replace(raised) = next_step("a", true, 7, &sight, T, secs(2), wall()) else {
            panic!("expected a new epoch");
        };
        assert_eq!(raised.transitions, 8);
        // A takeover lands above both the Lease's count and the ring's epoch.
        let mut other = LeaseSight::default();
        other.saw(Some(held_by("b", 2)), Some("4".into()), secs(0));
        let LeaseStep::Replace(taken) = next_step("a", true, 7, &other, T, secs(61), wall()) else {
            panic!("expected a takeover");
        };
        assert_eq!(taken.transitions, 8);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut sight = LeaseSight::default();
        let mut released = held_by("b", 4);
        released.holder = None;
        sight.saw(Some(released), Some("9".into()), secs(100));
        let LeaseStep::Replace(taken) = next_step("a", true, 0, &sight, T, secs(100), wall())
        else {
            panic!("expected an acquire");
        };
        assert_eq!(taken.transitions, 5);
    }

    #[test]
    fn a_failed_renewal_is_retried_at_once_and_leadership_lapses_at_the_deadline() {
        let mut sight = LeaseSight::default();
        sight.wrote(held_by("a", 2), "5".into(), secs(10));
        sight.lost();
        assert_eq!(leading("a", &sight, T, secs(20)), Some(2));
        assert!(matches!(
            next_step("a", true, 0, &sight, T, secs(20), wall()),
            LeaseStep::Replace(_)
        ));
        assert_eq!(leading("a", &sight, T, secs(51)), None);
    }
}
