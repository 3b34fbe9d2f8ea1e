//! The segment log of one partition: its Raft log and its Kafka log in one.
//!
//! Each Raft entry is exactly one RecordBatch v2 (producer data, or a control batch for Raft blank
//! and membership entries). On append the log stamps the batch's `baseOffset` (the next offset)
//! and `partitionLeaderEpoch` (the Raft term), both outside the CRC, and stores the bytes as Fetch
//! serves them.
//!
//! # Files in the partition directory
//! - `{base_index:020}.log`: a segment, batches back to back; named by the Raft index of its first
//!   entry. Its base offset is its first batch's `baseOffset`.
//! - `{base_index:020}.index` / `.timeindex`: the sparse offset and time indexes ([`index`]).
//! - `log-start`: the logical start after purges ([`start`]), written with
//!   [`crate::storage::write_atomic`]; also where numbering resumes when no segment exists.
//!
//! # Fsync discipline
//! - **Appends** write the active segment's `.log` (and index entries) without syncing. The node
//!   makes them durable by group commit, without holding the log's lock: [`PartitionLog::prepare_sync`]
//!   returns a [`SyncPlan`] (the `.log` files with unsynced writes, and the directory when files
//!   were created or removed), [`SyncPlan::execute`] fsyncs them (files first, then the
//!   directory), and [`PartitionLog::complete_sync`] records the durable index.
//! - **Sealing**: when the active segment rolls, its `.log`, `.index` and `.timeindex` are fsynced
//!   *before* the next segment is created, inside `append`. So a sealed segment is always whole on
//!   disk and a crash can never leave a gap between segments; recovery trusts sealed indexes after
//!   sanity checks. The active segment's indexes are never fsynced: recovery rebuilds them.
//! - **Directory**: creating or removing files marks the directory for the next sync plan.
//! - **Truncation** is durable when `truncate_from` returns: it fsyncs the directory (whole
//!   segments removed) and *then* the cut segment's `.log`. In that order, because a durable cut
//!   followed by new entries next to a removed segment that a crash brings back would be a gap
//!   (or a term going back) that recovery must call corruption. And durable at all, so that a
//!   crash never resurrects a conflicting suffix: after a crash the log is always a prefix of
//!   what it was, which is what Raft (and the model test) reason with. Truncations are rare.
//! - **log-start**: replaced atomically (temp file, fsync, rename, directory fsync) by
//!   `purge_through` before any segment is removed, and by the rare appends/truncations that
//!   move the start below what the file says.
//! - **Recovery** fsyncs the (possibly cut) last segment and the directory before the log opens,
//!   so everything it reports is durable.
//!
//! Any storage error while changing the log fails it closed: the error is returned and every later
//! call returns [`LogError::Failed`]. A failed [`SyncPlan::execute`] is reported with
//! [`PartitionLog::fail`].
//!
//! # Known limits
//! - Segments are capped at `u32::MAX` bytes, offsets and entries (relative index fields).
//! - After a restart the age clock of the active segment restarts at the first append.
//! - Reads of a failed log fail too; reads never change the log's state, even on corruption.

mod cache;
pub mod epochs;
mod error;
pub mod index;
mod recovery;
mod segment;
pub mod start;

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

pub use error::LogError;
pub use recovery::RecoveryReport;

use crate::batch::{self, BatchError};
use crate::storage::{Storage, StorageFile};
use cache::TailCache;
use epochs::EpochCache;
use segment::Segment;
use start::LogStart;

/// Settings of one partition log. Validated by the caller; every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls before an append would take it past this size (capped at `u32::MAX`).
    pub segment_bytes_max: u64,
    /// A segment rolls when its first append (in this process) is older than this.
    pub segment_age_ms_max: i64,
    /// Bytes of log between sparse index entries.
    pub index_interval_bytes: u32,
    /// Largest batch accepted by `append`.
    pub batch_bytes_max: usize,
    /// Bytes of recent entries kept in memory.
    pub tail_cache_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_age_ms_max: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            batch_bytes_max: (1 << 20) + 1024,
            tail_cache_bytes_max: 4 << 20,
        }
    }
}

