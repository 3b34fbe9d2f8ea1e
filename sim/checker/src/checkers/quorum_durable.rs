//! Committed data stays on a quorum: whenever a partition's membership is settled (uniform and
//! committed), at least a majority of its voters hold every committed entry durably. Judged from
//! `replicas` samples, which read the leader's commit index first and each voter's durable log
//! end after it; durable prefixes only grow below the commit index, so a correct system never
//! fails this. A voter that could not be asked counts as holding the data (the benefit of the
//! doubt); one that answered it has no copy counts as not holding it.
//!
//! Samples taken while the membership changes (joint consensus, or a new configuration not yet
//! committed) are skipped: a quorum is then defined over two configurations at once.
//!
//! Catches a reassignment that drops old replicas before the new ones caught up (the
//! reassign-drops-early canary): committed data then lives on fewer voters than a quorum, and one
//! more failure loses acknowledged writes.

use crate::history::{EventType, History};
use crate::payload::Op;
use crate::verdict::{Verdict, Violation};

/// This checker's name in verdicts and reports.
pub const NAME: &str = "quorum_durable";

/// Checks every settled-membership `replicas` sample.
pub fn check(history: &History) -> Verdict {
    let mut violations = Vec::new();
    for (i, event) in history.events().iter().enumerate() {
        let (Op::Replicas(s), EventType::Info) = (&event.op, event.kind) else {
            continue;
        };
        let [voters] = s.voters.as_slice() else { continue };
        if !s.membership_committed || voters.is_empty() {
            continue;
        }
        let majority = voters.len() / 2 + 1;
        let mut lacking = Vec::new();
        for v in voters {
            match s.durable.get(v) {
                None => {}
                Some(Some(d)) if *d >= s.committed => {}
                Some(held) => {
                    lacking.push(format!("node {v} holds {}", held.map_or("no copy".into(), |d| format!("up to {d}"))))
                }
            }
        }
        let holders = voters.len() - lacking.len();
        if holders < majority {
            violations.push(Violation::new(
                format!(
                    "{} term {}: committed index {} is durable on {holders} of voters {voters:?}, fewer than a quorum of {majority} ({})",
                    s.partition,
                    s.term,
                    s.committed,
                    lacking.join(", ")
                ),
                vec![i],
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
    fn a_quorum_holding_the_commit_passes_and_unknown_voters_get_the_benefit_of_the_doubt() {
        let mut r = Recorder::new();
        r.replicas(10, &[&[1, 2, 3]], true, &[(1, Some(12)), (2, Some(10)), (3, Some(4))]);
        r.replicas(10, &[&[1, 2, 3]], true, &[(1, Some(12)), (3, None)]);
        let verdict = check(&r.build());
        assert!(verdict.ok, "{verdict:?}");
    }

    /// The reassign-drops-early canary's signature: two of three voters dropped their copies.
    #[test]
    fn committed_data_on_a_minority_fails() {
        let mut r = Recorder::new();
        let bad = r.replicas(10, &[&[1, 2, 3]], true, &[(1, Some(12)), (2, None), (3, Some(9))]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![bad]);
        assert!(verdict.violations[0].message.contains("durable on 1 of voters [1, 2, 3]"), "{verdict:?}");
    }

    #[test]
    fn samples_during_a_membership_change_are_skipped() {
        let mut r = Recorder::new();
        r.replicas(10, &[&[1, 2, 3], &[1, 4, 5]], false, &[(1, Some(12)), (2, None), (3, None)]);
        r.replicas(10, &[&[1, 2, 3]], false, &[(1, Some(12)), (2, None), (3, None)]);
        let verdict = check(&r.build());
        assert!(verdict.ok, "{verdict:?}");
    }
}
