//! Fail closed: a storage error stops the partition; it is never retried blindly or ignored
//! (STYLE rule 3, the fsyncgate lesson).

mod common;

use common::*;
use keel_core::log::{LogConfig, LogError};
use keel_core::storage::Storage;
use keel_core::storage::sim::SimFaults;

/// Protects against acknowledging after a failed fsync: the plan errors, the node fails the log,
/// every later call is refused, and the durable index never moved past what was really synced.
#[test]
fn sync_eio_fails_the_log() {
    let storage = sim(1);
    let (mut log, _) = open(&storage, &tiny_config());
    append_n(&mut log, 3, 1, 0);
    sync(&mut log, storage.as_ref());
    assert_eq!(log.durable_index(), Some(2));
    append_n(&mut log, 2, 1, 0);
    storage.fail_next_sync(".log");
    let plan = log.prepare_sync().expect("something to sync");
    let err = plan.execute(storage.as_ref()).expect_err("injected EIO");
    assert_eq!(err.raw_os_error(), Some(5));
    log.fail(format!("fsync: {err}"));
    assert_eq!(log.durable_index(), Some(2));
    assert!(log.is_failed().is_some());
    assert!(matches!(log.append(5, 1, data_batch(1, 5, 0), 0), Err(LogError::Failed(_))));
    assert!(matches!(log.read(0..5, usize::MAX), Err(LogError::Failed(_))));
    assert!(matches!(log.read_from_offset(0, u64::MAX, 1), Err(LogError::Failed(_))));
    assert!(matches!(log.truncate_from(1), Err(LogError::Failed(_))));
    assert!(matches!(log.purge_through(1), Err(LogError::Failed(_))));
    assert!(matches!(log.entry_meta(0), Err(LogError::Failed(_))));
    assert!(log.prepare_sync().is_none());
    // The dropped writes cannot survive a crash (fsyncgate), but the synced ones do.
    storage.crash();
    let (log, _) = open(&storage, &tiny_config());
    assert!(log.next_index() >= 3);
    check_log(&log);
}

/// Protects fail-closed appends: EIO or ENOSPC while writing fails the log at once.
#[test]
fn write_errors_inside_append_fail_the_log() {
    for case in 0..3 {
        let storage = sim(10 + case);
        let (mut log, _) = open(&storage, &tiny_config());
        append_n(&mut log, 2, 1, 0);
        match case {
            0 => storage.fail_next_write(".log"),
            1 => storage.set_faults(SimFaults { write_enospc_rate: 1.0, ..SimFaults::default() }),
            _ => storage.set_faults(SimFaults { capacity_bytes: Some(100), ..SimFaults::default() }),
        }
        let err = log.append(2, 1, data_batch(2, 30, 0), 0).expect_err("write fails");
        assert!(matches!(err, LogError::Io { .. }), "case {case}: {err}");
        assert!(log.is_failed().is_some());
        assert!(matches!(log.append(2, 1, data_batch(1, 5, 0), 0), Err(LogError::Failed(_))));
        storage.set_faults(SimFaults::default());
        storage.crash();
        let (log, _) = open(&storage, &tiny_config());
        check_log(&log);
    }
}

/// Protects sealing: an fsync error while rolling a segment fails the append and the log.
#[test]
fn sync_error_while_sealing_a_segment_fails_the_log() {
    let storage = sim(20);
    let config = LogConfig { segment_bytes_max: 300, ..tiny_config() };
    let (mut log, _) = open(&storage, &config);
    append_n(&mut log, 2, 1, 0);
    storage.fail_next_sync(".index");
    let mut failed = None;
    for _ in 0..10 {
        let index = log.next_index();
        if let Err(e) = log.append(index, 1, data_batch(2, 30, 0), 0) {
            failed = Some(e);
            break;
        }
    }
    assert!(matches!(failed, Some(LogError::Io { op: "fsync", .. })), "{failed:?}");
    assert!(log.is_failed().is_some());
}

