//! No duplicates from idempotent producers: a record sent by an idempotent producer (its
//! produce is marked `idempotent`; every retry of the operation resends the same batch with the
//! same producer id and sequence) appears at most once in every caught-up final read, and one
//! producer's records appear there in the order it sent them.
//!
//! Protects Kafka's `enable.idempotence` promise: retries after a lost answer, a timeout or a
//! leader change never store a batch twice or behind a later one. Catches a broker that does
//! not deduplicate (`canary-idempotence-dedupe-disabled`) and one whose new leader forgets the
//! producers' state (`canary-dedupe-leader-memory-only`).

use std::collections::BTreeMap;

use crate::history::History;
use crate::verdict::{Verdict, Violation};
use crate::view::{ProduceOp, final_reads, produces};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "idempotent_no_duplicates";

/// Checks every caught-up final read for repeated or reordered idempotent records.
pub fn check(history: &History) -> Verdict {
    let ops = produces(history);
    let idempotent: BTreeMap<(&str, &str), &ProduceOp<'_>> = ops
        .iter()
        .filter(|op| op.produce.idempotent)
        .map(|op| ((op.produce.partition.as_str(), op.produce.value.as_str()), op))
        .collect();
    let process_of = |op: &ProduceOp<'_>| history.events()[op.invoke].process;
    let mut violations = Vec::new();
    for read in final_reads(history).into_iter().filter(|r| r.read.caught_up) {
        let partition = read.read.partition.as_str();
        // Value → offsets it sits at, and per producer process the (invoke, offset) of its
        // records' first occurrences in log order.
        let mut at: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        let mut by_process: BTreeMap<u64, Vec<(usize, u64, &str)>> = BTreeMap::new();
        for record in &read.read.records {
            let Some(op) = idempotent.get(&(partition, record.value.as_str())) else { continue };
            let offsets = at.entry(record.value.as_str()).or_default();
            if offsets.is_empty() {
                by_process.entry(process_of(op)).or_default().push((op.invoke, record.offset, record.value.as_str()));
            }
            offsets.push(record.offset);
        }
        for (value, offsets) in &at {
            if offsets.len() > 1 {
                let op = idempotent[&(partition, *value)];
                let mut events = op.events();
                events.push(read.completion);
                violations.push(Violation::new(
                    format!(
                        "idempotent produce of {value} to {partition} is stored {} times, at offsets {offsets:?} ({})",
                        offsets.len(),
                        read.describe()
                    ),
                    events,
                ));
            }
        }
        for (process, firsts) in &by_process {
            for pair in firsts.windows(2) {
                let ((inv_a, off_a, val_a), (inv_b, off_b, val_b)) = (pair[0], pair[1]);
                if inv_b < inv_a {
                    violations.push(Violation::new(
                        format!(
                            "idempotent producer {process} sent {val_a} before {val_b}, yet {} holds {val_b} at offset \
                             {off_b}, before {val_a} at offset {off_a}",
                            read.describe()
                        ),
                        vec![inv_b, inv_a, read.completion],
                    ));
                }
            }
        }
    }
    Verdict::new(NAME, violations)
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
    fn an_idempotent_record_stored_twice_fails_and_a_plain_one_does_not() {
        let mut r = Recorder::new();
        let (inv, ok) = r.acked_idempotent(1, "k1", "i-1", 0);
        r.acked(2, "k2", "v-2", 1);
        let log = [(0, "k1", "i-1"), (1, "k2", "v-2"), (2, "k1", "i-1"), (3, "k2", "v-2")];
        let read = r.read(1, true, &log);
        r.read(2, false, &log);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![inv, ok, read]);
        assert!(verdict.violations[0].message.contains("[0, 2]"), "{}", verdict.violations[0].message);
    }

    #[test]
    fn an_idempotent_producer_reordered_fails() {
        let mut r = Recorder::new();
        let (first, _) = r.acked_idempotent(1, "k1", "i-1", 1);
        let (second, _) = r.acked_idempotent(1, "k1", "i-2", 0);
        let read = r.read(1, true, &[(0, "k1", "i-2"), (1, "k1", "i-1")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![first, second, read]);
    }
}
