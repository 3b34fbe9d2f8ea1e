//! Shrinking a failing fault schedule: greedy, deterministic delta debugging over plain data.
//!
//! From a schedule that makes a seed fail, [`shrink`] tries smaller variants in a fixed order —
//! drop one fault, drop one node of a multi-node crash, halve one duration, move one fault
//! earlier — and keeps the first variant that still fails the way the original did (the caller's
//! predicate decides: same seed, same failing checker or problem kind). It starts over from the
//! kept variant until no variant fails or the run budget is spent. Same seed, same binary, same
//! result.

use crate::faults::Fault;
use crate::faults::Scheduled;

/// A duration is not halved below this (shorter faults rarely disturb anything).
pub const DURATION_MS_MIN: u64 = 50;
/// A fault is not moved earlier when less than this separates it from the previous one's end.
pub const GAP_MS_MIN: u64 = 20;

/// How big a schedule is: fewer faults first, then less time disturbed, then earlier faults.
/// Every shrinking step makes it smaller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size {
    pub faults: usize,
    /// Nodes crashed by `Crash` faults, counted per fault (a majority crash counts 2).
    pub crashed: usize,
    pub fault_ms: u64,
    /// The faults' start times added up: smaller when any fault moves earlier.
    pub at_ms_sum: u64,
    /// When the last fault ends, in ms after the workload starts.
    pub end_ms: u64,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} faults, {} ms of faults, last ends at {} ms", self.faults, self.fault_ms, self.end_ms)
    }
}

pub fn size(schedule: &[Scheduled]) -> Size {
    Size {
        faults: schedule.len(),
        crashed: schedule
            .iter()
            .map(|s| match &s.fault {
                Fault::Crash { nodes, .. } => nodes.len(),
                _ => 0,
            })
            .sum(),
        fault_ms: schedule.iter().map(|s| s.fault.duration_ms()).sum(),
        at_ms_sum: schedule.iter().map(|s| s.at_ms).sum(),
        end_ms: schedule.iter().map(|s| s.at_ms + s.fault.duration_ms()).max().unwrap_or(0),
    }
}

/// The result of shrinking.
#[derive(Clone, Debug)]
pub struct Shrunk {
    pub schedule: Vec<Scheduled>,
    /// Candidate schedules run.
    pub runs: usize,
    /// Candidates kept (each one smaller than the last).
    pub steps: usize,
    /// Whether the run budget ran out before a fixed point was reached.
    pub budget_spent: bool,
}

/// Shrinks `original` while `still_fails` holds, running at most `runs_max` candidates.
/// `still_fails` is never called on `original` itself: the caller has already seen it fail.
pub fn shrink(original: &[Scheduled], runs_max: usize, mut still_fails: impl FnMut(&[Scheduled]) -> bool) -> Shrunk {
    let mut current = original.to_vec();
    let (mut runs, mut steps) = (0, 0);
    'fixed_point: loop {
        for candidate in candidates(&current) {
            if runs >= runs_max {
                return Shrunk { schedule: current, runs, steps, budget_spent: true };
            }
            runs += 1;
            if still_fails(&candidate) {
                current = candidate;
                steps += 1;
                continue 'fixed_point;
            }
        }
        return Shrunk { schedule: current, runs, steps, budget_spent: false };
    }
}

/// Every one-step-smaller variant of `schedule`, in the order they are tried: drops first
/// (biggest gain), then halvings, then moves.
pub fn candidates(schedule: &[Scheduled]) -> Vec<Vec<Scheduled>> {
    let mut out = Vec::new();
    for i in 0..schedule.len() {
        let mut c = schedule.to_vec();
        c.remove(i);
        out.push(c);
    }
    for (i, s) in schedule.iter().enumerate() {
        if let Fault::Crash { nodes, down_ms } = &s.fault
            && nodes.len() > 1
        {
            for j in 0..nodes.len() {
                let mut fewer = nodes.clone();
                fewer.remove(j);
                out.push(with_fault(schedule, i, Fault::Crash { nodes: fewer, down_ms: *down_ms }));
            }
        }
    }
    for (i, s) in schedule.iter().enumerate() {
        for fault in halvings(&s.fault) {
            out.push(with_fault(schedule, i, fault));
        }
    }
    for i in 0..schedule.len() {
        let previous_end = if i == 0 { 0 } else { schedule[i - 1].at_ms + schedule[i - 1].fault.duration_ms() };
        let gap = schedule[i].at_ms.saturating_sub(previous_end);
        if gap >= GAP_MS_MIN {
            let mut c = schedule.to_vec();
            c[i].at_ms = previous_end + gap / 2;
            out.push(c);
        }
    }
    out
}

fn with_fault(schedule: &[Scheduled], i: usize, fault: Fault) -> Vec<Scheduled> {
    let mut c = schedule.to_vec();
    c[i].fault = fault;
    c
}

fn half(ms: u64) -> Option<u64> {
    (ms / 2 >= DURATION_MS_MIN).then_some(ms / 2)
}

