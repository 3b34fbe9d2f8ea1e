//! `RaftLogStorage` over the partition's segment log, with group commit.
//!
//! Write path of one `append` (see docs/architecture.md):
//! 1. under the log lock, each entry is encoded ([`super::entry_codec`]), validated, stamped with
//!    its base offset and term, and written to the active segment (not yet durable); the
//!    completion callback is queued behind those bytes;
//! 2. the partition's flusher ([`LogStore::run_flusher`]) takes a sync plan of everything
//!    written so far, fsyncs it *without* the log lock (appends continue meanwhile), and then
//!    completes every callback queued before the plan — one fsync acknowledges every append that
//!    arrived while the previous fsync ran (group commit);
//! 3. openraft counts this replica toward the quorum only after its callback completed.
//!
//! A failed fsync or write fails the log closed: the error reaches openraft as a storage error,
//! which stops this Raft group; nothing is retried or ignored.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use keel_core::log::EntryMeta;
use keel_core::log::LogConfig;
use keel_core::log::LogError;
use keel_core::log::PartitionLog;
use keel_core::log::RecoveryReport;
use keel_core::storage::Op;
use keel_core::storage::Storage;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogReader;
use openraft::storage::RaftLogStorage;

use super::Batch;
use super::Entry;
use super::LogId;
use super::TypeConfig;
use super::Vote;
use super::entry_codec;
use super::hard_state::HardState;
use super::log_id;
use super::replicate_bytes;
use crate::clock;
use crate::rt;
use crate::transport::TransportConfig;

/// Bytes of one `try_get_log_entries` read (openraft's apply path; at least one entry is always
/// returned). Replication reads are bounded much tighter: see [`LogStore::with_entries_bytes_max`].
const READ_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The `canary-follower-truncates-committed` build over-truncates only logs longer than this.
const CANARY_TRUNCATE_LOG_MIN: u64 = 4;

/// State shared by the log store handle, its readers, the flusher and the partition.
pub struct LogShared {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    log: Mutex<PartitionLog>,
    hard: Mutex<HardState>,
    /// Callbacks of appends whose bytes are written but not yet known durable, oldest first.
    pending: Mutex<VecDeque<IOFlushed<TypeConfig>>>,
    /// Wakes the flusher when something was written.
    wakeup: tokio::sync::Notify,
    /// One sync at a time, so durability only moves forward.
    sync_lock: tokio::sync::Mutex<()>,
    /// acks=1 producers waiting for their batch to be durable in this log (see
    /// [`LogShared::watch_local`]).
    local: Mutex<Vec<LocalWaiter>>,
    /// Where the duration of each fsync is recorded (the node's metrics), once set.
    fsync_seconds: OnceLock<prometheus::Histogram>,
    /// A write outside the segment log (`raft-state`, the checkpoint) found the disk full.
    no_space: AtomicBool,
    /// An fsync failed: the replica must not recover by itself (the fail-closed rule).
    fsync_failed: AtomicBool,
}

/// One batch whose local durability someone awaits, named by the identity of its bytes.
struct LocalWaiter {
    ptr: usize,
    len: usize,
    appended: Option<EntryMeta>,
    tx: tokio::sync::oneshot::Sender<EntryMeta>,
}

impl LogShared {
    /// The partition log, for readers (Fetch, the state machine). Never hold it across `.await`.
    pub fn log(&self) -> MutexGuard<'_, PartitionLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hard(&self) -> MutexGuard<'_, HardState> {
        self.hard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn local(&self) -> MutexGuard<'_, Vec<LocalWaiter>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers once `batch` — these very bytes, as handed to openraft — is appended to this log
    /// *and* fsynced: the leader's durable local append (acks=1). The receiver never answers if
    /// the batch is not appended here (this replica is not the leader, or openraft refused it);
    /// callers race it against the commit.
    pub fn watch_local(&self, batch: &Bytes) -> tokio::sync::oneshot::Receiver<EntryMeta> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut local = self.local();
        local.retain(|w| !w.tx.is_closed());
        local.push(LocalWaiter { ptr: batch.as_ptr() as usize, len: batch.len(), appended: None, tx });
        rx
    }

    /// Notes where a watched batch landed.
    fn note_appended(&self, payload: &Bytes, meta: EntryMeta) {
        let mut local = self.local();
        if local.is_empty() {
            return;
        }
        let (ptr, len) = (payload.as_ptr() as usize, payload.len());
        if let Some(w) = local.iter_mut().find(|w| w.ptr == ptr && w.len == len && w.appended.is_none()) {
            w.appended = Some(meta);
        }
    }

    /// Answers the watchers whose batches are now durable; forgets the abandoned ones and those
    /// whose entries were truncated away.
    fn settle_local(&self) {
        let durable = self.log().durable_index();
        let mut local = self.local();
        if local.is_empty() {
            return;
        }
        let mut i = 0;
        while i < local.len() {
            let ready = local[i].appended.is_some_and(|m| durable.is_some_and(|d| m.index <= d));
            if ready || local[i].tx.is_closed() {
                let w = local.swap_remove(i);
                if let (true, Some(meta)) = (ready, w.appended) {
                    let _ = w.tx.send(meta);
                }
            } else {
                i += 1;
            }
        }
    }

