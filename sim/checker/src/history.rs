//! The history: one event per line of JSON, and the pairing of each invoke with its completion.
//!
//! Line shape: `{"process":3,"type":"invoke","f":"produce","value":{...},"time_ns":123}`.
//!
//! Well-formedness, checked when a history is built (never by panicking):
//! - a process has at most one outstanding operation: a second `invoke` before the first
//!   completes is an error;
//! - an `ok`/`fail` must complete an outstanding invoke of the same process and `f`;
//! - an `info` completes the outstanding invoke of the same process and `f` if there is one,
//!   otherwise it is an observation (node-observed `leader`/`commit`, nemesis `fault`);
//! - a `produce` completion names the same partition and value as its invoke, and an `ok`
//!   produce carries its offset.
//!
//! An invoke never completed (the recorder stopped first) counts as `info`: it may or may not
//! have taken effect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::payload::{Op, OpValue};

/// The step of an operation an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation started.
    Invoke,
    /// It took effect (for produce: acknowledged).
    Ok,
    /// It definitely did not take effect.
    Fail,
    /// Unknown outcome (timeout), or an observation that is not a client operation.
    Info,
}

impl EventType {
    /// The name used in the JSON (`"invoke"`, `"ok"`, `"fail"`, `"info"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Client id for client operations; node id for node-observed events; nemesis id for faults.
    pub process: u64,
    /// Step (`"type"` in the JSON).
    pub kind: EventType,
    /// `f` and the typed `value`.
    pub op: Op,
    /// When the event happened, in nanoseconds on the recorder's clock (simulated or real).
    pub time_ns: u64,
}

/// The JSON shape of an event as written.
#[derive(Serialize)]
struct EventLine<'a> {
    process: u64,
    #[serde(rename = "type")]
    kind: EventType,
    f: &'a str,
    value: OpValue<'a>,
    time_ns: u64,
}

/// The JSON shape of an event as read, before the payload is typed.
#[derive(Deserialize)]
struct RawEvent {
    process: u64,
    #[serde(rename = "type")]
    kind: EventType,
    f: String,
    #[serde(default)]
    value: Value,
    time_ns: u64,
}

impl Event {
    /// One JSON line (without the newline).
    pub fn to_json(&self) -> String {
        let line = EventLine {
            process: self.process,
            kind: self.kind,
            f: self.op.f(),
            value: OpValue(&self.op),
            time_ns: self.time_ns,
        };
        serde_json::to_string(&line).expect("an event has string keys and serializes infallibly")
    }
}

/// Why a history could not be decoded. `line` is the 1-based line in the JSONL text (for
/// [`History::new`], the 1-based position of the event).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The line is not a JSON event of the expected shape.
    #[error("line {line}: not a history event: {source}")]
    Json {
        /// Offending line.
        line: usize,
        /// Decoder's explanation.
        source: serde_json::Error,
    },
    /// The `value` does not fit the known `f`.
    #[error("line {line}: bad `{f}` value: {source}")]
    Payload {
        /// Offending line.
        line: usize,
        /// The operation.
        f: String,
        /// Decoder's explanation.
        source: serde_json::Error,
    },
    /// The event breaks a well-formedness rule (see the module docs).
    #[error("line {line}: {reason}")]
    Malformed {
        /// Offending line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A decoded, well-formed history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Events in recorded order; checkers name events by their index here.
    events: Vec<Event>,
    /// `partner[i]`: for an invoke, its completion; for a completion, its invoke.
    partner: Vec<Option<usize>>,
}

/// A client operation: an invoke and, if recorded, its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Index of the invoke event.
    pub invoke: usize,
    /// Index of the completion; `None` if the history ends first.
    pub completion: Option<usize>,
}

impl History {
    /// Builds a history from events, checking well-formedness. Errors name the 1-based position.
    pub fn new(events: Vec<Event>) -> Result<History, HistoryError> {
        let lines: Vec<usize> = (1..=events.len()).collect();
        let partner = pair(&events, &lines)?;
        Ok(History { events, partner })
    }

