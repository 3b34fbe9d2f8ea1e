//! The checkers (keel-checker) against a model of one replicated partition.
//!
//! A generator interprets random steps as a history that is valid by construction: producers
//! overlap, each produce takes effect at its completion (so real-time order implies offset
//! order), control batches take a Raft index but no offset, some outcomes are unknown or failed, leaders
//! get fresh terms, commits move forward within an incarnation, and three caught-up replicas end
//! with the model log. Every checker must pass such a history, and it must survive the JSONL
//! round trip. Then one violation is planted, and the checker guarding it must name it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use keel_checker::checkers::{
    acked_not_lost, commit_monotonic, failed_not_present, group_at_least_once, idempotent_no_duplicates,
    offsets_unique_dense, produce_linearizable, read_committed_only, replicas_agree, single_leader_per_term,
};
use keel_checker::{
    Commit, Event, EventType, Fault, GroupCommit, GroupOffset, GroupProcess, History, Leader, Op, Produce, Read,
    Record, Verdict, check_all, report,
};
use proptest::prelude::*;

const PARTITION: &str = "p0";
const NODES: u64 = 3;
/// Readers of node n are process `READER_BASE + n`, apart from producers and nodes.
const READER_BASE: u64 = 100;
const NEMESIS: u64 = 1_000_000;
/// The consumer reading through the leader.
const CONSUMER: u64 = 90;
/// The producer whose produces are idempotent (each stored at most once).
const IDEMPOTENT_PRODUCER: u64 = 1;

#[derive(Clone, Debug)]
enum Step {
    /// Producer `process` invokes, or completes its outstanding produce with `outcome`
    /// (0..60 ok, 60..75 unknown but written, 75..88 unknown and not written, else fail).
    Client {
        process: u64,
        outcome: u8,
        gap: bool,
    },
    Elect,
    Commit {
        node: u64,
        advance_pct: u8,
    },
    Crash {
        node: u64,
    },
    Read {
        node: u64,
        prefix_pct: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (1u64..=4, 0u8..100, prop::bool::weighted(0.15))
            .prop_map(|(process, outcome, gap)| Step::Client { process, outcome, gap }),
        1 => Just(Step::Elect),
        2 => (1..=NODES, 0u8..=100).prop_map(|(node, advance_pct)| Step::Commit { node, advance_pct }),
        1 => (1..=NODES).prop_map(|node| Step::Crash { node }),
        1 => (1..=NODES, 0u8..=100).prop_map(|(node, prefix_pct)| Step::Read { node, prefix_pct }),
    ]
}

/// A valid history and the model facts the planted violations need.
#[derive(Debug)]
struct Generated {
    events: Vec<Event>,
    /// Term of Raft log index i + 1.
    raft_terms: Vec<u64>,
}

#[derive(Default)]
struct Model {
    events: Vec<Event>,
    now_ns: u64,
    produced: u64,
    next_offset: u64,
    log: Vec<Record>,
    raft_terms: Vec<u64>,
    term: u64,
    leader: u64,
    /// Outstanding produce per process.
    pending: BTreeMap<u64, Produce>,
    /// (incarnation, commit index) per node.
    commit: BTreeMap<u64, (u64, u64)>,
}

impl Model {
    fn push(&mut self, process: u64, kind: EventType, op: Op) {
        self.now_ns += 10;
        self.events.push(Event { process, kind, op, time_ns: self.now_ns });
    }

    fn elect(&mut self) {
        self.term += 1;
        self.leader = self.leader % NODES + 1;
        self.raft_terms.push(self.term); // the new leader's blank entry
        let op = Op::Leader(Leader { node: self.leader, term: self.term, partition: PARTITION.into() });
        self.push(self.leader, EventType::Info, op);
    }

    fn land(&mut self, produce: &Produce, gap: bool) -> u64 {
        if gap {
            // A Raft control entry: a Raft index, but no Kafka offset (offsets are dense).
            self.raft_terms.push(self.term);
        }
        let offset = self.next_offset;
        self.next_offset += 1;
        self.raft_terms.push(self.term);
        self.log.push(Record { offset, key: produce.key.clone(), value: produce.value.clone() });
        offset
    }