/// Protects the group-commit bookkeeping: a plan prepared before a truncation does not make the
/// replacement entries durable, and a plan is offered until one completes.
#[test]
fn complete_sync_after_truncate_does_not_claim_new_entries() {
    let storage = sim(30);
    let (mut log, _) = open(&storage, &tiny_config());
    append_n(&mut log, 6, 1, 0);
    let plan = log.prepare_sync().expect("plan");
    assert_eq!(plan.upto_index(), 5);
    assert!(log.prepare_sync().is_some(), "still waiting until a plan completes");
    log.truncate_from(3).expect("truncate");
    append_n(&mut log, 3, 2, 0);
    plan.execute(storage.as_ref()).expect("sync");
    log.complete_sync(plan);
    assert_eq!(log.durable_index(), Some(2), "index 3.. were replaced after the plan was made");
    sync(&mut log, storage.as_ref());
    assert_eq!(log.durable_index(), Some(5));
    assert!(log.prepare_sync().is_none());
}

/// Protects the new incarnation from a stale one: a log opened before a (simulated) power loss
/// fails on its next write instead of writing into the files the reopened log now owns.
#[test]
fn stale_log_after_crash_cannot_write() {
    let storage = sim(40);
    let (mut stale, _) = open(&storage, &tiny_config());
    append_n(&mut stale, 3, 1, 0);
    sync(&mut stale, storage.as_ref());
    storage.crash();
    let (fresh, _) = open(&storage, &tiny_config());
    let err = stale.append(3, 1, data_batch(1, 5, 0), 0).expect_err("stale handle");
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    assert!(stale.is_failed().is_some());
    assert_eq!(check_log(&fresh).len(), 3);
}

/// Protects recovery from a full disk (issue 17): an append that finds the disk full fails the
/// log *for space* (an EIO does not count as such), and once there is room the log reopened from
/// the same disk — no crash — holds every entry that was durable before, and takes appends again.
#[test]
fn full_disk_fails_for_space_and_a_reopened_log_resumes() {
    for seed in 0..20 {
        let storage = sim(40 + seed);
        let (mut log, _) = open(&storage, &tiny_config());
        append_n(&mut log, 6, 1, 0);
        sync(&mut log, storage.as_ref());
        let durable = log.durable_index();
        append_n(&mut log, 1, 1, 0);
        storage.set_faults(SimFaults { disk_full: true, ..SimFaults::default() });
        let index = log.next_index();
        let err = log.append(index, 1, data_batch(3, 400, 0), 0).expect_err("the disk is full");
        assert!(err.is_no_space(), "seed {seed}: {err}");
        assert!(log.failed_for_space(), "seed {seed}");
        log.close();
        storage.set_faults(SimFaults::default());
        let (mut log, _) = open(&storage, &tiny_config());
        let last = log.last_entry().map(|m| m.index);
        keel_core::storage::space::check_nothing_acknowledged_lost(durable, last).expect("nothing durable lost");
        check_log(&log);
        let index = log.next_index();
        log.append(index, 2, data_batch(1, 5, 0), 0).expect("appends resume");
        sync(&mut log, storage.as_ref());
        assert_eq!(log.durable_index(), Some(index));
    }
    let storage = sim(99);
    let (mut log, _) = open(&storage, &tiny_config());
    append_n(&mut log, 2, 1, 0);
    storage.fail_next_write(".log");
    let index = log.next_index();
    log.append(index, 1, data_batch(1, 5, 0), 0).expect_err("EIO");
    assert!(log.is_failed().is_some() && !log.failed_for_space(), "an EIO is not a full disk");
}

/// Protects "deleting a topic frees its space at once": once a log is closed, removing its
/// directory gives every byte back, even while other holders of the log value remain.
#[test]
fn a_closed_log_holds_no_file_open() {
    let storage = sim(7);
    let (mut log, _) = open(&storage, &tiny_config());
    append_n(&mut log, 20, 1, 0);
    sync(&mut log, storage.as_ref());
    assert!(log.segment_count() > 1);
    storage.remove_dir_all(&dir()).expect("remove");
    assert!(storage.used_bytes() > 0, "open segments keep their blocks");
    log.close();
    assert_eq!(storage.used_bytes(), 0, "closing released every segment file");
    assert!(matches!(log.read(0..1, 1), Err(LogError::Failed(_))));
}
