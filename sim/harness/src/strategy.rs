//! Fault schedules as a proptest strategy: the seed picks a value tree, and proptest's own
//! shrinking (`ValueTree::simplify` / `complicate`) makes a failing schedule minimal — fewer
//! faults (the list shrinks by dropping elements), shorter faults and gaps (integers shrink
//! towards their lower bound), simpler faults (alternatives shrink towards the first,
//! `Crash`), lower node ids.
//!
//! A schedule is a list of `(gap, fault)`: each fault starts `gap` after the previous one ends;
//! faults starting after the workload window are dropped. The tree is built with a
//! [`TestRunner`] whose RNG comes from the seed alone (ChaCha), so the same seed gives the same
//! schedule and the same shrinking path.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::Config;
use proptest::test_runner::RngAlgorithm;
use proptest::test_runner::TestRng;
use proptest::test_runner::TestRunner;

use crate::faults::Fault;
use crate::faults::ScheduleConfig;
use crate::faults::Scheduled;

/// Faults drawn at most per schedule (those that do not fit the workload window are dropped).
pub const FAULTS_MAX: usize = 16;

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Splits `nodes` by a permutation key: `order` ranks the nodes, the first `k` go left.
fn permuted(nodes: u64, order: &[u64]) -> Vec<u64> {
    let mut ids: Vec<(u64, u64)> = (1..=nodes).map(|n| (order.get(n as usize - 1).copied().unwrap_or(0), n)).collect();
    ids.sort_unstable();
    ids.into_iter().map(|(_, n)| n).collect()
}

/// One fault of any kind, with its ranges.
pub fn fault(nodes: u64) -> BoxedStrategy<Fault> {
    let node = 1..=nodes;
    let order = proptest::collection::vec(0u64..1000, nodes as usize);
    let crash = (node.clone(), 200u64..3000).prop_map(|(n, down_ms)| Fault::Crash { nodes: vec![n], down_ms });
    let majority = (node.clone(), 200u64..2000).prop_map(move |(spared, down_ms)| Fault::Crash {
        nodes: (1..=nodes).filter(|n| *n != spared).collect(),
        down_ms,
    });
    let one_way = (node.clone(), 1..nodes.max(2), 300u64..3000).prop_map(move |(from, step, duration_ms)| {
        Fault::OneWay { from, to: (from - 1 + step) % nodes + 1, duration_ms }
    });
    let delay = (5u64..50, 20u64..300, 500u64..4000).prop_map(|(min_ms, extra, duration_ms)| Fault::Delay {
        min_ms,
        max_ms: min_ms + extra,
        duration_ms,
    });
    let slow_disk =
        (node.clone(), 20u64..100, 10u64..400, 500u64..4000).prop_map(|(node, min_ms, extra, duration_ms)| {
            Fault::SlowDisk { node, min_ms, max_ms: min_ms + extra, duration_ms }
        });
    let crash_in_fsync =
        (node.clone(), 50u64..300, 0u64..300, 200u64..2000).prop_map(|(node, sync_ms, late_ms, down_ms)| {
            Fault::CrashInFsync { node, sync_ms, after_ms: sync_ms + late_ms % sync_ms, down_ms }
        });
    let halves = (order.clone(), 300u64..4000).prop_map(move |(order, duration_ms)| {
        let all = permuted(nodes, &order);
        Fault::Halves { side: sorted(all[..(nodes as usize / 2).max(1)].to_vec()), duration_ms }
    });
    let bridge = (order, 300u64..4000).prop_map(move |(order, duration_ms)| {
        let all = permuted(nodes, &order);
        let rest = &all[1..];
        let (left, right) = rest.split_at(rest.len() / 2);
        Fault::Bridge { left: sorted(left.to_vec()), bridge: all[0], right: sorted(right.to_vec()), duration_ms }
    });
    // A clock 5–50 % slow or 5–100 % fast.
    let clock_drift = (node.clone(), any::<bool>(), 50_000i64..500_000, 1000u64..5000).prop_map(
        |(node, fast, magnitude, duration_ms)| Fault::ClockDrift {
            node,
            rate_ppm: if fast { 2 * magnitude } else { -magnitude },
            duration_ms,
        },
    );
    let reorder = (node.clone(), 5u64..200, 0u8..50, 500u64..4000).prop_map(
        |(node, delay_max_ms, duplicate_pct, duration_ms)| Fault::Reorder {
            node,
            delay_max_ms,
            duplicate_pct,
            duration_ms,
        },
    );
    // One node's disk (leader or follower, whichever it is), or every node's.
    let disk_full = (node.clone(), any::<bool>(), 300u64..3000).prop_map(move |(node, all, duration_ms)| {
        Fault::DiskFull { nodes: if all { (1..=nodes).collect() } else { vec![node] }, duration_ms }
    });
    prop_oneof![
        2 => crash,
        1 => majority,
        1 => (200u64..3000).prop_map(|down_ms| Fault::CrashLeader { down_ms }),
        1 => (node.clone(), 300u64..4000).prop_map(|(node, duration_ms)| Fault::Isolate { node, duration_ms }),
        2 => (300u64..4000).prop_map(|duration_ms| Fault::IsolateLeader { duration_ms }),
        1 => one_way,
        1 => (5u8..40, 500u64..3000).prop_map(|(rate_pct, duration_ms)| Fault::PacketLoss { rate_pct, duration_ms }),
        1 => (node.clone(), 1000u64..3000).prop_map(|(node, down_ms)| Fault::FsyncError { node, down_ms }),
        1 => delay,
        1 => slow_disk,
        1 => crash_in_fsync,
        1 => halves,
        1 => bridge,
        1 => clock_drift,
        1 => reorder,
        1 => disk_full,
        1 => (node, 1000u64..4000, 500u64..2000)
            .prop_map(|(node, isolated_ms, down_ms)| Fault::StaleCandidate { node, isolated_ms, down_ms }),
    ]
    .boxed()
}

