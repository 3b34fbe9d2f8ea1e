//! Produces are linearizable in offset order: if produce A was acknowledged before produce B was
//! invoked (A's `ok` `time_ns` < B's invoke `time_ns`) on the same partition, then
//! offset(A) < offset(B). B's offset is its acknowledged offset or, for a produce whose outcome is
//! unknown, the offset a read shows it at; an unknown A has no known completion time, so it
//! constrains nothing.
//!
//! Protects the log's real-time order: an acknowledged record is never followed by a later
//! write at a lower offset (e.g. a stale leader acking into a log the new leader overwrote).

use std::collections::BTreeMap;

use crate::history::History;
use crate::verdict::{Verdict, Violation};
use crate::view::{ProduceOp, ProduceOutcome, ok_reads, produces};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "produce_linearizable";

/// Where B's offset came from.
#[derive(Clone, Copy)]
enum Source {
    Ack,
    /// The `ok` event of the first read that showed it.
    Read(usize),
}

/// Checks real-time order against offset order.
pub fn check(history: &History) -> Verdict {
    let ops = produces(history);
    // Where reads first show each (partition, value): for produces of unknown outcome.
    let mut seen: BTreeMap<(&str, &str), (u64, usize)> = BTreeMap::new();
    for read in ok_reads(history) {
        for record in &read.read.records {
            seen.entry((read.read.partition.as_str(), record.value.as_str()))
                .or_insert((record.offset, read.completion));
        }
    }
    let mut partitions: BTreeMap<&str, Vec<&ProduceOp<'_>>> = BTreeMap::new();
    for op in &ops {
        partitions.entry(op.produce.partition.as_str()).or_default().push(op);
    }
    let mut violations = Vec::new();
    for (partition, ops) in partitions {
        // A candidates: acked, by completion time.
        let mut acked: Vec<(u64, u64, &ProduceOp<'_>)> =
            ops.iter().filter_map(|op| Some((op.completion_ns?, op.acked_offset()?, *op))).collect();
        acked.sort_by_key(|&(done_ns, offset, op)| (done_ns, offset, op.invoke));
        // B candidates: every produce with a known offset, by invoke time.
        let mut known: Vec<(u64, Source, &ProduceOp<'_>)> = ops
            .iter()
            .filter_map(|op| match op.outcome {
                ProduceOutcome::Acked { offset } => Some((offset, Source::Ack, *op)),
                ProduceOutcome::Unknown => seen
                    .get(&(partition, op.produce.value.as_str()))
                    .map(|&(offset, read)| (offset, Source::Read(read), *op)),
                ProduceOutcome::Failed => None,
            })
            .collect();
        known.sort_by_key(|&(_, _, op)| (op.invoke_ns, op.invoke));
        // Sweep: the highest offset acked strictly before each B's invoke.
        let mut next = 0;
        let mut highest: Option<(u64, &ProduceOp<'_>)> = None;
        for (offset, source, b) in known {
            while let Some(&(done_ns, a_offset, a)) = acked.get(next) {
                if done_ns >= b.invoke_ns {
                    break;
                }
                if highest.is_none_or(|(h, _)| a_offset > h) {
                    highest = Some((a_offset, a));
                }
                next += 1;
            }
            let Some((a_offset, a)) = highest else {
                continue;
            };
            if a_offset < offset || a.invoke == b.invoke {
                continue;
            }
            let mut events = a.events();
            events.extend(b.events());
            let how = match source {
                Source::Ack => "acknowledged at".to_owned(),
                Source::Read(read) => {
                    events.push(read);
                    "(outcome unknown) read at".to_owned()
                }
            };
            violations.push(Violation::new(
                format!(
                    "{partition}: {} {how} offset {offset}, but it was invoked after {} was acknowledged at offset {a_offset}",
                    b.produce.value, a.produce.value
                ),
                events,
            ));
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
    fn concurrent_produces_may_take_any_order() {
        let mut r = Recorder::new();
        r.invoke(1, "k", "v-1");
        r.invoke(2, "k", "v-2");
        r.ok(2, "k", "v-2", 0);
        r.ok(1, "k", "v-1", 1);
        r.invoke(3, "k", "v-3");
        r.ok(3, "k", "v-3", 5);
        assert!(check(&r.build()).ok);
    }

    #[test]
    fn reordered_ack_fails() {
        let mut r = Recorder::new();
        let (a, a_ok) = r.acked(1, "k", "v-1", 5);
        let (b, b_ok) = r.acked(2, "k", "v-2", 3);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![a, a_ok, b, b_ok]);
        assert!(verdict.violations[0].message.contains("v-2 acknowledged at offset 3"));
        assert!(verdict.violations[0].message.contains("v-1 was acknowledged at offset 5"));
    }

    #[test]
    fn an_unknown_produce_read_below_an_earlier_ack_fails() {
        let mut r = Recorder::new();
        let (a, a_ok) = r.acked(1, "k", "v-1", 5);
        let b = r.invoke(2, "k", "v-2");
        let b_info = r.info(2, "k", "v-2");
        let read = r.read(1, true, &[(2, "k", "v-2"), (5, "k", "v-1")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![a, a_ok, b, b_info, read]);
    }
}
