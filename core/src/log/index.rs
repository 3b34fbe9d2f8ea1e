//! The sparse per-segment indexes, kept in memory and mirrored in `.index` / `.timeindex` files.
//!
//! - Offset index entry, 12 bytes big-endian: relative offset u32, relative Raft index u32, file
//!   position u32 of the batch starting there. The first batch of a segment always has one; after
//!   that a batch gets one when it starts at least `index_interval_bytes` past the previous entry
//!   *and* its base offset is above the previous entry's (Raft's control entries take no offset,
//!   so several batches can share a base offset; the first of them is the one indexed). So every
//!   field strictly increases.
//! - Time index entry, 12 bytes big-endian: max timestamp so far i64, relative offset u32. Written
//!   only at a batch that also gets an offset index entry, and only when the running maximum grew
//!   since the last time entry. So time entries are at most one per index interval, both fields
//!   strictly increase, and every time entry's offset has an offset index entry.

/// Size of one entry in either index file.
pub const ENTRY_BYTES: usize = 12;

/// One offset index entry (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub rel_offset: u32,
    pub rel_index: u32,
    pub position: u32,
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut b = [0u8; ENTRY_BYTES];
        b[0..4].copy_from_slice(&self.rel_offset.to_be_bytes());
        b[4..8].copy_from_slice(&self.rel_index.to_be_bytes());
        b[8..12].copy_from_slice(&self.position.to_be_bytes());
        b
    }

    fn decode(b: &[u8; ENTRY_BYTES]) -> IndexEntry {
        IndexEntry {
            rel_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            rel_index: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            position: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// One time index entry (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub max_timestamp: i64,
    pub rel_offset: u32,
}

impl TimeEntry {
    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut b = [0u8; ENTRY_BYTES];
        b[0..8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[8..12].copy_from_slice(&self.rel_offset.to_be_bytes());
        b
    }

    fn decode(b: &[u8; ENTRY_BYTES]) -> TimeEntry {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        TimeEntry { max_timestamp: i64::from_be_bytes(ts), rel_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]) }
    }
}

fn chunks(bytes: &[u8]) -> Result<impl Iterator<Item = &[u8; ENTRY_BYTES]>, String> {
    if !bytes.len().is_multiple_of(ENTRY_BYTES) {
        return Err(format!("size {} is not a multiple of {ENTRY_BYTES}", bytes.len()));
    }
    Ok(bytes.as_chunks::<ENTRY_BYTES>().0.iter())
}

/// Decodes and sanity-checks an offset index of a segment of `log_bytes` bytes: the first entry is
/// (0, 0, 0); every field strictly increases; a step of k entries spans at least k offsets and
/// k minimal headers; every position lies inside the log. The reason is returned on failure.
pub fn decode_offset_index(bytes: &[u8], log_bytes: u64) -> Result<Vec<IndexEntry>, String> {
    let mut out: Vec<IndexEntry> = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
    for (i, raw) in chunks(bytes)?.enumerate() {
        let e = IndexEntry::decode(raw);
        match out.last() {
            None if e != IndexEntry { rel_offset: 0, rel_index: 0, position: 0 } => {
                return Err(format!("first entry {e:?} is not (0, 0, 0)"));
            }
            Some(prev) => {
                let steps = u64::from(e.rel_index).checked_sub(u64::from(prev.rel_index));
                let ok = match steps {
                    // Raft's control entries take no offset, so k entries may span fewer than k
                    // offsets; but an index entry is only written where the offset grew.
                    Some(k) if k > 0 => {
                        e.rel_offset > prev.rel_offset
                            && u64::from(e.position) >= u64::from(prev.position) + k * crate::batch::HEADER_BYTES as u64
                    }
                    _ => false,
                };
                if !ok {
                    return Err(format!("entry {i} {e:?} does not advance past {prev:?}"));
                }
            }
            None => {}
        }
        if u64::from(e.position) >= log_bytes {
            return Err(format!("entry {i} points at {} past the log's {log_bytes} bytes", e.position));
        }
        out.push(e);
    }
    if out.is_empty() && log_bytes > 0 {
        return Err("empty index of a non-empty segment".to_string());
    }
    Ok(out)
}