/// Lays `(gap, fault)` pairs out in time, dropping faults that would start after the window.
pub fn layout(pairs: Vec<(u64, Fault)>, workload_ms: u64) -> Vec<Scheduled> {
    let mut out = Vec::new();
    let mut end_ms = 0u64;
    for (gap_ms, fault) in pairs {
        let at_ms = end_ms + gap_ms;
        if at_ms >= workload_ms {
            break;
        }
        end_ms = at_ms + fault.duration_ms();
        out.push(Scheduled { at_ms, fault });
    }
    out
}

/// The schedule strategy of `config`.
pub fn schedule(config: &ScheduleConfig) -> BoxedStrategy<Vec<Scheduled>> {
    let workload_ms = config.workload_ms;
    proptest::collection::vec((config.gap_ms.clone(), fault(config.nodes)), 1..=FAULTS_MAX)
        .prop_map(move |pairs| layout(pairs, workload_ms))
        .boxed()
}

/// The value tree of `seed`: its current value is the seed's schedule.
pub fn tree(seed: u64, config: &ScheduleConfig) -> Box<dyn ValueTree<Value = Vec<Scheduled>>> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(b"keelflt1");
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(Config { failure_persistence: None, ..Config::default() }, rng);
    match schedule(config).new_tree(&mut runner) {
        Ok(t) => Box::new(t),
        // A vec of a oneof of ranges never rejects; an empty schedule if it ever did.
        Err(_) => Box::new(Just(Vec::new()).new_tree(&mut runner).unwrap_or_else(|e| panic!("Just never fails: {e}"))),
    }
}

/// Draws the schedule of `seed`.
pub fn generate(seed: u64, config: &ScheduleConfig) -> Vec<Scheduled> {
    tree(seed, config).current()
}

/// What proptest shrinking found.
#[derive(Clone, Debug)]
pub struct TreeShrunk {
    pub schedule: Vec<Scheduled>,
    /// Candidate schedules run.
    pub runs: usize,
    /// Candidates that still failed.
    pub kept: usize,
}

/// proptest's shrinking loop over the seed's tree: simplify while the candidate still fails,
/// complicate (step back) when it passes, until neither moves or `runs_max` candidates ran.
/// Candidates equal to one already judged are not run again. `still_fails` is never called on
/// the seed's own schedule (the caller has seen it fail).
pub fn shrink(
    seed: u64,
    config: &ScheduleConfig,
    runs_max: usize,
    mut still_fails: impl FnMut(&[Scheduled]) -> bool,
) -> TreeShrunk {
    let mut t = tree(seed, config);
    let mut best = t.current();
    let mut judged: Vec<(Vec<Scheduled>, bool)> = Vec::new();
    let (mut runs, mut kept) = (0, 0);
    if !t.simplify() {
        return TreeShrunk { schedule: best, runs, kept };
    }
    loop {
        let candidate = t.current();
        let fails = match judged.iter().find(|(s, _)| *s == candidate) {
            Some((_, f)) => *f,
            None if runs >= runs_max => break,
            None => {
                runs += 1;
                let f = !candidate.is_empty() && still_fails(&candidate);
                judged.push((candidate.clone(), f));
                f
            }
        };
        let moved = if fails {
            kept += 1;
            best = candidate;
            t.simplify()
        } else {
            t.complicate()
        };
        if !moved {
            break;
        }
    }
    TreeShrunk { schedule: best, runs, kept }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ScheduleConfig {
        ScheduleConfig { nodes: 3, workload_ms: 20_000, gap_ms: 200..1500 }
    }

    #[test]
    fn the_tree_is_a_function_of_the_seed() {
        assert_eq!(generate(7, &config()), generate(7, &config()));
        assert_ne!(generate(7, &config()), generate(8, &config()));
    }

    #[test]
    fn proptest_shrinking_finds_the_one_fault_that_matters() {
        // "Fails" whenever node 2 crashes for at least 300 ms: find a seed whose schedule has it.
        let bad = |s: &[Scheduled]| {
            s.iter()
                .any(|f| matches!(&f.fault, Fault::Crash { nodes, down_ms } if nodes.contains(&2) && *down_ms >= 300))
        };
        let seed = (1..500).find(|s| bad(&generate(*s, &config())) && generate(*s, &config()).len() > 3).unwrap();
        let original = generate(seed, &config());
        let a = shrink(seed, &config(), 2000, bad);
        assert!(bad(&a.schedule));
        assert_eq!(a.schedule.len(), 1, "{:?}", a.schedule);
        assert!(a.schedule.len() < original.len());
        let Fault::Crash { nodes, down_ms } = &a.schedule[0].fault else { panic!("{:?}", a.schedule) };
        assert!(nodes.contains(&2));
        assert!(*down_ms < 400, "durations shrink towards the bound: {down_ms}");
        let b = shrink(seed, &config(), 2000, bad);
        assert_eq!((a.schedule, a.runs, a.kept), (b.schedule, b.runs, b.kept));
    }
}
