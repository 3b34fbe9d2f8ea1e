//! How many bytes one replication message (an AppendEntries) may carry, as pure functions.
//!
//! The transport refuses a frame over `frame_bytes_max`, so a message that big could never be
//! sent, and openraft would retry the same one forever (issue 17: a partition wedged by
//! librdkafka's 1 MB batches, 64 entries to a message). So no such message is built:
//! - the log reader answers openraft's `limited_get_log_entries` with the longest prefix of the
//!   asked range whose entries fit in [`entries_bytes_max`] (at least one entry);
//! - the network trims a message that still does not fit to such a prefix and answers
//!   `PartialSuccess` for it (a second line of defence: openraft then sends the rest);
//! - at startup [`check_fits`] refuses a configuration in which one entry as large as the largest
//!   batch the log accepts would not fit in one frame.
//!
//! Sizes are the bincode sizes the network encodes (`network::encode`), measured, not guessed,
//! except for the fixed envelope bound [`ENVELOPE_BYTES_MAX`], which a test holds against the
//! largest envelope.

use bincode::Options;

use super::Entry;
use crate::transport::frame;

/// Bytes of an AppendEntries body besides its entries: the target member id, the vote, the
/// previous log id, the leader's commit and the entries' length prefix (about 80 bytes; the
/// test `envelope_of_the_largest_values_fits_the_bound` measures it).
pub const ENVELOPE_BYTES_MAX: usize = 256;

/// Bytes an entry adds to its payload on the wire: its log id, the payload's tag and length
/// (about 40 bytes; measured by `a_data_entry_costs_its_batch_plus_the_overhead_bound`).
pub const ENTRY_OVERHEAD_BYTES_MAX: usize = 64;

/// The entry bytes one message may carry over a transport whose frames are at most
/// `frame_bytes_max` bytes (header included).
pub fn entries_bytes_max(frame_bytes_max: usize) -> usize {
    frame_bytes_max.saturating_sub(frame::HEADER_BYTES + ENVELOPE_BYTES_MAX)
}

/// The wire bytes of the largest entry a log whose batches are at most `batch_bytes_max` holds.
pub fn largest_entry_bytes(batch_bytes_max: usize) -> usize {
    batch_bytes_max.saturating_add(ENTRY_OVERHEAD_BYTES_MAX)
}

/// Refuses a configuration in which a message carrying one batch of `batch_bytes_max` bytes
/// (the largest a topic accepts, `message.max.bytes` at most) would exceed `frame_bytes_max`.
pub fn check_fits(frame_bytes_max: usize, batch_bytes_max: usize) -> Result<(), String> {
    let needed = largest_entry_bytes(batch_bytes_max);
    let room = entries_bytes_max(frame_bytes_max);
    if needed > room {
        return Err(format!(
            "the transport's frame_bytes_max of {frame_bytes_max} bytes leaves {room} bytes for entries in one \
             replication message, but one batch of the log's largest size ({batch_bytes_max} bytes, the most \
             message.max.bytes may be) needs {needed}: raise frame_bytes_max to at least {} bytes",
            needed + frame::HEADER_BYTES + ENVELOPE_BYTES_MAX
        ));
    }
    Ok(())
}

