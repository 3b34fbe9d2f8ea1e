//! Reads return committed records only: every record an `ok` read returned — other than the
//! final reads of caught-up replicas, which define the committed log — is in that final log, at
//! the same offset with the same key and value. A read that returned a record which later
//! vanished, or moved, read data that was never committed (or committed data was lost).
//!
//! Protects Kafka's high-watermark rule (consumers see only what a quorum has, KIP-101/§"log
//! replication" of the Kafka design) and Raft's Leader Completeness (Raft §5.4) as seen by
//! readers: intermediate reads of the leader (`node` absent) and of single replicas alike.
//! Catches the fetch-above-high-watermark canary. Whether caught-up replicas agree with each
//! other is `replicas_agree`'s question; this checker compares against the first of them.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::History;
use crate::payload::Record;
use crate::verdict::{Verdict, Violation};
use crate::view::{ReadOp, final_reads, ok_reads, show_key};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "read_committed_only";

/// Checks every read against the final log of its partition.
pub fn check(history: &History) -> Verdict {
    let finals = final_reads(history);
    // The committed log of each partition: the first caught-up final read (by node order).
    let mut committed: BTreeMap<&str, &ReadOp<'_>> = BTreeMap::new();
    for read in finals.iter().filter(|r| r.read.caught_up) {
        committed.entry(read.read.partition.as_str()).or_insert(read);
    }
    let judges: BTreeSet<usize> = finals.iter().filter(|r| r.read.caught_up).map(|r| r.completion).collect();
    let logs: BTreeMap<&str, (BTreeMap<u64, &Record>, Option<u64>)> = committed
        .iter()
        .map(|(&p, r)| {
            let log = r.read.records.iter().map(|rec| (rec.offset, rec)).collect();
            (p, (log, r.read.records.last().map(|rec| rec.offset)))
        })
        .collect();
    let mut violations = Vec::new();
    for read in ok_reads(history) {
        if judges.contains(&read.completion) {
            continue;
        }
        let partition = read.read.partition.as_str();
        let (Some(reference), Some((log, end))) = (committed.get(partition), logs.get(partition)) else {
            continue; // no caught-up final read: acked_not_lost reports the partition unverifiable
        };
        if let Some(problem) = uncommitted(log, *end, &read) {
            violations.push(Violation::new(
                format!(
                    "{partition}: {} returned {problem} the final log of {} (caught up)",
                    read.describe(),
                    reference.describe()
                ),
                vec![read.completion, reference.completion],
            ));
        }
    }
    Verdict::new(NAME, violations)
}

fn show(r: &Record) -> String {
    format!("offset {} {} (key {})", r.offset, r.value, show_key(&r.key))
}

/// The first record of `read` that the final log does not hold as returned, described.
fn uncommitted(log: &BTreeMap<u64, &Record>, end: Option<u64>, read: &ReadOp<'_>) -> Option<String> {
    for record in &read.read.records {
        match log.get(&record.offset) {
            Some(&held) if held == record => {}
            Some(&held) => return Some(format!("{}, where {} is in", show(record), show(held))),
            None if end.is_some_and(|end| record.offset < end) => {
                return Some(format!("{}, an offset absent from", show(record)));
            }
            None => return Some(format!("{}, past the end of", show(record))),
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
    fn a_leader_read_of_a_record_that_later_vanished_fails() {
        let mut r = Recorder::new();
        let early = r.leader_read(&[(0, "k1", "v-1"), (1, "k2", "v-2")]);
        let fin = r.read(1, true, &[(0, "k1", "v-1")]);
        r.read(2, true, &[(0, "k1", "v-1")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        let v = &verdict.violations[0];
        assert_eq!(v.events, vec![early, fin]);
        assert_eq!(
            v.message,
            "p0: read of p0 via leader returned offset 1 v-2 (key k2), past the end of the final log of read of \
             p0 node 1 (caught up)"
        );
    }

    #[test]
    fn a_read_of_a_record_later_replaced_or_dropped_fails() {
        let mut r = Recorder::new();
        let replaced = r.read(2, false, &[(0, "k9", "v-9")]);
        let dropped = r.leader_read(&[(1, "k8", "v-8")]);
        r.read(1, true, &[(0, "k1", "v-1"), (2, "k2", "v-2")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 2, "{verdict:?}");
        assert!(verdict.violations[0].events.contains(&replaced));
        assert!(verdict.violations[0].message.contains("where offset 0 v-1 (key k1) is in"));
        assert!(verdict.violations[1].events.contains(&dropped));
        assert!(verdict.violations[1].message.contains("an offset absent from"));
    }

    #[test]
    fn a_prefix_read_by_a_lagging_replica_or_the_leader_passes() {
        let mut r = Recorder::new();
        r.leader_read(&[(0, "k1", "v-1")]);
        r.leader_read(&[(1, "k2", "v-2")]);
        r.read(3, false, &[(0, "k1", "v-1")]);
        r.read(1, true, &[(0, "k1", "v-1"), (1, "k2", "v-2")]);
        assert!(check(&r.build()).ok);
    }
}