/// What the log knows about one entry without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// Raft index.
    pub index: u64,
    /// Raft term (the batch's partitionLeaderEpoch).
    pub term: u64,
    /// Kafka offset of the batch's first record.
    pub base_offset: u64,
    /// Offsets the batch occupies (lastOffsetDelta + 1).
    pub offset_count: u64,
    pub max_timestamp: i64,
    /// A control batch (Raft blank or membership entry; consumers skip it).
    pub is_control: bool,
    /// Size of the stored batch.
    pub bytes: u32,
}

impl EntryMeta {
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.offset_count
    }
}

/// One entry with its stored batch (stamped, exactly as Fetch serves it).
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub meta: EntryMeta,
    pub bytes: Bytes,
}

/// Files to fsync so that everything appended before [`PartitionLog::prepare_sync`] is durable.
/// Executed without the log's lock; the result goes back through [`PartitionLog::complete_sync`]
/// (success) or [`PartitionLog::fail`] (error).
#[derive(Debug)]
pub struct SyncPlan {
    files: Vec<Arc<dyn StorageFile>>,
    dir: PathBuf,
    sync_dir: bool,
    /// The log's write sequence at preparation: writes up to it are covered.
    write_seq: u64,
    /// `next_index` at preparation.
    next_index: u64,
    /// Truncations at preparation: if one happened since, the plan proves nothing about the
    /// entries that replaced the truncated ones.
    truncations: u64,
}

