//! Model test of the idempotent-producer state (`keel_core::producer`): random streams of
//! batches from a few producers — new batches, retries of recent and old batches, gaps, epoch
//! bumps, fenced epochs — decided by `ProducerStates::check` as a leader would, stored in a log
//! (a `Vec`) when appended, and compared after every step with a plain model of what Kafka's
//! rules accept. After every step, the state folded afresh from the log (what a restarted or new
//! leader has) equals the live state: the dedupe state is derivable from the replicated log.
//!
//! Invariants: no (producer, epoch, sequence range) is stored twice; within an epoch a producer's
//! stored sequences are contiguous; a retry of one of the last five stored batches is answered
//! with that batch's offset.
//!
//! `PROPTEST_CASES=20000` for a longer hunt.

use std::collections::BTreeMap;

use keel_core::producer::BATCHES_KEPT;
use keel_core::producer::Decision;
use keel_core::producer::ProducerBatch;
use keel_core::producer::ProducerStates;
use keel_core::producer::SequenceError;
use keel_core::producer::add_seq;
use proptest::prelude::*;

const PRODUCERS: i64 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// The producer's next batch of `records` records.
    Next { pid: i64, records: i32 },
    /// A retry of the producer's `back`-th most recent sent batch (possibly never stored).
    Retry { pid: i64, back: usize },
    /// A batch that skips `skip` sequence numbers.
    Gap { pid: i64, skip: i32 },
    /// The producer moves to a new epoch (its next batch starts at 0).
    Bump { pid: i64 },
    /// A batch with an epoch below the producer's.
    Stale { pid: i64 },
    /// Starts the producer near the end of the sequence space (to cross the wrap).
    NearWrap { pid: i64 },
}

