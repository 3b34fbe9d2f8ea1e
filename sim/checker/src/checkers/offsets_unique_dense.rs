//! Offsets identify records and are dense: in every read, each record's offset is the previous
//! one's plus one (Raft's own entries take no Kafka offset, so no offset is ever skipped) and a
//! read that names where it started has no gap before its first record; no value appears at two
//! offsets; no two
//! acknowledged produces share a (partition, offset); every value read was produced (invoked) to
//! that partition with that key; and produce values are unique, as the checkers assume.
//!
//! Protects Keel's offset assignment (`base_offset = next_offset`, rolled back with truncation)
//! and catches duplicated appends (a retried batch written twice).

use std::collections::BTreeMap;

use crate::history::History;
use crate::payload::Read;
use crate::verdict::{Verdict, Violation};
use crate::view::{ProduceOp, ok_reads, produces, produces_by_value, show_key};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "offsets_unique_dense";

/// Checks offsets and values in reads and acks.
pub fn check(history: &History) -> Verdict {
    let ops = produces(history);
    let mut violations = Vec::new();
    duplicate_invokes(&ops, &mut violations);
    duplicate_acks(&ops, &mut violations);
    let by_value = produces_by_value(&ops);
    // Values read but not produced as read, grouped by value so replicas do not repeat them.
    let mut unproduced: BTreeMap<&str, (String, Vec<usize>)> = BTreeMap::new();
    for read in ok_reads(history) {
        let who = read.describe();
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        gaps(&who, read.read, read.completion, &mut violations);
        for pair in read.read.records.windows(2) {
            let (prev, record) = (&pair[0], &pair[1]);
            if record.offset <= prev.offset {
                let how = if record.offset == prev.offset { "repeats" } else { "goes back from" };
                violations.push(Violation::new(
                    format!(
                        "{who}: offset {} ({}) {how} offset {} ({})",
                        record.offset, record.value, prev.offset, prev.value
                    ),
                    vec![read.completion],
                ));
            }
        }
        for record in &read.read.records {
            if let Some(first) = seen.insert(&record.value, record.offset) {
                violations.push(Violation::new(
                    format!("{who}: value {} at offsets {first} and {}", record.value, record.offset),
                    vec![read.completion],
                ));
            }
            let problem = match by_value.get(record.value.as_str()) {
                None => Some("was never produced".to_owned()),
                Some(op) if op.produce.partition != read.read.partition => {
                    Some(format!("was produced to {}", op.produce.partition))
                }
                Some(op) if op.produce.key != record.key => {
                    Some(format!("was produced with key {}", show_key(&op.produce.key)))
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                let entry = unproduced.entry(&record.value).or_insert_with(|| {
                    let origin = by_value.get(record.value.as_str()).map(|op| op.invoke);
                    let message = format!(
                        "{who} has {} (key {}) at offset {}, but it {problem}",
                        record.value,
                        show_key(&record.key),
                        record.offset
                    );
                    (message, origin.into_iter().collect())
                });
                entry.1.push(read.completion);
            }
        }
    }
    for (_, (message, events)) in unproduced {
        violations.push(Violation::new(message, events));
    }
    Verdict::new(NAME, violations)
}

/// Offsets missing from a read: between the offsets it saw (its tracked records and its
/// untracked runs, in offset order), and before the first when it names where it started.
fn gaps(who: &str, read: &Read, completion: usize, violations: &mut Vec<Violation>) {
    if read.records.windows(2).any(|w| w[1].offset <= w[0].offset) {
        return; // out of order: reported as such, not as gaps too
    }
    let mut seen: Vec<(u64, u64, String)> = read.records.iter().map(|r| (r.offset, 1, r.value.clone())).collect();
    seen.extend(read.untracked.iter().map(|&[first, count]| (first, count, "untracked records".to_owned())));
    seen.sort_by_key(|s| s.0);
    if let (Some(from), Some((first, _, what))) = (read.from, seen.first())
        && *first > from
    {
        violations.push(Violation::new(
            format!("{who} from offset {from}: its first record is at offset {first} ({what}): offsets {from}..{first} are missing"),
            vec![completion],
        ));
    }
    for pair in seen.windows(2) {
        let ((a, a_count, a_what), (b, _, b_what)) = (&pair[0], &pair[1]);
        let end = a + a_count;
        if *b > end {
            violations.push(Violation::new(
                format!(
                    "{who}: offsets {end}..{b} are missing between {} ({a_what}) and {b} ({b_what}): offsets must be dense",
                    end - 1
                ),
                vec![completion],
            ));
        }
    }
}

/// Values must be unique per produce invoke, or nothing can be told apart.
fn duplicate_invokes(ops: &[ProduceOp<'_>], violations: &mut Vec<Violation>) {
    let mut first: BTreeMap<&str, &ProduceOp<'_>> = BTreeMap::new();
    for op in ops {
        if let Some(earlier) = first.insert(&op.produce.value, op) {
            violations.push(Violation::new(
                format!("value {} produced by two invokes; values must be unique", op.produce.value),
                vec![earlier.invoke, op.invoke],
            ));
        }
    }
}

/// Two different produces acknowledged at the same (partition, offset).
fn duplicate_acks(ops: &[ProduceOp<'_>], violations: &mut Vec<Violation>) {
    let mut acked: BTreeMap<(&str, u64), &ProduceOp<'_>> = BTreeMap::new();
    for op in ops {
        let Some(offset) = op.acked_offset() else {
            continue;
        };
        let partition = op.produce.partition.as_str();
        match acked.get(&(partition, offset)) {
            Some(earlier) => {
                let mut events = earlier.events();
                events.extend(op.events());
                violations.push(Violation::new(
                    format!(
                        "{} and {} both acknowledged at {partition} offset {offset}",
                        earlier.produce.value, op.produce.value
                    ),
                    events,
                ));
            }
            None => {
                acked.insert((partition, offset), op);
            }
        }
    }
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
    fn duplicate_and_decreasing_offsets_in_a_read_fail() {
        let mut r = Recorder::new();
        for (p, v) in [(1, "v-1"), (2, "v-2"), (3, "v-3")] {
            r.invoke(p, "k", v);
            r.info(p, "k", v);
        }
        let dup = r.read(1, true, &[(0, "k", "v-1"), (0, "k", "v-2")]);
        let back = r.read(2, true, &[(5, "k", "v-1"), (3, "k", "v-3")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 2, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![dup]);
        assert!(verdict.violations[0].message.contains("offset 0 (v-2) repeats offset 0 (v-1)"));
        assert_eq!(verdict.violations[1].events, vec![back]);
        assert!(verdict.violations[1].message.contains("goes back from offset 5"));
    }

    /// Kafka offsets are dense: a read that skips an offset (as when Raft's own entries took
    /// offsets, wave 1) fails, between records and before the first one.
    #[test]
    fn a_gap_in_offsets_fails() {
        let mut r = Recorder::new();
        r.acked(1, "k", "v-1", 0);
        r.acked(2, "k", "v-2", 2);
        let gap = r.read(1, true, &[(0, "k", "v-1"), (2, "k", "v-2")]);
        let late = r.leader_read_at(Some(0), &[(2, "k", "v-2")]);
        let fine = r.leader_read_at(Some(2), &[(2, "k", "v-2")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 2, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![gap]);
        assert!(verdict.violations[0].message.contains("offsets 1..2 are missing"), "{verdict:?}");
        assert_eq!(verdict.violations[1].events, vec![late]);
        assert!(verdict.violations[1].message.contains("from offset 0"), "{verdict:?}");
        assert!(verdict.violations.iter().all(|v| !v.events.contains(&fine)));
    }

    /// Untracked runs (the simulation's filler records) fill offsets: a read is dense when its
    /// records and runs together leave no offset out.
    #[test]
    fn untracked_runs_count_toward_density() {
        let rec = |offset: u64, value: &str| crate::payload::Record { offset, key: None, value: value.to_owned() };
        let mut read = Read {
            partition: "p0".into(),
            node: None,
            from: Some(0),
            records: vec![rec(0, "a"), rec(4, "b")],
            untracked: vec![[1, 3], [5, 2]],
            caught_up: false,
        };
        let mut v = Vec::new();
        gaps("r", &read, 7, &mut v);
        assert!(v.is_empty(), "{v:?}");
        read.untracked = vec![[1, 2]];
        gaps("r", &read, 7, &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("offsets 3..4 are missing"), "{v:?}");
        read.untracked = vec![];
        read.records = vec![rec(2, "a")];
        let mut v = Vec::new();
        gaps("r", &read, 7, &mut v);
        assert!(v.len() == 1 && v[0].message.contains("from offset 0"), "{v:?}");
    }

    #[test]
    fn same_value_twice_in_a_read_fails() {
        let mut r = Recorder::new();
        r.acked(1, "k", "v-1", 0);
        let read = r.read(1, true, &[(0, "k", "v-1"), (1, "k", "v-1")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![read]);
        assert!(verdict.violations[0].message.contains("value v-1 at offsets 0 and 1"));
    }

    #[test]
    fn two_acks_at_one_offset_fail() {
        let mut r = Recorder::new();
        let (a, a_ok) = r.acked(1, "k", "v-1", 7);
        let (b, b_ok) = r.acked(2, "k", "v-2", 7);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![a, a_ok, b, b_ok]);
        assert!(verdict.violations[0].message.contains("p0 offset 7"));
    }

    #[test]
    fn values_read_must_have_been_produced_as_read() {
        let mut r = Recorder::new();
        let inv = r.invoke(1, "k1", "v-1");
        r.info(1, "k1", "v-1");
        let a = r.read(1, true, &[(0, "k1", "v-1"), (1, "k9", "v-99")]);
        let b = r.read(2, true, &[(0, "k2", "v-1"), (1, "k9", "v-99")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 2, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![inv, b]);
        assert!(verdict.violations[0].message.contains("produced with key k1"));
        assert_eq!(verdict.violations[1].events, vec![a, b]);
        assert!(verdict.violations[1].message.contains("v-99"));
        assert!(verdict.violations[1].message.contains("never produced"));
    }

    #[test]
    fn duplicate_produce_values_are_flagged() {
        let mut r = Recorder::new();
        let a = r.invoke(1, "k", "v-1");
        r.info(1, "k", "v-1");
        let b = r.invoke(2, "k", "v-1");
        r.info(2, "k", "v-1");
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1);
        assert_eq!(verdict.violations[0].events, vec![a, b]);
    }
}
