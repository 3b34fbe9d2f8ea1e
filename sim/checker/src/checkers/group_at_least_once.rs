//! At-least-once delivery to consumer groups, and committed offsets that hold.
//!
//! Two rules, per consumer group and partition:
//!
//! 1. **Nothing acknowledged below a commit is skipped.** Let `C` be the highest offset the
//!    group committed with an `ok` answer (`group_commit`). Every acknowledged produce to the
//!    partition at an offset below `C` must have been processed (`group_process`) by some
//!    member of the group at some point of the run. A member that commits after processing,
//!    and members that resume from the committed offset, guarantee that whatever crashes; a
//!    commit made before the records were processed (`canary-commit-before-processing`) loses
//!    the records of a member that dies in between.
//! 2. **A committed offset is never forgotten.** An `ok` OffsetFetch (`group_offset`) invoked
//!    after a commit of `c` was acknowledged answers at least `c`: offsets live in Raft groups
//!    of their own and survive coordinator crashes and failover. (The offsets a member commits
//!    only grow, so a lower answer means the coordinator lost or rolled back a commit.)
//!
//! Duplicates are allowed: at-least-once means a record may be processed again after a crash.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use crate::history::{EventType, History};
use crate::payload::Op;
use crate::verdict::{Verdict, Violation};
use crate::view::produces;

/// This checker's name in verdicts and reports.
pub const NAME: &str = "group_at_least_once";

/// An acknowledged commit: its offset, the invoke and completion events, the completion time.
#[derive(Clone, Copy)]
struct AckedCommit {
    offset: u64,
    invoke: usize,
    completion: usize,
    completion_ns: u64,
}

/// An ok OffsetFetch: its events, when it was invoked, and the offset it answered.
#[derive(Clone, Copy)]
struct OffsetAnswer {
    invoke: usize,
    completion: usize,
    invoke_ns: u64,
    answer: Option<u64>,
}

