//! Acknowledged writes survive: every produce acknowledged `ok` at offset O is, at offset O with
//! the same key and value, in every final read of a caught-up replica of its partition, and in
//! at least one final read of it.
//!
//! Protects Keel's core promise (persist, then acknowledge; an ack needs a quorum's fsync), and
//! catches the ack-before-fsync and ack-without-quorum canaries. `info` (unknown) produces may be
//! present or absent; `failed_not_present` judges `fail` ones.

use std::collections::BTreeMap;

use crate::history::History;
use crate::payload::Record;
use crate::verdict::{Verdict, Violation};
use crate::view::{ProduceOp, ReadOp, final_reads, produces, show_key as key};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "acked_not_lost";

/// Acked produces named in the violation for a partition that has no final read at all.
const UNVERIFIABLE_EVENTS_MAX: usize = 10;

/// A final read, indexed by offset and by value.
struct Indexed<'h> {
    read: ReadOp<'h>,
    by_offset: BTreeMap<u64, &'h Record>,
    by_value: BTreeMap<&'h str, u64>,
}

impl<'h> Indexed<'h> {
    fn new(read: ReadOp<'h>) -> Indexed<'h> {
        let mut by_offset = BTreeMap::new();
        let mut by_value = BTreeMap::new();
        for record in &read.read.records {
            by_offset.entry(record.offset).or_insert(record);
            by_value.entry(record.value.as_str()).or_insert(record.offset);
        }
        Indexed { read, by_offset, by_value }
    }
}

/// Checks that acknowledged produces are in the final reads.
pub fn check(history: &History) -> Verdict {
    let finals: Vec<Indexed<'_>> = final_reads(history).into_iter().map(Indexed::new).collect();
    let mut violations = Vec::new();
    let mut unverifiable: BTreeMap<&str, Vec<&ProduceOp<'_>>> = BTreeMap::new();
    let ops = produces(history);
    for op in &ops {
        let Some(offset) = op.acked_offset() else {
            continue;
        };
        let partition = op.produce.partition.as_str();
        let reads: Vec<&Indexed<'_>> = finals.iter().filter(|f| f.read.read.partition == partition).collect();
        if reads.is_empty() {
            unverifiable.entry(partition).or_default().push(op);
            continue;
        }
        let mut found = false;
        for read in &reads {
            let held = read.by_offset.get(&offset);
            let intact = held.is_some_and(|r| r.key == op.produce.key && r.value == op.produce.value);
            found |= intact;
            if intact || !read.read.read.caught_up {
                continue;
            }
            let what = match held {
                Some(r) => format!("has {} (key {}) there instead", r.value, key(&r.key)),
                None => match read.by_value.get(op.produce.value.as_str()) {
                    Some(other) => format!("has it at offset {other} instead"),
                    None => "lacks it".to_owned(),
                },
            };
            violations.push(Violation::new(
                format!(
                    "acked {} (key {}) at {partition} offset {offset}: final {} (caught up) {what}",
                    op.produce.value,
                    key(&op.produce.key),
                    read.read.describe(),
                ),
                with(op.events(), read.read.completion),
            ));
        }
        let any_caught_up = reads.iter().any(|r| r.read.read.caught_up);
        if !found && !any_caught_up {
            let mut events = op.events();
            events.extend(reads.iter().map(|r| r.read.completion));
            violations.push(Violation::new(
                format!(
                    "acked {} (key {}) at {partition} offset {offset} is in none of the {} final reads of {partition}",
                    op.produce.value,
                    key(&op.produce.key),
                    reads.len()
                ),
                events,
            ));
        }
    }
    for (partition, ops) in unverifiable {
        let events = ops.iter().take(UNVERIFIABLE_EVENTS_MAX).flat_map(|op| op.completion).collect();
        violations.push(Violation::new(
            format!("{} acked produces to {partition}, but no final read of {partition} to find them in", ops.len()),
            events,
        ));
    }
    Verdict::new(NAME, violations)
}

fn with(mut events: Vec<usize>, more: usize) -> Vec<usize> {
    events.push(more);
    events
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
    fn lost_ack_names_produce_and_replica() {
        let mut r = Recorder::new();
        let (inv, ok) = r.acked(1, "k1", "v-1", 0);
        let (inv2, ok2) = r.acked(1, "k2", "v-2", 1);
        let good = r.read(1, true, &[(0, "k1", "v-1"), (1, "k2", "v-2")]);
        let bad = r.read(2, true, &[(0, "k1", "v-1")]);
        let verdict = check(&r.build());
        assert!(!verdict.ok);
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        let v = &verdict.violations[0];
        assert_eq!(v.events, vec![inv2, ok2, bad]);
        assert!(v.message.contains("v-2") && v.message.contains("offset 1"), "{}", v.message);
        assert!(v.message.contains("node 2"), "{}", v.message);
        assert!(!v.events.contains(&inv) && !v.events.contains(&ok) && !v.events.contains(&good));
    }

    #[test]
    fn ack_at_wrong_offset_or_with_other_value_fails() {
        let mut r = Recorder::new();
        r.acked(1, "k1", "v-1", 0);
        r.acked(1, "k2", "v-2", 1);
        r.read(1, true, &[(0, "k2", "v-2"), (1, "k1", "v-1")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 2, "{verdict:?}");
        assert!(verdict.violations[0].message.contains("has v-2 (key k2) there instead"));
    }

    #[test]
    fn stale_replica_may_lag_but_some_final_read_must_hold_the_ack() {
        let mut r = Recorder::new();
        r.acked(1, "k1", "v-1", 0);
        r.read(1, false, &[]);
        r.read(2, false, &[(0, "k1", "v-1")]);
        assert!(check(&r.build()).ok);

        let mut r = Recorder::new();
        let (inv, ok) = r.acked(1, "k1", "v-1", 0);
        let a = r.read(1, false, &[]);
        let b = r.read(2, false, &[(0, "k9", "v-9")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1);
        assert_eq!(verdict.violations[0].events, vec![inv, ok, a, b]);
    }

    #[test]
    fn only_the_last_read_of_a_replica_is_final() {
        let mut r = Recorder::new();
        r.acked(1, "k1", "v-1", 0);
        r.read(1, true, &[(0, "k1", "v-1")]);
        let last = r.read(1, true, &[]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1);
        assert!(verdict.violations[0].events.contains(&last));
    }

    #[test]
    fn unknown_outcomes_may_be_missing_and_no_final_read_is_flagged() {
        let mut r = Recorder::new();
        r.invoke(1, "k1", "v-1");
        r.info(1, "k1", "v-1");
        r.invoke(2, "k1", "v-2"); // never completes
        r.read(1, true, &[]);
        assert!(check(&r.build()).ok);

        let mut r = Recorder::new();
        let (_, ok) = r.acked(1, "k1", "v-1", 0);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1);
        assert_eq!(verdict.violations[0].events, vec![ok]);
        assert!(verdict.violations[0].message.contains("no final read"));
    }
}
