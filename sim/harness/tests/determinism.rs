//! The simulation's promise: one seed, one run. The same seed twice in one process gives the
//! same history (trace hash); different seeds give different ones.
#![cfg(madsim)]

use keel_sim::scenario::RunOptions;
use keel_sim::scenario::run_seed;

fn short() -> RunOptions {
    RunOptions { workload_ms: 4_000, ..RunOptions::default() }
}

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let a = run_seed(11, short());
    let b = run_seed(11, short());
    let c = run_seed(12, short());
    assert!(a.passed, "seed 11 failed: {:?} {:?}", a.problems, a.verdicts);
    assert!(a.acked > 0, "the workload acknowledged nothing");
    assert_eq!(a.trace_hash, b.trace_hash, "seed 11 replayed differently");
    assert_eq!(a.history_jsonl, b.history_jsonl);
    assert_ne!(a.trace_hash, c.trace_hash, "seeds 11 and 12 gave the same trace");
}
