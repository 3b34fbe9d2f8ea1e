//! A history as a timeline: client operations as spans per process, faults as spans, leaders
//! per term; and the text timeline of the events around a violation. [`crate::svg_timeline`] draws the
//! same model.
//!
//! Fault spans come from the nemesis's point events: `crash` of a node lasts until its
//! `restart`; `heal` ends every other open fault; a fault `X-end` ends the open `X` of the same
//! node; `fsync-error` lasts until the node restarts. A span still open when the history ends
//! runs to its end.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::history::{EventType, History};
use crate::payload::Op;
use crate::verdict::Verdict;

/// Events of one violation that the text timeline centres on, at most.
pub const FOCUS_EVENTS_MAX: usize = 12;
/// Simulated time shown either side of each focus event.
pub const CONTEXT_NS: u64 = 1_500_000_000;
/// Lines of the text timeline, at most (the focus events are always shown).
pub const TEXT_LINES_MAX: usize = 200;
/// Characters of an event's description, at most.
pub const LABEL_CHARS_MAX: usize = 160;

/// How a client operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    /// `info` completion: unknown outcome.
    Info,
    /// Never completed before the history ended.
    Open,
}

/// One client operation, invoke to completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSpan {
    pub process: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub outcome: Outcome,
    /// `produce`, `read`, `admin`, ...
    pub f: String,
    /// What the operation did, short.
    pub label: String,
    /// History indexes of its invoke and completion.
    pub events: Vec<usize>,
}

/// One fault, from the event that started it to the one that ended it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpan {
    pub fault: String,
    pub node: Option<u64>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub label: String,
}

/// One node leading one partition in one term, until the next term's leader appears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderSpan {
    pub partition: String,
    pub node: u64,
    pub term: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The whole history as spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Time of the last event.
    pub end_ns: u64,
    pub ops: Vec<OpSpan>,
    pub faults: Vec<FaultSpan>,
    /// Leaders of the partitions clients produced to (of every partition when none).
    pub leaders: Vec<LeaderSpan>,
}

impl Timeline {
    /// Builds the timeline of `history`.
    pub fn build(history: &History) -> Timeline {
        let events = history.events();
        let end_ns = events.iter().map(|e| e.time_ns).max().unwrap_or(0);
        let mut ops = Vec::new();
        for op in history.operations() {
            let invoke = &events[op.invoke];
            let (end, outcome) = match op.completion {
                Some(c) => {
                    let outcome = match events[c].kind {
                        EventType::Ok => Outcome::Ok,
                        EventType::Fail => Outcome::Fail,
                        _ => Outcome::Info,
                    };
                    (events[c].time_ns, outcome)
                }
                None => (end_ns, Outcome::Open),
            };
            let shown = op.completion.map_or(invoke, |c| &events[c]);
            ops.push(OpSpan {
                process: invoke.process,
                start_ns: invoke.time_ns,
                end_ns: end.max(invoke.time_ns),
                outcome,
                f: invoke.op.f().to_owned(),
                label: describe(&shown.op),
                events: std::iter::once(op.invoke).chain(op.completion).collect(),
            });
        }
        Timeline { end_ns, ops, faults: fault_spans(history, end_ns), leaders: leader_spans(history, end_ns) }
    }

    /// Client processes in id order.
    pub fn processes(&self) -> Vec<u64> {
        self.ops.iter().map(|o| o.process).collect::<BTreeSet<_>>().into_iter().collect()
    }
}

