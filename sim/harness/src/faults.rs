//! Fault schedules: what the nemesis does and when, drawn from the seed.
//!
//! A schedule is plain data, generated before the run from its own RNG stream (a proptest value
//! tree, [`crate::strategy`]), so the same seed gives the same schedule and a schedule can be
//! printed, saved, replayed and shrunk.

use serde::Deserialize;
use serde::Serialize;

/// One nemesis action. Node ids are Keel node ids (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// Power loss on these nodes at once (unsynced bytes lost, last write may tear); each
    /// restarts after `down_ms`.
    Crash { nodes: Vec<u64>, down_ms: u64 },
    /// Power loss on whichever node leads the partition when the fault fires.
    CrashLeader { down_ms: u64 },
    /// Cut `node` off from everyone (both directions) for `duration_ms`.
    Isolate { node: u64, duration_ms: u64 },
    /// Cut the current leader off for `duration_ms`.
    IsolateLeader { duration_ms: u64 },
    /// Drop every packet from `from` to `to` (one way) for `duration_ms`.
    OneWay { from: u64, to: u64, duration_ms: u64 },
    /// Lose this fraction of packets everywhere for `duration_ms`.
    PacketLoss { rate_pct: u8, duration_ms: u64 },
    /// Cut a node off, let the others commit, heal it, then crash the leader so the stale node
    /// stands for election against an up-to-date one.
    StaleCandidate { node: u64, isolated_ms: u64, down_ms: u64 },
    /// The node's next fsync fails (EIO). Its partition must stop (fail closed); after
    /// `down_ms` an operator restarts the node.
    FsyncError { node: u64, down_ms: u64 },
    /// Every packet takes `min_ms..max_ms` (instead of 1..10 ms) for `duration_ms`. madsim's
    /// TCP stays ordered within a connection, so messages reorder across connections (Raft
    /// RPCs, heartbeats, client requests), not inside one.
    Delay { min_ms: u64, max_ms: u64, duration_ms: u64 },
    /// The node's fsyncs take `min_ms..max_ms` for `duration_ms`.
    SlowDisk { node: u64, min_ms: u64, max_ms: u64, duration_ms: u64 },
    /// Power loss on the node while an fsync is in flight: its fsyncs are made slow
    /// (`sync_ms` each) and the crash comes `after_ms` later, when one almost surely is; the
    /// writes it was making durable are lost (a prefix kept, the last torn). Restarts after
    /// `down_ms`.
    CrashInFsync { node: u64, sync_ms: u64, after_ms: u64, down_ms: u64 },
    /// The nodes split into `side` and the rest, which cannot reach each other (clients reach
    /// both), for `duration_ms`.
    Halves { side: Vec<u64>, duration_ms: u64 },
    /// `left` and `right` cannot reach each other, but both reach `bridge`, for `duration_ms`.
    Bridge { left: Vec<u64>, bridge: u64, right: Vec<u64>, duration_ms: u64 },
    /// The node's clock runs `rate_ppm` parts per million fast (negative: slow) for
    /// `duration_ms`, then at the normal rate again, keeping the offset it gathered. Its Raft
    /// timers (elections, heartbeats, leader leases) and its wall clock (record timestamps)
    /// follow it (`keel_node::rt::drift`; madsim itself has one clock).
    ClockDrift { node: u64, rate_ppm: i64, duration_ms: u64 },
    /// The disks of `nodes` are full for `duration_ms`: every write that grows a file fails with
    /// ENOSPC (`SimFaults::disk_full`). A leader on a full disk refuses produces
    /// (KAFKA_STORAGE_ERROR, before proposing); a replica whose write hits the full disk fails
    /// closed. Once the disks have room, every stopped replica must reopen by itself, without a
    /// restart, and the partition take writes again.
    DiskFull { nodes: Vec<u64>, duration_ms: u64 },
    /// Requests arriving at the node are served after a random 0..=`delay_max_ms` each, so
    /// they overtake one another, and `duplicate_pct` of its Raft messages are served twice
    /// (`keel_node::transport::chaos`), for `duration_ms`.
    Reorder { node: u64, delay_max_ms: u64, duplicate_pct: u8, duration_ms: u64 },
}