    fn client(&mut self, process: u64, outcome: u8, gap: bool) {
        let Some(produce) = self.pending.remove(&process) else {
            self.produced += 1;
            let produce = Produce {
                partition: PARTITION.into(),
                key: Some(format!("k{}", self.produced % 3)),
                value: format!("v-{}", self.produced),
                offset: None,
                idempotent: process == IDEMPOTENT_PRODUCER,
            };
            self.pending.insert(process, produce.clone());
            return self.push(process, EventType::Invoke, Op::Produce(produce));
        };
        let (kind, offset) = match outcome {
            0..60 => (EventType::Ok, Some(self.land(&produce, gap))),
            60..75 => {
                self.land(&produce, gap);
                (EventType::Info, None)
            }
            75..88 => (EventType::Info, None),
            _ => (EventType::Fail, None),
        };
        self.push(process, kind, Op::Produce(Produce { offset, ..produce }));
    }

    fn commit(&mut self, node: u64, advance_pct: u8) {
        let (incarnation, index) = self.commit.get(&node).copied().unwrap_or_default();
        let end = self.raft_terms.len() as u64;
        let index = index + (end - index) * u64::from(advance_pct) / 100;
        self.commit.insert(node, (incarnation, index));
        if index > 0 {
            let term = self.raft_terms[index as usize - 1];
            let op = Op::Commit(Commit { node, incarnation, partition: PARTITION.into(), index, term });
            self.push(node, EventType::Info, op);
        }
    }

    fn crash(&mut self, node: u64) {
        let fault = Fault { fault: "crash".into(), node: Some(node), detail: BTreeMap::new() };
        self.push(NEMESIS, EventType::Info, Op::Fault(fault));
        let (incarnation, index) = self.commit.get(&node).copied().unwrap_or_default();
        self.commit.insert(node, (incarnation + 1, index / 2)); // restarts from durable state
    }

    fn read(&mut self, node: u64, records: Vec<Record>, caught_up: bool) {
        let invoke = Read {
            partition: PARTITION.into(),
            node: Some(node),
            from: None,
            records: vec![],
            untracked: vec![],
            caught_up: false,
        };
        let done = Read { records, caught_up, ..invoke.clone() };
        self.push(READER_BASE + node, EventType::Invoke, Op::Read(invoke));
        self.push(READER_BASE + node, EventType::Ok, Op::Read(done));
    }
}

fn interpret(processes: u64, steps: &[Step]) -> Generated {
    let mut m = Model::default();
    m.elect();
    for step in steps {
        match *step {
            Step::Client { process, outcome, gap } => m.client((process - 1) % processes + 1, outcome, gap),
            Step::Elect => m.elect(),
            Step::Commit { node, advance_pct } => m.commit(node, advance_pct),
            Step::Crash { node } => m.crash(node),
            Step::Read { node, prefix_pct } => {
                let len = m.log.len() * usize::from(prefix_pct) / 100;
                m.read(node, m.log[..len].to_vec(), false);
            }
        }
    }
    for node in 1..=NODES {
        m.read(node, m.log.clone(), true);
    }
    Generated { events: m.events, raft_terms: m.raft_terms }
}

fn valid_history() -> impl Strategy<Value = Generated> {
    (1u64..=4, prop::collection::vec(step(), 10..80)).prop_map(|(processes, steps)| interpret(processes, &steps))
}

/// One step of a consumer-group member: fetch `chunk` records, die at `crash` (0: after
/// fetching, 1: after processing, 2: after committing, else not), and the commit's outcome
/// (0..7 ok, 7 unknown but applied, 8 unknown and not applied, else refused).
#[derive(Clone, Debug)]
struct GroupStep {
    chunk: usize,
    crash: u8,
    outcome: u8,
}

fn group_steps() -> impl Strategy<Value = Vec<GroupStep>> {
    prop::collection::vec(
        (1usize..6, 0u8..12, 0u8..10).prop_map(|(chunk, crash, outcome)| GroupStep { chunk, crash, outcome }),
        1..40,
    )
}

/// Group members' sessions are processes `GROUP_BASE + n`.
const GROUP_BASE: u64 = 500;

/// Appends a consumer group's consumption of the final log to a valid history, valid by
/// construction: members commit after processing, and every session resumes from the
/// coordinator's committed offset (which an unknown-but-applied commit moves too).
fn with_group(g: Generated, steps: &[GroupStep]) -> Vec<Event> {
    with_group_ordered(g, steps, false)
}

