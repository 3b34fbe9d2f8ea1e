//! Model-based test of the partition log: random sequences of appends, truncations, purges,
//! syncs, crashes (of the simulated disk) and clean reopens, checked after every step against a
//! plain `Vec` model (in the manner of sled's and fjall's restart models).
//!
//! The model: the logical start (index, offset), the entries (index, term, base offset, offset
//! count, bytes) and how many of them are durable. After a crash the log must be the model's
//! durable prefix plus possibly a prefix of the rest (never a gap, never anything else), and the
//! model adopts what survived.

use std::sync::Arc;

use keel_core::batch::{self, BatchBuilder};
use keel_core::log::{LogConfig, LogError, PartitionLog};
use keel_core::storage::sim::SimStorage;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_bytes: usize,
        new_term: bool,
        control: bool,
    },
    TruncateFrom(u8),
    PurgeThrough(u8),
    Sync,
    /// An fsync fails with EIO: the node fails the log closed; only a crash and reopen follow.
    FailedSync,
    Crash,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..4, 0usize..80, proptest::bool::weighted(0.1), proptest::bool::weighted(0.3))
            .prop_map(|(records, value_bytes, new_term, control)| Op::Append { records, value_bytes, new_term, control }),
        1 => any::<u8>().prop_map(Op::TruncateFrom),
        1 => any::<u8>().prop_map(Op::PurgeThrough),
        2 => Just(Op::Sync),
        1 => Just(Op::FailedSync),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    index: u64,
    term: u64,
    base_offset: u64,
    offset_count: u64,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Model {
    start_index: u64,
    start_offset: u64,
    entries: Vec<Entry>,
    /// Entries [..durable] are durable.
    durable: usize,
    term: u64,
}

impl Model {
    fn next_index(&self) -> u64 {
        self.entries.last().map_or(self.start_index, |e| e.index + 1)
    }
    fn next_offset(&self) -> u64 {
        self.entries.last().map_or(self.start_offset, |e| e.base_offset + e.offset_count)
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 700,
        segment_age_ms_max: i64::MAX,
        index_interval_bytes: 200,
        batch_bytes_max: 1 << 20,
        tail_cache_bytes_max: 600,
    }
}

fn dir() -> std::path::PathBuf {
    std::path::PathBuf::from("/n1/topic-0")
}

fn open(storage: &Arc<SimStorage>) -> PartitionLog {
    PartitionLog::open(storage.clone(), dir(), config()).expect("open").0
}

/// The log equals the model: indexes, offsets, terms, stored bytes, every read path.
fn check(log: &PartitionLog, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.first_index(), m.start_index);
    prop_assert_eq!(log.next_index(), m.next_index());
    prop_assert_eq!(log.start_offset(), m.start_offset);
    prop_assert_eq!(log.next_offset(), m.next_offset());
    prop_assert!(log.first_index() <= log.next_index());
    prop_assert!(log.start_offset() <= log.next_offset());
    let expected_durable = m.entries.get(..m.durable).and_then(|d| d.last()).map(|e| e.index);
    prop_assert_eq!(log.durable_index(), expected_durable);
    let got = log.read(0..u64::MAX, usize::MAX).expect("read");
    prop_assert_eq!(got.len(), m.entries.len());
    let mut offset = m.start_offset;
    for (g, e) in got.iter().zip(&m.entries) {
        prop_assert_eq!(g.meta.index, e.index);
        prop_assert_eq!(g.meta.term, e.term);
        prop_assert_eq!(g.meta.base_offset, offset, "offsets dense");
        prop_assert_eq!(g.meta.base_offset, e.base_offset);
        prop_assert_eq!(g.meta.offset_count, e.offset_count);
        prop_assert_eq!(&g.bytes[..], &e.bytes[..]);
        prop_assert_eq!(log.entry_meta(e.index).expect("meta"), Some(g.meta));
        // The Kafka read path at this entry's last offset finds it; at a control entry (which
        // takes no offset and is never fetched) it finds the next data entry, if any.
        let at = if e.offset_count == 0 { offset } else { offset + e.offset_count - 1 };
        let fetched = log.read_from_offset(at, u64::MAX, 0).expect("fetch");
        let next_data = m.entries.iter().find(|d| d.index >= e.index && d.offset_count > 0);
        prop_assert_eq!(fetched.first().map(|f| f.meta.index), next_data.map(|d| d.index));
        offset = g.meta.next_offset();
    }
    // Kafka offsets are dense over the data entries alone, and Fetch returns exactly those.
    let data: Vec<&Entry> = m.entries.iter().filter(|e| e.offset_count > 0).collect();
    for w in data.windows(2) {
        prop_assert_eq!(w[0].base_offset + w[0].offset_count, w[1].base_offset, "Kafka offsets dense");
    }
    let fetched = log.read_from_offset(m.start_offset, u64::MAX, usize::MAX).expect("fetch all");
    prop_assert_eq!(
        fetched.iter().map(|f| f.meta.index).collect::<Vec<_>>(),
        data.iter().map(|d| d.index).collect::<Vec<_>>()
    );
    prop_assert!(fetched.iter().all(|f| !f.meta.is_control), "a control entry was fetched");
    prop_assert_eq!(log.last_entry(), got.last().map(|e| e.meta));
    prop_assert_eq!(log.entry_meta(m.next_index()).expect("meta"), None);
    Ok(())
}

