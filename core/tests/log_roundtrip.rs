//! Append and the read paths over several segments: what a Raft follower, a Kafka consumer and
//! ListOffsets rely on.

mod common;

use common::*;
use keel_core::batch;
use keel_core::log::{LogConfig, LogError};

/// Protects offset assignment (dense across segment rolls), header stamping and every read path
/// agreeing with what was appended, from storage (no cache) and from the cache.
#[test]
fn append_and_read_round_trip_across_segments() {
    for cache_bytes in [0usize, 1 << 20, 700] {
        let storage = sim(1);
        let config = LogConfig { tail_cache_bytes_max: cache_bytes, ..tiny_config() };
        let (mut log, _) = open(&storage, &config);
        assert_eq!((log.first_index(), log.next_index(), log.next_offset()), (0, 0, 0));
        let mut appended = Vec::new();
        for i in 1..=40u64 {
            let term = 1 + i / 10;
            let batch = if i % 7 == 0 {
                blank_batch(1000 + i as i64)
            } else {
                data_batch(1 + (i as usize % 3), 20, 1000 + i as i64 * 10)
            };
            let meta = log.append(i, term, batch, 0).expect("append");
            assert_eq!(meta.index, i);
            assert_eq!(meta.is_control, i % 7 == 0);
            appended.push(meta);
        }
        assert!(log.segment_count() >= 5, "tiny segments roll: {}", log.segment_count());
        assert_eq!(log.first_index(), 1);
        assert_eq!(log.start_offset(), 0);
        let entries = check_log(&log);
        assert_eq!(entries.iter().map(|e| e.meta).collect::<Vec<_>>(), appended);

        // read: sub-ranges and byte limits.
        let some = log.read(10..20, usize::MAX).expect("read");
        assert_eq!(some.iter().map(|e| e.meta.index).collect::<Vec<_>>(), (10..20).collect::<Vec<_>>());
        let one = log.read(10..20, 1).expect("read");
        assert_eq!(one.len(), 1, "at least one entry even over the byte limit");
        let limit = (appended[9].bytes + appended[10].bytes) as usize;
        assert_eq!(log.read(10..20, limit).expect("read").len(), 2);
        assert!(log.read(41..50, usize::MAX).expect("read").is_empty());
        assert_eq!(log.read(0..2, usize::MAX).expect("read").len(), 1);

        // read_from_offset: from the batch containing the offset, bounded by the limit.
        for m in &appended {
            for offset in m.base_offset..m.next_offset() {
                let got = log.read_from_offset(offset, log.next_offset(), usize::MAX).expect("fetch");
                assert_eq!(got.first().map(|e| e.meta), Some(*m), "offset {offset}");
                let data_from_here = appended.iter().filter(|a| a.index >= m.index && !a.is_control).count();
                assert_eq!(got.len(), data_from_here, "control entries are never fetched");
            }
        }
        // Dense Kafka offsets: Raft's control entries take none, records take one each.
        let records: u64 = appended.iter().filter(|m| !m.is_control).map(|m| m.offset_count).sum();
        assert_eq!(log.next_offset(), records);
        for m in appended.iter().filter(|m| m.is_control) {
            assert_eq!(m.offset_count, 0);
            let got = log.read_from_offset(m.base_offset, u64::MAX, usize::MAX).expect("fetch");
            assert!(got.iter().all(|e| !e.meta.is_control));
            let next_data = appended.iter().find(|a| a.index > m.index && !a.is_control);
            assert_eq!(got.first().map(|e| e.meta.index), next_data.map(|a| a.index));
        }
        let hw = appended[19].next_offset();
        let got = log.read_from_offset(0, hw, usize::MAX).expect("fetch");
        assert_eq!(got.last().map(|e| e.meta.index), Some(20), "nothing reaching the high watermark");
        let got = log.read_from_offset(0, hw - 1, usize::MAX).expect("fetch");
        assert!(got.last().is_some_and(|e| e.meta.next_offset() < hw));
        assert!(log.read_from_offset(log.next_offset(), u64::MAX, 100).expect("fetch").is_empty());
        assert_eq!(log.read_from_offset(0, u64::MAX, 1).expect("fetch").len(), 1);

        // offset_for_timestamp: first batch whose max timestamp reaches ts.
        for ts in [0, 1000, 1011, 1100, 1234, 1395, 1400, 1401] {
            let expect = appended.iter().find(|m| m.max_timestamp >= ts).map(|m| m.base_offset);
            assert_eq!(log.offset_for_timestamp(ts).expect("by time"), expect, "ts {ts}");
        }
        assert_eq!(log.offset_for_timestamp(i64::MAX).expect("by time"), None);
    }
}