/// [`with_group`], or with `commit_first` the member of `canary-commit-before-processing` (the
/// simulation's group member under that canary): it commits a fetched chunk's end offset before
/// processing it, so `crash` 1 dies after committing and before processing.
fn with_group_ordered(g: Generated, steps: &[GroupStep], commit_first: bool) -> Vec<Event> {
    struct Writer {
        events: Vec<Event>,
        now_ns: u64,
    }
    impl Writer {
        fn push(&mut self, process: u64, kind: EventType, op: Op) {
            self.now_ns += 10;
            self.events.push(Event { process, kind, op, time_ns: self.now_ns });
        }
        /// A new session asks for the committed offset; answers where in `log` it resumes.
        fn resume(&mut self, process: u64, committed: Option<u64>, log: &[Record]) -> usize {
            let invoke = GroupOffset { group: "g".into(), partition: PARTITION.into(), offset: None };
            self.push(process, EventType::Invoke, Op::GroupOffset(invoke.clone()));
            self.push(process, EventType::Ok, Op::GroupOffset(GroupOffset { offset: committed, ..invoke }));
            let from = committed.unwrap_or(0);
            log.iter().position(|r| r.offset >= from).unwrap_or(log.len())
        }
    }
    let log = final_log(&g.events);
    let now_ns = g.events.last().map_or(0, |e| e.time_ns);
    let mut w = Writer { events: g.events, now_ns };
    let mut committed: Option<u64> = None;
    let mut process = GROUP_BASE;
    let mut at = w.resume(process, committed, &log);
    for step in steps {
        if at >= log.len() {
            break;
        }
        let batch: Vec<Record> = log[at..(at + step.chunk).min(log.len())].to_vec();
        let end = batch.last().map_or(0, |r| r.offset + 1);
        let (process_if, commit_if) =
            if commit_first { (step.crash > 1, step.crash != 0) } else { (step.crash != 0, step.crash > 1) };
        let processing = |w: &mut Writer, batch: Vec<Record>| {
            let invoke = GroupProcess { group: "g".into(), partition: PARTITION.into(), records: vec![] };
            w.push(process, EventType::Invoke, Op::GroupProcess(invoke.clone()));
            w.push(process, EventType::Ok, Op::GroupProcess(GroupProcess { records: batch, ..invoke }));
        };
        if process_if && !commit_first {
            processing(&mut w, batch.clone());
        }
        if commit_if {
            let op = Op::GroupCommit(GroupCommit { group: "g".into(), partition: PARTITION.into(), offset: end });
            w.push(process, EventType::Invoke, op.clone());
            let kind = match step.outcome {
                0..7 => EventType::Ok,
                7 | 8 => EventType::Info,
                _ => EventType::Fail,
            };
            if step.outcome < 8 {
                committed = Some(end);
            }
            w.push(process, kind, op);
            at += step.chunk;
        }
        if process_if && commit_first {
            processing(&mut w, batch);
        }
        if step.crash <= 2 {
            process += 1;
            at = w.resume(process, committed, &log);
        }
    }
    w.events
}

/// Index of the `ok` produce of `value`.
fn ack_of(events: &[Event], value: &str) -> Option<usize> {
    events.iter().position(|e| matches!((&e.op, e.kind), (Op::Produce(p), EventType::Ok) if p.value == value))
}

fn build(events: Vec<Event>) -> History {
    History::new(events).expect("planted violations keep the history well-formed")
}

/// `check` must fail with a violation naming every event in `named`.
fn assert_caught(history: &History, verdict: Verdict, named: &[usize]) -> Result<(), TestCaseError> {
    let text = report(history, std::slice::from_ref(&verdict));
    prop_assert!(!verdict.ok, "{} missed the planted violation\n{}", verdict.checker, history.to_jsonl());
    prop_assert!(
        verdict.violations.iter().any(|v| named.iter().all(|e| v.events.contains(e))),
        "no violation names events {named:?}\n{text}"
    );
    Ok(())
}

/// Indexes of `ok` produce events with their offsets.
fn acks(events: &[Event]) -> Vec<(usize, u64)> {
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match (&e.op, e.kind) {
            (Op::Produce(p), EventType::Ok) => Some((i, p.offset?)),
            _ => None,
        })
        .collect()
}

/// Index of the `ok` event of the final read of node `node + 1` (the history ends with them).
fn final_read(events: &[Event], node: usize) -> usize {
    events.len() - 2 * (NODES as usize - node) + 1
}

/// The records of the last node's final read: the whole committed log.
fn final_log(events: &[Event]) -> Vec<Record> {
    match &events[final_read(events, 2)].op {
        Op::Read(r) => r.records.clone(),
        other => panic!("not a read: {other:?}"),
    }
}