fn run(seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let storage = SimStorage::new(seed);
    let mut log = open(&storage);
    let mut m = Model { term: 1, ..Model::default() };
    let mut failed = false;
    for (step, op) in ops.into_iter().enumerate() {
        // A failed log refuses everything; the node's way out is a restart. A clean reopen would
        // read back writes whose fsync failed (fsyncgate) and call them durable, so the model
        // restarts a failed node through a crash.
        let op = match op {
            Op::Reopen | Op::Crash if failed => Op::Crash,
            Op::Append { .. } | Op::TruncateFrom(_) | Op::PurgeThrough(_) | Op::Sync | Op::FailedSync if failed => {
                prop_assert!(matches!(log.append(m.next_index(), m.term, vec![0; 70], 0), Err(LogError::Failed(_))));
                prop_assert!(matches!(log.truncate_from(0), Err(LogError::Failed(_))));
                prop_assert!(matches!(log.read(0..1, 1), Err(LogError::Failed(_))));
                prop_assert!(log.prepare_sync().is_none());
                continue;
            }
            op => op,
        };
        match op {
            Op::Append { records, value_bytes, new_term, control } => {
                m.term += u64::from(new_term);
                let ts = step as i64 * 10;
                let raw = if control {
                    batch::control_batch(batch::CONTROL_RAFT_BLANK, b"", ts)
                } else {
                    let mut b = BatchBuilder::new(ts);
                    for r in 0..records {
                        b.push(ts + r as i64, None, Some(&vec![step as u8; value_bytes]));
                    }
                    b.build()
                };
                let index = m.next_index();
                log.append(index, m.term, raw.clone(), ts).expect("append");
                let mut stored = raw;
                batch::stamp(&mut stored, m.next_offset() as i64, m.term as i32);
                m.entries.push(Entry {
                    index,
                    term: m.term,
                    base_offset: m.next_offset(),
                    // The model's own rule: Raft's control entries take no Kafka offset.
                    offset_count: if control { 0 } else { records as u64 },
                    bytes: stored,
                });
            }
            Op::TruncateFrom(k) => {
                let index = m.start_index + u64::from(k) % (m.entries.len() as u64 + 2);
                log.truncate_from(index).expect("truncate");
                if index < m.next_index() {
                    let keep = m.entries.iter().take_while(|e| e.index < index).count();
                    m.entries.truncate(keep);
                    // A truncation is durable on return, with everything before it.
                    m.durable = m.entries.len();
                }
            }
            Op::PurgeThrough(k) => {
                let index = (m.start_index + u64::from(k) % (m.entries.len() as u64 + 3)).saturating_sub(1);
                log.purge_through(index).expect("purge");
                if index >= m.start_index {
                    let next_offset = m.next_offset();
                    let gone = m.entries.iter().take_while(|e| e.index <= index).count();
                    m.entries.drain(..gone);
                    m.durable = m.durable.saturating_sub(gone);
                    m.start_index = index + 1;
                    m.start_offset = m.entries.first().map_or(next_offset, |e| e.base_offset);
                }
            }
            Op::Sync => {
                if let Some(plan) = log.prepare_sync() {
                    plan.execute(storage.as_ref()).expect("sync");
                    log.complete_sync(plan);
                }
                m.durable = m.entries.len();
            }
            Op::FailedSync => {
                if let Some(plan) = log.prepare_sync() {
                    storage.fail_next_sync("/n1/topic-0");
                    match plan.execute(storage.as_ref()) {
                        Ok(()) => prop_assert!(false, "injected sync failure did not fail"),
                        Err(e) => log.fail(format!("fsync: {e}")),
                    }
                    failed = true;
                    continue;
                }
            }
            Op::Crash => {
                failed = false;
                storage.crash();
                drop(log);
                log = open(&storage);
                let survived = log.next_index().saturating_sub(m.start_index) as usize;
                prop_assert!(
                    survived >= m.durable && survived <= m.entries.len(),
                    "step {}: {} entries survived, {} durable of {}",
                    step,
                    survived,
                    m.durable,
                    m.entries.len()
                );
                m.entries.truncate(survived);
                m.durable = survived;
            }
            Op::Reopen => {
                drop(log);
                log = open(&storage);
                m.durable = m.entries.len();
            }
        }
        check(&log, &m)?;
    }
    Ok(())
}

proptest! {
    // 64 cases by default (seconds); `PROPTEST_CASES=5000` for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: keel_proptests::cases(64),
        ..ProptestConfig::default()
    })]

    /// Protects the log's contract under every interleaving of its operations and crashes.
    #[test]
    fn log_matches_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..80)) {
        run(seed, ops)?;
    }
}
