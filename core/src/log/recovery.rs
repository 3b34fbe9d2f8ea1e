//! Opening a partition directory: finding the segments, checking or rebuilding their indexes,
//! cutting a torn tail, and refusing (with [`LogError::Corrupt`]) anything a crash cannot explain.
//!
//! Rules, in order:
//! 1. `*.tmp` files (an interrupted `write_atomic`) are removed; index files without a `.log` are
//!    removed (an interrupted segment removal); names that do not parse are ignored with a warning.
//! 2. `log-start` gives the logical start; segments wholly before it (their successor starts at or
//!    before it) are removed (an interrupted purge).
//! 3. Segments must be contiguous in Raft index, with dense offsets and terms that never decrease.
//! 4. Sealed segments (all but the last) were fsynced, indexes included, before the next segment
//!    was created, so they must be whole: their indexes are sanity-checked (see [`super::index`]),
//!    the last indexed batch's header must sit at the offset the index claims, and the batches after
//!    it are CRC-checked to the end of the file. A missing or invalid index is rebuilt by scanning
//!    (CRC-checking every batch) and rewritten atomically. Any other damage is `Corrupt`.
//! 5. The last segment is scanned batch by batch with CRC checks, its indexes rebuilt (rewritten
//!    when they differ). At position `p` the tail is *torn*, and the file is cut at `p` (set_len +
//!    fsync), when: fewer than 61 bytes remain; the header's length runs past the end; the batch
//!    ends exactly at the end and its CRC fails; or everything from `p` on is zero. A CRC failure
//!    or invalid header followed by more data is `Corrupt`, never skipped. An empty last segment
//!    is removed.
//! 6. Finally the last segment's `.log` and the directory are fsynced, so that what recovery found
//!    (perhaps still in the page cache after a process crash) is durable before it is reported as
//!    such.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use super::cache::TailCache;
use super::index::{self, IndexEntry, TimeEntry};
use super::segment::{self, Cursor, INDEX_SUFFIX, LOG_SUFFIX, Segment, TIME_SUFFIX};
use super::start::{self, LogStart};
use super::{LogConfig, LogEntry, LogError};
use crate::batch::{self, BatchError, BatchHeader, HEADER_BYTES};
use crate::storage::{self, Storage};

/// What [`super::PartitionLog::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from a torn tail of the last segment (an empty last segment counts as zero).
    pub truncated_bytes: u64,
    /// Index files that were missing or invalid and were rewritten.
    pub indexes_rebuilt: Vec<PathBuf>,
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Files removed: temporaries, orphaned indexes, segments before the start, an empty last
    /// segment.
    pub files_removed: Vec<PathBuf>,
    /// Unparseable names left alone.
    pub names_ignored: Vec<String>,
}

/// The state recovery hands to the log.
pub(super) struct Recovered {
    pub segments: Vec<Segment>,
    pub start: LogStart,
    pub disk_start: LogStart,
    pub cache: TailCache,
    pub report: RecoveryReport,
}

/// How a scan over a segment's batches ended.
enum ScanEnd {
    Clean,
    Torn { at: u64, reason: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
    LogError::io(op, path)
}

pub(super) fn recover(storage: &dyn Storage, dir: &Path, config: &LogConfig) -> Result<Recovered, LogError> {
    let mut report = RecoveryReport::default();
    let mut dir_changed = false;
    if !storage.exists(dir).map_err(io_err("stat", dir))? {
        storage.create_dir_all(dir).map_err(io_err("mkdir", dir))?;
        // Make the new directories' names durable, up to the root.
        for ancestor in dir.ancestors().skip(1) {
            storage.sync_dir(ancestor).map_err(io_err("fsync dir", ancestor))?;
        }
    }
    let names = storage.list(dir).map_err(io_err("list", dir))?;
    let mut log_bases = BTreeSet::new();
    let mut index_files = Vec::new();
    for name in names {
        let path = dir.join(&name);
        if name.ends_with(".tmp") {
            storage.remove(&path).map_err(io_err("remove", &path))?;
            report.files_removed.push(path);
            dir_changed = true;
        } else if let Some(parsed) = segment::parse_name(&name, LOG_SUFFIX) {
            match parsed {
                Ok(base) => {
                    log_bases.insert(base);
                }
                Err(()) => {
                    tracing::warn!(file = %path.display(), "ignoring a segment file whose name does not parse");
                    report.names_ignored.push(name);
                }
            }
        } else if let Some(parsed) =
            segment::parse_name(&name, INDEX_SUFFIX).or_else(|| segment::parse_name(&name, TIME_SUFFIX))
        {
            match parsed {
                Ok(base) => index_files.push((base, path)),
                Err(()) => {
                    tracing::warn!(file = %path.display(), "ignoring an index file whose name does not parse");
                    report.names_ignored.push(name);
                }
            }
        } else if name != start::FILE_NAME {
            tracing::warn!(file = %path.display(), "ignoring an unknown file in a partition directory");
            report.names_ignored.push(name);
        }
    }
    for (base, path) in index_files {
        if !log_bases.contains(&base) {
            storage.remove(&path).map_err(io_err("remove", &path))?;
            report.files_removed.push(path);
            dir_changed = true;
        }
    }

    let disk_start = LogStart::read(storage, dir)?;
    let bases: Vec<u64> = log_bases.into_iter().collect();
    // A segment whose successor starts at or before the start is wholly purged.
    let first_kept = bases.windows(2).take_while(|w| w[1] <= disk_start.index).count();
    for &base in &bases[..first_kept] {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_SUFFIX] {
            let path = dir.join(segment::file_name(base, suffix));
            remove_if_exists(storage, &path, &mut report)?;
        }
        dir_changed = true;
    }

