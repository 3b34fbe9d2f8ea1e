//! One segment: a `.log` file of batches back to back, named by the Raft index of its first entry,
//! with its sparse offset and time indexes (in memory, mirrored in `.index` / `.timeindex`).
//!
//! A batch's Raft index is not stored in it: it is the segment's base index plus the number of
//! batches before it. Lookups binary-search the sparse index, then walk batch headers forward
//! (one 61-byte `pread` per batch).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::index::{self, ENTRY_BYTES, IndexEntry, TimeEntry};
use super::{EntryMeta, LogEntry, LogError};
use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::storage::{Storage, StorageFile};

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_SUFFIX: &str = ".timeindex";

/// `{base_index:020}{suffix}`.
pub fn file_name(base_index: u64, suffix: &str) -> String {
    format!("{base_index:020}{suffix}")
}

/// Parses `{base_index}{suffix}`: `None` when the name has another suffix, `Some(Err)` when the
/// suffix matches but the stem is not a number.
pub fn parse_name(name: &str, suffix: &str) -> Option<Result<u64, ()>> {
    let stem = name.strip_suffix(suffix)?;
    let ok = !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit());
    Some(if ok { stem.parse().map_err(|_| ()) } else { Err(()) })
}

/// Where a walk over a segment's batches stands: the batch starting at `pos` is entry `index`
/// with base offset `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub pos: u64,
    pub index: u64,
    pub offset: u64,
}

impl Cursor {
    pub fn advance(&mut self, meta: &EntryMeta) {
        self.pos += u64::from(meta.bytes);
        self.index += 1;
        self.offset = meta.next_offset();
    }
}

/// Checks the fields of a header read from disk that decoding could trip over and builds the
/// entry's metadata. `Err` holds the reason.
pub fn meta_from_header(h: &BatchHeader, index: u64) -> Result<EntryMeta, String> {
    if h.base_offset < 0 {
        return Err(format!("negative base offset {}", h.base_offset));
    }
    if h.leader_epoch < 0 {
        return Err(format!("negative leader epoch {}", h.leader_epoch));
    }
    if h.last_offset_delta < 0 {
        return Err(format!("negative lastOffsetDelta {}", h.last_offset_delta));
    }
    let bytes = u32::try_from(h.total_bytes).map_err(|_| format!("batch of {} bytes", h.total_bytes))?;
    Ok(EntryMeta {
        index,
        term: h.leader_epoch as u64,
        base_offset: h.base_offset as u64,
        offset_count: h.offset_count(),
        max_timestamp: h.max_timestamp,
        is_control: h.is_control(),
        bytes,
    })
}

#[derive(Debug)]
pub struct Segment {
    pub base_index: u64,
    /// Base offset of the first batch.
    pub base_offset: u64,
    pub next_index: u64,
    pub next_offset: u64,
    /// Length of the `.log` file (all of it holds complete batches).
    pub size_bytes: u64,
    /// Largest batch max timestamp in the segment.
    pub max_timestamp: i64,
    /// The last entry; `None` only while a new segment is being filled by recovery or a roll.
    pub last: Option<EntryMeta>,
    pub log: Arc<dyn StorageFile>,
    pub log_path: PathBuf,
    pub index_file: Arc<dyn StorageFile>,
    pub index_path: PathBuf,
    pub time_file: Arc<dyn StorageFile>,
    pub time_path: PathBuf,
    pub index: Vec<IndexEntry>,
    pub time_index: Vec<TimeEntry>,
    /// `now_ms` of the first append in this process (age-based roll); unknown after recovery
    /// until the next append, so a restart restarts the segment's age clock.
    pub created_ms: Option<i64>,
}

