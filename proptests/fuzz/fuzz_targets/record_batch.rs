//! Fuzz target: a RecordBatch v2 from a producer or from disk.
//!
//! Every decoder of `keel_core::batch` must answer `Ok` or `Err` for any bytes, never panic. When
//! `validate` accepts a batch, stamping any offset and epoch must keep it valid with the same
//! records (the stamp lies outside the CRC), and a control batch must go through the Raft entry
//! codec (the path a stored control batch takes back into openraft) without panicking.
//!
//! Each input is checked twice: as given, and with its length field and CRC repaired, so that the
//! fuzzer reaches the record and control-record decoders without having to forge a CRC32C.

#![no_main]

use bytes::Bytes;
use keel_core::batch::{self, BatchHeader, HEADER_BYTES, LENGTH_PREFIX_BYTES};
use keel_core::log::{EntryMeta, LogEntry};
use libfuzzer_sys::fuzz_target;

/// What Keel passes as `bytes_max` for producer batches in tests and the default config.
const BATCH_BYTES_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= HEADER_BYTES {
        check(&repaired(data));
    }
});

/// `data` with `batchLength` matching its size and a correct CRC32C.
fn repaired(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    let length = i32::try_from(b.len() - LENGTH_PREFIX_BYTES).unwrap_or(i32::MAX);
    b[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn check(bytes: &[u8]) {
    let parsed = BatchHeader::parse(bytes);
    let records = batch::records(bytes);
    let control = batch::parse_control(bytes);
    let Ok(h) = batch::validate(bytes, BATCH_BYTES_MAX) else {
        return;
    };

    // validate is parse plus checks: same header, exactly the given bytes, under the limit.
    assert_eq!(parsed, Ok(h));
    assert_eq!(h.total_bytes, bytes.len());
    // Dense offsets: a control batch (Raft's own entry) takes none, a data batch one per offset delta.
    let data_offsets = u64::try_from(h.last_offset_delta).expect("validate refuses a negative lastOffsetDelta") + 1;
    assert_eq!(h.offset_count(), if h.is_control() { 0 } else { data_offsets });
    assert!(batch::validate(bytes, h.total_bytes - 1).is_err(), "bytes_max not enforced");

    // Stamping never breaks the CRC, and changes nothing but the two stamped fields.
    let epoch_from_bytes = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    for (base_offset, leader_epoch) in [(0, 0), (i64::MAX, i32::MAX), (-1, -1), (h.crc as i64, epoch_from_bytes)] {
        let mut stamped = bytes.to_vec();
        batch::stamp(&mut stamped, base_offset, leader_epoch);
        let hs = batch::validate(&stamped, BATCH_BYTES_MAX).expect("stamping broke a valid batch");
        assert_eq!((hs.base_offset, hs.leader_epoch), (base_offset, leader_epoch));
        assert_eq!(BatchHeader { base_offset: h.base_offset, leader_epoch: h.leader_epoch, ..hs }, h);
        assert_eq!(batch::records(&stamped), records, "stamping changed the records");
        assert_eq!(batch::parse_control(&stamped), control, "stamping changed the control record");
    }

    // A stored control batch is turned back into a Raft entry (blank or membership).
    if h.is_control() {
        let entry = LogEntry {
            meta: EntryMeta {
                index: 7,
                term: u64::from(h.leader_epoch.unsigned_abs()),
                base_offset: 0,
                offset_count: h.offset_count(),
                max_timestamp: h.max_timestamp,
                is_control: true,
                bytes: bytes.len() as u32,
            },
            bytes: Bytes::copy_from_slice(bytes),
        };
        let _ = keel_node::raft::entry_codec::decode(&entry);
    }
}