/// Decodes and sanity-checks a time index against its segment's offset index: both fields
/// strictly increase and every entry's offset has an offset index entry.
pub fn decode_time_index(bytes: &[u8], index: &[IndexEntry]) -> Result<Vec<TimeEntry>, String> {
    let mut out: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
    for (i, raw) in chunks(bytes)?.enumerate() {
        let e = TimeEntry::decode(raw);
        if let Some(prev) = out.last()
            && (e.max_timestamp <= prev.max_timestamp || e.rel_offset <= prev.rel_offset)
        {
            return Err(format!("time entry {i} {e:?} does not advance past {prev:?}"));
        }
        if index.binary_search_by_key(&e.rel_offset, |x| x.rel_offset).is_err() {
            return Err(format!("time entry {i} {e:?} has no offset index entry"));
        }
        out.push(e);
    }
    if out.is_empty() && !index.is_empty() {
        return Err("empty time index of a non-empty segment".to_string());
    }
    Ok(out)
}

pub fn encode_all<T, const N: usize>(entries: &[T], encode: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
    entries.iter().flat_map(encode).collect()
}

/// The last offset index entry at or before relative Raft index `rel_index`.
pub fn floor_by_index(index: &[IndexEntry], rel_index: u64) -> Option<IndexEntry> {
    let n = index.partition_point(|e| u64::from(e.rel_index) <= rel_index);
    n.checked_sub(1).map(|i| index[i])
}

/// The last offset index entry at or before relative offset `rel_offset`.
pub fn floor_by_offset(index: &[IndexEntry], rel_offset: u64) -> Option<IndexEntry> {
    let n = index.partition_point(|e| u64::from(e.rel_offset) <= rel_offset);
    n.checked_sub(1).map(|i| index[i])
}

/// Relative offset to start a timestamp search from: the last time entry whose maximum is below
/// `ts` (nothing up to and including that batch qualifies, so scanning may start there).
pub fn time_search_start(time_index: &[TimeEntry], ts: i64) -> Option<u32> {
    let n = time_index.partition_point(|e| e.max_timestamp < ts);
    n.checked_sub(1).map(|i| time_index[i].rel_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(rel_offset: u32, rel_index: u32, position: u32) -> IndexEntry {
        IndexEntry { rel_offset, rel_index, position }
    }

    /// Protects index round trips and the sanity checks recovery relies on to reject garbage.
    #[test]
    fn offset_index_round_trip_and_sanity() {
        let entries = vec![e(0, 0, 0), e(10, 3, 500), e(12, 5, 900)];
        let bytes = encode_all(&entries, IndexEntry::encode);
        assert_eq!(decode_offset_index(&bytes, 1000), Ok(entries.clone()));
        assert!(decode_offset_index(&bytes, 900).is_err(), "position past the log");
        assert!(decode_offset_index(&bytes[..13], 1000).is_err(), "not a multiple of 12");
        let bad = encode_all(&[e(0, 0, 0), e(10, 3, 500), e(10, 5, 900)], IndexEntry::encode);
        assert!(decode_offset_index(&bad, 1000).is_err(), "offset did not grow");
        let zero_width = encode_all(&[e(0, 0, 0), e(1, 3, 500)], IndexEntry::encode);
        assert!(decode_offset_index(&zero_width, 1000).is_ok(), "control entries take no offset");
        let bad = encode_all(&[e(1, 0, 0)], IndexEntry::encode);
        assert!(decode_offset_index(&bad, 1000).is_err(), "first entry not at zero");
        assert!(decode_offset_index(&[0xff; 24], 1000).is_err());
        assert!(decode_offset_index(&[], 10).is_err(), "non-empty segment needs an entry");
        assert_eq!(floor_by_index(&entries, 4), Some(e(10, 3, 500)));
        assert_eq!(floor_by_offset(&entries, 9), Some(e(0, 0, 0)));
        assert_eq!(floor_by_offset(&entries, 100), Some(e(12, 5, 900)));
    }

    /// Protects the time index invariants: increasing, and anchored on offset index entries.
    #[test]
    fn time_index_sanity() {
        let index = vec![e(0, 0, 0), e(10, 3, 500)];
        let t = vec![TimeEntry { max_timestamp: 5, rel_offset: 0 }, TimeEntry { max_timestamp: 9, rel_offset: 10 }];
        let bytes = encode_all(&t, TimeEntry::encode);
        assert_eq!(decode_time_index(&bytes, &index), Ok(t.clone()));
        let bad = encode_all(&[TimeEntry { max_timestamp: 5, rel_offset: 7 }], TimeEntry::encode);
        assert!(decode_time_index(&bad, &index).is_err());
        assert_eq!(time_search_start(&t, 5), None);
        assert_eq!(time_search_start(&t, 6), Some(0));
        assert_eq!(time_search_start(&t, 100), Some(10));
    }
}
