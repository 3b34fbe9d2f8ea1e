//! Model-based test of the node's Raft log store (`keel_node::raft::log_store::LogStore`, the
//! `RaftLogStorage` openraft writes through) on the simulated disk: random sequences of appends
//! (whose durability callback is watched), group-commit flushes, `truncate_after`, `purge`,
//! `save_vote`, crashes (unsynced bytes lost, the last write torn) and clean reopens, checked
//! after every step against a plain model.
//!
//! What it protects, beyond `log_model.rs` (the segment log underneath):
//! - **An append reported durable survives a crash.** openraft counts an entry towards the
//!   quorum once the store's callback says it is flushed; the canary
//!   `canary-ack-before-fsync` reports it before any fsync, and the first crash after such an
//!   append loses an entry the model was told is durable.
//! - **`truncate_after(id)` keeps exactly the entries up to `id`.** openraft truncates only
//!   entries after its committed index; removing one more (the canary
//!   `canary-follower-truncates-committed`) deletes a possibly committed entry.
//! - Purges and votes are durable on return; what survives a crash is a prefix of what was
//!   written, with the same log ids and bytes; offsets stay dense.
//!
//! The test drives the flush itself (`LogShared::sync_once`, the body of the flusher loop) on a
//! current-thread runtime, so a schedule replays exactly from its seed.
//!
//! Runs on tokio (a current-thread runtime per case); the madsim build leaves it out.
#![cfg(not(madsim))]

use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use keel_core::batch::{self, BatchBuilder};
use keel_core::log::LogConfig;
use keel_core::storage::sim::SimStorage;
use keel_node::raft::log_store::LogStore;
use keel_node::raft::{Batch, Entry, TypeConfig, Vote, log_id, term_of};
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Appends `count` entries (a blank one first when `new_term`: a new leader's first entry).
    Append {
        count: usize,
        new_term: bool,
        value_bytes: usize,
    },
    /// One round of the group-commit flusher.
    Flush,
    /// `truncate_after` the entry at this position (mod the log length + 1; the extra value
    /// truncates after the last purged entry, or everything when nothing is purged).
    TruncateAfter(u8),
    /// `purge` through the entry at this position (mod the log length).
    Purge(u8),
    SaveVote {
        term_step: u8,
        node: u64,
        committed: bool,
    },
    Crash,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..4, proptest::bool::weighted(0.2), 0usize..60)
            .prop_map(|(count, new_term, value_bytes)| Op::Append { count, new_term, value_bytes }),
        4 => Just(Op::Flush),
        1 => any::<u8>().prop_map(Op::TruncateAfter),
        1 => any::<u8>().prop_map(Op::Purge),
        1 => (0u8..2, 1u64..4, any::<bool>())
            .prop_map(|(term_step, node, committed)| Op::SaveVote { term_step, node, committed }),
        2 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

/// What the model knows of one entry: its log id and, for a normal entry, the batch as the
/// producer sent it (the store stamps its base offset and leader epoch into it).
#[derive(Debug, Clone)]
struct Expected {
    index: u64,
    term: u64,
    batch: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Model {
    /// The last purged entry (index, term).
    purged: Option<(u64, u64)>,
    entries: Vec<Expected>,
    /// Entries up to this index were reported durable by the store's callback.
    acked: Option<u64>,
    vote: Option<Vote>,
    term: u64,
}

impl Model {
    fn first_index(&self) -> u64 {
        self.purged.map_or(0, |(i, _)| i + 1)
    }

    fn next_index(&self) -> u64 {
        self.entries.last().map_or(self.first_index(), |e| e.index + 1)
    }