impl Segment {
    /// Opens (creating when `create`) the three files of segment `base_index`; no entries yet.
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        base_index: u64,
        base_offset: u64,
        create: bool,
    ) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_index, LOG_SUFFIX));
        let index_path = dir.join(file_name(base_index, INDEX_SUFFIX));
        let time_path = dir.join(file_name(base_index, TIME_SUFFIX));
        let log = storage.open(&log_path, create).map_err(LogError::io("open", &log_path))?;
        let index_file = storage.open(&index_path, true).map_err(LogError::io("open", &index_path))?;
        let time_file = storage.open(&time_path, true).map_err(LogError::io("open", &time_path))?;
        Ok(Segment {
            base_index,
            base_offset,
            next_index: base_index,
            next_offset: base_offset,
            size_bytes: 0,
            max_timestamp: i64::MIN,
            last: None,
            log,
            log_path,
            index_file,
            index_path,
            time_file,
            time_path,
            index: Vec::new(),
            time_index: Vec::new(),
            created_ms: None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.next_index == self.base_index
    }

    pub fn start_cursor(&self) -> Cursor {
        Cursor { pos: 0, index: self.base_index, offset: self.base_offset }
    }

    fn cursor_of(&self, e: &IndexEntry) -> Cursor {
        Cursor {
            pos: u64::from(e.position),
            index: self.base_index + u64::from(e.rel_index),
            offset: self.base_offset + u64::from(e.rel_offset),
        }
    }

    /// Reads the header of the batch at `cur` and checks it is where the walk expects it.
    pub fn read_meta(&self, cur: &Cursor) -> Result<EntryMeta, LogError> {
        let corrupt = |reason: String| LogError::corrupt(&self.log_path, cur.pos, reason);
        if cur.pos + HEADER_BYTES as u64 > self.size_bytes {
            return Err(corrupt(format!("no batch header fits before the end {}", self.size_bytes)));
        }
        let mut buf = [0u8; HEADER_BYTES];
        self.log.read_exact_at(cur.pos, &mut buf).map_err(LogError::io("read", &self.log_path))?;
        let h = BatchHeader::parse(&buf).map_err(|e| corrupt(e.to_string()))?;
        let meta = meta_from_header(&h, cur.index).map_err(corrupt)?;
        if meta.base_offset != cur.offset {
            return Err(corrupt(format!("base offset {} where {} was expected", meta.base_offset, cur.offset)));
        }
        if cur.pos + u64::from(meta.bytes) > self.size_bytes {
            return Err(corrupt(format!("batch of {} bytes runs past the end", meta.bytes)));
        }
        Ok(meta)
    }

    /// Reads the whole batch at `cur` (whose header gave `meta`) and verifies its CRC.
    pub fn read_entry(&self, cur: &Cursor, meta: EntryMeta) -> Result<LogEntry, LogError> {
        let mut buf = vec![0u8; meta.bytes as usize];
        self.log.read_exact_at(cur.pos, &mut buf).map_err(LogError::io("read", &self.log_path))?;
        batch::validate(&buf, usize::MAX).map_err(|e| LogError::corrupt(&self.log_path, cur.pos, e.to_string()))?;
        Ok(LogEntry { meta, bytes: Bytes::from(buf) })
    }

    /// A cursor at entry `index`, which must lie in `base_index..=next_index`.
    pub fn seek_index(&self, index: u64) -> Result<Cursor, LogError> {
        let rel = index.saturating_sub(self.base_index);
        let mut cur = index::floor_by_index(&self.index, rel).map_or(self.start_cursor(), |e| self.cursor_of(&e));
        while cur.index < index {
            let meta = self.read_meta(&cur)?;
            cur.advance(&meta);
        }
        Ok(cur)
    }

    /// A cursor at the batch containing `offset`, or the first batch after it, or the end.
    pub fn seek_offset(&self, offset: u64) -> Result<Cursor, LogError> {
        let rel = offset.saturating_sub(self.base_offset);
        let mut cur = index::floor_by_offset(&self.index, rel).map_or(self.start_cursor(), |e| self.cursor_of(&e));
        while cur.pos < self.size_bytes {
            let meta = self.read_meta(&cur)?;
            if meta.next_offset() > offset {
                break;
            }
            cur.advance(&meta);
        }
        Ok(cur)
    }

    /// First offset in this segment, at or after entry `from_index`, whose batch max timestamp
    /// is >= `ts`.
    pub fn offset_for_timestamp(&self, ts: i64, from_index: u64) -> Result<Option<u64>, LogError> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        let mut cur = match index::time_search_start(&self.time_index, ts) {
            Some(rel_offset) => self.seek_offset(self.base_offset + u64::from(rel_offset))?,
            None => self.start_cursor(),
        };
        if cur.index < from_index {
            cur = self.seek_index(from_index)?;
        }
        while cur.pos < self.size_bytes {
            let meta = self.read_meta(&cur)?;
            if meta.max_timestamp >= ts {
                return Ok(Some(meta.base_offset));
            }
            cur.advance(&meta);
        }
        Ok(None)
    }

    /// Records a batch appended at `pos` in memory: counters and, per the rules in [`index`], the
    /// sparse index entries, which are returned for the caller to write.
    pub fn note_batch(
        &mut self,
        pos: u64,
        meta: EntryMeta,
        interval_bytes: u32,
    ) -> (Option<IndexEntry>, Option<TimeEntry>) {
        debug_assert_eq!(pos, self.size_bytes);
        debug_assert_eq!(meta.index, self.next_index);
        self.max_timestamp = self.max_timestamp.max(meta.max_timestamp);
        let mut added = (None, None);
        let due = self.index.last().is_none_or(|e| {
            pos - u64::from(e.position) >= u64::from(interval_bytes)
                && meta.base_offset - self.base_offset > u64::from(e.rel_offset)
        });
        if due {
            // The caller rolls segments before relative values or positions outgrow u32.
            let e = IndexEntry {
                rel_offset: (meta.base_offset - self.base_offset) as u32,
                rel_index: (meta.index - self.base_index) as u32,
                position: pos as u32,
            };
            self.index.push(e);
            added.0 = Some(e);
            if self.time_index.last().is_none_or(|t| self.max_timestamp > t.max_timestamp) {
                let t = TimeEntry { max_timestamp: self.max_timestamp, rel_offset: e.rel_offset };
                self.time_index.push(t);
                added.1 = Some(t);
            }
        }
        self.size_bytes = pos + u64::from(meta.bytes);
        self.next_index = meta.index + 1;
        self.next_offset = meta.next_offset();
        self.last = Some(meta);
        added
    }

    /// Writes a batch (already stamped) at the end and its index entries. Not synced.
    pub fn append(&mut self, bytes: &[u8], meta: EntryMeta, interval_bytes: u32) -> Result<(), LogError> {
        let pos = self.size_bytes;
        self.log.write_all_at(pos, bytes).map_err(LogError::io("write", &self.log_path))?;
        let (ie, te) = self.note_batch(pos, meta, interval_bytes);
        if let Some(ie) = ie {
            let at = ((self.index.len() - 1) * ENTRY_BYTES) as u64;
            self.index_file.write_all_at(at, &ie.encode()).map_err(LogError::io("write", &self.index_path))?;
        }
        if let Some(te) = te {
            let at = ((self.time_index.len() - 1) * ENTRY_BYTES) as u64;
            self.time_file.write_all_at(at, &te.encode()).map_err(LogError::io("write", &self.time_path))?;
        }
        Ok(())
    }

    /// fsyncs the log and both index files: done when a segment is sealed.
    pub fn sync_all(&self) -> Result<(), LogError> {
        self.log.sync().map_err(LogError::io("fsync", &self.log_path))?;
        self.index_file.sync().map_err(LogError::io("fsync", &self.index_path))?;
        self.time_file.sync().map_err(LogError::io("fsync", &self.time_path))
    }

    /// Cuts the segment so that `cur` (an entry boundary after the first entry) becomes its end;
    /// `new_last` is the entry just before `cur`.
    pub fn truncate_to(&mut self, cur: Cursor, new_last: EntryMeta) -> Result<(), LogError> {
        debug_assert!(cur.index > self.base_index && cur.index == new_last.index + 1);
        self.log.set_len(cur.pos).map_err(LogError::io("truncate", &self.log_path))?;
        let rel_index = cur.index - self.base_index;
        let rel_offset = cur.offset - self.base_offset;
        self.index.retain(|e| u64::from(e.rel_index) < rel_index);
        // Time entries sit on offset index entries: keep exactly those of the kept ones (an index
        // entry below the cut may share the cut's offset when control entries follow it).
        let index = &self.index;
        self.time_index.retain(|t| index.binary_search_by_key(&t.rel_offset, |e| e.rel_offset).is_ok());
        debug_assert!(self.time_index.iter().all(|t| u64::from(t.rel_offset) <= rel_offset));
        for (file, path, n) in [
            (&self.index_file, &self.index_path, self.index.len()),
            (&self.time_file, &self.time_path, self.time_index.len()),
        ] {
            file.set_len((n * ENTRY_BYTES) as u64).map_err(LogError::io("truncate", path))?;
        }
        self.size_bytes = cur.pos;
        self.next_index = cur.index;
        self.next_offset = cur.offset;
        self.last = Some(new_last);
        // The running maximum at the last index entry is the last time entry's (see `index`);
        // batches after that entry are walked.
        self.max_timestamp = self.time_index.last().map_or(i64::MIN, |t| t.max_timestamp);
        let mut walk = self.index.last().map_or(self.start_cursor(), |e| self.cursor_of(e));
        while walk.pos < self.size_bytes {
            let meta = self.read_meta(&walk)?;
            self.max_timestamp = self.max_timestamp.max(meta.max_timestamp);
            walk.advance(&meta);
        }
        Ok(())
    }

    /// Removes the segment's files: the `.log` first, so an interrupted removal leaves only
    /// index files, which recovery drops as orphans.
    pub fn remove_files(&self, storage: &dyn Storage) -> Result<(), LogError> {
        for path in [&self.log_path, &self.index_path, &self.time_path] {
            match storage.remove(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(LogError::io("remove", path)(e)),
                _ => {}
            }
        }
        Ok(())
    }
}