impl SyncPlan {
    /// fsyncs the files, then the directory if needed.
    pub fn execute(&self, storage: &dyn Storage) -> io::Result<()> {
        for f in &self.files {
            f.sync()?;
        }
        if self.sync_dir {
            storage.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Highest index written when the plan was prepared (0 for an empty log).
    pub fn upto_index(&self) -> u64 {
        self.next_index.saturating_sub(1)
    }

    /// Files the plan fsyncs.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub fn syncs_dir(&self) -> bool {
        self.sync_dir
    }
}

/// The segment log of one partition. See the module docs.
#[derive(Debug)]
pub struct PartitionLog {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    config: LogConfig,
    /// Segments in index order; the last is the active one. Empty iff the log is empty.
    segments: Vec<Segment>,
    /// First index present (== next index when empty).
    start_index: u64,
    /// Kafka log start offset: base offset of the first present entry, or next offset.
    start_offset: u64,
    /// What the `log-start` file says.
    disk_start: LogStart,
    cache: TailCache,
    /// Every entry below this is durable (or purged).
    durable_next: u64,
    /// Bumped by every change to files; orders changes against sync plans.
    write_seq: u64,
    /// Files with writes not yet covered by a completed sync plan: path → (file, last write seq).
    dirty: BTreeMap<PathBuf, (Arc<dyn StorageFile>, u64)>,
    /// Write seq of the last directory change not yet covered by a completed sync plan.
    dir_dirty_seq: Option<u64>,
    truncations: u64,
    /// Set when a storage error stopped the log (fail closed).
    failed: Option<String>,
    /// Where each leader epoch (term) starts, for OffsetForLeaderEpoch; kept in step with
    /// appends, truncations and purges, rebuilt on open ([`epochs`]).
    epochs: EpochCache,
    /// Whether that error was a full disk (ENOSPC), which a node may recover from by itself.
    failed_no_space: bool,
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`, recovering from a crash. See [`recovery`].
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<(PartitionLog, RecoveryReport), LogError> {
        let r = recovery::recover(storage.as_ref(), &dir, &config)?;
        let next_index = r.segments.last().map_or(r.start.index, |s| s.next_index);
        let log = PartitionLog {
            storage,
            dir,
            config,
            segments: r.segments,
            start_index: r.start.index,
            start_offset: r.start.offset,
            disk_start: r.disk_start,
            cache: r.cache,
            durable_next: next_index,
            write_seq: 0,
            dirty: BTreeMap::new(),
            dir_dirty_seq: None,
            truncations: 0,
            failed: None,
            epochs: EpochCache::new(),
            failed_no_space: false,
        };
        let (first, next) = (log.first_index(), log.next_index());
        let epochs = EpochCache::rebuild(first, next, |index| match log.entry_meta(index)? {
            Some(m) => Ok((m.term, m.base_offset)),
            None => Err(LogError::Failed(format!("entry {index} missing while reading epochs"))),
        })?;
        // The search assumes terms never go back; recovery checked that only where it read. A
        // damaged sealed segment can break it: then the cache disagrees with the log, and the log
        // is refused as corrupt rather than served with wrong epochs.
        let increasing = epochs.starts().windows(2).all(|w| w[0].epoch < w[1].epoch && w[0].index < w[1].index);
        if !increasing || epochs.latest_epoch() != log.last_entry().map(|m| m.term) {
            return Err(LogError::corrupt(
                &log.dir,
                0,
                "terms go back somewhere in the log (the leader-epoch starts found on open disagree with its last entry)",
            ));
        }
        let mut log = log;
        log.epochs = epochs;
        log.check_invariants();
        Ok((log, r.report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// First Raft index present; equals [`PartitionLog::next_index`] when the log is empty.
    pub fn first_index(&self) -> u64 {
        self.start_index
    }

    pub fn next_index(&self) -> u64 {
        self.segments.last().map_or(self.start_index, |s| s.next_index)
    }

    pub fn last_entry(&self) -> Option<EntryMeta> {
        self.segments.last().and_then(|s| s.last)
    }

    /// Kafka log start offset.
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    /// Kafka log end offset.
    pub fn next_offset(&self) -> u64 {
        self.segments.last().map_or(self.start_offset, |s| s.next_offset)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes in segment files (including purged entries still in the first segment).
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Metadata of entry `index`; `None` outside `first_index()..next_index()`.
    pub fn entry_meta(&self, index: u64) -> Result<Option<EntryMeta>, LogError> {
        self.check_failed()?;
        if index < self.start_index || index >= self.next_index() {
            return Ok(None);
        }
        if let Some(e) = self.cache.get(index) {
            return Ok(Some(e.meta));
        }
        let seg = &self.segments[self.segment_of_index(index)];
        let cur = seg.seek_index(index)?;
        Ok(Some(seg.read_meta(&cur)?))
    }

    /// Entries with index in `range`, in order. Never more than `bytes_max` bytes of batches,
    /// except that the first entry in range is always returned.
    pub fn read(&self, range: Range<u64>, bytes_max: usize) -> Result<Vec<LogEntry>, LogError> {
        self.check_failed()?;
        let start = range.start.max(self.start_index);
        let end = range.end.min(self.next_index());
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let mut total = 0usize;
        let cached_from = self.cache.first_index().unwrap_or(u64::MAX);
        let mut index = start;
        if index < cached_from {
            let stop = end.min(cached_from);
            let mut si = self.segment_of_index(index);
            'segments: while index < stop && si < self.segments.len() {
                let seg = &self.segments[si];
                let mut cur = seg.seek_index(index)?;
                while cur.index < seg.next_index && cur.index < stop {
                    let meta = seg.read_meta(&cur)?;
                    if !fits(&out, total, meta.bytes, bytes_max) {
                        break 'segments;
                    }
                    out.push(seg.read_entry(&cur, meta)?);
                    total += meta.bytes as usize;
                    cur.advance(&meta);
                    index = cur.index;
                }
                si += 1;
            }
            if index < stop {
                return Ok(out);
            }
        }
        for e in self.cache.iter_from(index).take_while(|e| e.meta.index < end) {
            if !fits(&out, total, e.meta.bytes, bytes_max) {
                break;
            }
            total += e.bytes.len();
            out.push(e.clone());
        }
        Ok(out)
    }

    /// The Kafka read path: batches from the one containing `offset` (or the log start, if
    /// `offset` is below it: the caller checks ranges against [`PartitionLog::start_offset`]),
    /// none whose offsets reach `offset_limit` (the high watermark, exclusive), at most
    /// `bytes_max` bytes except that one qualifying batch is always returned. Raft's control
    /// entries (blank, membership) take no offset and are never returned.
    pub fn read_from_offset(
        &self,
        offset: u64,
        offset_limit: u64,
        bytes_max: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        self.check_failed()?;
        let offset = offset.max(self.start_offset);
        let mut out = Vec::new();
        if offset >= offset_limit.min(self.next_offset()) {
            return Ok(out);
        }
        let mut total = 0usize;
        let covered = self.cache.first_offset().is_some_and(|first| first <= offset);
        let from_cache = self.cache.find_offset(offset).filter(|_| covered);
        let first_cached = match from_cache {
            Some(e) => e.meta.index,
            None => {
                // From storage, up to where the cache takes over.
                let cached_from = self.cache.first_index().unwrap_or(u64::MAX);
                let mut si = self.segments.partition_point(|s| s.next_offset <= offset);
                let mut next = None;
                'segments: while si < self.segments.len() {
                    let seg = &self.segments[si];
                    let mut cur = seg.seek_offset(offset)?;
                    while cur.index < seg.next_index {
                        if cur.index >= cached_from {
                            next = Some(cur.index);
                            break 'segments;
                        }
                        let meta = seg.read_meta(&cur)?;
                        if beyond(&meta, offset_limit) || !fits(&out, total, meta.bytes, bytes_max) {
                            return Ok(out);
                        }
                        if !meta.is_control {
                            out.push(seg.read_entry(&cur, meta)?);
                            total += meta.bytes as usize;
                        }
                        cur.advance(&meta);
                    }
                    si += 1;
                }
                match next {
                    Some(i) => i,
                    None => return Ok(out),
                }
            }
        };
        for e in self.cache.iter_from(first_cached) {
            if beyond(&e.meta, offset_limit) || !fits(&out, total, e.meta.bytes, bytes_max) {
                break;
            }
            if !e.meta.is_control {
                total += e.bytes.len();
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// OffsetForLeaderEpoch: (the largest epoch <= `epoch` present, its end offset), the latest
    /// epoch ending at `log_end_offset`; see [`EpochCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, epoch: u64, log_end_offset: u64) -> Option<(u64, u64)> {
        self.epochs.end_offset_for(epoch, log_end_offset)
    }

