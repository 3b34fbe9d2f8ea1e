//! Test-only recorder that writes small histories of partition `p0` for the checkers' unit tests.
//! Each call advances a fake clock by 10 ns and returns the index of the event it pushed.

use crate::history::{Event, EventType, History};
use crate::payload::{Commit, Fault, GroupCommit, GroupOffset, GroupProcess, Leader, Op, Produce, Read, Record};

pub(crate) const P0: &str = "p0";
/// The consumer group of the group helpers.
pub(crate) const GROUP: &str = "g";

/// Readers use process `READER_BASE + node` so they never collide with producers.
const READER_BASE: u64 = 1000;
/// The consumer reading through the leader.
const CONSUMER: u64 = 900;

#[derive(Default)]
pub(crate) struct Recorder {
    events: Vec<Event>,
    now_ns: u64,
}

fn produce_op(key: &str, value: &str, offset: Option<u64>) -> Op {
    Op::Produce(Produce {
        partition: P0.to_owned(),
        key: Some(key.to_owned()),
        value: value.to_owned(),
        offset,
        idempotent: false,
    })
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder::default()
    }

    fn push(&mut self, process: u64, kind: EventType, op: Op) -> usize {
        self.now_ns += 10;
        self.events.push(Event { process, kind, op, time_ns: self.now_ns });
        self.events.len() - 1
    }

    pub(crate) fn invoke(&mut self, process: u64, key: &str, value: &str) -> usize {
        self.push(process, EventType::Invoke, produce_op(key, value, None))
    }

    pub(crate) fn ok(&mut self, process: u64, key: &str, value: &str, offset: u64) -> usize {
        self.push(process, EventType::Ok, produce_op(key, value, Some(offset)))
    }

    pub(crate) fn fail(&mut self, process: u64, key: &str, value: &str) -> usize {
        self.push(process, EventType::Fail, produce_op(key, value, None))
    }

    pub(crate) fn info(&mut self, process: u64, key: &str, value: &str) -> usize {
        self.push(process, EventType::Info, produce_op(key, value, None))
    }

    /// Invoke then ok of an idempotent producer's record; returns (invoke, ok).
    pub(crate) fn acked_idempotent(&mut self, process: u64, key: &str, value: &str, offset: u64) -> (usize, usize) {
        let idempotent = |offset| match produce_op(key, value, offset) {
            Op::Produce(p) => Op::Produce(Produce { idempotent: true, ..p }),
            other => other,
        };
        (
            self.push(process, EventType::Invoke, idempotent(None)),
            self.push(process, EventType::Ok, idempotent(Some(offset))),
        )
    }

    /// Invoke then ok; returns (invoke, ok).
    pub(crate) fn acked(&mut self, process: u64, key: &str, value: &str, offset: u64) -> (usize, usize) {
        (self.invoke(process, key, value), self.ok(process, key, value, offset))
    }

    /// Group member `process` of group `g` processes `records` of `p0` (offset, key, value);
    /// returns (invoke, ok).
    pub(crate) fn group_process(&mut self, process: u64, records: &[(u64, &str, &str)]) -> (usize, usize) {
        let records = records
            .iter()
            .map(|&(offset, key, value)| Record { offset, key: Some(key.to_owned()), value: value.to_owned() })
            .collect();
        let invoke = GroupProcess { group: GROUP.to_owned(), partition: P0.to_owned(), records: Vec::new() };
        let done = GroupProcess { records, ..invoke.clone() };
        (
            self.push(process, EventType::Invoke, Op::GroupProcess(invoke)),
            self.push(process, EventType::Ok, Op::GroupProcess(done)),
        )
    }

    /// Group member `process` commits `offset` of `p0`, completed as `kind`; returns (invoke,
    /// completion).
    pub(crate) fn group_commit(&mut self, process: u64, offset: u64, kind: EventType) -> (usize, usize) {
        let op = Op::GroupCommit(GroupCommit { group: GROUP.to_owned(), partition: P0.to_owned(), offset });
        (self.push(process, EventType::Invoke, op.clone()), self.push(process, kind, op))
    }

    /// Group member `process` fetches the committed offset of `p0`: `answer`; returns (invoke, ok).
    pub(crate) fn group_offset(&mut self, process: u64, answer: Option<u64>) -> (usize, usize) {
        let invoke = GroupOffset { group: GROUP.to_owned(), partition: P0.to_owned(), offset: None };
        let done = GroupOffset { offset: answer, ..invoke.clone() };
        (
            self.push(process, EventType::Invoke, Op::GroupOffset(invoke)),
            self.push(process, EventType::Ok, Op::GroupOffset(done)),
        )
    }

    /// A read of `node` with `records` as (offset, key, value); returns the ok event's index.
    pub(crate) fn read(&mut self, node: u64, caught_up: bool, records: &[(u64, &str, &str)]) -> usize {
        let invoke = Read {
            partition: P0.to_owned(),
            node: Some(node),
            from: None,
            records: vec![],
            untracked: vec![],
            caught_up: false,
        };
        let done = Read {
            records: records
                .iter()
                .map(|&(offset, key, value)| Record { offset, key: Some(key.to_owned()), value: value.to_owned() })
                .collect(),
            caught_up,
            ..invoke.clone()
        };
        self.push(READER_BASE + node, EventType::Invoke, Op::Read(invoke));
        self.push(READER_BASE + node, EventType::Ok, Op::Read(done))
    }

    /// A read through whoever leads (`node` absent, never caught up), by the consumer process;
    /// returns the ok event's index.
    pub(crate) fn leader_read(&mut self, records: &[(u64, &str, &str)]) -> usize {
        self.leader_read_at(None, records)
    }

    /// [`Recorder::leader_read`] that names the offset it asked for.
    pub(crate) fn leader_read_at(&mut self, from: Option<u64>, records: &[(u64, &str, &str)]) -> usize {
        let invoke =
            Read { partition: P0.to_owned(), node: None, from, records: vec![], untracked: vec![], caught_up: false };
        let done = Read {
            records: records
                .iter()
                .map(|&(offset, key, value)| Record { offset, key: Some(key.to_owned()), value: value.to_owned() })
                .collect(),
            ..invoke.clone()
        };
        self.push(CONSUMER, EventType::Invoke, Op::Read(invoke));
        self.push(CONSUMER, EventType::Ok, Op::Read(done))
    }

    pub(crate) fn leader(&mut self, node: u64, term: u64) -> usize {
        let op = Op::Leader(Leader { node, term, partition: P0.to_owned() });
        self.push(node, EventType::Info, op)
    }

    pub(crate) fn commit(&mut self, node: u64, incarnation: u64, index: u64, term: u64) -> usize {
        let op = Op::Commit(Commit { node, incarnation, partition: P0.to_owned(), index, term });
        self.push(node, EventType::Info, op)
    }

    pub(crate) fn crash(&mut self, node: u64) -> usize {
        let op = Op::Fault(Fault { fault: "crash".to_owned(), node: Some(node), detail: Default::default() });
        self.push(0, EventType::Info, op)
    }

    /// A `replicas` sample of P0: `durable` lists (voter, durable index or None for no copy).
    pub(crate) fn replicas(
        &mut self,
        committed: u64,
        voters: &[&[u64]],
        membership_committed: bool,
        durable: &[(u64, Option<u64>)],
    ) -> usize {
        let op = Op::Replicas(crate::payload::Replicas {
            partition: P0.to_owned(),
            leader: voters[0][0],
            term: 1,
            committed,
            voters: voters.iter().map(|v| v.to_vec()).collect(),
            membership_committed,
            durable: durable.iter().copied().collect(),
        });
        self.push(0, EventType::Info, op)
    }

    pub(crate) fn build(self) -> History {
        History::new(self.events).expect("test histories are well-formed")
    }
}

