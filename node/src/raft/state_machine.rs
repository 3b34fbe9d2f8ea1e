//! The partition's `RaftStateMachine`.
//!
//! The partition's data lives once, in the log. Applying an entry therefore only moves the
//! applied position (which defines the high watermark: the end offset of the last applied entry),
//! records membership, and folds an idempotent producer's batch into the partition's producer
//! state (`keel_core::producer`: epochs and the last batches' sequences and offsets, which the
//! leader checks retries against); the response to a producer is the offset range its batch was
//! given, read from the stored entry.
//!
//! The state is checkpointed to `sm-checkpoint` (atomically) every
//! `checkpoint_every_entries` applied entries (default [`CHECKPOINT_EVERY_ENTRIES`]), so a restart re-applies only the log tail after
//! the checkpoint, not the whole log. A checkpoint whose last applied entry is not in the log with
//! the same term (this replica lost an unsynced tail it had already applied) is ignored: the state
//! is derivable from the log, so ignoring costs time, never correctness. Snapshots hold
//! (last applied, membership, high watermark, producer state) — enough for openraft's bookkeeping. Keel keeps every log entry (no Raft-driven purge: the snapshot policy
//! is `Never`), so a follower never needs a snapshot to catch up; retention, when it purges, must
//! ship segments as the snapshot (docs/architecture.md).

use std::io;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use bincode::Options;
use futures::Stream;
use futures::TryStreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::storage::EntryResponder;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;

use keel_core::batch::BatchHeader;
use keel_core::producer::ProducerBatch;
use keel_core::producer::ProducerStates;
use keel_core::producer::StoredBatch;

use super::Applied;
use super::LogId;
use super::Response;
use super::StoredMembership;
use super::TypeConfig;
use super::log_store::LogShared;

/// Largest encoded state (checkpoint or snapshot): the producer state dominates, bounded by
/// `keel_core::producer::PRODUCERS_PER_PARTITION_MAX` producers of at most five batches each.
const SNAPSHOT_BYTES_MAX: u64 = 64 << 20;
/// Applied entries between two checkpoints of the state machine, by default.
pub const CHECKPOINT_EVERY_ENTRIES: u64 = 4096;
const CHECKPOINT_FILE: &str = "sm-checkpoint";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// End offset of the last applied entry: the partition's high watermark.
    high_watermark: u64,
    /// Idempotent producers' epochs and last batches, as of the last applied entry.
    producers: ProducerStates,
}

struct SmInner {
    data: SmData,
    snapshot: Option<(SnapshotMetaOf<TypeConfig>, Vec<u8>)>,
    /// Index of the last applied entry in the newest checkpoint on disk.
    checkpointed: u64,
}

/// Cheap to clone; every clone sees the same state.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
    log: Option<Arc<LogShared>>,
    /// Applied entries between two checkpoints.
    checkpoint_every_entries: u64,
    /// Woken whenever the high watermark moves (long-polling readers wait on it).
    advanced: Arc<tokio::sync::Notify>,
}

fn opts() -> impl Options {
    bincode::DefaultOptions::new().with_limit(SNAPSHOT_BYTES_MAX).with_fixint_encoding()
}