    let mut cache = TailCache::new(config.tail_cache_bytes_max);
    let mut segments: Vec<Segment> = Vec::new();
    let kept = &bases[first_kept..];
    for (k, &base) in kept.iter().enumerate() {
        let is_last = k + 1 == kept.len();
        let (seg, created) = open_segment(storage, dir, base)?;
        dir_changed |= created;
        let prev = segments.last();
        if let Some(prev) = prev
            && prev.next_index != base
        {
            return Err(LogError::corrupt(
                &seg.log_path,
                0,
                format!("segment starts at index {base} but the one before ends at {}", prev.next_index),
            ));
        }
        let seg = if is_last {
            load_last(storage, seg, prev, config, &mut cache, &mut report)?
        } else {
            Some(load_sealed(storage, dir, seg, prev, config, &mut report)?)
        };
        match seg {
            Some(seg) => segments.push(seg),
            None => {
                dir_changed = true;
                // The empty last segment is gone, so the one before it is the active segment now.
                // It must be loaded as one (scanned, tail cached, indexes rebuilt), not as sealed.
                if let Some(sealed) = segments.pop() {
                    let base = sealed.base_index;
                    drop(sealed);
                    let (seg, created) = open_segment(storage, dir, base)?;
                    dir_changed |= created;
                    if let Some(seg) = load_last(storage, seg, segments.last(), config, &mut cache, &mut report)? {
                        segments.push(seg);
                    }
                }
            }
        }
    }

    // The logical start.
    let mut start = disk_start;
    if let Some(first) = segments.first() {
        let last_next = segments.last().map_or(first.next_index, |s| s.next_index);
        if disk_start.index >= last_next {
            // Purged past everything present (or a torn tail cut below the start).
            for seg in segments.drain(..) {
                seg.remove_files(storage)?;
                report.files_removed.push(seg.log_path.clone());
            }
            cache.clear();
            dir_changed = true;
        } else if disk_start.index > first.base_index {
            let cur = first.seek_index(disk_start.index)?;
            let meta = first.read_meta(&cur)?;
            if meta.base_offset != disk_start.offset {
                return Err(LogError::corrupt(
                    &first.log_path,
                    cur.pos,
                    format!(
                        "log-start says index {} has offset {}, the batch says {}",
                        disk_start.index, disk_start.offset, meta.base_offset
                    ),
                ));
            }
        } else {
            if first.base_offset < disk_start.offset {
                return Err(LogError::corrupt(
                    &first.log_path,
                    0,
                    format!("first offset {} is below log-start's {}", first.base_offset, disk_start.offset),
                ));
            }
            start = LogStart { index: first.base_index, offset: first.base_offset };
        }
    }
    cache.purge_before(start.index);

    // Make what was found durable before anyone treats it as such.
    if let Some(last) = segments.last() {
        last.log.sync().map_err(io_err("fsync", &last.log_path))?;
    }
    if dir_changed || !segments.is_empty() {
        storage.sync_dir(dir).map_err(io_err("fsync dir", dir))?;
    }
    report.segments = segments.len();
    Ok(Recovered { segments, start, disk_start, cache, report })
}

