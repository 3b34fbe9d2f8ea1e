//! The log on the real file system: what a production node runs.

mod common;

use std::sync::Arc;

use common::*;
use keel_core::log::PartitionLog;
use keel_core::storage::Storage;
use keel_core::storage::fs::FsStorage;

/// Protects the FsStorage implementation end to end: append across segments, sync, truncate,
/// purge, reopen (clean restart) and the files on disk named as documented.
#[test]
fn fs_round_trip_and_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("topic-0");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let config = tiny_config();
    let (mut log, _) = open_at(storage.clone(), &dir, &config);
    log.append(1, 1, data_batch(2, 20, 100), 0).expect("append");
    append_n(&mut log, 29, 1, 100);
    log.append(31, 2, blank_batch(500), 0).expect("control");
    sync(&mut log, storage.as_ref());
    assert_eq!(log.durable_index(), Some(31));
    log.truncate_from(28).expect("truncate");
    append_n(&mut log, 4, 3, 200);
    log.purge_through(4).expect("purge");
    sync(&mut log, storage.as_ref());
    let before = check_log(&log).into_iter().map(|e| (e.meta, e.bytes)).collect::<Vec<_>>();
    let (first, next, start_offset) = (log.first_index(), log.next_index(), log.start_offset());
    drop(log);

    let names = storage.list(&dir).expect("list");
    assert!(names.contains(&"log-start".to_string()));
    assert!(names.iter().any(|n| n.len() == 24 && n.ends_with(".log")), "{names:?}");
    assert!(names.iter().all(|n| !n.ends_with(".tmp")));

    let (log, report) = PartitionLog::open(storage.clone(), dir.clone(), config.clone()).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert!(report.indexes_rebuilt.is_empty(), "{report:?}");
    assert_eq!((log.first_index(), log.next_index(), log.start_offset()), (first, next, start_offset));
    let after = check_log(&log).into_iter().map(|e| (e.meta, e.bytes)).collect::<Vec<_>>();
    assert_eq!(after, before);
    assert_eq!(log.offset_for_timestamp(0).expect("by time"), Some(start_offset));

    // A torn tail on a real file: cut on open.
    drop(log);
    let last = storage.list(&dir).expect("list").into_iter().rfind(|n| n.ends_with(".log")).expect("segment");
    let f = storage.open(&dir.join(&last), false).expect("open");
    let len = f.len().expect("len");
    f.write_all_at(len, &[1, 2, 3]).expect("garbage tail");
    drop(f);
    let (log, report) = PartitionLog::open(storage, dir, config).expect("reopen");
    assert_eq!(report.truncated_bytes, 3);
    assert_eq!(log.next_index(), next);
}
