//! Replicas agree on the committed log: the final reads of caught-up replicas of a partition are
//! identical (same records at the same offsets; a prefix is not enough when both claim
//! `caught_up`), and every other `ok` read of the partition (intermediate, or of a lagging
//! replica) agrees with that log at the offsets it holds and does not extend past its end.
//!
//! Protects Raft's Log Matching and Leader Completeness (Raft §5.3, §5.4) as seen through reads:
//! reads return committed records only, and committed records never change or vanish.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::History;
use crate::payload::Record;
use crate::verdict::{Verdict, Violation};
use crate::view::{ReadOp, final_reads, ok_reads, show_key};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "replicas_agree";

/// Checks that caught-up replicas hold the same log and every read agrees with it.
pub fn check(history: &History) -> Verdict {
    let finals = final_reads(history);
    let mut violations = Vec::new();
    let partitions: BTreeSet<&str> = finals.iter().map(|r| r.read.partition.as_str()).collect();
    let reads = ok_reads(history);
    for partition in partitions {
        let caught_up: Vec<&ReadOp<'_>> =
            finals.iter().filter(|r| r.read.partition == partition && r.read.caught_up).collect();
        let Some((reference, others)) = caught_up.split_first() else {
            continue;
        };
        for other in others {
            if let Some(diff) = divergence(reference, other) {
                violations.push(Violation::new(
                    format!("{partition}: final reads of caught-up replicas differ: {diff}"),
                    vec![reference.completion, other.completion],
                ));
            }
        }
        let judged: BTreeSet<usize> = caught_up.iter().map(|r| r.completion).collect();
        let log: BTreeMap<u64, &Record> = reference.read.records.iter().map(|r| (r.offset, r)).collect();
        let end = reference.read.records.last().map(|r| r.offset);
        for read in reads.iter().filter(|r| r.read.partition == partition) {
            if judged.contains(&read.completion) {
                continue;
            }
            if let Some(problem) = disagreement(&log, end, read) {
                violations.push(Violation::new(
                    format!(
                        "{partition}: {} {problem} the final log of {} (caught up)",
                        read.describe(),
                        reference.describe()
                    ),
                    vec![read.completion, reference.completion],
                ));
            }
        }
    }
    Verdict::new(NAME, violations)
}

fn show(r: &Record) -> String {
    format!("offset {} {} (key {})", r.offset, r.value, show_key(&r.key))
}

/// Where two caught-up final reads first differ, if they do.
fn divergence(a: &ReadOp<'_>, b: &ReadOp<'_>) -> Option<String> {
    let (ra, rb) = (&a.read.records, &b.read.records);
    let (na, nb) = (a.describe(), b.describe());
    if let Some(i) = (0..ra.len().min(rb.len())).find(|&i| ra[i] != rb[i]) {
        return Some(format!("record #{i}: {na} has {}, {nb} has {}", show(&ra[i]), show(&rb[i])));
    }
    let (short, long, n_short, n_long) = match ra.len().cmp(&rb.len()) {
        std::cmp::Ordering::Equal => return None,
        std::cmp::Ordering::Less => (ra, rb, na, nb),
        std::cmp::Ordering::Greater => (rb, ra, nb, na),
    };
    let missing = &long[short.len()];
    Some(format!(
        "{n_short} ends after {} records, {n_long} continues with {} ({} more records)",
        short.len(),
        show(missing),
        long.len() - short.len()
    ))
}

/// How a read contradicts the reference final log, if it does (first problem only).
fn disagreement(log: &BTreeMap<u64, &Record>, end: Option<u64>, read: &ReadOp<'_>) -> Option<String> {
    for record in &read.read.records {
        match log.get(&record.offset) {
            Some(&held) if held == record => {}
            Some(&held) => {
                return Some(format!("has {}, where {} is in", show(record), show(held)));
            }
            None if end.is_some_and(|end| record.offset < end) => {
                return Some(format!("has {}, an offset absent from", show(record)));
            }
            None => {
                return Some(format!("has {}, past the end of", show(record)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Recorder, valid};

    #[test]
    fn valid_history_passes() {
        let verdict = check(&valid());
        assert!(verdict.ok, "{verdict:?}");
    }

    #[test]
    fn diverging_replicas_fail() {
        let mut r = Recorder::new();
        let a = r.read(1, true, &[(0, "k1", "v-1"), (1, "k2", "v-2")]);
        let b = r.read(2, true, &[(0, "k1", "v-1"), (1, "k3", "v-3")]);
        let c = r.read(3, true, &[(0, "k1", "v-1"), (1, "k2", "v-2")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        let v = &verdict.violations[0];
        assert_eq!(v.events, vec![a, b]);
        assert!(v.message.contains("v-3") && v.message.contains("node 2"), "{}", v.message);
        assert!(!v.events.contains(&c));
    }

    #[test]
    fn a_prefix_is_not_enough_when_both_are_caught_up() {
        let mut r = Recorder::new();
        let a = r.read(1, true, &[(0, "k1", "v-1"), (1, "k2", "v-2")]);
        let b = r.read(2, true, &[(0, "k1", "v-1")]);
        r.read(3, false, &[(0, "k1", "v-1")]); // lagging: a prefix is fine
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![a, b]);
        assert!(verdict.violations[0].message.contains("continues with offset 1 v-2"));
    }

    #[test]
    fn an_earlier_read_must_not_hold_what_the_final_log_lost() {
        let mut r = Recorder::new();
        let early = r.read(1, false, &[(0, "k1", "v-1"), (1, "k2", "v-2")]);
        let fin = r.read(1, true, &[(0, "k1", "v-1")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![early, fin]);
        assert!(verdict.violations[0].message.contains("past the end"));

        let mut r = Recorder::new();
        let early = r.read(2, false, &[(0, "k9", "v-9")]);
        r.read(1, true, &[(0, "k1", "v-1")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1);
        assert!(verdict.violations[0].events.contains(&early));
    }
}
