//! The checkers, one guarantee per file. Each is a pure `check(&History) -> Verdict`.

pub mod acked_not_lost;
pub mod commit_monotonic;
pub mod failed_not_present;
pub mod group_at_least_once;
pub mod idempotent_no_duplicates;
pub mod offsets_unique_dense;
pub mod produce_linearizable;
pub mod quorum_durable;
pub mod read_committed_only;
pub mod replicas_agree;
pub mod single_leader_per_term;

use crate::history::History;
use crate::verdict::Verdict;

/// A checker: judges a whole history.
pub type Checker = fn(&History) -> Verdict;

/// Every checker with its name, in report order.
pub const ALL: [(&str, Checker); 11] = [
    (acked_not_lost::NAME, acked_not_lost::check),
    (failed_not_present::NAME, failed_not_present::check),
    (replicas_agree::NAME, replicas_agree::check),
    (read_committed_only::NAME, read_committed_only::check),
    (offsets_unique_dense::NAME, offsets_unique_dense::check),
    (produce_linearizable::NAME, produce_linearizable::check),
    (single_leader_per_term::NAME, single_leader_per_term::check),
    (commit_monotonic::NAME, commit_monotonic::check),
    (quorum_durable::NAME, quorum_durable::check),
    (idempotent_no_duplicates::NAME, idempotent_no_duplicates::check),
    (group_at_least_once::NAME, group_at_least_once::check),
];

/// Runs every checker over `history`, in [`ALL`] order.
pub fn check_all(history: &History) -> Vec<Verdict> {
    ALL.iter().map(|(_, check)| check(history)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Recorder, valid};
    use crate::verdict::report;

    #[test]
    fn every_checker_passes_the_valid_history_and_names_itself() {
        let history = valid();
        for ((name, _), verdict) in ALL.iter().zip(check_all(&history)) {
            assert_eq!(*name, verdict.checker);
            assert!(verdict.ok, "{}", report(&history, std::slice::from_ref(&verdict)));
        }
        let text = report(&history, &check_all(&history));
        assert!(text.starts_with("0 of 11 checkers failed"), "{text}");
        assert!(text.contains("faults (1):") && text.contains("\"crash\""), "{text}");
    }

    #[test]
    fn report_shows_counts_and_offending_events() {
        let mut r = Recorder::new();
        r.acked(1, "k1", "v-1", 0);
        r.leader(1, 1);
        r.leader(2, 1);
        r.read(1, true, &[]);
        let history = r.build();
        let text = report(&history, &check_all(&history));
        assert!(text.starts_with("2 of 11 checkers failed over 6 events"), "{text}");
        assert!(text.contains("acked_not_lost           1 violation\n"), "{text}");
        assert!(text.contains("single_leader_per_term   1 violation\n"), "{text}");
        assert!(text.contains("#3 {\"process\":2,\"type\":\"info\",\"f\":\"leader\""), "{text}");
    }
}
