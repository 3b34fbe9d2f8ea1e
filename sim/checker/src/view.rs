//! Views of a history that several checkers share: produce operations with their outcome, ok
//! reads, and the final read of each replica.

use std::collections::BTreeMap;

use crate::history::{EventType, History};
use crate::payload::{Op, Produce, Read};

/// What a produce's completion says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProduceOutcome {
    /// Acknowledged at this base offset.
    Acked {
        /// Offset from the `ok` completion.
        offset: u64,
    },
    /// Definitely not written (`fail`).
    Failed,
    /// May or may not have been written (`info`, or never completed).
    Unknown,
}

/// One produce operation.
#[derive(Clone, Copy, Debug)]
pub struct ProduceOp<'h> {
    /// Index of the invoke event.
    pub invoke: usize,
    /// Index of the completion event, if recorded.
    pub completion: Option<usize>,
    /// The invoke's payload (partition, key, value).
    pub produce: &'h Produce,
    /// What the completion says.
    pub outcome: ProduceOutcome,
    /// `time_ns` of the invoke.
    pub invoke_ns: u64,
    /// `time_ns` of the completion, if recorded.
    pub completion_ns: Option<u64>,
}

impl ProduceOp<'_> {
    /// The invoke and (if any) completion indexes, for a violation's `events`.
    pub fn events(&self) -> Vec<usize> {
        let mut events = vec![self.invoke];
        events.extend(self.completion);
        events
    }

    /// The acknowledged offset, if acked.
    pub fn acked_offset(&self) -> Option<u64> {
        match self.outcome {
            ProduceOutcome::Acked { offset } => Some(offset),
            _ => None,
        }
    }
}

/// Every produce operation, in invoke order.
pub fn produces(history: &History) -> Vec<ProduceOp<'_>> {
    let events = history.events();
    history
        .operations()
        .filter_map(|op| {
            let Op::Produce(produce) = &events[op.invoke].op else {
                return None;
            };
            let done = op.completion.map(|c| &events[c]);
            let outcome = match done.map(|d| (d.kind, &d.op)) {
                Some((EventType::Ok, Op::Produce(p))) => match p.offset {
                    Some(offset) => ProduceOutcome::Acked { offset },
                    None => ProduceOutcome::Unknown, // rejected when the history is built
                },
                Some((EventType::Fail, _)) => ProduceOutcome::Failed,
                _ => ProduceOutcome::Unknown,
            };
            Some(ProduceOp {
                invoke: op.invoke,
                completion: op.completion,
                produce,
                outcome,
                invoke_ns: events[op.invoke].time_ns,
                completion_ns: done.map(|d| d.time_ns),
            })
        })
        .collect()
}

/// Produce operations by their (unique) value. When a value was (wrongly) produced twice, the
/// first invoke wins; `offsets_unique_dense` reports the duplicate.
pub fn produces_by_value<'a, 'h>(ops: &'a [ProduceOp<'h>]) -> BTreeMap<&'h str, &'a ProduceOp<'h>> {
    let mut by_value = BTreeMap::new();
    for op in ops {
        by_value.entry(op.produce.value.as_str()).or_insert(op);
    }
    by_value
}

/// A read that completed `ok`.
#[derive(Clone, Copy, Debug)]
pub struct ReadOp<'h> {
    /// Index of the invoke event (`None` if the read was recorded as a lone observation).
    pub invoke: Option<usize>,
    /// Index of the `ok` event carrying the records.
    pub completion: usize,
    /// The payload of the `ok` event.
    pub read: &'h Read,
}

impl ReadOp<'_> {
    /// A short name for reports: `read of p0 node 2` or `read of p0 via leader`.
    pub fn describe(&self) -> String {
        match self.read.node {
            Some(node) => format!("read of {} node {node}", self.read.partition),
            None => format!("read of {} via leader", self.read.partition),
        }
    }
}

/// Every `ok` read, in completion order.
pub fn ok_reads(history: &History) -> Vec<ReadOp<'_>> {
    history
        .events()
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match (&e.op, e.kind) {
            (Op::Read(read), EventType::Ok) => Some(ReadOp { invoke: history.invocation(i), completion: i, read }),
            _ => None,
        })
        .collect()
}

/// The final read of each (partition, node): the last `ok` read of it in the history. Sorted by
/// (partition, node), reads via the leader (`node: None`) first.
pub fn final_reads(history: &History) -> Vec<ReadOp<'_>> {
    let mut last: BTreeMap<(&str, Option<u64>), ReadOp<'_>> = BTreeMap::new();
    for read in ok_reads(history) {
        last.insert((read.read.partition.as_str(), read.read.node), read);
    }
    last.into_values().collect()
}

/// A record key for messages: its text, or `null`.
pub fn show_key(key: &Option<String>) -> &str {
    key.as_deref().unwrap_or("null")
}