/// A valid history of `p0`: three acked produces (offset 2 is a control batch), one unknown
/// that did land, one unknown that did not, one failed, three agreeing caught-up replicas,
/// leaders in terms 1 and 2, monotone commits, a crash.
pub(crate) fn valid() -> History {
    let mut r = Recorder::new();
    r.leader(1, 1);
    r.commit(1, 0, 1, 1);
    r.acked(1, "k1", "v-1", 0);
    r.acked(2, "k2", "v-2", 1);
    r.invoke(3, "k3", "v-3");
    r.info(3, "k3", "v-3");
    r.crash(1);
    r.leader(2, 2);
    r.commit(2, 0, 4, 2);
    r.invoke(1, "k1", "v-4");
    r.fail(1, "k1", "v-4");
    r.acked(2, "k2", "v-5", 3);
    r.invoke(3, "k3", "v-6");
    r.info(3, "k3", "v-6");
    r.commit(1, 1, 6, 2);
    r.commit(2, 0, 6, 2);
    // Raft index 3 is the second leader's blank entry: it takes no offset.
    let log: &[(u64, &str, &str)] = &[(0, "k1", "v-1"), (1, "k2", "v-2"), (2, "k3", "v-3"), (3, "k2", "v-5")];
    r.read(1, false, &log[..2]);
    for node in 1..=3 {
        r.read(node, true, log);
    }
    // A group member processes, commits after processing and dies; the next resumes from the
    // committed offset.
    r.group_offset(70, None);
    r.group_process(70, &[(0, "k1", "v-1"), (1, "k2", "v-2")]);
    r.group_commit(70, 2, EventType::Ok);
    r.group_offset(71, Some(2));
    r.group_process(71, &[(2, "k3", "v-3"), (3, "k2", "v-5")]);
    r.group_commit(71, 4, EventType::Ok);
    r.build()
}
