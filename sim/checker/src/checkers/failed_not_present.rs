//! Failed writes are not written: a produce completed `fail` (the broker definitely rejected it)
//! appears in no read. Kafka clients report `fail` only on a definite rejection; timeouts are
//! `info`, which may or may not appear.
//!
//! Protects the client-visible meaning of an error, and catches a broker that answers an error
//! after appending (e.g. a leader that steps down and errors a batch that later commits).

use std::collections::BTreeMap;

use crate::history::History;
use crate::verdict::{Verdict, Violation};
use crate::view::{ProduceOp, ProduceOutcome, ok_reads, produces};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "failed_not_present";

/// Checks that no read holds a failed produce.
pub fn check(history: &History) -> Verdict {
    let ops = produces(history);
    let failed: BTreeMap<(&str, &str), &ProduceOp<'_>> = ops
        .iter()
        .filter(|op| op.outcome == ProduceOutcome::Failed)
        .map(|op| ((op.produce.partition.as_str(), op.produce.value.as_str()), op))
        .collect();
    // Per failed value: where it was first seen, and every read holding it.
    let mut found: BTreeMap<(&str, &str), (String, Vec<usize>)> = BTreeMap::new();
    for read in ok_reads(history) {
        for record in &read.read.records {
            let key = (read.read.partition.as_str(), record.value.as_str());
            let Some(op) = failed.get(&key) else {
                continue;
            };
            let entry = found.entry(key).or_insert_with(|| {
                let message = format!(
                    "produce of {} to {} failed, yet {} has it at offset {}",
                    record.value,
                    read.read.partition,
                    read.describe(),
                    record.offset
                );
                (message, op.events())
            });
            entry.1.push(read.completion);
        }
    }
    let violations = found.into_values().map(|(message, events)| Violation::new(message, events)).collect();
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
    fn a_failed_produce_in_a_read_fails() {
        let mut r = Recorder::new();
        let inv = r.invoke(1, "k1", "v-1");
        let fail = r.fail(1, "k1", "v-1");
        r.invoke(2, "k2", "v-2");
        r.info(2, "k2", "v-2");
        let a = r.read(1, true, &[(0, "k1", "v-1"), (1, "k2", "v-2")]);
        let b = r.read(2, false, &[(0, "k1", "v-1")]);
        r.read(3, false, &[(1, "k2", "v-2")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![inv, fail, a, b]);
        assert!(verdict.violations[0].message.contains("v-1"));
    }
}
