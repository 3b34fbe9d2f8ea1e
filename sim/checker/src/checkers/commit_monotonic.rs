//! Commits only move forward and never disagree, judged from node-observed `commit` events:
//! - per (partition, node, incarnation) the commit index never decreases;
//! - no two reports of the same (partition, index) name different terms (State Machine Safety,
//!   Raft §5.4.3);
//! - across all reports of a partition, a higher index never has a lower term (terms never
//!   decrease along a log, and there is one committed log).

use std::collections::BTreeMap;

use crate::history::{EventType, History};
use crate::payload::Op;
use crate::verdict::{Verdict, Violation};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "commit_monotonic";

/// Checks commit reports for regressions and conflicts.
pub fn check(history: &History) -> Verdict {
    let mut violations = Vec::new();
    // Latest (index, event) per (partition, node, incarnation).
    let mut latest: BTreeMap<(&str, u64, u64), (u64, usize)> = BTreeMap::new();
    // First (term, node, event) reported per (partition, index).
    let mut terms: BTreeMap<(&str, u64), (u64, u64, usize)> = BTreeMap::new();
    for (i, event) in history.events().iter().enumerate() {
        let (Op::Commit(c), EventType::Info) = (&event.op, event.kind) else {
            continue;
        };
        let partition = c.partition.as_str();
        let slot = latest.entry((partition, c.node, c.incarnation)).or_insert((c.index, i));
        if c.index < slot.0 {
            violations.push(Violation::new(
                format!(
                    "{partition}: node {} (incarnation {}) commit index went back from {} to {}",
                    c.node, c.incarnation, slot.0, c.index
                ),
                vec![slot.1, i],
            ));
        } else {
            *slot = (c.index, i);
        }
        let &mut (term, node, at) = terms.entry((partition, c.index)).or_insert((c.term, c.node, i));
        if term != c.term {
            violations.push(Violation::new(
                format!(
                    "{partition} index {}: committed with term {term} (node {node}) and term {} (node {})",
                    c.index, c.term, c.node
                ),
                vec![at, i],
            ));
        }
    }
    // Terms along the one committed log: walk each partition's indexes in order.
    let mut highest: BTreeMap<&str, (u64, u64, usize)> = BTreeMap::new(); // (term, index, event)
    for (&(partition, index), &(term, _, at)) in &terms {
        match highest.get(partition) {
            Some(&(max_term, max_index, max_at)) if term < max_term => {
                violations.push(Violation::new(
                    format!(
                        "{partition}: index {index} committed with term {term}, below term {max_term} of index {max_index}",
                    ),
                    vec![max_at, at],
                ));
            }
            _ => {
                highest.insert(partition, (term, index, at));
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
    fn commit_going_back_fails_but_a_restart_may_start_lower() {
        let mut r = Recorder::new();
        r.commit(1, 0, 5, 1);
        let high = r.commit(1, 0, 9, 2);
        r.crash(1);
        r.commit(1, 1, 3, 1); // new incarnation: allowed
        let back = r.commit(1, 0, 7, 2);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![high, back]);
        assert!(verdict.violations[0].message.contains("went back from 9 to 7"));
    }

    #[test]
    fn conflicting_terms_at_one_index_fail() {
        let mut r = Recorder::new();
        let a = r.commit(1, 0, 4, 2);
        let b = r.commit(2, 0, 4, 3);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![a, b]);
        assert!(verdict.violations[0].message.contains("index 4: committed with term 2 (node 1) and term 3 (node 2)"));
    }

    #[test]
    fn a_later_index_with_an_earlier_term_fails() {
        let mut r = Recorder::new();
        let a = r.commit(1, 0, 4, 3);
        let b = r.commit(2, 0, 6, 2);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![a, b]);
    }
}