/// The highest offset a group commit was acknowledged at.
fn top_acked_commit(events: &[Event]) -> Option<u64> {
    events
        .iter()
        .filter_map(|e| match (&e.op, e.kind) {
            (Op::GroupCommit(c), EventType::Ok) => Some(c.offset),
            _ => None,
        })
        .max()
}

/// (`ok` event, value) of every acknowledged idempotent produce.
fn idempotent_acks(events: &[Event]) -> Vec<(usize, String)> {
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match (&e.op, e.kind) {
            (Op::Produce(p), EventType::Ok) if p.idempotent => Some((i, p.value.clone())),
            _ => None,
        })
        .collect()
}

fn records_mut(event: &mut Event) -> &mut Vec<Record> {
    match &mut event.op {
        Op::Read(read) => &mut read.records,
        other => panic!("not a read: {other:?}"),
    }
}

fn set_offset(event: &mut Event, offset: u64) {
    match &mut event.op {
        Op::Produce(p) => p.offset = Some(offset),
        other => panic!("not a produce: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_checker_passes_valid_histories(g in valid_history()) {
        let history = build(g.events);
        let verdicts = check_all(&history);
        prop_assert!(verdicts.iter().all(|v| v.ok), "{}", report(&history, &verdicts));
        let again = History::from_jsonl(&history.to_jsonl()).expect("round trip decodes");
        prop_assert_eq!(again, history);
    }

    #[test]
    fn dropping_an_acked_record_from_a_final_read_is_caught(g in valid_history(), pick: usize, node in 0usize..3) {
        let mut events = g.events;
        let acked = acks(&events);
        prop_assume!(!acked.is_empty());
        let (ok, offset) = acked[pick % acked.len()];
        let read = final_read(&events, node);
        records_mut(&mut events[read]).retain(|r| r.offset != offset);
        let history = build(events);
        assert_caught(&history, acked_not_lost::check(&history), &[ok, read])?;
        assert_caught(&history, replicas_agree::check(&history), &[read])?;
    }

    #[test]
    fn swapping_the_offsets_of_ordered_acks_is_caught(g in valid_history(), pick: usize) {
        let mut events = g.events;
        let acked = acks(&events);
        // Pairs (A, B) where A was acked before B was invoked.
        let invoke_ns = |ok: usize| {
            let process = events[ok].process;
            events[..ok].iter().rev().find(|e| e.process == process && e.kind == EventType::Invoke).map(|e| e.time_ns)
        };
        let ordered: Vec<_> = acked
            .iter()
            .flat_map(|&a| acked.iter().map(move |&b| (a, b)))
            .filter(|&((a, _), (b, _))| invoke_ns(b).is_some_and(|t| events[a].time_ns < t))
            .collect();
        prop_assume!(!ordered.is_empty());
        let ((a, a_offset), (b, b_offset)) = ordered[pick % ordered.len()];
        set_offset(&mut events[a], b_offset);
        set_offset(&mut events[b], a_offset);
        let history = build(events);
        assert_caught(&history, produce_linearizable::check(&history), &[a, b])?;
        assert_caught(&history, acked_not_lost::check(&history), &[a])?;
    }

    #[test]
    fn swapping_records_in_a_read_is_caught(g in valid_history(), node in 0usize..3, pick: usize) {
        let mut events = g.events;
        let read = final_read(&events, node);
        let records = records_mut(&mut events[read]);
        prop_assume!(records.len() >= 2);
        let i = pick % (records.len() - 1);
        records.swap(i, i + 1);
        let history = build(events);
        assert_caught(&history, offsets_unique_dense::check(&history), &[read])?;
    }

    #[test]
    fn a_duplicated_offset_is_caught(g in valid_history(), pick: usize, in_read: bool) {
        let mut events = g.events;
        if in_read {
            let read = final_read(&events, 2);
            let records = records_mut(&mut events[read]);
            prop_assume!(records.len() >= 2);
            let i = pick % (records.len() - 1) + 1;
            records[i].offset = records[i - 1].offset;
            let history = build(events);
            assert_caught(&history, offsets_unique_dense::check(&history), &[read])?;
        } else {
            let acked = acks(&events);
            prop_assume!(acked.len() >= 2);
            let i = pick % acked.len();
            let j = (i + 1 + (pick / acked.len()) % (acked.len() - 1)) % acked.len();
            let ((a, a_offset), (b, _)) = (acked[i], acked[j]);
            set_offset(&mut events[b], a_offset);
            let history = build(events);
            assert_caught(&history, offsets_unique_dense::check(&history), &[a, b])?;
        }
    }

    #[test]
    fn an_idempotent_record_stored_again_is_caught(g in valid_history(), pick: usize, node in 0usize..3) {
        let mut events = g.events;
        let read = final_read(&events, node);
        let acked = idempotent_acks(&events);
        prop_assume!(!acked.is_empty());
        let (ok, value) = acked[pick % acked.len()].clone();
        let records = records_mut(&mut events[read]);
        let end = records.last().map_or(0, |r| r.offset + 1);
        let original = records.iter().find(|r| r.value == value).cloned();
        let original = original.expect("a final read holds every acknowledged record");
        // The retry's second copy at the log end, as a broker that does not deduplicate stores it.
        records_mut(&mut events[read]).push(Record { offset: end, ..original });
        let history = build(events);
        assert_caught(&history, idempotent_no_duplicates::check(&history), &[ok, read])?;
    }

    #[test]
    fn a_consumer_group_committing_after_processing_passes(g in valid_history(), steps in group_steps()) {
        let history = build(with_group(g, &steps));
        let verdicts = check_all(&history);
        prop_assert!(verdicts.iter().all(|v| v.ok), "{}", report(&history, &verdicts));
    }

    /// The consumer of `canary-commit-before-processing` (which lives in the simulation's group
    /// member): once it dies between a successful commit and the processing of a chunk holding
    /// an acknowledged record, `group_at_least_once` must fail.
    #[test]
    fn a_consumer_group_committing_before_processing_is_caught(g in valid_history(), steps in group_steps()) {
        let log = final_log(&g.events);
        let events = with_group_ordered(g, &steps, true);
        // The simple oracle: an acknowledged record below the highest acknowledged commit that
        // no member processed.
        let top = top_acked_commit(&events);
        let processed: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| match (&e.op, e.kind) {
                (Op::GroupProcess(p), EventType::Ok) => Some(p.records.iter().map(|r| r.value.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        let skipped = log.iter().any(|r| {
            top.is_some_and(|t| r.offset < t) && !processed.contains(r.value.as_str()) && ack_of(&events, &r.value).is_some()
        });
        prop_assume!(skipped);
        let history = build(events);
        let verdict = group_at_least_once::check(&history);
        prop_assert!(!verdict.ok, "group_at_least_once missed a commit before processing\n{}", history.to_jsonl());
    }

    #[test]
    fn a_record_skipped_below_a_group_commit_is_caught(g in valid_history(), steps in group_steps(), pick: usize) {
        let mut events = with_group(g, &steps);
        let top = top_acked_commit(&events);
        prop_assume!(top.is_some());
        let top = top.unwrap_or_default();
        // Acknowledged records below the top commit, processed exactly once (so removing that
        // processing loses them), with the event that processed them.
        let mut times: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            if let (Op::GroupProcess(p), EventType::Ok) = (&e.op, e.kind) {
                for r in p.records.iter().filter(|r| r.offset < top) {
                    times.entry(r.value.clone()).or_default().push(i);
                }
            }
        }
        let candidates: Vec<(String, usize, usize)> = times
            .into_iter()
            .filter(|(_, at)| at.len() == 1)
            .filter_map(|(value, at)| ack_of(&events, &value).map(|ok| (value, at[0], ok)))
            .collect();
        prop_assume!(!candidates.is_empty());
        let (value, processed, ok) = candidates[pick % candidates.len()].clone();
        if let Op::GroupProcess(p) = &mut events[processed].op {
            p.records.retain(|r| r.value != value);
        }
        let history = build(events);
        assert_caught(&history, group_at_least_once::check(&history), &[ok])?;
    }

    #[test]
    fn an_offset_fetch_below_an_acknowledged_commit_is_caught(
        g in valid_history(),
        steps in group_steps(),
        pick: usize,
    ) {
        let mut events = with_group(g, &steps);
        // Offset fetches invoked after some commit was acknowledged.
        let mut acked_before = None;
        let mut fetches = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match (&e.op, e.kind) {
                (Op::GroupCommit(c), EventType::Ok) => acked_before = Some(acked_before.unwrap_or(0).max(c.offset)),
                (Op::GroupOffset(_), EventType::Ok) if acked_before.is_some() => fetches.push(i),
                _ => {}
            }
        }
        prop_assume!(!fetches.is_empty());
        let fetch = fetches[pick % fetches.len()];
        if let Op::GroupOffset(f) = &mut events[fetch].op {
            // The coordinator forgot every commit.
            f.offset = None;
        }
        let history = build(events);
        assert_caught(&history, group_at_least_once::check(&history), &[fetch])?;
    }

    #[test]
    fn a_second_leader_in_a_term_is_caught(g in valid_history(), pick: usize, other: u64) {
        let mut events = g.events;
        let leaders: Vec<(usize, Leader)> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.op { Op::Leader(l) => Some((i, l.clone())), _ => None })
            .collect();
        let (first, leader) = leaders[pick % leaders.len()].clone();
        let rival = (leader.node + other % (NODES - 1)) % NODES + 1;
        let time_ns = events[events.len() - 1].time_ns + 1;
        events.push(Event { process: rival, kind: EventType::Info, op: Op::Leader(Leader { node: rival, ..leader }), time_ns });
        let planted = events.len() - 1;
        let history = build(events);
        assert_caught(&history, single_leader_per_term::check(&history), &[first, planted])?;
    }

    #[test]
    fn a_commit_going_back_is_caught(g in valid_history(), pick: usize) {
        let mut events = g.events;
        // Highest commit per (node, incarnation).
        let mut highest: BTreeMap<(u64, u64), (u64, usize)> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            if let Op::Commit(c) = &e.op {
                highest.insert((c.node, c.incarnation), (c.index, i));
            }
        }
        let highest: Vec<_> = highest.into_iter().collect();
        prop_assume!(!highest.is_empty());
        let ((node, incarnation), (index, at)) = highest[pick % highest.len()];
        let back = index - 1;
        let term = back.checked_sub(1).map_or(0, |i| g.raft_terms[i as usize]);
        let time_ns = events[events.len() - 1].time_ns + 1;
        let op = Op::Commit(Commit { node, incarnation, partition: PARTITION.into(), index: back, term });
        events.push(Event { process: node, kind: EventType::Info, op, time_ns });
        let planted = events.len() - 1;
        let history = build(events);
        assert_caught(&history, commit_monotonic::check(&history), &[at, planted])?;
    }

    #[test]
    fn a_failed_produce_in_a_read_is_caught(g in valid_history(), pick: usize, node in 0usize..3) {
        let mut events = g.events;
        let failed: Vec<(usize, Produce)> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match (&e.op, e.kind) {
                (Op::Produce(p), EventType::Fail) => Some((i, p.clone())),
                _ => None,
            })
            .collect();
        prop_assume!(!failed.is_empty());
        let (fail, produce) = failed[pick % failed.len()].clone();
        let read = final_read(&events, node);
        let records = records_mut(&mut events[read]);
        let offset = records.last().map_or(0, |r| r.offset + 1);
        records.push(Record { offset, key: produce.key, value: produce.value });
        let history = build(events);
        assert_caught(&history, failed_not_present::check(&history), &[fail, read])?;
    }

    #[test]
    fn a_read_of_a_record_missing_from_the_final_log_is_caught(g in valid_history(), pick: usize, past_end: bool) {
        let mut events = g.events;
        // A read through the leader, just before the final reads, of the final log with one
        // record that never made it: past the end, or another value at a held offset.
        let at = final_read(&events, 0) - 1;
        let mut records = records_mut(&mut events[at + 1]).clone();
        if past_end || records.is_empty() {
            let offset = records.last().map_or(0, |r| r.offset + 1);
            records.push(Record { offset, key: Some("k-ghost".into()), value: "v-ghost".into() });
        } else {
            let i = pick % records.len();
            records[i].value = "v-ghost".into();
        }
        let time_ns = events[at].time_ns;
        let invoke = Read { partition: PARTITION.into(), node: None, from: None, records: vec![], untracked: vec![], caught_up: false };
        let done = Read { records, ..invoke.clone() };
        events.insert(at, Event { process: CONSUMER, kind: EventType::Ok, op: Op::Read(done), time_ns });
        events.insert(at, Event { process: CONSUMER, kind: EventType::Invoke, op: Op::Read(invoke), time_ns });
        let planted = at + 1;
        let history = build(events);
        assert_caught(&history, read_committed_only::check(&history), &[planted])?;
    }
}
