//! The `log-start` file: where the log logically begins after purges.
//!
//! 20 bytes big-endian: start Raft index u64, start offset u64, CRC32C of those 16 bytes. Written
//! only with [`crate::storage::write_atomic`], so after a crash it holds the old or the new value.

use std::path::Path;

use super::LogError;
use crate::storage::{self, Storage};

pub const FILE_NAME: &str = "log-start";
const BYTES: usize = 20;

/// The logical start of the log: the first Raft index and Kafka offset that may be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStart {
    pub index: u64,
    pub offset: u64,
}

impl LogStart {
    pub fn encode(&self) -> [u8; BYTES] {
        let mut b = [0u8; BYTES];
        b[0..8].copy_from_slice(&self.index.to_be_bytes());
        b[8..16].copy_from_slice(&self.offset.to_be_bytes());
        let crc = crc32c::crc32c(&b[0..16]);
        b[16..20].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<LogStart> {
        let b: &[u8; BYTES] = b.try_into().ok()?;
        let crc = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
        if crc != crc32c::crc32c(&b[0..16]) {
            return None;
        }
        let mut index = [0u8; 8];
        let mut offset = [0u8; 8];
        index.copy_from_slice(&b[0..8]);
        offset.copy_from_slice(&b[8..16]);
        let (index, offset) = (u64::from_be_bytes(index), u64::from_be_bytes(offset));
        // Both must fit the signed 64-bit fields they end up in (Kafka offsets, Raft indexes).
        if i64::try_from(index).is_err() || i64::try_from(offset).is_err() {
            return None;
        }
        Some(LogStart { index, offset })
    }

    /// Reads `dir/log-start`; the default (0, 0) when absent; `Corrupt` when unreadable.
    pub fn read(storage: &dyn Storage, dir: &Path) -> Result<LogStart, LogError> {
        let path = dir.join(FILE_NAME);
        match storage::read_whole(storage, &path).map_err(LogError::io("read", &path))? {
            None => Ok(LogStart::default()),
            Some(bytes) => LogStart::decode(&bytes)
                .ok_or_else(|| LogError::corrupt(&path, 0, "log-start has a bad size or checksum")),
        }
    }

    /// Replaces `dir/log-start` atomically and durably.
    pub fn write(&self, storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
        storage::write_atomic(storage, dir, FILE_NAME, &self.encode())
            .map_err(LogError::io("write", &dir.join(FILE_NAME)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protects the log-start checksum: a damaged file is detected, not misread.
    #[test]
    fn log_start_round_trip_and_checksum() {
        let s = LogStart { index: 7, offset: 1234 };
        let mut b = s.encode();
        assert_eq!(LogStart::decode(&b), Some(s));
        b[3] ^= 1;
        assert_eq!(LogStart::decode(&b), None);
        assert_eq!(LogStart::decode(&b[..19]), None);
    }
}
