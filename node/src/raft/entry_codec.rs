//! Raft entries ⇄ stored record batches.
//!
//! A normal entry's payload *is* the producer batch. A blank entry becomes a control batch of
//! type `CONTROL_RAFT_BLANK` with no value; a membership entry a control batch of type
//! `CONTROL_RAFT_MEMBERSHIP` whose value is the bincode-encoded membership. Control batches carry
//! no timestamp (-1) so that every replica stores the very same bytes.
//!
//! The log index and term are not in the bytes: the index is the entry's position in the log and
//! the term is the batch's `partitionLeaderEpoch`, which the log stamps on append.

use bincode::Options;
use bytes::Bytes;
use keel_core::batch;
use keel_core::log::LogEntry;
use openraft::EntryPayload;
use openraft::entry::RaftEntry;

use super::Batch;
use super::Entry;
use super::Membership;
use super::log_id;
use super::term_of;

/// Largest membership value accepted when decoding (a membership is a few hundred bytes).
const MEMBERSHIP_BYTES_MAX: u64 = 1 << 20;

fn bincode_opts() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MEMBERSHIP_BYTES_MAX).with_fixint_encoding()
}

/// The term and the batch bytes to store for `entry`.
pub fn encode(entry: &Entry) -> std::io::Result<(u64, Vec<u8>)> {
    let term = term_of(&entry.log_id);
    let bytes = match &entry.payload {
        EntryPayload::Normal(Batch(b)) => b.to_vec(),
        EntryPayload::Blank => batch::control_batch(batch::CONTROL_RAFT_BLANK, &[], -1),
        EntryPayload::Membership(m) => {
            let value = bincode_opts().serialize(m).map_err(std::io::Error::other)?;
            batch::control_batch(batch::CONTROL_RAFT_MEMBERSHIP, &value, -1)
        }
    };
    Ok((term, bytes))
}

/// Rebuilds the Raft entry from a stored batch. A control batch of an unknown type or a
/// membership that does not decode is corruption: an error, never a panic.
pub fn decode(stored: &LogEntry) -> std::io::Result<Entry> {
    let id = log_id(stored.meta.term, stored.meta.index);
    if !stored.meta.is_control {
        return Ok(Entry::new(id, EntryPayload::Normal(Batch(stored.bytes.clone()))));
    }
    let (kind, value): (i16, Bytes) = batch::parse_control(&stored.bytes).map_err(corrupt)?;
    match kind {
        batch::CONTROL_RAFT_BLANK => Ok(Entry::new_blank(id)),
        batch::CONTROL_RAFT_MEMBERSHIP => {
            let m: Membership = bincode_opts().deserialize(&value).map_err(corrupt)?;
            Ok(Entry::new(id, EntryPayload::Membership(m)))
        }
        other => Err(corrupt(format!("control batch of unknown type {other:#06x} at index {}", id.index))),
    }
}

fn corrupt(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}
