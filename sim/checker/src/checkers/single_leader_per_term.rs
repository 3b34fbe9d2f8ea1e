//! Election Safety (Raft §5.2): at most one leader per (partition, term). Judged from the
//! node-observed `leader` events.
//!
//! Catches a vote granted twice in a term (e.g. a vote not persisted before answering, or the
//! vote-without-log-check canary combined with a lost vote record).

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{EventType, History};
use crate::payload::Op;
use crate::verdict::{Verdict, Violation};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "single_leader_per_term";

/// Checks that no two nodes lead the same partition in the same term.
pub fn check(history: &History) -> Verdict {
    // First leader event per (partition, term).
    let mut first: BTreeMap<(&str, u64), (u64, usize)> = BTreeMap::new();
    // Conflicts already reported, so a rival's repeated reports count once.
    let mut reported: BTreeSet<(&str, u64, u64)> = BTreeSet::new();
    let mut violations = Vec::new();
    for (i, event) in history.events().iter().enumerate() {
        let (Op::Leader(leader), EventType::Info) = (&event.op, event.kind) else {
            continue;
        };
        let partition = leader.partition.as_str();
        let &mut (node, at) = first.entry((partition, leader.term)).or_insert((leader.node, i));
        if node != leader.node && reported.insert((partition, leader.term, leader.node)) {
            violations.push(Violation::new(
                format!("{partition} term {}: node {} and node {} both became leader", leader.term, node, leader.node),
                vec![at, i],
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
    fn two_leaders_in_one_term_fail_once() {
        let mut r = Recorder::new();
        let a = r.leader(1, 3);
        r.leader(1, 3); // the same node reporting again is fine
        r.leader(2, 4);
        let b = r.leader(2, 3);
        r.leader(2, 3);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![a, b]);
        assert!(verdict.violations[0].message.contains("term 3: node 1 and node 2"));
    }
}