    fn forget_local_from(&self, index: u64) {
        self.local().retain(|w| w.appended.is_none_or(|m| m.index < index));
    }

    /// Whether what stopped this replica was a full disk and nothing else: no fsync failed, and
    /// the log failed for space or `raft-state` could not be written for space.
    pub fn stopped_for_space(&self) -> bool {
        if self.fsync_failed.load(Ordering::Acquire) {
            return false;
        }
        let log = self.log();
        match log.is_failed() {
            Some(_) => log.failed_for_space(),
            None => self.no_space.load(Ordering::Acquire),
        }
    }

    /// Notes an error of a write outside the log (`raft-state`, the state machine checkpoint),
    /// for [`LogShared::stopped_for_space`].
    pub(crate) fn note(&self, e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::StorageFull {
            self.no_space.store(true, Ordering::Release);
        }
        e
    }

    /// Closes the log's files (the replica was removed or is being reopened) and lets the
    /// flusher end.
    pub fn close(&self) {
        self.log().close();
        self.fail_pending("log closed");
        self.wakeup.notify_one();
    }

    /// Records the duration of each fsync from now on in `histogram` (the first call wins).
    pub fn record_fsyncs_in(&self, histogram: prometheus::Histogram) {
        let _ = self.fsync_seconds.set(histogram);
    }

    fn pending(&self) -> MutexGuard<'_, VecDeque<IOFlushed<TypeConfig>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes everything written so far durable and completes the callbacks waiting for it.
    pub async fn sync_once(&self) -> io::Result<()> {
        let _serial = self.sync_lock.lock().await;
        let (plan, waiting) = {
            let mut log = self.log();
            if let Some(reason) = log.is_failed() {
                let reason = reason.to_string();
                drop(log);
                self.fail_pending(&reason);
                return Err(io::Error::other(reason));
            }
            let waiting = self.pending().len();
            (log.prepare_sync(), waiting)
        };
        if let Some(plan) = plan {
            let started = tokio::time::Instant::now();
            let latency = self.storage.injected_latency(Op::Sync);
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let storage = self.storage.clone();
            // The plan travels to the blocking call and back, so completing it needs no sharing.
            let synced = rt::blocking(move || {
                let r = plan.execute(&*storage);
                r.map(|()| plan)
            })
            .await
            .and_then(|r| r);
            if let Some(h) = self.fsync_seconds.get() {
                h.observe(started.elapsed().as_secs_f64());
            }
            let plan = match synced {
                Ok(plan) => plan,
                Err(e) => {
                    self.fsync_failed.store(true, Ordering::Release);
                    let reason = format!("fsync of {} failed: {e}", self.dir.display());
                    tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed; partition stops (fail closed)");
                    self.log().fail(reason.clone());
                    self.fail_pending(&reason);
                    return Err(io::Error::other(reason));
                }
            };
            self.log().complete_sync(plan);
        }
        let done: Vec<_> = {
            let mut pending = self.pending();
            let n = waiting.min(pending.len());
            pending.drain(..n).collect()
        };
        for cb in done {
            cb.io_completed(Ok(()));
        }
        self.settle_local();
        Ok(())
    }

    fn fail_pending(&self, reason: &str) {
        let failed: Vec<_> = self.pending().drain(..).collect();
        for cb in failed {
            cb.io_completed(Err(io::Error::other(reason.to_string())));
        }
    }
}

/// The `RaftLogStorage` (and `RaftLogReader`) of one partition. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<LogShared>,
    /// Entry bytes (as encoded on the wire) one replication read returns at most, beyond its
    /// first entry: what one AppendEntries frame holds ([`replicate_bytes::entries_bytes_max`]).
    entries_bytes_max: usize,
}

