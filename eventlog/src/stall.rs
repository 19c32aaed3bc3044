//! Stalled-partition detection for consumer-group members: pure bookkeeping over snapshots of
//! the group's committed offsets and the log's end offsets, with no I/O.
//!
//! A partition is *stalled* when it has work (committed < end), no member of this process owns
//! it, and its committed offset has not moved for a whole window. A healthy group never shows
//! one for long: the broker evicts a dead member after `session.timeout.ms` and hands its
//! partitions to the survivors. Some brokers evict the member but keep serving the old
//! assignment (tansu 0.6 does), so a member that sees a stall rejoins the group, which forces a
//! fresh assignment. See the Kafka consumer in `kafka.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One partition's state in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionProgress {
    pub topic: String,
    pub partition: u32,
    /// The group's committed offset (0 when nothing is committed yet).
    pub committed: u64,
    /// The log's end offset.
    pub end: u64,
}

/// Remembers since when each foreign partition's committed offset has stood still.
#[derive(Debug)]
pub(crate) struct StallWatch {
    window: Duration,
    still_since: HashMap<(String, u32), (u64, Instant)>,
}

impl StallWatch {
    pub fn new(window: Duration) -> Self {
        StallWatch {
            window,
            still_since: HashMap::new(),
        }
    }

    /// Forgets everything (after this member rejoined: the group is about to change).
    pub fn reset(&mut self) {
        self.still_since.clear();
    }

    /// Takes a snapshot and returns the partitions stalled for at least the window, sorted.
    pub fn observe(
        &mut self,
        now: Instant,
        owned: &[(String, u32)],
        snapshot: &[PartitionProgress],
    ) -> Vec<(String, u32)> {
        let mut stalled = Vec::new();
        for p in snapshot {
            let key = (p.topic.clone(), p.partition);
            if p.committed >= p.end || owned.contains(&key) {
                self.still_since.remove(&key);
                continue;
            }
            match self.still_since.get(&key) {
                Some((offset, since)) if *offset == p.committed => {
                    if now.duration_since(*since) >= self.window {
                        stalled.push(key);
                    }
                }
                _ => {
                    self.still_since.insert(key, (p.committed, now));
                }
            }
        }
        stalled.sort();
        stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(30);

    fn progress(partition: u32, committed: u64, end: u64) -> PartitionProgress {
        PartitionProgress {
            topic: "t".into(),
            partition,
            committed,
            end,
        }
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_foreign_partition_with_work_and_no_progress_stalls_after_the_window() {
        let (mut w, t0) = (StallWatch::new(WINDOW), Instant::now());
        let snap = [progress(0, 10, 50)];
        assert!(w.observe(t0, &[], &snap).is_empty());
        assert!(w.observe(at(t0, 29), &[], &snap).is_empty());
        assert_eq!(w.observe(at(t0, 30), &[], &snap), vec![("t".into(), 0)]);
    }

    #[test]
    fn progress_restarts_the_clock() {
        let (mut w, t0) = (StallWatch::new(WINDOW), Instant::now());
        w.observe(t0, &[], &[progress(0, 10, 50)]);
        assert!(w
            .observe(at(t0, 20), &[], &[progress(0, 11, 50)])
            .is_empty());
        assert!(w
            .observe(at(t0, 40), &[], &[progress(0, 11, 50)])
            .is_empty());
        assert_eq!(w.observe(at(t0, 50), &[], &[progress(0, 11, 50)]).len(), 1);
    }

    #[test]
    fn caught_up_or_owned_partitions_never_stall() {
        let (mut w, t0) = (StallWatch::new(WINDOW), Instant::now());
        let owned = [("t".to_string(), 1)];
        let snap = [progress(0, 50, 50), progress(1, 10, 50)];
        w.observe(t0, &owned, &snap);
        assert!(w.observe(at(t0, 600), &owned, &snap).is_empty());
    }

    #[test]
    fn a_partition_handed_to_this_member_is_forgotten() {
        let (mut w, t0) = (StallWatch::new(WINDOW), Instant::now());
        let snap = [progress(0, 10, 50)];
        w.observe(t0, &[], &snap);
        w.observe(at(t0, 10), &[("t".into(), 0)], &snap);
        // Given back later: the clock starts again.
        assert!(w.observe(at(t0, 35), &[], &snap).is_empty());
    }

    #[test]
    fn reset_starts_every_clock_again() {
        let (mut w, t0) = (StallWatch::new(WINDOW), Instant::now());
        let snap = [progress(0, 10, 50), progress(1, 0, 5)];
        w.observe(t0, &[], &snap);
        w.reset();
        assert!(w.observe(at(t0, 31), &[], &snap).is_empty());
        assert_eq!(w.observe(at(t0, 61), &[], &snap).len(), 2);
    }
}
