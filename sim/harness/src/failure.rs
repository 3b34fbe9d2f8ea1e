//! How a seed failed: the problems found outside the checkers, and the *kinds* of a failure
//! (failing checker names and problem kinds), which shrinking must preserve and regressions
//! compare.

use std::fmt;

use keel_checker::Verdict;

/// What went wrong outside the history checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProblemKind {
    /// The healed cluster did not converge in time (a liveness failure).
    NoConvergence,
    /// A partition kept running after one of its fsyncs failed (it must fail closed).
    FsyncNotFailClosed,
    /// The final read of a replica was refused, failed, or came back short.
    FinalRead,
    /// The recorded history broke a well-formedness rule.
    MalformedHistory,
    /// The simulation's control task died.
    ControlTask,
    /// The simulation panicked.
    Panic,
}

impl ProblemKind {
    /// The kind's name in reports and regression files.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::NoConvergence => "no-convergence",
            ProblemKind::FsyncNotFailClosed => "fsync-not-fail-closed",
            ProblemKind::FinalRead => "final-read",
            ProblemKind::MalformedHistory => "malformed-history",
            ProblemKind::ControlTask => "control-task",
            ProblemKind::Panic => "panic",
        }
    }
}

/// One problem: its kind and what exactly happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
}

impl Problem {
    pub fn new(kind: ProblemKind, message: impl Into<String>) -> Problem {
        Problem { kind, message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

/// The kinds of a failure, in report order: the failing checkers (in `checkers::ALL` order),
/// then the problem kinds (sorted, deduplicated). Empty when the seed passed.
pub fn failure_kinds(verdicts: &[Verdict], problems: &[Problem]) -> Vec<String> {
    let mut kinds: Vec<String> = verdicts.iter().filter(|v| !v.ok).map(|v| v.checker.to_owned()).collect();
    let mut problem_kinds: Vec<ProblemKind> = problems.iter().map(|p| p.kind).collect();
    problem_kinds.sort_unstable();
    problem_kinds.dedup();
    kinds.extend(problem_kinds.into_iter().map(|k| k.name().to_owned()));
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_list_failing_checkers_then_problem_kinds_once() {
        let verdicts = vec![
            Verdict::new("acked_not_lost", vec![keel_checker::Violation::new("lost", vec![1])]),
            Verdict::new("replicas_agree", vec![]),
        ];
        let problems = vec![
            Problem::new(ProblemKind::FinalRead, "node 1 refused"),
            Problem::new(ProblemKind::NoConvergence, "stuck"),
            Problem::new(ProblemKind::FinalRead, "node 3 refused"),
        ];
        assert_eq!(failure_kinds(&verdicts, &problems), ["acked_not_lost", "no-convergence", "final-read"]);
        assert!(failure_kinds(&verdicts[1..], &[]).is_empty());
        assert_eq!(problems[1].to_string(), "no-convergence: stuck");
    }
}
