//! A partition's Raft hard state: the vote and the last purged log id.
//!
//! Stored in `raft-state` as `bincode(HardState) ++ crc32c` through `storage::write_atomic`
//! (write temp, fsync, rename, fsync directory): after a crash it holds the old or the new state,
//! never a torn mix. `save_vote` returns only after that fsync, as Raft requires: a node must never
//! forget a vote it granted.

use std::io;
use std::path::Path;

use bincode::Options;
use keel_core::storage;
use keel_core::storage::Storage;
use serde::Deserialize;
use serde::Serialize;

use super::LogId;
use super::Vote;

pub const FILE_NAME: &str = "raft-state";
const STATE_BYTES_MAX: u64 = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub vote: Option<Vote>,
    pub last_purged: Option<LogId>,
}

fn opts() -> impl Options {
    bincode::DefaultOptions::new().with_limit(STATE_BYTES_MAX).with_fixint_encoding()
}

impl HardState {
    pub fn load(storage: &dyn Storage, dir: &Path) -> io::Result<HardState> {
        let Some(bytes) = storage::read_whole(storage, &dir.join(FILE_NAME))? else {
            return Ok(HardState::default());
        };
        if bytes.len() < 4 {
            return Err(invalid("raft-state shorter than its checksum"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != crc {
            return Err(invalid("raft-state checksum mismatch"));
        }
        opts().deserialize(body).map_err(|e| invalid(&format!("raft-state does not decode: {e}")))
    }

    pub fn store(&self, storage: &dyn Storage, dir: &Path) -> io::Result<()> {
        let mut bytes = opts().serialize(self).map_err(io::Error::other)?;
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        storage::write_atomic(storage, dir, FILE_NAME, &bytes)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}
