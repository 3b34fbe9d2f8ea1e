//! The tail cache: the most recent entries, bounded by bytes, so that Raft replication and
//! tailing consumers read what was just appended without touching storage.
//!
//! Invariant: the cached entries are contiguous and, when any are cached, the last one is the
//! log's last entry.

use std::collections::VecDeque;

use super::LogEntry;

#[derive(Debug)]
pub struct TailCache {
    entries: VecDeque<LogEntry>,
    bytes: usize,
    /// Upper bound of the summed batch sizes held.
    bytes_max: usize,
}

impl TailCache {
    pub fn new(bytes_max: usize) -> TailCache {
        TailCache { entries: VecDeque::new(), bytes: 0, bytes_max }
    }

    /// Adds the new last entry of the log, evicting the oldest ones over the bound.
    pub fn push(&mut self, entry: LogEntry) {
        debug_assert!(self.entries.back().is_none_or(|b| b.meta.index + 1 == entry.meta.index));
        self.bytes += entry.bytes.len();
        self.entries.push_back(entry);
        while self.bytes > self.bytes_max {
            match self.entries.pop_front() {
                Some(e) => self.bytes -= e.bytes.len(),
                None => break,
            }
        }
    }

    /// Index of the first cached entry.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.meta.index)
    }

    /// Base offset of the first cached entry.
    pub fn first_offset(&self) -> Option<u64> {
        self.entries.front().map(|e| e.meta.base_offset)
    }

    pub fn get(&self, index: u64) -> Option<&LogEntry> {
        let first = self.first_index()?;
        let i = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(i)
    }

    /// Entries from `index` on, in order.
    pub fn iter_from(&self, index: u64) -> impl Iterator<Item = &LogEntry> {
        let skip = self.first_index().map_or(0, |f| index.saturating_sub(f));
        self.entries.iter().skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }

    /// First cached entry whose offsets reach `offset` (the batch containing it or a later one).
    pub fn find_offset(&self, offset: u64) -> Option<&LogEntry> {
        let i = self.entries.partition_point(|e| e.meta.next_offset() <= offset);
        self.entries.get(i)
    }

    /// Forgets entries with index >= `index` (truncation).
    pub fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.meta.index >= index) {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= e.bytes.len();
            }
        }
    }

    /// Forgets entries with index < `index` (purge).
    pub fn purge_before(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.meta.index < index) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.bytes.len();
            }
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}