    /// Decodes JSON lines. Blank lines are skipped; errors name the line.
    pub fn from_jsonl(text: &str) -> Result<History, HistoryError> {
        let mut events: Vec<Event> = Vec::new();
        let mut lines = Vec::new();
        // Outstanding invoke per process, to fill a `null` completion value from its invoke.
        let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, text_line) in text.lines().enumerate() {
            let line = i + 1;
            if text_line.trim().is_empty() {
                continue;
            }
            let raw: RawEvent =
                serde_json::from_str(text_line).map_err(|source| HistoryError::Json { line, source })?;
            let inherited = match pending.get(&raw.process) {
                Some(&inv) if raw.kind != EventType::Invoke && events[inv].op.f() == raw.f => Some(inv),
                _ => None,
            };
            let op = match inherited {
                Some(inv) if raw.value.is_null() => events[inv].op.clone(),
                _ => Op::decode(&raw.f, raw.value).map_err(|source| HistoryError::Payload {
                    line,
                    f: raw.f.clone(),
                    source,
                })?,
            };
            match raw.kind {
                EventType::Invoke => {
                    pending.insert(raw.process, events.len());
                }
                _ if inherited.is_some() => {
                    pending.remove(&raw.process);
                }
                _ => {}
            }
            events.push(Event { process: raw.process, kind: raw.kind, op, time_ns: raw.time_ns });
            lines.push(line);
        }
        let partner = pair(&events, &lines)?;
        Ok(History { events, partner })
    }

    /// Encodes as JSON lines, one event per line, each ending in a newline.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for event in &self.events {
            out.push_str(&event.to_json());
            out.push('\n');
        }
        out
    }

    /// The events, in recorded order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Gives the events back (e.g. to edit and rebuild a history in tests).
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The completion of the invoke at `invoke`, if any.
    pub fn completion(&self, invoke: usize) -> Option<usize> {
        match self.events.get(invoke)?.kind {
            EventType::Invoke => self.partner[invoke],
            _ => None,
        }
    }

    /// The invoke that the completion at `completion` completes; `None` for observations.
    pub fn invocation(&self, completion: usize) -> Option<usize> {
        match self.events.get(completion)?.kind {
            EventType::Invoke => None,
            _ => self.partner[completion],
        }
    }

    /// Every client operation (invoke and its completion), in invoke order.
    pub fn operations(&self) -> impl Iterator<Item = Operation> + '_ {
        self.events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == EventType::Invoke)
            .map(|(invoke, _)| Operation { invoke, completion: self.partner[invoke] })
    }

    /// Events that complete no invoke: node-observed `leader`/`commit`, nemesis `fault`.
    pub fn observations(&self) -> impl Iterator<Item = (usize, &Event)> + '_ {
        self.events.iter().enumerate().filter(|&(i, e)| e.kind == EventType::Info && self.partner[i].is_none())
    }
}

/// Pairs invokes with completions, enforcing the rules in the module docs.
fn pair(events: &[Event], lines: &[usize]) -> Result<Vec<Option<usize>>, HistoryError> {
    let mut partner = vec![None; events.len()];
    let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        let line = lines[i];
        let malformed = |reason: String| HistoryError::Malformed { line, reason };
        let open = pending.get(&event.process).copied();
        match (event.kind, open) {
            (EventType::Invoke, Some(inv)) => {
                return Err(malformed(format!(
                    "process {} invokes `{}` while its `{}` from line {} is outstanding",
                    event.process,
                    event.op.f(),
                    events[inv].op.f(),
                    lines[inv]
                )));
            }
            (EventType::Invoke, None) => {
                pending.insert(event.process, i);
            }
            (kind, Some(inv)) if events[inv].op.f() == event.op.f() => {
                check_completion(&events[inv], event, kind)
                    .map_err(|reason| malformed(format!("{reason} (invoke on line {})", lines[inv])))?;
                partner[inv] = Some(i);
                partner[i] = Some(inv);
                pending.remove(&event.process);
            }
            (EventType::Info, _) => {} // an observation
            (kind, _) => {
                return Err(malformed(format!(
                    "process {} has `{}` `{}` with no outstanding `{}` invoke",
                    event.process,
                    kind.as_str(),
                    event.op.f(),
                    event.op.f()
                )));
            }
        }
    }
    Ok(partner)
}