impl Op {
    fn pid(&self) -> i64 {
        match self {
            Op::Next { pid, .. }
            | Op::Retry { pid, .. }
            | Op::Gap { pid, .. }
            | Op::Bump { pid }
            | Op::Stale { pid }
            | Op::NearWrap { pid } => *pid,
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let pid = 0..PRODUCERS;
    prop_oneof![
        8 => (pid.clone(), 1i32..4).prop_map(|(pid, records)| Op::Next { pid, records }),
        4 => (pid.clone(), 0usize..8).prop_map(|(pid, back)| Op::Retry { pid, back }),
        1 => (pid.clone(), 1i32..3).prop_map(|(pid, skip)| Op::Gap { pid, skip }),
        1 => pid.clone().prop_map(|pid| Op::Bump { pid }),
        1 => pid.clone().prop_map(|pid| Op::Stale { pid }),
        1 => pid.prop_map(|pid| Op::NearWrap { pid }),
    ]
}

/// One stored batch in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    pid: i64,
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
    count: u64,
}

/// What the client side of one producer knows.
#[derive(Debug, Clone, Default)]
struct Client {
    epoch: i16,
    next_seq: i32,
    /// Every batch sent in the current epoch, oldest first.
    sent: Vec<ProducerBatch>,
}

/// The model's view of one producer on the partition.
#[derive(Debug, Clone)]
struct ModelProducer {
    epoch: i16,
    /// Stored batches of `epoch`, oldest first (all of them; the code keeps five).
    stored: Vec<Stored>,
}

fn expected(model: &BTreeMap<i64, ModelProducer>, b: &ProducerBatch) -> Result<Option<Stored>, SequenceError> {
    let Some(m) = model.get(&b.producer_id) else { return Ok(None) };
    if b.epoch < m.epoch {
        return Err(SequenceError::InvalidEpoch { current: m.epoch, got: b.epoch });
    }
    if b.epoch > m.epoch {
        return if b.first_seq == 0 {
            Ok(None)
        } else {
            Err(SequenceError::OutOfOrder { expected: 0, got: b.first_seq })
        };
    }
    let recent = &m.stored[m.stored.len().saturating_sub(BATCHES_KEPT)..];
    if let Some(s) = recent.iter().find(|s| s.first_seq == b.first_seq && s.last_seq == b.last_seq()) {
        return Ok(Some(*s));
    }
    match m.stored.last() {
        Some(last) if b.first_seq != add_seq(last.last_seq, 1) => {
            Err(SequenceError::OutOfOrder { expected: add_seq(last.last_seq, 1), got: b.first_seq })
        }
        _ => Ok(None),
    }
}

fn fold(log: &[Stored]) -> ProducerStates {
    let mut s = ProducerStates::default();
    for e in log {
        let b = ProducerBatch {
            producer_id: e.pid,
            epoch: e.epoch,
            first_seq: e.first_seq,
            last_offset_delta: (e.count - 1) as i32,
        };
        s.record(&b, e.base_offset, e.count);
    }
    s
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut leader = ProducerStates::default();
    let mut log: Vec<Stored> = Vec::new();
    let mut end_offset = 0u64;
    let mut clients: BTreeMap<i64, Client> = (0..PRODUCERS).map(|p| (p, Client::default())).collect();
    let mut model: BTreeMap<i64, ModelProducer> = BTreeMap::new();
    for op in ops {
        let pid = op.pid();
        let c = clients.get_mut(&pid).expect("known producer");
        let fresh = |c: &mut Client, records: i32| {
            let b = ProducerBatch {
                producer_id: pid,
                epoch: c.epoch,
                first_seq: c.next_seq,
                last_offset_delta: records - 1,
            };
            c.next_seq = add_seq(b.last_seq(), 1);
            c.sent.push(b);
            b
        };
        let batch = match op {
            Op::Next { records, .. } => fresh(c, records),
            Op::Retry { back, .. } => match c.sent.len().checked_sub(back + 1) {
                Some(i) => c.sent[i],
                None => fresh(c, 1),
            },
            Op::Gap { skip, .. } => ProducerBatch {
                producer_id: pid,
                epoch: c.epoch,
                first_seq: add_seq(c.next_seq, skip),
                last_offset_delta: 0,
            },
            Op::Bump { .. } => {
                c.epoch += 1;
                c.next_seq = 0;
                c.sent.clear();
                fresh(c, 1)
            }
            Op::Stale { .. } => {
                ProducerBatch { producer_id: pid, epoch: c.epoch - 1, first_seq: c.next_seq, last_offset_delta: 0 }
            }
            Op::NearWrap { .. } => {
                // Only meaningful for a producer the partition does not know yet.
                if !model.contains_key(&pid) {
                    c.next_seq = i32::MAX - 1;
                }
                fresh(c, 3)
            }
        };
        let want = expected(&model, &batch);
        let got = leader.check(&batch);
        match (&want, &got) {
            (Err(w), Err(g)) => prop_assert_eq!(w, g),
            (Ok(Some(s)), Ok(Decision::Duplicate(d))) => {
                prop_assert_eq!((d.base_offset, d.offset_count), (s.base_offset, s.count), "a retry gets its offsets");
            }
            (Ok(None), Ok(Decision::Append)) => {
                let count = batch.last_offset_delta as u64 + 1;
                let stored = Stored {
                    pid,
                    epoch: batch.epoch,
                    first_seq: batch.first_seq,
                    last_seq: batch.last_seq(),
                    base_offset: end_offset,
                    count,
                };
                prop_assert!(
                    !log.iter().any(|e| e.pid == pid && e.epoch == stored.epoch && e.first_seq == stored.first_seq),
                    "{:?} stored twice",
                    stored
                );
                leader.record(&batch, end_offset, count);
                end_offset += count;
                log.push(stored);
                let m = model.entry(pid).or_insert(ModelProducer { epoch: batch.epoch, stored: Vec::new() });
                if batch.epoch > m.epoch {
                    *m = ModelProducer { epoch: batch.epoch, stored: Vec::new() };
                }
                if let Some(prev) = m.stored.last() {
                    prop_assert_eq!(stored.first_seq, add_seq(prev.last_seq, 1), "contiguous within an epoch");
                }
                m.stored.push(stored);
            }
            _ => prop_assert!(false, "{:?}: model says {:?}, code says {:?}", batch, want, got),
        }
        prop_assert_eq!(&fold(&log), &leader, "the state folded from the log is the live state");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn producer_state_dedupes_like_kafka_and_is_derivable_from_the_log(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