/// The bytes `entry` takes in an encoded AppendEntries body.
pub fn entry_wire_bytes(entry: &Entry) -> usize {
    // The network's encoding (fixint, no limit needed to measure). A size that does not fit in
    // `usize` cannot be sent either.
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .serialized_size(entry)
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// How many of the leading entries, of the given wire sizes, fit in `bytes_max` together. At
/// least one when there is any: an entry larger than `bytes_max` alone is still sent alone (the
/// startup check keeps that from happening; the transport refuses it if it does).
pub fn fitting_prefix(sizes: impl IntoIterator<Item = usize>, bytes_max: usize) -> usize {
    let mut total = 0usize;
    let mut count = 0usize;
    for size in sizes {
        match total.checked_add(size) {
            Some(t) if count == 0 || t <= bytes_max => total = t,
            _ => break,
        }
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::EntryPayload;
    use openraft::raft::AppendEntriesRequest;

    use super::*;
    use crate::raft::Batch;
    use crate::raft::TypeConfig;
    use crate::raft::log_id;
    use crate::raft::network::encode;

    fn data_entry(index: u64, bytes: usize) -> Entry {
        Entry { log_id: log_id(u64::MAX, index), payload: EntryPayload::Normal(Batch(Bytes::from(vec![7u8; bytes]))) }
    }

    /// The bound the reader and the startup check use holds for the largest envelope values.
    #[test]
    fn envelope_of_the_largest_values_fits_the_bound() {
        let big = Some(log_id(u64::MAX, u64::MAX));
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: crate::raft::Vote::new_committed(u64::MAX, u64::MAX),
            prev_log_id: big,
            leader_commit: big,
            entries: Vec::new(),
        };
        let body = encode(&(u64::MAX, &req)).expect("encode");
        assert!(body.len() <= ENVELOPE_BYTES_MAX, "envelope {} > {ENVELOPE_BYTES_MAX}", body.len());
    }

    /// A message's encoded size is its envelope plus the measured size of each entry.
    #[test]
    fn a_data_entry_costs_its_batch_plus_the_overhead_bound() {
        let entries = vec![data_entry(5, 1000), data_entry(6, 1 << 20)];
        for e in &entries {
            let payload = match &e.payload {
                EntryPayload::Normal(b) => b.0.len(),
                _ => unreachable!("data entries"),
            };
            assert!(entry_wire_bytes(e) > payload);
            assert!(entry_wire_bytes(e) <= payload + ENTRY_OVERHEAD_BYTES_MAX, "{}", entry_wire_bytes(e) - payload);
        }
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: crate::raft::Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(3, 4)),
            leader_commit: Some(log_id(3, 4)),
            entries: entries.clone(),
        };
        let body = encode(&(1u64, &req)).expect("encode");
        let measured: usize = entries.iter().map(entry_wire_bytes).sum();
        assert!(body.len() <= measured + ENVELOPE_BYTES_MAX);
        assert!(body.len() > measured);
    }

    #[test]
    fn fitting_prefix_stops_before_the_entry_that_overflows() {
        assert_eq!(fitting_prefix([], 10), 0);
        assert_eq!(fitting_prefix([4, 4, 4], 10), 2);
        assert_eq!(fitting_prefix([4, 6, 1], 10), 2);
        assert_eq!(fitting_prefix([4, 6, 1], 11), 3);
        // One entry over the bound still goes alone; nothing follows it.
        assert_eq!(fitting_prefix([50, 1], 10), 1);
        assert_eq!(fitting_prefix([usize::MAX, usize::MAX], usize::MAX), 1);
    }

    /// Issue 17: 64 entries of librdkafka's 1 MB batches (about 64 MiB) were read and sent as one
    /// message over a 16 MiB frame limit. The bounded prefix of the same entries fits the frame.
    #[test]
    fn sixty_four_one_megabyte_batches_become_messages_that_fit_the_frame() {
        let frame_bytes_max = 16 << 20;
        let sizes: Vec<usize> = (0..64).map(|i| entry_wire_bytes(&data_entry(i, 1_048_588))).collect();
        assert!(sizes.iter().sum::<usize>() > frame_bytes_max);
        let n = fitting_prefix(sizes.iter().copied(), entries_bytes_max(frame_bytes_max));
        assert!((1..64).contains(&n));
        let total: usize = sizes[..n].iter().sum();
        assert!(total + frame::HEADER_BYTES + ENVELOPE_BYTES_MAX <= frame_bytes_max);
        // …and it is the longest such prefix.
        assert!(total + sizes[n] > entries_bytes_max(frame_bytes_max));
    }

    #[test]
    fn startup_check_refuses_a_frame_that_cannot_hold_the_largest_batch() {
        let batch_bytes_max = (1 << 20) + 1024;
        assert!(check_fits(16 << 20, batch_bytes_max).is_ok());
        let exact = batch_bytes_max + ENTRY_OVERHEAD_BYTES_MAX + frame::HEADER_BYTES + ENVELOPE_BYTES_MAX;
        assert!(check_fits(exact, batch_bytes_max).is_ok());
        let e = check_fits(exact - 1, batch_bytes_max).expect_err("one byte short");
        assert!(e.contains("frame_bytes_max") && e.contains(&exact.to_string()), "{e}");
        assert!(check_fits(1 << 20, batch_bytes_max).is_err());
    }
}
