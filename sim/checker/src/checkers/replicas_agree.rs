//! Replicas agree on the committed log: the final reads of caught-up replicas of a partition are
//! identical (same records at the same offsets; a prefix is not enough when both claim
//! `caught_up`). Every other read (intermediate, of a lagging replica, through the leader) is
//! judged against that log by `read_committed_only`, so a read is never reported twice.
//!
//! Protects Raft's Log Matching (Raft §5.3) as seen through reads: replicas that applied the
//! same entries hold the same records at the same offsets.

use std::collections::BTreeSet;

use crate::history::History;
use crate::payload::Record;
use crate::verdict::{Verdict, Violation};
use crate::view::{ReadOp, final_reads, show_key};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "replicas_agree";

/// Checks that caught-up replicas hold the same log.
pub fn check(history: &History) -> Verdict {
    let finals = final_reads(history);
    let mut violations = Vec::new();
    let partitions: BTreeSet<&str> = finals.iter().map(|r| r.read.partition.as_str()).collect();
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
}