/// Checks both rules for every group and partition the history names.
pub fn check(history: &History) -> Verdict {
    let events = history.events();
    // (group, partition) → acknowledged commits, in completion order.
    let mut commits: BTreeMap<(&str, &str), Vec<AckedCommit>> = BTreeMap::new();
    // (group, partition) → values processed, with the first event that processed each.
    let mut processed: BTreeMap<(&str, &str), BTreeMap<&str, usize>> = BTreeMap::new();
    // (group, partition) → ok offset fetches: (invoke, completion, invoke time, answer).
    let mut fetches: BTreeMap<(&str, &str), Vec<OffsetAnswer>> = BTreeMap::new();
    for op in history.operations() {
        let Some(done) = op.completion else { continue };
        if events[done].kind != EventType::Ok {
            continue;
        }
        match (&events[op.invoke].op, &events[done].op) {
            (Op::GroupCommit(c), _) => {
                commits.entry((c.group.as_str(), c.partition.as_str())).or_default().push(AckedCommit {
                    offset: c.offset,
                    invoke: op.invoke,
                    completion: done,
                    completion_ns: events[done].time_ns,
                });
            }
            (Op::GroupProcess(_), Op::GroupProcess(p)) => {
                let seen = processed.entry((p.group.as_str(), p.partition.as_str())).or_default();
                for r in &p.records {
                    seen.entry(r.value.as_str()).or_insert(done);
                }
            }
            (Op::GroupOffset(_), Op::GroupOffset(f)) => {
                fetches.entry((f.group.as_str(), f.partition.as_str())).or_default().push(OffsetAnswer {
                    invoke: op.invoke,
                    completion: done,
                    invoke_ns: events[op.invoke].time_ns,
                    answer: f.offset,
                });
            }
            _ => {}
        }
    }

    let mut violations = Vec::new();
    let acked = produces(history);
    let none = BTreeMap::new();
    for (&(group, partition), group_commits) in &commits {
        let Some(top) = group_commits.iter().max_by_key(|c| c.offset) else { continue };
        let seen = processed.get(&(group, partition)).unwrap_or(&none);
        let skipped: Vec<_> = acked
            .iter()
            .filter(|p| p.produce.partition == partition)
            .filter_map(|p| p.acked_offset().map(|o| (p, o)))
            .filter(|(p, o)| *o < top.offset && !seen.contains_key(p.produce.value.as_str()))
            .collect();
        for (p, offset) in skipped.iter().take(20) {
            let mut shown = p.events();
            shown.extend([top.invoke, top.completion]);
            violations.push(Violation::new(
                format!(
                    "group {group} committed offset {} of {partition}, yet no member ever processed {} (acknowledged at \
                     offset {offset})",
                    top.offset, p.produce.value
                ),
                shown,
            ));
        }
        if skipped.len() > 20 {
            violations.push(Violation::new(
                format!(
                    "group {group}: {} more acknowledged records of {partition} below committed offset {} never processed",
                    skipped.len() - 20,
                    top.offset
                ),
                vec![top.invoke, top.completion],
            ));
        }
        for &OffsetAnswer { invoke, completion, invoke_ns, answer } in
            fetches.get(&(group, partition)).into_iter().flatten()
        {
            let before: Option<&AckedCommit> =
                group_commits.iter().filter(|c| c.completion_ns < invoke_ns).max_by_key(|c| c.offset);
            if let Some(c) = before
                && answer.is_none_or(|a| a < c.offset)
            {
                let said = answer.map_or("no committed offset".to_string(), |a| format!("offset {a}"));
                violations.push(Violation::new(
                    format!(
                        "group {group}: OffsetFetch of {partition} answered {said} after a commit of {} was acknowledged",
                        c.offset
                    ),
                    vec![c.invoke, c.completion, invoke, completion],
                ));
            }
        }
    }
    // A member can only process what some producer sent.
    let produced: BTreeSet<&str> = acked.iter().map(|p| p.produce.value.as_str()).collect();
    for (&(group, partition), seen) in &processed {
        for (value, &event) in seen {
            if !produced.contains(value) {
                violations.push(Violation::new(
                    format!("group {group} processed {value} from {partition}, which no producer sent"),
                    vec![event],
                ));
            }
        }
    }
    Verdict::new(NAME, violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Recorder, valid};

    const MEMBER: u64 = 70;
    const OTHER: u64 = 71;

    #[test]
    fn valid_history_passes() {
        let verdict = check(&valid());
        assert!(verdict.ok, "{verdict:?}");
    }

    #[test]
    fn processing_then_committing_passes_with_redelivery() {
        let mut r = Recorder::new();
        r.acked(1, "k1", "v-0", 0);
        r.acked(1, "k1", "v-1", 1);
        r.group_process(MEMBER, &[(0, "k1", "v-0"), (1, "k1", "v-1")]);
        r.group_commit(MEMBER, 2, EventType::Info);
        // The member died not knowing; the next one resumes lower and processes again.
        r.group_offset(OTHER, None);
        r.group_process(OTHER, &[(0, "k1", "v-0"), (1, "k1", "v-1")]);
        r.group_commit(OTHER, 2, EventType::Ok);
        r.group_offset(OTHER, Some(2));
        let verdict = check(&r.build());
        assert!(verdict.ok, "{verdict:?}");
    }

    #[test]
    fn a_record_below_the_committed_offset_never_processed_fails() {
        let mut r = Recorder::new();
        r.acked(1, "k1", "v-0", 0);
        let (inv, ok) = (r.invoke(1, "k1", "v-1"), r.ok(1, "k1", "v-1", 1));
        r.acked(1, "k1", "v-2", 2);
        r.group_process(MEMBER, &[(0, "k1", "v-0")]);
        // Committed before processing v-1, then died: v-1 is skipped for good.
        let (c_inv, c_ok) = r.group_commit(MEMBER, 2, EventType::Ok);
        r.group_offset(OTHER, Some(2));
        r.group_process(OTHER, &[(2, "k1", "v-2")]);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![inv, ok, c_inv, c_ok]);
        assert!(verdict.violations[0].message.contains("v-1"), "{}", verdict.violations[0].message);
    }

    #[test]
    fn a_failed_commit_does_not_count() {
        let mut r = Recorder::new();
        r.acked(1, "k1", "v-0", 0);
        r.group_commit(MEMBER, 1, EventType::Fail);
        let verdict = check(&r.build());
        assert!(verdict.ok, "{verdict:?}");
    }

    #[test]
    fn an_offset_fetch_below_an_acknowledged_commit_fails() {
        let mut r = Recorder::new();
        r.acked(1, "k1", "v-0", 0);
        r.group_process(MEMBER, &[(0, "k1", "v-0")]);
        let (c_inv, c_ok) = r.group_commit(MEMBER, 1, EventType::Ok);
        let (f_inv, f_ok) = r.group_offset(OTHER, None);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].events, vec![c_inv, c_ok, f_inv, f_ok]);
    }

    #[test]
    fn a_processed_record_no_one_sent_fails() {
        let mut r = Recorder::new();
        r.acked(1, "k1", "v-0", 0);
        r.group_process(MEMBER, &[(0, "k1", "v-0"), (1, "k1", "ghost")]);
        r.group_commit(MEMBER, 2, EventType::Ok);
        let verdict = check(&r.build());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert!(verdict.violations[0].message.contains("ghost"));
    }
}
