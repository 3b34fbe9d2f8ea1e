//! Kafka RecordBatch v2: the one on-disk and on-wire unit of Keel's partition log.
//!
//! Layout of the 61-byte header (big-endian), as Kafka defines it:
//!
//! | offset | field                | notes                                   |
//! |-------:|----------------------|-----------------------------------------|
//! | 0      | baseOffset i64       | rewritten by the log on append          |
//! | 8      | batchLength i32      | bytes after this field                  |
//! | 12     | partitionLeaderEpoch | rewritten by the log: the Raft term     |
//! | 16     | magic i8 (= 2)       |                                         |
//! | 17     | crc u32 (CRC32C)     | covers bytes 21..end                    |
//! | 21     | attributes i16       | compression, timestamp type, control    |
//! | 23     | lastOffsetDelta i32  | record count - 1                        |
//! | 27     | baseTimestamp i64    |                                         |
//! | 35     | maxTimestamp i64     |                                         |
//! | 43     | producerId i64       |                                         |
//! | 51     | producerEpoch i16    |                                         |
//! | 53     | baseSequence i32     |                                         |
//! | 57     | recordsCount i32     |                                         |
//!
//! Only `baseOffset` and `partitionLeaderEpoch` lie outside the CRC, so the log may rewrite them
//! and still store (and serve) the producer's bytes unchanged otherwise.
//!
//! Raft blank and membership entries are stored as *control batches* (attribute bit 5) holding one
//! control record whose key is `(version 0, type)` with a Keel-private type, the way Kafka's own
//! KRaft log stores its leader-change and voter records. Consumers skip control batches.
//!
//! Decoding never panics: every malformed input is a [`BatchError`].

use bytes::Bytes;
use thiserror::Error;

/// Size of the fixed RecordBatch v2 header.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batchLength`'s count starts (baseOffset + batchLength).
pub const LENGTH_PREFIX_BYTES: usize = 12;
/// The only record batch format Keel accepts.
pub const MAGIC_V2: i8 = 2;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORDS_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Control record type of a Raft blank entry (a new leader's first entry).
pub const CONTROL_RAFT_BLANK: i16 = 0x4B01;
/// Control record type of a Raft membership entry; the value is the serialized membership.
pub const CONTROL_RAFT_MEMBERSHIP: i16 = 0x4B02;

/// Why a byte string is not an acceptable RecordBatch v2.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("record batch truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("record batch length field {0} is invalid")]
    BadLength(i32),
    #[error("record batch magic {0} is not 2")]
    BadMagic(i8),
    #[error("record batch CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch has {0} records; at least one is required")]
    Empty(i32),
    #[error("record batch lastOffsetDelta {last_offset_delta} disagrees with recordsCount {count}")]
    CountMismatch { last_offset_delta: i32, count: i32 },
    #[error("record batch of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("control batch is malformed: {0}")]
    BadControl(&'static str),
    #[error("record is malformed: {0}")]
    BadRecord(&'static str),
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The parsed fixed header of one batch. Cheap to copy; holds no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Whole batch size in bytes, header included (`12 + batchLength`).
    pub total_bytes: usize,
    pub leader_epoch: i32,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `bytes` (which may hold more than one batch). Checks
    /// magic and that the length is sane, not the CRC and not that the whole batch is present.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < HEADER_BYTES {
            return Err(BatchError::Truncated { needed: HEADER_BYTES, have: bytes.len() });
        }
        let length = be_i32(bytes, OFF_LENGTH);
        if length < (HEADER_BYTES - LENGTH_PREFIX_BYTES) as i32 {
            return Err(BatchError::BadLength(length));
        }
        let magic = bytes[OFF_MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        Ok(BatchHeader {
            base_offset: be_i64(bytes, OFF_BASE_OFFSET),
            total_bytes: LENGTH_PREFIX_BYTES + length as usize,
            leader_epoch: be_i32(bytes, OFF_LEADER_EPOCH),
            crc: be_u32(bytes, OFF_CRC),
            attributes: be_i16(bytes, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(bytes, OFF_LAST_OFFSET_DELTA),
            base_timestamp: be_i64(bytes, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(bytes, OFF_MAX_TIMESTAMP),
            producer_id: be_i64(bytes, OFF_PRODUCER_ID),
            producer_epoch: be_i16(bytes, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(bytes, OFF_BASE_SEQUENCE),
            records_count: be_i32(bytes, OFF_RECORDS_COUNT),
        })
    }

    /// Number of Kafka offsets this batch takes in a Keel partition log: `lastOffsetDelta + 1`
    /// for data, 0 for a control batch. Keel's only control batches are Raft's own entries
    /// (blank, membership; clients cannot produce control batches), and those take no Kafka
    /// offset, so a partition's offsets stay dense (0, 1, 2, … per record) however often its
    /// leadership changes. Such a batch is stamped with the offset the next record gets and is
    /// never served by Fetch.
    pub fn offset_count(&self) -> u64 {
        if self.is_control() && !cfg!(feature = "canary-raft-entries-take-offsets") {
            0
        } else {
            self.last_offset_delta as u64 + 1
        }
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// True when timestamps are LogAppendTime rather than CreateTime.
    pub fn log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }
}

/// CRC32C of a batch's CRC-covered region.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..])
}

/// Parses and fully validates one complete batch occupying exactly `bytes`: length, magic, CRC,
/// record count. `bytes_max` bounds the size. This is what a batch arriving from a producer or read
/// back from disk must pass.
pub fn validate(bytes: &[u8], bytes_max: usize) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(bytes)?;
    if h.total_bytes > bytes_max {
        return Err(BatchError::TooLarge(h.total_bytes));
    }
    if h.total_bytes != bytes.len() {
        return Err(BatchError::Truncated { needed: h.total_bytes, have: bytes.len() });
    }
    let actual = compute_crc(bytes);
    if actual != h.crc {
        return Err(BatchError::CrcMismatch { expected: h.crc, actual });
    }
    if h.records_count < 1 {
        return Err(BatchError::Empty(h.records_count));
    }
    if h.last_offset_delta < 0 || (h.compression() == 0 && h.last_offset_delta != h.records_count - 1) {
        return Err(BatchError::CountMismatch { last_offset_delta: h.last_offset_delta, count: h.records_count });
    }
    Ok(h)
}

/// Rewrites the two fields outside the CRC. `batch` must hold at least a header.
pub fn stamp(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

// ---- varints (zig-zag, as the v2 record format uses) ---------------------------------------

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn get_varlong(b: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos).ok_or(BatchError::BadRecord("varint runs past the end"))?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return Err(BatchError::BadRecord("varint overflows 64 bits"));
        }
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(BatchError::BadRecord("varint longer than 10 bytes"))
}

fn get_bytes(b: &[u8], pos: &mut usize) -> Result<Option<Bytes>, BatchError> {
    let len = get_varlong(b, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| BatchError::BadRecord("length overflows"))?;
    let end = pos.checked_add(len).ok_or(BatchError::BadRecord("length overflows"))?;
    let s = b.get(*pos..end).ok_or(BatchError::BadRecord("field runs past the end"))?;
    *pos = end;
    Ok(Some(Bytes::copy_from_slice(s)))
}

fn put_bytes(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_varlong(out, -1),
        Some(v) => {
            put_varlong(out, v.len() as i64);
            out.extend_from_slice(v);
        }
    }
}

