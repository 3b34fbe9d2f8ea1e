//! Truncation of a conflicting suffix (Raft) and purging of a prefix (retention, snapshots), and
//! that both survive a crash once synced.

mod common;

use common::*;
use keel_core::log::PartitionLog;
use keel_core::storage::Storage;
use keel_core::storage::sim::SimStorage;

fn metas(log: &PartitionLog) -> Vec<keel_core::log::EntryMeta> {
    check_log(log).into_iter().map(|e| e.meta).collect()
}

/// Syncs, crashes the disk, reopens: what was synced must come back exactly.
fn sync_crash_reopen(log: &mut PartitionLog, storage: &std::sync::Arc<SimStorage>) -> PartitionLog {
    sync(log, storage.as_ref());
    let before = metas(log);
    let (start, next, off) = (log.first_index(), log.next_index(), log.start_offset());
    storage.crash();
    let (reopened, report) = open(storage, log.config());
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(metas(&reopened), before);
    if !before.is_empty() {
        assert_eq!((reopened.first_index(), reopened.next_index(), reopened.start_offset()), (start, next, off));
    }
    reopened
}

/// Protects Raft truncation: entries from the point on vanish (also across segments), offsets
/// restart at the truncation point, and the result survives a crash once synced.
#[test]
fn truncate_mid_segment_and_across_segments_then_append() {
    for seed in 0..8 {
        let storage = sim(seed);
        let (mut log, _) = open(&storage, &tiny_config());
        log.append(1, 1, data_batch(2, 20, 0), 0).expect("append");
        append_n(&mut log, 29, 1, 0);
        let before = metas(&log);
        let segments = log.segment_count();
        sync(&mut log, storage.as_ref());
        assert_eq!(log.durable_index(), Some(30));

        // Mid-segment, in the active segment.
        log.truncate_from(29).expect("truncate");
        assert_eq!(log.next_index(), 29);
        assert_eq!(log.next_offset(), before[27].next_offset());
        assert_eq!(log.durable_index(), Some(28));
        append_n(&mut log, 2, 2, 0);
        assert_eq!(metas(&log)[28].base_offset, before[27].next_offset());
        let mut log = sync_crash_reopen(&mut log, &storage);

        // Across segments: into an early sealed segment.
        log.truncate_from(8).expect("truncate");
        assert!(log.segment_count() < segments);
        assert_eq!(log.next_index(), 8);
        assert_eq!(log.next_offset(), before[6].next_offset());
        assert_eq!(metas(&log), before[..7].to_vec());
        append_n(&mut log, 12, 3, 0);
        let after = metas(&log);
        assert_eq!(after[7].base_offset, before[6].next_offset());
        assert_eq!(after[7].term, 3);
        let mut log = sync_crash_reopen(&mut log, &storage);

        // Exactly at a segment boundary.
        let boundary = log.read(1..log.next_index(), usize::MAX).expect("read");
        let _ = boundary;
        log.truncate_from(log.next_index() - 1).expect("truncate last");
        log.truncate_from(100).expect("past the end is a no-op");
        let mut log = sync_crash_reopen(&mut log, &storage);

        // Everything.
        log.truncate_from(0).expect("truncate all");
        assert!(log.is_empty());
        assert_eq!((log.first_index(), log.next_index(), log.next_offset()), (1, 1, 0));
        log.append(1, 4, data_batch(1, 5, 0), 0).expect("append after emptying");
        let log = sync_crash_reopen(&mut { log }, &storage);
        assert_eq!(log.next_index(), 2);
    }
}

/// Protects truncation at the exact first index of a later segment: the earlier segment stays
/// whole and the durable index can advance again.
#[test]
fn truncate_at_segment_boundary_keeps_durability_moving() {
    let storage = sim(9);
    let (mut log, _) = open(&storage, &tiny_config());
    log.append(1, 1, data_batch(1, 20, 0), 0).expect("append");
    append_n(&mut log, 20, 1, 0);
    sync(&mut log, storage.as_ref());
    // Find a segment boundary: the first index after which offsets come from a new file.
    let names = storage.file_names();
    let bases: Vec<u64> =
        names.iter().filter_map(|p| p.file_name()?.to_str()?.strip_suffix(".log")?.parse().ok()).collect();
    assert!(bases.len() >= 3);
    let boundary = bases[2];
    log.truncate_from(boundary).expect("truncate at boundary");
    assert_eq!(log.next_index(), boundary);
    assert_eq!(log.durable_index(), Some(boundary - 1));
    sync(&mut log, storage.as_ref());
    assert_eq!(log.durable_index(), Some(boundary - 1));
    append_n(&mut log, 3, 2, 0);
    sync(&mut log, storage.as_ref());
    assert_eq!(log.durable_index(), Some(boundary + 2));
    sync_crash_reopen(&mut log, &storage);
}

