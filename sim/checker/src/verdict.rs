//! A checker's verdict, and the human-readable report over several verdicts.

use std::fmt::Write as _;

use crate::history::History;
use crate::payload::Op;

/// Violations shown in detail per checker; the rest are counted.
pub const REPORT_VIOLATIONS_SHOWN_MAX: usize = 5;
/// An event printed in a report is cut after this many characters (reads can be huge).
pub const REPORT_EVENT_CHARS_MAX: usize = 300;
/// Faults listed in a report; the rest are counted.
pub const REPORT_FAULTS_SHOWN_MAX: usize = 50;

/// One broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What is wrong, naming the value, offset, node, term... involved.
    pub message: String,
    /// Indexes into the history of the events that show it.
    pub events: Vec<usize>,
}

/// The judgement of one checker over one history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Checker name (its module name, e.g. `"acked_not_lost"`).
    pub checker: &'static str,
    /// True iff `violations` is empty.
    pub ok: bool,
    /// Everything found, in the order found (deterministic for a given history).
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// A verdict from the violations found.
    pub fn new(checker: &'static str, violations: Vec<Violation>) -> Verdict {
        Verdict { checker, ok: violations.is_empty(), violations }
    }
}

impl Violation {
    /// A violation shown by `events`; the event list is sorted and deduplicated.
    pub fn new(message: impl Into<String>, mut events: Vec<usize>) -> Violation {
        events.sort_unstable();
        events.dedup();
        Violation { message: message.into(), events }
    }
}

/// A summary: one line per checker (`ok` or `N violations`), then the first violations of each
/// failing checker with their events printed, then the faults injected.
pub fn report(history: &History, verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    let failing = verdicts.iter().filter(|v| !v.ok).count();
    let _ = writeln!(out, "{} of {} checkers failed over {} events", failing, verdicts.len(), history.len());
    for v in verdicts {
        match v.violations.len() {
            0 => {
                let _ = writeln!(out, "  {:<24} ok", v.checker);
            }
            n => {
                let _ = writeln!(out, "  {:<24} {n} violation{}", v.checker, plural(n));
            }
        }
    }
    for v in verdicts.iter().filter(|v| !v.ok) {
        let _ = writeln!(out, "\n{}:", v.checker);
        for violation in v.violations.iter().take(REPORT_VIOLATIONS_SHOWN_MAX) {
            let _ = writeln!(out, "  - {}", violation.message);
            for &i in &violation.events {
                let _ = writeln!(out, "      #{i} {}", event_line(history, i));
            }
        }
        let hidden = v.violations.len().saturating_sub(REPORT_VIOLATIONS_SHOWN_MAX);
        if hidden > 0 {
            let _ = writeln!(out, "  ... and {hidden} more");
        }
    }
    let faults: Vec<usize> =
        history.observations().filter(|(_, e)| matches!(e.op, Op::Fault(_))).map(|(i, _)| i).collect();
    if !faults.is_empty() {
        let _ = writeln!(out, "\nfaults ({}):", faults.len());
        for &i in faults.iter().take(REPORT_FAULTS_SHOWN_MAX) {
            let _ = writeln!(out, "  #{i} {}", event_line(history, i));
        }
        let hidden = faults.len().saturating_sub(REPORT_FAULTS_SHOWN_MAX);
        if hidden > 0 {
            let _ = writeln!(out, "  ... and {hidden} more");
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The event as its JSON line, cut to [`REPORT_EVENT_CHARS_MAX`] characters.
fn event_line(history: &History, i: usize) -> String {
    let Some(event) = history.events().get(i) else {
        return "<no such event>".to_owned();
    };
    let json = event.to_json();
    match json.char_indices().nth(REPORT_EVENT_CHARS_MAX) {
        Some((cut, _)) => format!("{}...", &json[..cut]),
        None => json,
    }
}