    /// Where each leader epoch present starts.
    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }

    /// ListOffsets by time: the first offset whose batch max timestamp is >= `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>, LogError> {
        self.check_failed()?;
        for seg in &self.segments {
            if seg.next_index <= self.start_index {
                continue;
            }
            if let Some(offset) = seg.offset_for_timestamp(ts, self.start_index.max(seg.base_index))? {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }

    /// The largest batch max timestamp in the log (ListOffsets MAX_TIMESTAMP), if the log holds
    /// a batch. Callers find the record through [`PartitionLog::offset_for_timestamp`].
    pub fn max_timestamp(&self) -> Result<Option<i64>, LogError> {
        self.check_failed()?;
        Ok(self
            .segments
            .iter()
            .filter(|s| s.next_index > self.start_index && s.next_index > s.base_index)
            .map(|s| s.max_timestamp)
            .max())
    }

    /// Appends `batch` as entry `index` of Raft `term`; see the crate docs of the write path.
    ///
    /// Validates the batch (CRC, size up to `batch_bytes_max`), stamps `baseOffset` =
    /// [`PartitionLog::next_offset`] and `partitionLeaderEpoch` = `term`, and writes it to the
    /// active segment (not synced), rolling first when the segment would outgrow
    /// `segment_bytes_max` or is older than `segment_age_ms_max` at `now_ms`. `index` must be
    /// [`PartitionLog::next_index`], except on an empty log, where any index starts it.
    pub fn append(&mut self, index: u64, term: u64, batch: Vec<u8>, now_ms: i64) -> Result<EntryMeta, LogError> {
        self.check_failed()?;
        let h = batch::validate(&batch, self.config.batch_bytes_max)?;
        let bytes = u32::try_from(batch.len()).map_err(|_| BatchError::TooLarge(batch.len()))?;
        let epoch = i32::try_from(term).map_err(|_| LogError::TermTooLarge(term))?;
        if !self.is_empty() && index != self.next_index() {
            return Err(LogError::NotContiguous { expected: self.next_index(), got: index });
        }
        if i64::try_from(index).is_err() {
            return Err(LogError::IndexOverflow(index));
        }
        if let Some(last) = self.last_entry()
            && term < last.term
        {
            return Err(LogError::TermRegressed { last: last.term, got: term });
        }
        let base_offset = self.next_offset();
        let meta = EntryMeta {
            index,
            term,
            base_offset,
            offset_count: h.offset_count(),
            max_timestamp: h.max_timestamp,
            is_control: h.is_control(),
            bytes,
        };
        let stamped_offset = i64::try_from(base_offset)
            .ok()
            .filter(|_| i64::try_from(meta.next_offset()).is_ok())
            .ok_or(LogError::OffsetOverflow(base_offset))?;
        let mut batch = batch;
        batch::stamp(&mut batch, stamped_offset, epoch);
        let r = self.append_inner(meta, &batch, now_ms);
        self.guard(r)?;
        self.cache.push(LogEntry { meta, bytes: Bytes::from(batch) });
        self.epochs.on_append(index, term, base_offset);
        self.check_invariants();
        Ok(meta)
    }

    fn append_inner(&mut self, meta: EntryMeta, batch: &[u8], now_ms: i64) -> Result<(), LogError> {
        if self.is_empty() {
            if meta.index < self.disk_start.index {
                self.write_log_start(LogStart { index: meta.index, offset: self.start_offset })?;
            }
            self.start_index = meta.index;
        }
        let roll = match self.segments.last() {
            None => true,
            Some(active) => {
                let size_max = self.config.segment_bytes_max.min(u64::from(u32::MAX));
                let too_big = active.size_bytes + u64::from(meta.bytes) > size_max;
                let too_old = active
                    .created_ms
                    .is_some_and(|created| now_ms.saturating_sub(created) > self.config.segment_age_ms_max);
                let rel_too_big = meta.next_offset() - active.base_offset > u64::from(u32::MAX)
                    || meta.index - active.base_index >= u64::from(u32::MAX);
                too_big || too_old || rel_too_big
            }
        };
        if roll {
            self.roll(meta, now_ms)?;
        }
        let seq = self.bump();
        let interval = self.config.index_interval_bytes;
        let Some(active) = self.segments.last_mut() else {
            return Err(LogError::Failed("no active segment after a roll".into()));
        };
        active.created_ms.get_or_insert(now_ms);
        active.append(batch, meta, interval)?;
        self.dirty.insert(active.log_path.clone(), (Arc::clone(&active.log), seq));
        Ok(())
    }

    /// Seals the active segment (fsyncing its files, see the module docs) and starts a new one
    /// whose first entry will be `first`.
    fn roll(&mut self, first: EntryMeta, now_ms: i64) -> Result<(), LogError> {
        if let Some(active) = self.segments.last() {
            active.sync_all()?;
            // Its writes are durable now; durability of its entries is still recorded by sync
            // plans (its directory entry may not be durable yet).
            self.dirty.remove(&active.log_path);
        }
        let mut seg = Segment::open(self.storage.as_ref(), &self.dir, first.index, first.base_offset, true)?;
        for (file, path) in
            [(&seg.log, &seg.log_path), (&seg.index_file, &seg.index_path), (&seg.time_file, &seg.time_path)]
        {
            // Leftovers of a removed segment of the same name would be overwritten anyway; make sure.
            if file.len().map_err(LogError::io("stat", path))? > 0 {
                file.set_len(0).map_err(LogError::io("truncate", path))?;
            }
        }
        seg.created_ms = Some(now_ms);
        self.segments.push(seg);
        self.dir_dirty_seq = Some(self.bump());
        Ok(())
    }

    /// Removes every entry with index >= `index`, durably (everything before `index` is durable
    /// on return). No-op if `index >= next_index()`. Truncating at or below the first index
    /// empties the log (its start stays).
    pub fn truncate_from(&mut self, index: u64) -> Result<(), LogError> {
        self.check_failed()?;
        if index >= self.next_index() {
            return Ok(());
        }
        let r = self.truncate_inner(index);
        self.guard(r)?;
        self.check_invariants();
        Ok(())
    }

    fn truncate_inner(&mut self, index: u64) -> Result<(), LogError> {
        self.truncations += 1;
        self.cache.truncate_from(index);
        self.epochs.truncate_from(index);
        self.durable_next = self.durable_next.min(index);
        self.bump();
        let keep = if index <= self.start_index {
            0
        } else {
            let si = self.segment_of_index(index);
            if self.segments[si].base_index == index { si } else { si + 1 }
        };
        let removed: Vec<Segment> = self.segments.drain(keep..).collect();
        for seg in &removed {
            seg.remove_files(self.storage.as_ref())?;
            self.dirty.remove(&seg.log_path);
        }
        // Durable before returning, in this order (see the module docs): first the removals (and
        // any earlier directory change), then the cut.
        if !removed.is_empty() || self.dir_dirty_seq.is_some() {
            self.storage.sync_dir(&self.dir).map_err(LogError::io("fsync dir", &self.dir))?;
            self.dir_dirty_seq = None;
        }
        self.bump();
        let Some(active) = self.segments.last_mut() else {
            // Empty now: make sure a reopen starts where this log says it starts.
            let here = LogStart { index: self.start_index, offset: self.start_offset };
            if self.disk_start != here {
                self.write_log_start(here)?;
            }
            self.durable_next = self.start_index;
            return Ok(());
        };
        if active.next_index > index {
            let cur = active.seek_index(index)?;
            let prev = active.seek_index(index - 1)?;
            let new_last = active.read_meta(&prev)?;
            active.truncate_to(cur, new_last)?;
        }
        active.log.sync().map_err(LogError::io("fsync", &active.log_path))?;
        self.dirty.remove(&active.log_path);
        // Sealed segments were synced when sealed, the active one and the directory just now.
        self.durable_next = index;
        Ok(())
    }

    /// Logically removes every entry with index <= `index`: the start moves to `index + 1` and
    /// `start_offset` to that entry's base offset; segments wholly at or below `index` are
    /// deleted; `log-start` is rewritten atomically first. Purging past the end empties the log:
    /// `next_index = index + 1`, `next_offset` unchanged. No-op if `index < first_index()`.
    pub fn purge_through(&mut self, index: u64) -> Result<(), LogError> {
        self.check_failed()?;
        if index < self.start_index {
            return Ok(());
        }
        if i64::try_from(index).is_err() {
            return Err(LogError::IndexOverflow(index));
        }
        let r = self.purge_inner(index);
        self.guard(r)?;
        self.check_invariants();
        Ok(())
    }

    fn purge_inner(&mut self, index: u64) -> Result<(), LogError> {
        let new_start = index.saturating_add(1);
        let new_start_offset = if new_start >= self.next_index() {
            self.next_offset()
        } else {
            let seg = &self.segments[self.segment_of_index(new_start)];
            let cur = seg.seek_index(new_start)?;
            seg.read_meta(&cur)?.base_offset
        };
        self.write_log_start(LogStart { index: new_start, offset: new_start_offset })?;
        let gone = self.segments.iter().take_while(|s| s.next_index <= new_start).count();
        let removed: Vec<Segment> = self.segments.drain(..gone).collect();
        for seg in &removed {
            seg.remove_files(self.storage.as_ref())?;
            self.dirty.remove(&seg.log_path);
        }
        if !removed.is_empty() {
            self.dir_dirty_seq = Some(self.bump());
        }
        self.start_index = new_start;
        self.start_offset = new_start_offset;
        self.cache.purge_before(new_start);
        self.epochs.purge_before(new_start, new_start_offset, self.next_index());
        self.durable_next = self.durable_next.max(new_start);
        Ok(())
    }

    /// Last index known durable; `None` if no entry is.
    pub fn durable_index(&self) -> Option<u64> {
        let durable_next = self.durable_next.min(self.next_index());
        (durable_next > self.start_index).then(|| durable_next - 1)
    }

    /// What to fsync to make every entry written so far durable; `None` if nothing written is
    /// waiting for a sync (a plan still executing counts as waiting until completed).
    pub fn prepare_sync(&mut self) -> Option<SyncPlan> {
        if self.failed.is_some() || (self.dirty.is_empty() && self.dir_dirty_seq.is_none()) {
            return None;
        }
        Some(SyncPlan {
            files: self.dirty.values().map(|(f, _)| Arc::clone(f)).collect(),
            dir: self.dir.clone(),
            sync_dir: self.dir_dirty_seq.is_some(),
            write_seq: self.write_seq,
            next_index: self.next_index(),
            truncations: self.truncations,
        })
    }

    /// Records a successfully executed plan: entries up to its index are durable, unless a
    /// truncation happened after it was prepared.
    pub fn complete_sync(&mut self, plan: SyncPlan) {
        if self.failed.is_some() {
            return;
        }
        self.dirty.retain(|_, (_, seq)| *seq > plan.write_seq);
        if plan.sync_dir && self.dir_dirty_seq.is_some_and(|seq| seq <= plan.write_seq) {
            self.dir_dirty_seq = None;
        }
        if plan.truncations == self.truncations {
            self.durable_next = self.durable_next.max(plan.next_index);
        }
    }

    /// Fails the log closed: every later call returns [`LogError::Failed`].
    pub fn fail(&mut self, reason: String) {
        if self.failed.is_none() {
            tracing::error!(dir = %self.dir.display(), reason, "partition log failed closed");
            self.failed = Some(reason);
        }
    }

    pub fn is_failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether the log failed because the disk was full (ENOSPC) — a cause a node may recover
    /// from by reopening the log once there is room (`crate::storage::space`).
    pub fn failed_for_space(&self) -> bool {
        self.failed.is_some() && self.failed_no_space
    }

    /// Closes every file of the log (its replica was removed or is being reopened), so that the
    /// space of removed files is freed at once; the log is failed from now on.
    pub fn close(&mut self) {
        self.fail("log closed".into());
        self.segments.clear();
        self.dirty.clear();
    }

    fn check_failed(&self) -> Result<(), LogError> {
        match &self.failed {
            Some(reason) => Err(LogError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Fails the log on any error of a mutation.
    fn guard<T>(&mut self, r: Result<T, LogError>) -> Result<T, LogError> {
        if let Err(e) = &r {
            if self.failed.is_none() {
                self.failed_no_space = e.is_no_space();
            }
            self.fail(e.to_string());
        }
        r
    }

    fn bump(&mut self) -> u64 {
        self.write_seq += 1;
        self.write_seq
    }

    fn write_log_start(&mut self, start: LogStart) -> Result<(), LogError> {
        start.write(self.storage.as_ref(), &self.dir)?;
        self.disk_start = start;
        Ok(())
    }

    /// Position in `segments` of the segment holding `index` (which must be present).
    fn segment_of_index(&self, index: u64) -> usize {
        self.segments.partition_point(|s| s.base_index <= index).saturating_sub(1)
    }

    /// The invariants that must hold after every change (debug builds).
    fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            assert!(self.start_index <= self.next_index(), "first index past next index");
            assert!(self.start_offset <= self.next_offset(), "start offset past next offset");
            for w in self.segments.windows(2) {
                assert_eq!(w[0].next_index, w[1].base_index, "segments not contiguous in index");
                assert_eq!(w[0].next_offset, w[1].base_offset, "offsets not dense across segments");
            }
            if let Some(first) = self.segments.first() {
                assert!(first.base_index <= self.start_index && self.start_index < first.next_index);
            }
            if let Some(c) = self.cache.first_index() {
                assert!(c >= self.start_index);
            }
            let starts = self.epochs.starts();
            if self.start_index < self.next_index() {
                assert_eq!(starts.first().map(|e| e.index), Some(self.start_index), "first epoch not at the log start");
                assert_eq!(
                    self.epochs.latest_epoch(),
                    self.last_entry().map(|e| e.term),
                    "latest epoch not the last term"
                );
            } else {
                assert!(starts.is_empty(), "epochs in an empty log");
            }
        }
    }
}

/// Whether an entry lies at or past `offset_limit` (exclusive) for the Kafka read path: a data
/// batch reaching it, or a control entry standing at it (it takes no offset, but whatever
/// follows it is not below the limit either).
fn beyond(meta: &EntryMeta, offset_limit: u64) -> bool {
    meta.base_offset >= offset_limit || meta.next_offset() > offset_limit
}

/// Whether a batch of `bytes` may join `out` (holding `total` bytes) under `bytes_max`.
fn fits(out: &[LogEntry], total: usize, bytes: u32, bytes_max: usize) -> bool {
    out.is_empty() || total.saturating_add(bytes as usize) <= bytes_max
}

/// Reads the `log-start` of `dir` without opening the log (for tools and tests).
pub fn read_log_start(storage: &dyn Storage, dir: &Path) -> Result<(u64, u64), LogError> {
    let s = LogStart::read(storage, dir)?;
    Ok((s.index, s.offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protects the node's use of the log from other threads (behind a lock) and of plans
    /// executed off the lock.
    #[test]
    fn log_and_plan_are_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<PartitionLog>();
        is::<SyncPlan>();
    }
}