fn fault_spans(history: &History, end_ns: u64) -> Vec<FaultSpan> {
    let mut done = Vec::new();
    let mut open: Vec<FaultSpan> = Vec::new();
    for (_, e) in history.observations() {
        let Op::Fault(f) = &e.op else { continue };
        let close = |open: &mut Vec<FaultSpan>, done: &mut Vec<FaultSpan>, pred: &dyn Fn(&FaultSpan) -> bool| {
            let (ended, kept): (Vec<_>, Vec<_>) = open.drain(..).partition(|s| pred(s));
            *open = kept;
            done.extend(ended.into_iter().map(|s| FaultSpan { end_ns: e.time_ns, ..s }));
        };
        match f.fault.as_str() {
            "restart" => {
                close(&mut open, &mut done, &|s| s.node == f.node && (s.fault == "crash" || s.fault == "fsync-error"))
            }
            "heal" => close(&mut open, &mut done, &|s| s.fault != "crash"),
            name => match name.strip_suffix("-end") {
                Some(base) => close(&mut open, &mut done, &|s| s.fault == base && s.node == f.node),
                None => {
                    let mut label = name.to_owned();
                    if let Some(n) = f.node {
                        let _ = write!(label, " n{n}");
                    }
                    for (k, v) in &f.detail {
                        let _ = write!(label, " {k}={v}");
                    }
                    open.push(FaultSpan {
                        fault: name.to_owned(),
                        node: f.node,
                        start_ns: e.time_ns,
                        end_ns: e.time_ns,
                        label: cut(&label),
                    });
                }
            },
        }
    }
    done.extend(open.into_iter().map(|s| FaultSpan { end_ns, ..s }));
    done.sort_by_key(|s| (s.start_ns, s.end_ns));
    done
}

fn leader_spans(history: &History, end_ns: u64) -> Vec<LeaderSpan> {
    let produced: BTreeSet<&str> = history
        .events()
        .iter()
        .filter_map(|e| match &e.op {
            Op::Produce(p) => Some(p.partition.as_str()),
            _ => None,
        })
        .collect();
    // Per partition: the first time each (term, node) was seen leading.
    let mut seen: BTreeMap<&str, BTreeMap<(u64, u64), u64>> = BTreeMap::new();
    for (_, e) in history.observations() {
        let Op::Leader(l) = &e.op else { continue };
        if !produced.is_empty() && !produced.contains(l.partition.as_str()) {
            continue;
        }
        seen.entry(l.partition.as_str()).or_default().entry((l.term, l.node)).or_insert(e.time_ns);
    }
    let mut out = Vec::new();
    for (partition, terms) in seen {
        let terms: Vec<((u64, u64), u64)> = terms.into_iter().collect();
        for (i, &((term, node), start_ns)) in terms.iter().enumerate() {
            // Until a leader of a later term appears (the earliest such).
            let next = terms[i + 1..].iter().filter(|((t, _), _)| *t > term).map(|(_, at)| *at).min();
            out.push(LeaderSpan {
                partition: partition.to_owned(),
                node,
                term,
                start_ns,
                end_ns: next.unwrap_or(end_ns).max(start_ns),
            });
        }
    }
    out
}