/// Protects the stored bytes being exactly the producer's batch apart from the two stamped
/// fields (Fetch serves them as they are).
#[test]
fn stored_batch_is_the_producers_bytes_stamped() {
    let storage = sim(2);
    let (mut log, _) = open(&storage, &tiny_config());
    let original = data_batch(3, 10, 5);
    log.append(7, 3, original.clone(), 0).expect("append");
    log.append(8, 3, original.clone(), 0).expect("append");
    let e = &log.read(8..9, usize::MAX).expect("read")[0];
    let mut expect = original;
    batch::stamp(&mut expect, 3, 3);
    assert_eq!(&e.bytes[..], &expect[..]);
}

/// Protects the append preconditions: contiguity, term range and monotonicity, batch validity.
#[test]
fn append_rejects_invalid_input_without_failing_the_log() {
    let storage = sim(3);
    let (mut log, _) = open(&storage, &tiny_config());
    log.append(5, 2, data_batch(1, 5, 0), 0).expect("any index starts an empty log");
    assert_eq!(log.first_index(), 5);
    assert!(matches!(log.append(7, 2, data_batch(1, 5, 0), 0), Err(LogError::NotContiguous { expected: 6, got: 7 })));
    assert!(matches!(log.append(6, 1, data_batch(1, 5, 0), 0), Err(LogError::TermRegressed { .. })));
    assert!(matches!(log.append(6, 1 << 31, data_batch(1, 5, 0), 0), Err(LogError::TermTooLarge(_))));
    let mut bad = data_batch(1, 5, 0);
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(matches!(log.append(6, 2, bad, 0), Err(LogError::InvalidBatch(_))));
    let cfg = log.config().clone();
    assert!(matches!(
        log.append(6, 2, data_batch(1, cfg.batch_bytes_max, 0), 0),
        Err(LogError::InvalidBatch(batch::BatchError::TooLarge(_)))
    ));
    assert!(log.is_failed().is_none());
    log.append(6, 2, data_batch(1, 5, 0), 0).expect("valid append still works");
    check_log(&log);
}

/// Protects roll by age: a segment older than segment_age_ms_max rolls on the next append.
#[test]
fn segments_roll_by_age() {
    let storage = sim(4);
    let config = LogConfig { segment_bytes_max: 1 << 20, segment_age_ms_max: 1000, ..tiny_config() };
    let (mut log, _) = open(&storage, &config);
    log.append(1, 1, data_batch(1, 5, 0), 10_000).expect("append");
    log.append(2, 1, data_batch(1, 5, 0), 10_500).expect("append");
    log.append(3, 1, data_batch(1, 5, 0), 11_000).expect("append");
    assert_eq!(log.segment_count(), 1);
    log.append(4, 1, data_batch(1, 5, 0), 11_001).expect("append");
    assert_eq!(log.segment_count(), 2, "older than 1000 ms rolls");
    log.append(5, 1, data_batch(1, 5, 0), 11_500).expect("append");
    assert_eq!(log.segment_count(), 2);
    check_log(&log);
}

/// Protects the sparse indexes on a big segment: lookups from every index entry land right.
#[test]
fn lookups_inside_one_large_segment() {
    let storage = sim(5);
    let config = LogConfig { segment_bytes_max: 1 << 20, index_interval_bytes: 500, ..tiny_config() };
    let (mut log, _) = open(&storage, &config);
    append_n(&mut log, 300, 1, 0);
    assert_eq!(log.segment_count(), 1);
    let all = check_log(&log);
    for e in all.iter().step_by(7) {
        let got = log.read(e.meta.index..e.meta.index + 1, 0).expect("read");
        assert_eq!(got[0].meta, e.meta);
        let got = log.read_from_offset(e.meta.next_offset() - 1, u64::MAX, 0).expect("fetch");
        assert_eq!(got[0].meta, e.meta);
    }
}