impl StateMachine {
    /// A state machine reading offsets from `log` (None only in storage-suite tests, where
    /// entries are not backed by a partition log).
    pub fn new(log: Option<Arc<LogShared>>, checkpoint_every_entries: u64) -> StateMachine {
        let data = log.as_ref().and_then(|l| load_checkpoint(l)).unwrap_or_default();
        let checkpointed = data.last_applied.map_or(0, |l| l.index);
        StateMachine {
            inner: Arc::new(Mutex::new(SmInner { data, snapshot: None, checkpointed })),
            log,
            checkpoint_every_entries: checkpoint_every_entries.max(1),
            advanced: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Writes a checkpoint when enough entries were applied since the last one.
    async fn maybe_checkpoint(&self) -> io::Result<()> {
        let Some(log) = &self.log else { return Ok(()) };
        let bytes = {
            let g = self.inner();
            let applied = g.data.last_applied.map_or(0, |l| l.index);
            if applied < g.checkpointed + self.checkpoint_every_entries {
                return Ok(());
            }
            let bytes = opts().serialize(&g.data).map_err(io::Error::other)?;
            (keel_core::storage::seal(bytes), applied)
        };
        let (storage, dir) = (log.storage.clone(), log.dir.clone());
        let (body, applied) = bytes;
        crate::rt::blocking(move || keel_core::storage::write_atomic(&*storage, &dir, CHECKPOINT_FILE, &body))
            .await?
            .map_err(|e| log.note(e))?;
        self.inner().checkpointed = applied;
        Ok(())
    }

    fn inner(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// End offset of the last applied entry: consumers never read at or past it.
    pub fn high_watermark(&self) -> u64 {
        self.inner().data.high_watermark
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.inner().data.last_applied
    }

    pub fn advanced(&self) -> &Arc<tokio::sync::Notify> {
        &self.advanced
    }

    /// A copy of the producer state as of the last applied entry.
    pub fn producers(&self) -> ProducerStates {
        self.inner().data.producers.clone()
    }

    /// The applied batch of `batch`'s producer and epoch with `batch`'s sequence range, if the
    /// state still remembers it.
    pub fn stored_batch(&self, batch: &ProducerBatch) -> Option<StoredBatch> {
        let g = self.inner();
        let entry = g.data.producers.get(batch.producer_id).filter(|e| e.epoch == batch.epoch)?;
        let last_seq = batch.last_seq();
        entry.batches.iter().find(|b| b.first_seq == batch.first_seq && b.last_seq == last_seq).copied()
    }

    /// The offsets the stored entry at `index` occupies.
    fn applied_range(&self, index: u64) -> io::Result<Applied> {
        let Some(log) = &self.log else {
            return Ok(Applied::default());
        };
        let meta = log.log().entry_meta(index).map_err(|e| io::Error::other(e.to_string()))?;
        let meta = meta.ok_or_else(|| io::Error::other(format!("applied entry {index} is not in the log")))?;
        Ok(Applied { base_offset: meta.base_offset, offset_count: meta.offset_count })
    }
}

/// The checkpoint in the partition directory, if it is intact and its last applied entry is in
/// the log with the same term.
fn load_checkpoint(log: &LogShared) -> Option<SmData> {
    let path = log.dir.join(CHECKPOINT_FILE);
    let bytes = match keel_core::storage::read_whole(&*log.storage, &path) {
        Ok(b) => b?,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "state machine checkpoint unreadable; re-applying the log");
            return None;
        }
    };
    let Some(body) = keel_core::storage::unseal(&bytes) else {
        tracing::warn!(path = %path.display(), "state machine checkpoint fails its checksum; re-applying the log");
        return None;
    };
    let data: SmData = opts().deserialize(body).ok()?;
    let last = data.last_applied?;
    let stored = log.log().entry_meta(last.index).ok().flatten();
    if stored.map(|m| m.term) != Some(super::term_of(&last)) {
        tracing::warn!(
            path = %path.display(),
            index = last.index,
            "state machine checkpoint is ahead of or disagrees with the log; re-applying the log"
        );
        return None;
    }
    tracing::info!(index = last.index, "state machine restored from its checkpoint");
    Some(data)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Cursor<Vec<u8>>>, io::Error> {
        let mut g = self.inner();
        let bytes = opts().serialize(&g.data).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: g.data.last_applied,
            last_membership: g.data.membership.clone(),
        };
        g.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(SnapshotOf::<TypeConfig, _> { meta, snapshot: Cursor::new(bytes) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let g = self.inner();
        Ok((g.data.last_applied, g.data.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let applied = self.applied_range(entry.log_id.index)?;
            {
                let mut g = self.inner();
                g.data.last_applied = Some(entry.log_id);
                if self.log.is_some() {
                    g.data.high_watermark = applied.base_offset + applied.offset_count;
                }
                match entry.payload {
                    EntryPayload::Membership(m) => {
                        g.data.membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                    EntryPayload::Normal(batch) if self.log.is_some() => {
                        // The leader checked the bytes before proposing them; a header that does
                        // not parse here carries no producer state.
                        let producer = BatchHeader::parse(&batch.0).ok().and_then(|h| ProducerBatch::of(&h));
                        if let Some(p) = producer {
                            g.data.producers.record(&p, applied.base_offset, applied.offset_count);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(r) = responder {
                r.send(Response::Partition(applied));
            }
        }
        self.advanced.notify_waiters();
        self.maybe_checkpoint().await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let data: SmData =
            opts().deserialize(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let mut g = self.inner();
        g.data = data;
        g.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, Cursor<Vec<u8>>>>, io::Error> {
        let g = self.inner();
        Ok(g.snapshot
            .as_ref()
            .map(|(m, d)| SnapshotOf::<TypeConfig, _> { meta: m.clone(), snapshot: Cursor::new(d.clone()) }))
    }
}