fn io_err(e: LogError) -> io::Error {
    let kind = match &e {
        LogError::Corrupt { .. } | LogError::InvalidBatch(_) => io::ErrorKind::InvalidData,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

impl LogStore {
    /// Opens (recovering) the partition in `dir`: segments under `dir/log/`, the Raft hard state
    /// in `dir/raft-state`.
    pub fn open(storage: Arc<dyn Storage>, dir: PathBuf, config: LogConfig) -> io::Result<(LogStore, RecoveryReport)> {
        let (mut log, report) = PartitionLog::open(storage.clone(), dir.join("log"), config).map_err(io_err)?;
        let hard = HardState::load(&*storage, &dir)?;
        if let Some(purged) = &hard.last_purged {
            // A crash between writing raft-state and deleting segments leaves purged entries on
            // disk; hide them again.
            if log.first_index() <= purged.index {
                log.purge_through(purged.index).map_err(io_err)?;
            }
        }
        let shared = Arc::new(LogShared {
            storage,
            dir,
            log: Mutex::new(log),
            hard: Mutex::new(hard),
            pending: Mutex::new(VecDeque::new()),
            wakeup: tokio::sync::Notify::new(),
            sync_lock: tokio::sync::Mutex::new(()),
            local: Mutex::new(Vec::new()),
            fsync_seconds: OnceLock::new(),
            no_space: AtomicBool::new(false),
            fsync_failed: AtomicBool::new(false),
        });
        let entries_bytes_max = replicate_bytes::entries_bytes_max(TransportConfig::new("-").frame_bytes_max);
        Ok((LogStore { shared, entries_bytes_max }, report))
    }

    /// Bounds replication reads to what one AppendEntries over a transport with frames of
    /// `frame_bytes_max` bytes holds (the default is the default transport's).
    pub fn with_frame_bytes_max(mut self, frame_bytes_max: usize) -> LogStore {
        self.entries_bytes_max = replicate_bytes::entries_bytes_max(frame_bytes_max);
        self
    }

    pub fn shared(&self) -> &Arc<LogShared> {
        &self.shared
    }

    /// The group-commit loop of this partition: runs until the log fails.
    pub async fn run_flusher(shared: Arc<LogShared>) {
        loop {
            shared.wakeup.notified().await;
            if shared.sync_once().await.is_err() {
                return;
            }
        }
    }

    fn last_purged(&self) -> Option<LogId> {
        self.shared.hard().last_purged
    }
}

impl LogStore {
    /// The stored entries of `start..end` that the log still holds, at most `bytes_max` bytes
    /// (at least one entry).
    fn read_stored(&self, start: u64, end: u64, bytes_max: usize) -> Result<Vec<keel_core::log::LogEntry>, io::Error> {
        let log = self.shared.log();
        let (start, end) = (start.max(log.first_index()), end.min(log.next_index()));
        if start >= end {
            return Ok(Vec::new());
        }
        log.read(start..end, bytes_max).map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        let stored = self.read_stored(start, end, READ_BYTES_MAX)?;
        stored.iter().map(entry_codec::decode).collect()
    }

    /// Replication's read: the longest prefix of `start..end` whose entries fit in one
    /// AppendEntries frame (at least one entry), so no message the transport refuses is built.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        if cfg!(feature = "canary-replication-unbounded") {
            // The old bound: up to openraft's 64 entries and 64 MiB, whatever the frame holds.
            return self.try_get_log_entries(start..end).await;
        }
        // Stored bytes are within a few bytes of an entry's wire bytes; the exact cut is made
        // below on the wire sizes.
        let stored = self.read_stored(start, end, self.entries_bytes_max)?;
        let mut entries = stored.iter().map(entry_codec::decode).collect::<Result<Vec<_>, _>>()?;
        let keep = replicate_bytes::fitting_prefix(
            entries.iter().map(replicate_bytes::entry_wire_bytes),
            self.entries_bytes_max,
        );
        entries.truncate(keep);
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.hard().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged = self.last_purged();
        let last = self.shared.log().last_entry().map(|m| log_id(m.term, m.index));
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut next = self.shared.hard().clone();
        next.vote = Some(*vote);
        let storage = self.shared.storage.clone();
        let dir = self.shared.dir.clone();
        let to_store = next.clone();
        rt::blocking(move || to_store.store(&*storage, &dir)).await?.map_err(|e| self.shared.note(e))?;
        *self.shared.hard() = next;
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let now_ms = clock::wall_clock_ms();
        {
            let mut log = self.shared.log();
            for entry in entries {
                let (term, bytes) = entry_codec::encode(&entry)?;
                let meta = log.append(entry.index(), term, bytes, now_ms).map_err(io_err)?;
                if let EntryPayload::Normal(Batch(payload)) = &entry.payload {
                    self.shared.note_appended(payload, meta);
                }
            }
            if cfg!(feature = "canary-ack-before-fsync") {
                // CANARY: reports the entries durable before any fsync.
                callback.io_completed(Ok(()));
            } else {
                self.shared.pending().push_back(callback);
            }
        }
        self.shared.wakeup.notify_one();
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        // Settle every queued append first, so no callback waits on bytes about to be removed.
        self.shared.sync_once().await?;
        let mut from = last_log_id.map_or(0, |l| l.index + 1);
        if cfg!(feature = "canary-follower-truncates-committed") && from > CANARY_TRUNCATE_LOG_MIN {
            // CANARY: removes one entry more than openraft asked, the last one it wanted kept
            // (possibly committed).
            from -= 1;
        }
        self.shared.log().truncate_from(from).map_err(io_err)?;
        self.shared.forget_local_from(from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut next = self.shared.hard().clone();
        if next.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        next.last_purged = Some(log_id);
        let storage = self.shared.storage.clone();
        let dir = self.shared.dir.clone();
        let to_store = next.clone();
        rt::blocking(move || to_store.store(&*storage, &dir)).await?.map_err(|e| self.shared.note(e))?;
        *self.shared.hard() = next;
        self.shared.log().purge_through(log_id.index).map_err(io_err)?;
        Ok(())
    }
}
