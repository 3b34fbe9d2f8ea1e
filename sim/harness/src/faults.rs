//! Fault schedules: what the nemesis does and when, drawn from the seed.
//!
//! A schedule is plain data, generated before the run from its own RNG stream, so the same seed
//! gives the same schedule and a schedule can be printed, saved and replayed.

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
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
        }
    }
}

fn pick_node(rng: &mut SmallRng, nodes: u64) -> u64 {
    rng.gen_range(1..=nodes)
}

/// Draws a schedule of faults over the workload window from `seed`.
pub fn generate(seed: u64, config: &ScheduleConfig) -> Vec<Scheduled> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6b65_656c_6661_756c);
    let mut out = Vec::new();
    let mut at_ms = rng.gen_range(config.gap_ms.clone());
    while at_ms < config.workload_ms {
        let fault = match rng.gen_range(0..11) {
            0 | 1 => Fault::Crash { nodes: vec![pick_node(&mut rng, config.nodes)], down_ms: rng.gen_range(200..3000) },
            2 => {
                // A majority at once: what loses data if anything acknowledged was not durable.
                let spared = pick_node(&mut rng, config.nodes);
                let nodes = (1..=config.nodes).filter(|n| *n != spared).collect();
                Fault::Crash { nodes, down_ms: rng.gen_range(200..2000) }
            }
            3 => Fault::CrashLeader { down_ms: rng.gen_range(200..3000) },
            4 => Fault::Isolate { node: pick_node(&mut rng, config.nodes), duration_ms: rng.gen_range(300..4000) },
            5 | 6 => Fault::IsolateLeader { duration_ms: rng.gen_range(300..4000) },
            7 => {
                let from = pick_node(&mut rng, config.nodes);
                let mut to = pick_node(&mut rng, config.nodes);
                if to == from {
                    to = from % config.nodes + 1;
                }
                Fault::OneWay { from, to, duration_ms: rng.gen_range(300..3000) }
            }
            8 => Fault::PacketLoss { rate_pct: rng.gen_range(5..40), duration_ms: rng.gen_range(500..3000) },
            9 => Fault::FsyncError { node: pick_node(&mut rng, config.nodes), down_ms: rng.gen_range(1000..3000) },
            _ => Fault::StaleCandidate {
                node: pick_node(&mut rng, config.nodes),
                isolated_ms: rng.gen_range(1000..4000),
                down_ms: rng.gen_range(500..2000),
            },
        };
        let next = at_ms + fault.duration_ms() + rng.gen_range(config.gap_ms.clone());
        out.push(Scheduled { at_ms, fault });
        at_ms = next;
    }
    out
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
                if let Fault::Crash { nodes, .. } = &f.fault {
                    assert!(nodes.iter().all(|n| (1..=3).contains(n)));
                }
            }
        }
    }
}