/// One record of an uncompressed batch, as written by [`BatchBuilder`] or read by [`records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Builds uncompressed RecordBatch v2 bytes: what the simulated clients, the tests and the log's
/// own control entries produce. Production traffic arrives already encoded by Kafka clients.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    attributes: i16,
    base_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: Vec<u8>,
    count: i32,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn new(base_timestamp_ms: i64) -> BatchBuilder {
        BatchBuilder {
            attributes: 0,
            base_timestamp: base_timestamp_ms,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records: Vec::new(),
            count: 0,
            max_timestamp: base_timestamp_ms,
        }
    }

    /// Marks the batch as idempotent: producer id, epoch and the first record's sequence.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> BatchBuilder {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn control(mut self) -> BatchBuilder {
        self.attributes |= ATTR_CONTROL;
        self
    }

    pub fn push(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        let mut body = Vec::with_capacity(16 + key.map_or(0, |k| k.len()) + value.map_or(0, |v| v.len()));
        body.push(0); // record attributes
        put_varlong(&mut body, timestamp_ms - self.base_timestamp);
        put_varlong(&mut body, self.count as i64);
        put_bytes(&mut body, key);
        put_bytes(&mut body, value);
        put_varlong(&mut body, 0); // no headers
        put_varlong(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(&body);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished batch, base offset 0 and leader epoch -1, CRC set.
    pub fn build(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_BYTES + self.records.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        let length = (HEADER_BYTES - LENGTH_PREFIX_BYTES + self.records.len()) as i32;
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&self.attributes.to_be_bytes());
        b.extend_from_slice(&(self.count - 1).to_be_bytes());
        b.extend_from_slice(&self.base_timestamp.to_be_bytes());
        b.extend_from_slice(&self.max_timestamp.to_be_bytes());
        b.extend_from_slice(&self.producer_id.to_be_bytes());
        b.extend_from_slice(&self.producer_epoch.to_be_bytes());
        b.extend_from_slice(&self.base_sequence.to_be_bytes());
        b.extend_from_slice(&self.count.to_be_bytes());
        b.extend_from_slice(&self.records);
        let crc = compute_crc(&b);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

/// Decodes the records of an uncompressed batch (the whole batch, header included).
pub fn records(batch: &[u8]) -> Result<Vec<Record>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.compression() != 0 {
        return Err(BatchError::BadRecord("compressed batches are not decoded here"));
    }
    let body = batch
        .get(HEADER_BYTES..h.total_bytes)
        .ok_or(BatchError::Truncated { needed: h.total_bytes, have: batch.len() })?;
    let count = usize::try_from(h.records_count).map_err(|_| BatchError::Empty(h.records_count))?;
    let mut out = Vec::with_capacity(count.min(body.len()));
    let mut pos = 0usize;
    for _ in 0..count {
        let len = get_varlong(body, &mut pos)?;
        let len = usize::try_from(len).map_err(|_| BatchError::BadRecord("negative record length"))?;
        let end = pos.checked_add(len).ok_or(BatchError::BadRecord("record length overflows"))?;
        let rec = body.get(pos..end).ok_or(BatchError::BadRecord("record runs past the batch"))?;
        let mut p = 1usize; // skip record attributes
        if rec.is_empty() {
            return Err(BatchError::BadRecord("empty record"));
        }
        let timestamp_delta = get_varlong(rec, &mut p)?;
        let offset_delta =
            i32::try_from(get_varlong(rec, &mut p)?).map_err(|_| BatchError::BadRecord("offset delta out of range"))?;
        let key = get_bytes(rec, &mut p)?;
        let value = get_bytes(rec, &mut p)?;
        out.push(Record { offset_delta, timestamp_delta, key, value });
        pos = end;
    }
    Ok(out)
}

/// Builds a control batch carrying one control record of Keel-private `control_type`.
pub fn control_batch(control_type: i16, value: &[u8], timestamp_ms: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&control_type.to_be_bytes());
    let mut b = BatchBuilder::new(timestamp_ms).control();
    b.push(timestamp_ms, Some(&key), Some(value));
    b.build()
}