/// A short description of an operation's payload.
pub fn describe(op: &Op) -> String {
    let text = match op {
        Op::Produce(p) => {
            let key = p.key.as_deref().map(|k| format!("{k}=")).unwrap_or_default();
            match p.offset {
                Some(o) => format!("produce {} {key}{} @{o}", p.partition, p.value),
                None => format!("produce {} {key}{}", p.partition, p.value),
            }
        }
        Op::Read(r) => {
            let from = r.node.map(|n| format!("node {n}")).unwrap_or_else(|| "the leader".to_owned());
            let range = match (r.records.first(), r.records.last()) {
                (Some(a), Some(b)) => format!(" offsets {}..={}", a.offset, b.offset),
                _ => String::new(),
            };
            format!("read {} from {from}: {} records{range}", r.partition, r.records.len())
        }
        Op::Leader(l) => format!("leader {} node {} term {}", l.partition, l.node, l.term),
        Op::Commit(c) => format!("commit {} node {} index {} term {}", c.partition, c.node, c.index, c.term),
        Op::Fault(f) => {
            let node = f.node.map(|n| format!(" node {n}")).unwrap_or_default();
            let detail: String = f.detail.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            format!("fault {}{node}{detail}", f.fault)
        }
        Op::Replicas(r) => format!(
            "replicas {} leader {} term {} committed {} durable {:?}",
            r.partition, r.leader, r.term, r.committed, r.durable
        ),
        Op::Admin(a) => {
            let detail: String = a.detail.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            format!("admin {}{detail}", a.action)
        }
        Op::GroupProcess(g) => {
            let range = match (g.records.first(), g.records.last()) {
                (Some(a), Some(b)) => format!(" offsets {}..={}", a.offset, b.offset),
                _ => String::new(),
            };
            format!("group {} processes {}: {} records{range}", g.group, g.partition, g.records.len())
        }
        Op::GroupCommit(g) => format!("group {} commits {} @{}", g.group, g.partition, g.offset),
        Op::GroupOffset(g) => match g.offset {
            Some(o) => format!("group {} offset of {}: {o}", g.group, g.partition),
            None => format!("group {} offset of {}", g.group, g.partition),
        },
        Op::Other { f, value } => format!("{f} {value}"),
    };
    cut(&text)
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(LABEL_CHARS_MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// Indexes of the events of the first violation of the first failing verdict (at most
/// [`FOCUS_EVENTS_MAX`]), with that violation's message.
pub fn focus(verdicts: &[Verdict]) -> Option<(String, Vec<usize>)> {
    let (v, violation) = verdicts.iter().filter(|v| !v.ok).find_map(|v| v.violations.first().map(|x| (v, x)))?;
    let events = violation.events.iter().copied().take(FOCUS_EVENTS_MAX).collect();
    Some((format!("{}: {}", v.checker, violation.message), events))
}

/// Every event named by any violation.
pub fn flagged(verdicts: &[Verdict]) -> BTreeSet<usize> {
    verdicts.iter().flat_map(|v| &v.violations).flat_map(|x| x.events.iter().copied()).collect()
}

/// The text timeline around the first violation: every event within [`CONTEXT_NS`] of one of
/// its events (commit and replica-sample observations left out unless they are the violation's
/// own), focus events marked `>>`; the context narrows until at most [`TEXT_LINES_MAX`] lines
/// remain. Without a violation, the faults and leader changes of the whole run.
pub fn text(history: &History, verdicts: &[Verdict]) -> String {
    let events = history.events();
    let mut out = String::new();
    let (focus_events, chosen): (BTreeSet<usize>, Vec<usize>) = match focus(verdicts) {
        Some((message, focus)) => {
            let _ = writeln!(out, "timeline around {message}");
            let focus: BTreeSet<usize> = focus.into_iter().filter(|i| *i < events.len()).collect();
            let mut context = CONTEXT_NS;
            let chosen = loop {
                let chosen: Vec<usize> = (0..events.len())
                    .filter(|i| {
                        focus.contains(i)
                            || (!quiet(&events[*i].op)
                                && focus.iter().any(|f| events[*f].time_ns.abs_diff(events[*i].time_ns) <= context))
                    })
                    .collect();
                if chosen.len() <= TEXT_LINES_MAX || context == 0 {
                    break chosen;
                }
                context /= 2;
                if context < 1_000_000 {
                    context = 0;
                }
            };
            (focus, chosen)
        }
        None => {
            let _ = writeln!(out, "timeline of the faults and leaders (no checker violation)");
            let chosen = history
                .observations()
                .filter(|(_, e)| matches!(e.op, Op::Fault(_) | Op::Leader(_)))
                .map(|(i, _)| i)
                .collect();
            (BTreeSet::new(), chosen)
        }
    };
    let mut last = None;
    for i in chosen.into_iter().take(TEXT_LINES_MAX.max(focus_events.len())) {
        if last.is_some_and(|l| i > l + 1) {
            let _ = writeln!(out, "    ...");
        }
        last = Some(i);
        let e = &events[i];
        let mark = if focus_events.contains(&i) { ">>" } else { "  " };
        let _ = writeln!(
            out,
            "{mark} {:>11.6}s  #{i:<6} p{:<4} {:<6} {}",
            e.time_ns as f64 / 1e9,
            e.process,
            e.kind.as_str(),
            describe(&e.op)
        );
    }
    out
}

/// Observations too frequent for the text timeline.
fn quiet(op: &Op) -> bool {
    matches!(op, Op::Commit(_) | Op::Replicas(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;
    use crate::payload::{Fault, Leader, Produce};
    use crate::verdict::Violation;

    fn ev(process: u64, kind: EventType, op: Op, time_ns: u64) -> Event {
        Event { process, kind, op, time_ns }
    }

    fn produce(value: &str, offset: Option<u64>) -> Op {
        Op::Produce(Produce {
            partition: "p1".into(),
            key: Some("k".into()),
            value: value.into(),
            offset,
            idempotent: false,
        })
    }

    fn fault(name: &str, node: Option<u64>) -> Op {
        Op::Fault(Fault { fault: name.into(), node, detail: BTreeMap::new() })
    }

    fn leader(node: u64, term: u64) -> Op {
        Op::Leader(Leader { node, term, partition: "p1".into() })
    }

    fn sample() -> History {
        History::new(vec![
            ev(1, EventType::Info, leader(1, 1), 5),
            ev(10, EventType::Invoke, produce("a", None), 10),
            ev(0, EventType::Info, fault("crash", Some(1)), 15),
            ev(10, EventType::Ok, produce("a", Some(0)), 20),
            ev(0, EventType::Info, fault("isolate", Some(2)), 22),
            ev(11, EventType::Invoke, produce("b", None), 25),
            ev(2, EventType::Info, leader(2, 2), 28),
            ev(0, EventType::Info, fault("heal", None), 30),
            ev(0, EventType::Info, fault("restart", Some(1)), 31),
            ev(11, EventType::Fail, produce("b", None), 40),
            ev(10, EventType::Invoke, produce("c", None), 50),
        ])
        .unwrap()
    }

    #[test]
    fn operations_faults_and_leaders_become_spans() {
        let t = Timeline::build(&sample());
        assert_eq!(t.end_ns, 50);
        assert_eq!(t.processes(), vec![10, 11]);
        let outcomes: Vec<(u64, u64, Outcome)> = t.ops.iter().map(|o| (o.start_ns, o.end_ns, o.outcome)).collect();
        assert_eq!(outcomes, vec![(10, 20, Outcome::Ok), (25, 40, Outcome::Fail), (50, 50, Outcome::Open)]);
        assert_eq!(t.ops[0].label, "produce p1 k=a @0");
        let faults: Vec<(&str, u64, u64)> = t.faults.iter().map(|f| (f.fault.as_str(), f.start_ns, f.end_ns)).collect();
        // The heal ends the isolation, not the crash; the restart ends the crash.
        assert_eq!(faults, vec![("crash", 15, 31), ("isolate", 22, 30)]);
        let leaders: Vec<(u64, u64, u64, u64)> =
            t.leaders.iter().map(|l| (l.node, l.term, l.start_ns, l.end_ns)).collect();
        assert_eq!(leaders, vec![(1, 1, 5, 28), (2, 2, 28, 50)]);
    }

    #[test]
    fn an_end_event_closes_its_own_fault_and_open_faults_run_to_the_end() {
        let h = History::new(vec![
            ev(0, EventType::Info, fault("slow-disk", Some(3)), 10),
            ev(0, EventType::Info, fault("slow-disk", Some(2)), 11),
            ev(0, EventType::Info, fault("slow-disk-end", Some(3)), 20),
            ev(0, EventType::Info, fault("crash", Some(1)), 30),
        ])
        .unwrap();
        let t = Timeline::build(&h);
        let spans: Vec<(Option<u64>, u64, u64)> = t.faults.iter().map(|f| (f.node, f.start_ns, f.end_ns)).collect();
        assert_eq!(spans, vec![(Some(3), 10, 20), (Some(2), 11, 30), (Some(1), 30, 30)]);
    }

    #[test]
    fn the_text_timeline_marks_the_violation_and_keeps_its_context() {
        let h = sample();
        let verdicts = vec![Verdict::new("failed_not_present", vec![Violation::new("b is there", vec![5, 9])])];
        let shown = text(&h, &verdicts);
        assert!(shown.starts_with("timeline around failed_not_present: b is there"), "{shown}");
        let marked: Vec<&str> = shown.lines().filter(|l| l.starts_with(">>")).collect();
        assert_eq!(marked.len(), 2, "{shown}");
        assert!(marked[1].contains("fail") && marked[1].contains("produce p1 k=b"), "{shown}");
        assert!(shown.contains("fault crash node 1"), "{shown}");
        let quiet = text(&h, &[Verdict::new("acked_not_lost", vec![])]);
        assert!(quiet.starts_with("timeline of the faults"), "{quiet}");
        assert!(!quiet.contains("produce"), "{quiet}");
    }
}
