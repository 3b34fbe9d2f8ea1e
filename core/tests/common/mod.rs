//! Helpers shared by the log's integration tests: batch makers, openers and a full-log check.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_core::batch::{self, BatchBuilder};
use keel_core::log::{LogConfig, LogEntry, PartitionLog, RecoveryReport};
use keel_core::storage::Storage;
use keel_core::storage::sim::SimStorage;

pub fn dir() -> PathBuf {
    PathBuf::from("/data/p0")
}

/// A data batch of `records` records with values of `value_bytes` bytes, timestamps from `ts`.
pub fn data_batch(records: usize, value_bytes: usize, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(ts);
    for i in 0..records {
        let value = vec![(i % 251) as u8; value_bytes];
        b.push(ts + i as i64, Some(format!("k{i}").as_bytes()), Some(&value));
    }
    b.build()
}

pub fn blank_batch(ts: i64) -> Vec<u8> {
    batch::control_batch(batch::CONTROL_RAFT_BLANK, b"", ts)
}

/// Small segments and a dense index so every test crosses segments and index entries.
pub fn tiny_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 600,
        segment_age_ms_max: i64::MAX,
        index_interval_bytes: 150,
        batch_bytes_max: 1 << 20,
        tail_cache_bytes_max: 0,
    }
}

pub fn sim(seed: u64) -> Arc<SimStorage> {
    SimStorage::new(seed)
}

pub fn open(storage: &Arc<SimStorage>, config: &LogConfig) -> (PartitionLog, RecoveryReport) {
    open_at(storage.clone(), &dir(), config)
}

pub fn open_at(storage: Arc<dyn Storage>, dir: &Path, config: &LogConfig) -> (PartitionLog, RecoveryReport) {
    PartitionLog::open(storage, dir.to_path_buf(), config.clone()).expect("open")
}

/// Runs a sync plan to completion, as the node does.
pub fn sync(log: &mut PartitionLog, storage: &dyn Storage) {
    if let Some(plan) = log.prepare_sync() {
        plan.execute(storage).expect("sync plan");
        log.complete_sync(plan);
    }
}

/// Appends `n` data entries (1..=3 records each) of term `term`, timestamps from `ts`.
pub fn append_n(log: &mut PartitionLog, n: usize, term: u64, ts: i64) {
    for i in 0..n {
        let index = log.next_index();
        let records = 1 + (index as usize % 3);
        log.append(index, term, data_batch(records, 20, ts + i as i64 * 10), ts).expect("append");
    }
}

/// Reads everything and checks the log's invariants: contiguous indexes, dense offsets, terms
/// never decreasing, stamped headers, CRCs, and agreement with entry_meta. Returns the entries.
pub fn check_log(log: &PartitionLog) -> Vec<LogEntry> {
    let entries = log.read(log.first_index()..log.next_index(), usize::MAX).expect("read all");
    assert_eq!(entries.len() as u64, log.next_index() - log.first_index());
    let mut offset = log.start_offset();
    let mut term = 0;
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.meta.index, log.first_index() + i as u64);
        assert_eq!(e.meta.base_offset, offset, "offsets dense at index {}", e.meta.index);
        assert!(e.meta.term >= term, "terms never decrease");
        let h = batch::validate(&e.bytes, usize::MAX).expect("valid batch");
        assert_eq!(h.base_offset as u64, e.meta.base_offset);
        assert_eq!(h.leader_epoch as u64, e.meta.term);
        assert_eq!(log.entry_meta(e.meta.index).expect("meta"), Some(e.meta));
        offset = e.meta.next_offset();
        term = e.meta.term;
    }
    assert_eq!(offset, log.next_offset());
    assert_eq!(log.last_entry(), entries.last().map(|e| e.meta));
    entries
}