/// Reads the `(type, value)` of a control batch written by [`control_batch`].
pub fn parse_control(batch: &[u8]) -> Result<(i16, Bytes), BatchError> {
    let h = BatchHeader::parse(batch)?;
    if !h.is_control() {
        return Err(BatchError::BadControl("not a control batch"));
    }
    let recs = records(batch)?;
    let [rec] = recs.as_slice() else {
        return Err(BatchError::BadControl("control batch must hold exactly one record"));
    };
    let key = rec.key.as_ref().ok_or(BatchError::BadControl("control record has no key"))?;
    if key.len() < 4 {
        return Err(BatchError::BadControl("control key shorter than 4 bytes"));
    }
    let control_type = be_i16(key, 2);
    Ok((control_type, rec.value.clone().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batch_validates_and_round_trips() {
        let mut b = BatchBuilder::new(1_000);
        b.push(1_000, Some(b"k1"), Some(b"v1"));
        b.push(1_005, None, Some(b"v2"));
        let bytes = b.build();
        let h = validate(&bytes, 1 << 20).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(h.offset_count(), 2);
        assert_eq!(h.max_timestamp, 1_005);
        let recs = records(&bytes).unwrap();
        assert_eq!(recs[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].value.as_deref(), Some(&b"v2"[..]));
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut b = BatchBuilder::new(0);
        b.push(0, None, Some(b"x"));
        let mut bytes = b.build();
        stamp(&mut bytes, 42, 7);
        let h = validate(&bytes, 1 << 20).unwrap();
        assert_eq!((h.base_offset, h.leader_epoch), (42, 7));
    }

    #[test]
    fn a_flipped_bit_is_a_crc_mismatch() {
        let mut b = BatchBuilder::new(0);
        b.push(0, None, Some(b"hello"));
        let mut bytes = b.build();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x10;
        assert!(matches!(validate(&bytes, 1 << 20), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn control_batches_round_trip() {
        let bytes = control_batch(CONTROL_RAFT_MEMBERSHIP, b"members", 9);
        let h = validate(&bytes, 1 << 20).unwrap();
        assert!(h.is_control());
        assert_eq!(parse_control(&bytes).unwrap(), (CONTROL_RAFT_MEMBERSHIP, Bytes::from_static(b"members")));
        assert_eq!(h.offset_count(), 0, "Raft's own entries take no Kafka offset (dense offsets)");
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        let mut b = BatchBuilder::new(0);
        b.push(0, Some(b"k"), Some(b"v"));
        let bytes = b.build();
        for cut in 0..bytes.len() {
            assert!(validate(&bytes[..cut], 1 << 20).is_err());
            let _ = records(&bytes[..cut]);
        }
        let _ = records(&[0xff; 80]);
        let _ = parse_control(&[0u8; 61]);
    }
}