    fn last(&self) -> Option<(u64, u64)> {
        self.entries.last().map(|e| (e.index, e.term)).or(self.purged)
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 500,
        segment_age_ms_max: i64::MAX,
        index_interval_bytes: 150,
        batch_bytes_max: 1 << 20,
        tail_cache_bytes_max: 400,
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/n1/p7")
}

fn open(storage: &Arc<SimStorage>) -> LogStore {
    LogStore::open(storage.clone(), dir(), config()).expect("open").0
}

/// An append's durability callback, waiting to be observed.
struct Waiting {
    last_index: u64,
    rx: futures::future::BoxFuture<'static, Result<Result<(), std::io::Error>, ()>>,
}

/// Marks every append whose callback has reported success as acknowledged.
fn observe_callbacks(waiting: &mut Vec<Waiting>, m: &mut Model) -> Result<(), TestCaseError> {
    let mut still = Vec::new();
    for mut w in waiting.drain(..) {
        match (&mut w.rx).now_or_never() {
            None => still.push(w),
            Some(Ok(Ok(()))) => m.acked = Some(m.acked.map_or(w.last_index, |a| a.max(w.last_index))),
            Some(Ok(Err(e))) => prop_assert!(false, "append of ..={} failed: {e}", w.last_index),
            // Dropped unanswered: the store went away (a crash or reopen) before flushing it.
            Some(Err(())) => {}
        }
    }
    *waiting = still;
    Ok(())
}

/// The store agrees with the model: log state, every entry's log id and payload, dense
/// offsets, the vote.
async fn check(store: &mut LogStore, m: &Model) -> Result<(), TestCaseError> {
    let state = store.get_log_state().await.expect("log state");
    prop_assert_eq!(state.last_purged_log_id.map(|l| (l.index, term_of(&l))), m.purged);
    prop_assert_eq!(state.last_log_id.map(|l| (l.index, term_of(&l))), m.last(), "last log id (index, term)");
    let got = store.try_get_log_entries(0..u64::MAX).await.expect("read");
    prop_assert_eq!(got.len(), m.entries.len());
    let mut next_offset = None;
    for (g, e) in got.iter().zip(&m.entries) {
        prop_assert_eq!((g.log_id.index, term_of(&g.log_id)), (e.index, e.term));
        let meta = store.shared().log().entry_meta(e.index).expect("meta").expect("entry meta");
        if let Some(next) = next_offset {
            prop_assert_eq!(meta.base_offset, next, "offsets dense at index {}", e.index);
        }
        next_offset = Some(meta.next_offset());
        match (&g.payload, &e.batch) {
            (EntryPayload::Normal(Batch(bytes)), Some(sent)) => {
                let mut stamped = sent.clone();
                batch::stamp(&mut stamped, meta.base_offset as i64, e.term as i32);
                prop_assert_eq!(&bytes[..], &stamped[..], "entry {} bytes", e.index);
            }
            (EntryPayload::Blank, None) => {}
            (payload, _) => prop_assert!(false, "entry {}: unexpected payload {:?}", e.index, payload),
        }
    }
    let mut reader = store.get_log_reader().await;
    prop_assert_eq!(reader.read_vote().await.expect("vote"), m.vote);
    Ok(())
}

async fn run(seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let storage = SimStorage::new(seed);
    let mut store = open(&storage);
    let mut m = Model { term: 1, ..Model::default() };
    let mut waiting: Vec<Waiting> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { count, new_term, value_bytes } => {
                let mut entries = Vec::new();
                let mut index = m.next_index();
                if new_term {
                    m.term += 1;
                    entries.push(Entry::new_blank(log_id(m.term, index)));
                    m.entries.push(Expected { index, term: m.term, batch: None });
                    index += 1;
                }
                for i in 0..count {
                    let ts = step as i64 * 10 + i as i64;
                    let mut b = BatchBuilder::new(ts);
                    b.push(ts, Some(&index.to_be_bytes()), Some(&vec![step as u8; value_bytes]));
                    let sent = b.build();
                    entries.push(Entry::new(
                        log_id(m.term, index),
                        EntryPayload::Normal(Batch(bytes::Bytes::from(sent.clone()))),
                    ));
                    m.entries.push(Expected { index, term: m.term, batch: Some(sent) });
                    index += 1;
                }
                let (tx, rx) = TypeConfig::oneshot();
                store.append(entries, IOFlushed::signal(tx)).await.expect("append");
                waiting.push(Waiting { last_index: index - 1, rx: rx.map(|r| r.map_err(|_| ())).boxed() });
            }
            Op::Flush => store.shared().sync_once().await.expect("flush"),
            Op::TruncateAfter(k) => {
                let keep = usize::from(k) % (m.entries.len() + 1);
                let after =
                    if keep == 0 { m.purged } else { Some((m.entries[keep - 1].index, m.entries[keep - 1].term)) };
                // openraft never truncates at or below what it purged, nor (without a purge)
                // more than it holds; `after == purged` truncates every entry.
                store.truncate_after(after.map(|(i, t)| log_id(t, i))).await.expect("truncate");
                // It settles the appends queued before it first.
                observe_callbacks(&mut waiting, &mut m)?;
                m.entries.truncate(keep);
                let last = m.next_index().checked_sub(1);
                m.acked = m.acked.zip(last).map(|(a, l)| a.min(l));
                // The next entries come from a new leader.
                m.term += 1;
            }
            Op::Purge(k) => {
                if m.entries.is_empty() {
                    continue;
                }
                let through = &m.entries[usize::from(k) % m.entries.len()];
                // openraft purges only what is applied, so flushed: the store may rely on it.
                store.shared().sync_once().await.expect("flush before purge");
                let (index, term) = (through.index, through.term);
                store.purge(log_id(term, index)).await.expect("purge");
                m.purged = Some((index, term));
                m.entries.retain(|e| e.index > index);
            }
            Op::SaveVote { term_step, node, committed } => {
                let term = m.vote.map_or(1, |v| v.leader_id.term) + u64::from(term_step);
                let vote = if committed { Vote::new_committed(term, node) } else { Vote::new(term, node) };
                // A vote only moves forward (openraft's rule); an equal one is a no-op.
                if m.vote.is_none_or(|v| vote >= v) {
                    store.save_vote(&vote).await.expect("save vote");
                    m.vote = Some(vote);
                    m.term = m.term.max(term);
                }
            }
            Op::Crash | Op::Reopen => {
                observe_callbacks(&mut waiting, &mut m)?;
                let crash = matches!(op, Op::Crash);
                if crash {
                    storage.crash();
                }
                drop(store);
                store = open(&storage);
                observe_callbacks(&mut waiting, &mut m)?;
                let state = store.get_log_state().await.expect("log state");
                let next = state.last_log_id.map_or(0, |l| l.index + 1).max(m.first_index());
                let survived = (next - m.first_index()) as usize;
                prop_assert!(
                    survived <= m.entries.len(),
                    "step {}: {} entries after the {}, only {} were written",
                    step,
                    survived,
                    if crash { "crash" } else { "reopen" },
                    m.entries.len()
                );
                if let Some(acked) = m.acked {
                    prop_assert!(
                        next > acked,
                        "step {}: entries up to index {} were reported durable, the {} kept only up to {:?}",
                        step,
                        acked,
                        if crash { "crash" } else { "reopen" },
                        next.checked_sub(1)
                    );
                }
                if !crash {
                    prop_assert_eq!(survived, m.entries.len(), "a clean reopen keeps every entry");
                }
                m.entries.truncate(survived);
            }
        }
        observe_callbacks(&mut waiting, &mut m)?;
        check(&mut store, &m).await?;
    }
    Ok(())
}

proptest! {
    // 64 cases by default (seconds); `PROPTEST_CASES=5000` for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: keel_proptests::cases(64),
        ..ProptestConfig::default()
    })]

    /// Protects the Raft log store's contract with openraft under every interleaving of its
    /// operations and crashes.
    #[test]
    fn raft_log_store_matches_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run(seed, ops))?;
    }
}