/// A completion must describe the operation its invoke started.
fn check_completion(invoke: &Event, completion: &Event, kind: EventType) -> Result<(), String> {
    if let (Op::Produce(inv), Op::Produce(done)) = (&invoke.op, &completion.op) {
        if inv.partition != done.partition || inv.value != done.value {
            return Err(format!(
                "produce {} completes with partition {} value {:?}, but was invoked with partition {} value {:?}",
                kind.as_str(),
                done.partition,
                done.value,
                inv.partition,
                inv.value
            ));
        }
        if kind == EventType::Ok && done.offset.is_none() {
            return Err(format!("produce ok of {:?} has no offset", done.value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Produce, Read};

    const GOOD: &str = r#"{"process":1,"type":"invoke","f":"produce","value":{"partition":"p0","key":"k3","value":"v-17"},"time_ns":10}
{"process":7,"type":"info","f":"leader","value":{"node":2,"term":5,"partition":"p0"},"time_ns":11}

{"process":1,"type":"ok","f":"produce","value":{"partition":"p0","key":"k3","value":"v-17","offset":42},"time_ns":20}
{"process":2,"type":"invoke","f":"produce","value":{"partition":"p0","key":"k1","value":"v-18"},"time_ns":21}
{"process":2,"type":"info","f":"produce","value":null,"time_ns":30}
{"process":9,"type":"info","f":"nemesis-dance","value":{"steps":3},"time_ns":31}
{"process":0,"type":"info","f":"fault","value":{"fault":"partition","groups":[[1],[2,3]]},"time_ns":32}
"#;

    #[test]
    fn decodes_pairs_and_round_trips() {
        let h = History::from_jsonl(GOOD).expect("valid history");
        assert_eq!(h.len(), 7);
        assert_eq!(h.completion(0), Some(2));
        assert_eq!(h.invocation(2), Some(0));
        // The info completion with a null value inherits the invoke's payload.
        assert_eq!(h.completion(3), Some(4));
        match &h.events()[4].op {
            Op::Produce(p) => assert_eq!(p.value, "v-18"),
            other => panic!("expected produce, got {other:?}"),
        }
        // Unknown f is kept verbatim; leader/fault are observations.
        assert!(matches!(&h.events()[5].op, Op::Other { f, .. } if f == "nemesis-dance"));
        let observed: Vec<usize> = h.observations().map(|(i, _)| i).collect();
        assert_eq!(observed, vec![1, 5, 6]);
        let again = History::from_jsonl(&h.to_jsonl()).expect("round trip");
        assert_eq!(again, h);
    }

    fn line_of(err: HistoryError) -> usize {
        match err {
            HistoryError::Json { line, .. }
            | HistoryError::Payload { line, .. }
            | HistoryError::Malformed { line, .. } => line,
        }
    }

    #[test]
    fn errors_name_the_line_and_never_panic() {
        let cases: [(&str, usize); 6] = [
            ("{\"process\":1}\n", 1),
            ("\n\nnot json\n", 3),
            (r#"{"process":1,"type":"done","f":"x","time_ns":0}"#, 1),
            (r#"{"process":1,"type":"info","f":"leader","value":{"node":"two"},"time_ns":0}"#, 1),
            (
                "{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"value\":{\"partition\":\"p0\"},\"time_ns\":0}\n\
                 {\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"value\":{\"partition\":\"p0\"},\"time_ns\":1}\n",
                2,
            ),
            (r#"{"process":1,"type":"ok","f":"read","value":{"partition":"p0"},"time_ns":0}"#, 1),
        ];
        for (text, line) in cases {
            let err = History::from_jsonl(text).expect_err(text);
            assert!(err.to_string().starts_with(&format!("line {line}:")), "{err}");
            assert_eq!(line_of(err), line);
        }
        // Arbitrary bytes-as-text never panic.
        for text in ["{", "[]", "null", "\u{0}", "{\"process\":-1}", "{\"value\":{}}"] {
            assert!(History::from_jsonl(text).is_err());
        }
    }

    #[test]
    fn produce_completion_must_match_invoke_and_ok_needs_offset() {
        let produce = |value: &str, offset| {
            Op::Produce(Produce { partition: "p0".into(), key: None, value: value.into(), offset, idempotent: false })
        };
        let ev = |kind, op| Event { process: 1, kind, op, time_ns: 0 };
        let mismatched = vec![ev(EventType::Invoke, produce("a", None)), ev(EventType::Ok, produce("b", Some(1)))];
        assert_eq!(line_of(History::new(mismatched).unwrap_err()), 2);
        let no_offset = vec![ev(EventType::Invoke, produce("a", None)), ev(EventType::Ok, produce("a", None))];
        assert_eq!(line_of(History::new(no_offset).unwrap_err()), 2);
        // An info of another f while a produce is outstanding is an observation.
        let read = Op::Read(Read {
            partition: "p0".into(),
            node: Some(1),
            from: None,
            records: vec![],
            untracked: vec![],
            caught_up: false,
        });
        let interleaved = vec![
            ev(EventType::Invoke, produce("a", None)),
            ev(EventType::Info, read),
            ev(EventType::Fail, produce("a", None)),
        ];
        let h = History::new(interleaved).expect("valid");
        assert_eq!(h.completion(0), Some(2));
        assert_eq!(h.operations().count(), 1);
        assert_eq!(h.observations().count(), 1);
    }

    proptest::proptest! {
        /// Decoding never panics, whatever the text: a corrupted or truncated history is an error.
        #[test]
        fn decoding_arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = History::from_jsonl(&text);
        }

        /// Nor does decoding a valid history with bytes cut or replaced.
        #[test]
        fn decoding_damaged_histories_never_panics(cut in 0usize..2000, at in 0usize..2000, byte in 0u8..128) {
            let mut bytes = GOOD.as_bytes()[..cut.min(GOOD.len())].to_vec();
            if let Some(b) = bytes.get_mut(at) {
                *b = byte;
            }
            let _ = History::from_jsonl(&String::from_utf8_lossy(&bytes));
        }
    }
}