/// Protects purge: reads stop returning purged entries, start offset follows, whole segments
/// are deleted, and log-start makes it survive a crash; purging past the end empties the log
/// but keeps next_offset.
#[test]
fn purge_through_and_past_the_end() {
    for seed in 0..8 {
        let storage = sim(seed);
        let (mut log, _) = open(&storage, &tiny_config());
        log.append(1, 1, data_batch(1, 20, 0), 0).expect("append");
        append_n(&mut log, 29, 1, 0);
        let before = metas(&log);
        let files = storage.file_names().len();
        log.purge_through(0).expect("below the start is a no-op");
        assert_eq!(log.first_index(), 1);

        log.purge_through(12).expect("purge");
        assert_eq!(log.first_index(), 13);
        assert_eq!(log.start_offset(), before[12].base_offset);
        assert!(storage.file_names().len() < files, "whole segments deleted");
        assert_eq!(
            log.read(0..14, usize::MAX).expect("read").iter().map(|e| e.meta.index).collect::<Vec<_>>(),
            vec![13]
        );
        assert_eq!(log.entry_meta(12).expect("meta"), None);
        let got = log.read_from_offset(0, u64::MAX, 1).expect("fetch below start");
        assert_eq!(got[0].meta.index, 13);
        assert_eq!(metas(&log), before[12..].to_vec());
        let mut log = sync_crash_reopen(&mut log, &storage);
        assert_eq!(log.start_offset(), before[12].base_offset);
        assert!(log.offset_for_timestamp(0).expect("by time") == Some(before[12].base_offset));

        let next_offset = log.next_offset();
        log.purge_through(40).expect("purge past the end");
        assert!(log.is_empty());
        assert_eq!(
            (log.first_index(), log.next_index(), log.next_offset(), log.start_offset()),
            (41, 41, next_offset, next_offset)
        );
        assert_eq!(log.durable_index(), None);
        storage.crash();
        let (mut log, _) = open(&storage, log.config());
        assert_eq!((log.first_index(), log.next_index(), log.next_offset()), (41, 41, next_offset));
        log.append(41, 2, data_batch(2, 5, 0), 0).expect("append after purge");
        assert_eq!(log.last_entry().map(|m| m.base_offset), Some(next_offset));
        sync_crash_reopen(&mut log, &storage);
    }
}

/// Protects an empty log's start moving below log-start (e.g. a fresh follower fed from an earlier
/// index): the entries must not be mistaken for purged ones after a reopen.
#[test]
fn append_on_empty_log_below_log_start_survives_reopen() {
    let storage = sim(11);
    let (mut log, _) = open(&storage, &tiny_config());
    log.purge_through(99).expect("purge empty");
    assert_eq!(log.next_index(), 100);
    log.truncate_from(0).expect("no-op on empty");
    log.append(50, 1, data_batch(1, 5, 0), 0).expect("append below start");
    append_n(&mut log, 5, 1, 0);
    assert_eq!(log.first_index(), 50);
    sync_crash_reopen(&mut log, &storage);
}

/// Protects reopening without a crash (clean restart) after truncate and purge.
#[test]
fn clean_reopen_after_truncate_and_purge() {
    let storage = sim(12);
    let (mut log, _) = open(&storage, &tiny_config());
    log.append(1, 1, data_batch(1, 20, 0), 0).expect("append");
    append_n(&mut log, 25, 1, 0);
    log.truncate_from(20).expect("truncate");
    log.purge_through(5).expect("purge");
    append_n(&mut log, 3, 2, 0);
    let before = metas(&log);
    drop(log);
    let (log, report) = open(&storage, &tiny_config());
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(metas(&log), before);
    assert_eq!(log.first_index(), 6);
    assert_eq!(log.durable_index(), Some(22), "recovery syncs what it found");
    let _ = storage.list(&dir()).expect("list");
}