/// A fault and when it fires, in milliseconds after the workload starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled {
    pub at_ms: u64,
    pub fault: Fault,
}

/// Knobs of schedule generation.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub nodes: u64,
    pub workload_ms: u64,
    /// Pause between the end of one fault and the start of the next.
    pub gap_ms: std::ops::Range<u64>,
}

impl Fault {
    /// How long the fault keeps the cluster disturbed once it fires.
    pub fn duration_ms(&self) -> u64 {
        match self {
            Fault::Crash { down_ms, .. } | Fault::CrashLeader { down_ms } => *down_ms,
            Fault::Isolate { duration_ms, .. }
            | Fault::IsolateLeader { duration_ms }
            | Fault::OneWay { duration_ms, .. }
            | Fault::PacketLoss { duration_ms, .. } => *duration_ms,
            Fault::StaleCandidate { isolated_ms, down_ms, .. } => isolated_ms + down_ms,
            Fault::FsyncError { down_ms, .. } => *down_ms,
            Fault::Delay { duration_ms, .. }
            | Fault::SlowDisk { duration_ms, .. }
            | Fault::Halves { duration_ms, .. }
            | Fault::Bridge { duration_ms, .. }
            | Fault::ClockDrift { duration_ms, .. }
            | Fault::DiskFull { duration_ms, .. }
            | Fault::Reorder { duration_ms, .. } => *duration_ms,
            Fault::CrashInFsync { after_ms, down_ms, .. } => after_ms + down_ms,
        }
    }
}

/// Draws a schedule of faults over the workload window from `seed` (a proptest value tree of
/// the seed: see [`crate::strategy`], which also shrinks it).
pub fn generate(seed: u64, config: &ScheduleConfig) -> Vec<Scheduled> {
    crate::strategy::generate(seed, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ScheduleConfig {
        ScheduleConfig { nodes: 3, workload_ms: 20_000, gap_ms: 200..1500 }
    }

    #[test]
    fn same_seed_same_schedule_different_seed_different_schedule() {
        assert_eq!(generate(7, &config()), generate(7, &config()));
        assert_ne!(generate(7, &config()), generate(8, &config()));
    }

    #[test]
    fn faults_stay_inside_the_workload_and_name_real_nodes() {
        for seed in 0..200 {
            let s = generate(seed, &config());
            assert!(!s.is_empty());
            for w in s.windows(2) {
                assert!(w[0].at_ms + w[0].fault.duration_ms() <= w[1].at_ms, "faults overlap: {w:?}");
            }
            for f in &s {
                assert!(f.at_ms < 20_000);
                match &f.fault {
                    Fault::Crash { nodes, .. } => assert!(nodes.iter().all(|n| (1..=3).contains(n))),
                    Fault::Halves { side, .. } => assert!(!side.is_empty() && side.len() < 3, "{side:?}"),
                    Fault::Bridge { left, bridge, right, .. } => {
                        assert!(!left.is_empty() && !right.is_empty());
                        assert!(!left.contains(bridge) && !right.contains(bridge));
                        assert!(left.iter().all(|n| !right.contains(n)));
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn every_kind_of_fault_is_drawn_by_some_seed_of_1_to_200() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 1..=200 {
            let nodes = if seed % 2 == 0 { 5 } else { 3 };
            let c = ScheduleConfig { nodes, ..config() };
            for f in generate(seed, &c) {
                let name = format!("{:?}", f.fault);
                seen.insert(name.split([' ', '{']).next().unwrap_or_default().to_owned());
            }
        }
        let all = [
            "Crash",
            "CrashLeader",
            "Isolate",
            "IsolateLeader",
            "OneWay",
            "PacketLoss",
            "StaleCandidate",
            "FsyncError",
            "Delay",
            "SlowDisk",
            "CrashInFsync",
            "Halves",
            "Bridge",
            "ClockDrift",
            "Reorder",
            "DiskFull",
        ];
        for kind in all {
            assert!(seen.contains(kind), "no seed draws {kind}: {seen:?}");
        }
    }
}