fn remove_if_exists(storage: &dyn Storage, path: &Path, report: &mut RecoveryReport) -> Result<(), LogError> {
    match storage.remove(path) {
        Ok(()) => {
            report.files_removed.push(path.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove", path)(e)),
    }
}

/// Opens a segment's files; `true` when an index file had to be created.
fn open_segment(storage: &dyn Storage, dir: &Path, base: u64) -> Result<(Segment, bool), LogError> {
    let mut created = false;
    for suffix in [INDEX_SUFFIX, TIME_SUFFIX] {
        let path = dir.join(segment::file_name(base, suffix));
        created |= !storage.exists(&path).map_err(io_err("stat", &path))?;
    }
    Ok((Segment::open(storage, dir, base, 0, false)?, created))
}

/// Reads and checks the header at `pos` of a file of `len` bytes during recovery.
fn read_header(seg: &Segment, pos: u64, len: u64) -> Result<Option<BatchHeader>, LogError> {
    if len.saturating_sub(pos) < HEADER_BYTES as u64 {
        return Ok(None);
    }
    let mut buf = [0u8; HEADER_BYTES];
    seg.log.read_exact_at(pos, &mut buf).map_err(io_err("read", &seg.log_path))?;
    Ok(BatchHeader::parse(&buf).ok())
}

fn all_zero(seg: &Segment, from: u64, to: u64) -> Result<bool, LogError> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf = vec![0u8; CHUNK.min(to.saturating_sub(from)) as usize];
    let mut pos = from;
    while pos < to {
        let n = CHUNK.min(to - pos) as usize;
        seg.log.read_exact_at(pos, &mut buf[..n]).map_err(io_err("read", &seg.log_path))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Sets a segment's base offset from the previous segment, or from its own first batch.
fn set_base(seg: &mut Segment, prev: Option<&Segment>, len: u64) -> Result<(), LogError> {
    let base_offset = match prev {
        Some(prev) => prev.next_offset,
        None => match read_header(seg, 0, len)? {
            Some(h) if h.base_offset >= 0 => h.base_offset as u64,
            // A bad first header: the scan below classifies it (torn or corrupt).
            _ => 0,
        },
    };
    seg.base_offset = base_offset;
    seg.next_offset = base_offset;
    Ok(())
}

/// Walks batches from `cur` to the end (`len`), CRC-checking each. With `rebuild` every batch is
/// noted with its index entries; without, only the counters move. Entries go to `cache` if given.
fn scan(
    seg: &mut Segment,
    mut cur: Cursor,
    len: u64,
    prev_term: Option<u64>,
    rebuild: bool,
    interval_bytes: u32,
    mut cache: Option<&mut TailCache>,
) -> Result<ScanEnd, LogError> {
    let mut prev_term = prev_term.or(seg.last.map(|m| m.term));
    let path = seg.log_path.clone();
    let corrupt = |pos: u64, reason: String| LogError::corrupt(&path, pos, reason);
    while cur.pos < len {
        let p = cur.pos;
        let Some(h) = read_header(seg, p, len)? else {
            if len - p < HEADER_BYTES as u64 {
                return Ok(ScanEnd::Torn { at: p, reason: "partial batch header at the end".into() });
            }
            if all_zero(seg, p, len)? {
                return Ok(ScanEnd::Torn { at: p, reason: "zeros to the end".into() });
            }
            return Err(corrupt(p, "invalid batch header followed by data".into()));
        };
        let end = p.saturating_add(h.total_bytes as u64);
        if end > len {
            return Ok(ScanEnd::Torn { at: p, reason: format!("batch of {} bytes runs past the end", h.total_bytes) });
        }
        let mut buf = vec![0u8; h.total_bytes];
        seg.log.read_exact_at(p, &mut buf).map_err(io_err("read", &path))?;
        match batch::validate(&buf, usize::MAX) {
            Ok(_) => {}
            Err(BatchError::CrcMismatch { .. }) if end == len => {
                return Ok(ScanEnd::Torn { at: p, reason: "CRC mismatch in the last batch".into() });
            }
            Err(e) => return Err(corrupt(p, format!("{e} (with more data after it)"))),
        }
        let meta = segment::meta_from_header(&h, cur.index).map_err(|r| corrupt(p, r))?;
        if meta.base_offset != cur.offset {
            return Err(corrupt(p, format!("base offset {} where {} was expected", meta.base_offset, cur.offset)));
        }
        if prev_term.is_some_and(|t| meta.term < t) {
            return Err(corrupt(p, format!("term {} after term {prev_term:?}", meta.term)));
        }
        let rel_offset = meta.next_offset() - seg.base_offset;
        if p > u64::from(u32::MAX)
            || rel_offset > u64::from(u32::MAX)
            || cur.index - seg.base_index >= u64::from(u32::MAX)
        {
            return Err(corrupt(p, "segment outgrows 32-bit relative offsets or positions".into()));
        }
        prev_term = Some(meta.term);
        if rebuild {
            seg.note_batch(p, meta, interval_bytes);
        } else {
            seg.max_timestamp = seg.max_timestamp.max(meta.max_timestamp);
            seg.size_bytes = end;
            seg.next_index = meta.index + 1;
            seg.next_offset = meta.next_offset();
            seg.last = Some(meta);
        }
        if let Some(cache) = cache.as_deref_mut() {
            cache.push(LogEntry { meta, bytes: buf.into() });
        }
        cur.advance(&meta);
    }
    Ok(ScanEnd::Clean)
}

fn reset(seg: &mut Segment) {
    seg.index.clear();
    seg.time_index.clear();
    seg.size_bytes = 0;
    seg.next_index = seg.base_index;
    seg.next_offset = seg.base_offset;
    seg.max_timestamp = i64::MIN;
    seg.last = None;
}

/// The last segment: scanned whole, torn tail cut, indexes rebuilt. `None` if it ended up empty
/// (and was removed).
fn load_last(
    storage: &dyn Storage,
    mut seg: Segment,
    prev: Option<&Segment>,
    config: &LogConfig,
    cache: &mut TailCache,
    report: &mut RecoveryReport,
) -> Result<Option<Segment>, LogError> {
    let len = seg.log.len().map_err(io_err("stat", &seg.log_path))?;
    set_base(&mut seg, prev, len)?;
    reset(&mut seg);
    let prev_term = prev.and_then(|p| p.last).map(|m| m.term);
    let from = seg.start_cursor();
    let end = scan(&mut seg, from, len, prev_term, true, config.index_interval_bytes, Some(cache))?;
    if let ScanEnd::Torn { at, reason } = end {
        tracing::warn!(file = %seg.log_path.display(), at, len, reason, "cutting a torn tail");
        seg.log.set_len(at).map_err(io_err("truncate", &seg.log_path))?;
        seg.log.sync().map_err(io_err("fsync", &seg.log_path))?;
        report.truncated_bytes += len - at;
    }
    if seg.is_empty() {
        seg.remove_files(storage)?;
        report.files_removed.push(seg.log_path.clone());
        return Ok(None);
    }
    rewrite_if_changed(storage, &seg, report, false)?;
    Ok(Some(seg))
}

/// Rewrites the index files whose contents differ from the in-memory indexes. Sealed segments'
/// files are replaced atomically (and reopened); the last segment's are rewritten in place (it is
/// rebuilt on every open anyway, and fsynced when sealed).
fn rewrite_if_changed(
    storage: &dyn Storage,
    seg: &Segment,
    report: &mut RecoveryReport,
    atomic: bool,
) -> Result<bool, LogError> {
    let mut changed = false;
    for (file, path, bytes) in [
        (&seg.index_file, &seg.index_path, index::encode_all(&seg.index, IndexEntry::encode)),
        (&seg.time_file, &seg.time_path, index::encode_all(&seg.time_index, TimeEntry::encode)),
    ] {
        let on_disk = read_file(file.as_ref(), path)?;
        if on_disk == bytes {
            continue;
        }
        changed = true;
        report.indexes_rebuilt.push(path.clone());
        if atomic {
            let (dir, name) = split(path)?;
            storage::write_atomic(storage, dir, name, &bytes).map_err(io_err("write", path))?;
        } else {
            file.set_len(0).map_err(io_err("truncate", path))?;
            file.write_all_at(0, &bytes).map_err(io_err("write", path))?;
        }
    }
    Ok(changed)
}

fn split(path: &Path) -> Result<(&Path, &str), LogError> {
    let bad = || LogError::corrupt(path, 0, "index path has no directory or name");
    let dir = path.parent().ok_or_else(bad)?;
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    Ok((dir, name))
}

fn read_file(file: &dyn crate::storage::StorageFile, path: &Path) -> Result<Vec<u8>, LogError> {
    let len = file.len().map_err(io_err("stat", path))?;
    let len = usize::try_from(len).map_err(|_| LogError::corrupt(path, 0, "file too large"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(0, &mut buf).map_err(io_err("read", path))?;
    Ok(buf)
}

/// A sealed segment: indexes checked (or rebuilt), tail after the last index entry CRC-checked.
fn load_sealed(
    storage: &dyn Storage,
    dir: &Path,
    mut seg: Segment,
    prev: Option<&Segment>,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<Segment, LogError> {
    let len = seg.log.len().map_err(io_err("stat", &seg.log_path))?;
    set_base(&mut seg, prev, len)?;
    let prev_term = prev.and_then(|p| p.last).map(|m| m.term);
    match check_sealed_indexes(&mut seg, len, prev_term)? {
        Ok(()) => Ok(seg),
        Err(reason) => {
            tracing::warn!(file = %seg.index_path.display(), reason, "rebuilding the indexes of a sealed segment");
            reset(&mut seg);
            let from = seg.start_cursor();
            let end = scan(&mut seg, from, len, prev_term, true, config.index_interval_bytes, None)?;
            if let ScanEnd::Torn { at, reason } = end {
                return Err(LogError::corrupt(&seg.log_path, at, format!("sealed segment is torn: {reason}")));
            }
            if seg.is_empty() {
                return Err(LogError::corrupt(&seg.log_path, 0, "sealed segment is empty"));
            }
            if rewrite_if_changed(storage, &seg, report, true)? {
                // The atomic rewrite replaced the files: reopen the handles.
                let fresh = Segment::open(storage, dir, seg.base_index, seg.base_offset, false)?;
                seg.index_file = fresh.index_file;
                seg.time_file = fresh.time_file;
            }
            Ok(seg)
        }
    }
}

/// Loads and checks a sealed segment's index files. The outer `Err` is a hard error (I/O or
/// corruption of the log itself); `Ok(Err(reason))` means the indexes must be rebuilt.
fn check_sealed_indexes(seg: &mut Segment, len: u64, prev_term: Option<u64>) -> Result<Result<(), String>, LogError> {
    let index_bytes = read_file(seg.index_file.as_ref(), &seg.index_path)?;
    let time_bytes = read_file(seg.time_file.as_ref(), &seg.time_path)?;
    let idx = match index::decode_offset_index(&index_bytes, len) {
        Ok(idx) => idx,
        Err(reason) => return Ok(Err(reason)),
    };
    let tidx = match index::decode_time_index(&time_bytes, &idx) {
        Ok(t) => t,
        Err(reason) => return Ok(Err(reason)),
    };
    let Some(&last) = idx.last() else {
        return Ok(Err("empty index".into()));
    };
    // The last indexed batch must start where the index says, with the offset it says.
    let cur = Cursor {
        pos: u64::from(last.position),
        index: seg.base_index + u64::from(last.rel_index),
        offset: seg.base_offset + u64::from(last.rel_offset),
    };
    seg.size_bytes = len;
    if let Err(e) = seg.read_meta(&cur) {
        return match e {
            LogError::Corrupt { reason, .. } => Ok(Err(format!("last index entry {last:?}: {reason}"))),
            other => Err(other),
        };
    }
    // The first batch must continue the previous segment's terms.
    if let Some(h) = read_header(seg, 0, len)?
        && prev_term.is_some_and(|t| (h.leader_epoch as i64) < t as i64)
    {
        return Err(LogError::corrupt(&seg.log_path, 0, format!("term {} after term {prev_term:?}", h.leader_epoch)));
    }
    seg.index = idx;
    seg.time_index = tidx;
    seg.max_timestamp = seg.time_index.last().map_or(i64::MIN, |t| t.max_timestamp);
    seg.size_bytes = cur.pos;
    seg.next_index = cur.index;
    seg.next_offset = cur.offset;
    match scan(seg, cur, len, None, false, 0, None)? {
        ScanEnd::Clean => Ok(Ok(())),
        ScanEnd::Torn { at, reason } => {
            Err(LogError::corrupt(&seg.log_path, at, format!("sealed segment is torn: {reason}")))
        }
    }
}