/// The fault with one of its durations halved, for each duration that can be.
fn halvings(fault: &Fault) -> Vec<Fault> {
    let mut out = Vec::new();
    match fault.clone() {
        Fault::Crash { nodes, down_ms } => out.extend(half(down_ms).map(|d| Fault::Crash { nodes, down_ms: d })),
        Fault::CrashLeader { down_ms } => out.extend(half(down_ms).map(|d| Fault::CrashLeader { down_ms: d })),
        Fault::Isolate { node, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::Isolate { node, duration_ms: d }))
        }
        Fault::IsolateLeader { duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::IsolateLeader { duration_ms: d }))
        }
        Fault::OneWay { from, to, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::OneWay { from, to, duration_ms: d }))
        }
        Fault::PacketLoss { rate_pct, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::PacketLoss { rate_pct, duration_ms: d }))
        }
        Fault::StaleCandidate { node, isolated_ms, down_ms } => {
            out.extend(half(isolated_ms).map(|d| Fault::StaleCandidate { node, isolated_ms: d, down_ms }));
            out.extend(half(down_ms).map(|d| Fault::StaleCandidate { node, isolated_ms, down_ms: d }));
        }
        Fault::DiskFull { nodes, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::DiskFull { nodes: nodes.clone(), duration_ms: d }))
        }
        Fault::FsyncError { node, down_ms } => {
            out.extend(half(down_ms).map(|d| Fault::FsyncError { node, down_ms: d }))
        }
        Fault::Delay { min_ms, max_ms, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::Delay { min_ms, max_ms, duration_ms: d }))
        }
        Fault::SlowDisk { node, min_ms, max_ms, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::SlowDisk { node, min_ms, max_ms, duration_ms: d }))
        }
        Fault::CrashInFsync { node, sync_ms, after_ms, down_ms } => {
            out.extend(half(down_ms).map(|d| Fault::CrashInFsync { node, sync_ms, after_ms, down_ms: d }))
        }
        Fault::Halves { side, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::Halves { side, duration_ms: d }))
        }
        Fault::Bridge { left, bridge, right, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::Bridge { left, bridge, right, duration_ms: d }))
        }
        Fault::ClockDrift { node, rate_ppm, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::ClockDrift { node, rate_ppm, duration_ms: d }))
        }
        Fault::Reorder { node, delay_max_ms, duplicate_pct, duration_ms } => {
            out.extend(half(duration_ms).map(|d| Fault::Reorder { node, delay_max_ms, duplicate_pct, duration_ms: d }))
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::ScheduleConfig;
    use crate::faults::generate;

    fn schedule() -> Vec<Scheduled> {
        generate(4, &ScheduleConfig { nodes: 3, workload_ms: 20_000, gap_ms: 200..1500 })
    }

    /// A stand-in for "the seed still fails": some crash of node 2 lasting at least 300 ms.
    fn crash_of_2(s: &[Scheduled]) -> bool {
        s.iter().any(|f| matches!(&f.fault, Fault::Crash { nodes, down_ms } if nodes.contains(&2) && *down_ms >= 300))
    }

    #[test]
    fn every_candidate_is_smaller_and_keeps_faults_apart() {
        let original = schedule();
        let cs = candidates(&original);
        assert!(cs.len() > original.len());
        for c in cs {
            assert!(size(&c) < size(&original), "{c:?}");
            for w in c.windows(2) {
                assert!(w[0].at_ms + w[0].fault.duration_ms() <= w[1].at_ms, "overlap: {w:?}");
            }
        }
    }

    #[test]
    fn shrinks_to_the_one_fault_that_matters_deterministically() {
        let mut original = schedule();
        original.insert(0, Scheduled { at_ms: 100, fault: Fault::Crash { nodes: vec![1, 2], down_ms: 2500 } });
        let shift = original[0].fault.duration_ms() + 100;
        for s in &mut original[1..] {
            s.at_ms += shift;
        }
        assert!(crash_of_2(&original));
        let a = shrink(&original, 1000, crash_of_2);
        assert!(!a.budget_spent);
        assert_eq!(a.schedule.len(), 1, "{:?}", a.schedule);
        let Fault::Crash { nodes, down_ms } = &a.schedule[0].fault else { panic!("{:?}", a.schedule) };
        assert_eq!(nodes, &[2]);
        assert!((300..600).contains(down_ms), "{down_ms}");
        assert!(a.schedule[0].at_ms < GAP_MS_MIN, "{:?}", a.schedule);
        let b = shrink(&original, 1000, crash_of_2);
        assert_eq!((a.schedule, a.runs, a.steps), (b.schedule, b.runs, b.steps));
    }

    #[test]
    fn the_budget_bounds_the_runs() {
        let original = schedule();
        let s = shrink(&original, 3, |_| false);
        assert_eq!(s.runs, 3);
        assert!(s.budget_spent);
        assert_eq!(s.schedule, original);
    }
}
