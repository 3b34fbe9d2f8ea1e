//! Transport counters: atomics updated on the hot path, read as a [`TransportStats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of the transport's counters (monotonic since start, except `connections_open`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Connections currently registered (at most one per peer).
    pub connections_open: u64,
    /// Outgoing dial attempts started.
    pub dials: u64,
    /// Outgoing dials that failed (connect error, handshake error or timeout).
    pub dial_failures: u64,
    /// Incoming connections that completed the handshake.
    pub accepts: u64,
    /// Incoming connections dropped before or during the handshake.
    pub accept_failures: u64,
    /// Connections closed (peer gone, decode error, idle-dead, duplicate, shutdown).
    pub connections_closed: u64,
    /// Connections closed because a frame did not decode (bad CRC, too large, bad flags).
    pub decode_errors: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Calls that ended in `TransportError::Timeout`.
    pub timeouts: u64,
    /// Calls refused before sending because their frame would exceed `frame_bytes_max`
    /// (`TransportError::TooLarge`). Replication never builds one (see `raft::replicate_bytes`),
    /// so anything but 0 is a bug.
    pub frames_too_large: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dials: AtomicU64,
    pub(crate) dial_failures: AtomicU64,
    pub(crate) accepts: AtomicU64,
    pub(crate) accept_failures: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) frames_too_large: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn frame_in(&self, bytes: usize) {
        self.frames_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn frame_out(&self, bytes: usize) {
        self.frames_out.fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn snapshot(&self, connections_open: u64) -> TransportStats {
        TransportStats {
            connections_open,
            dials: self.dials.load(Relaxed),
            dial_failures: self.dial_failures.load(Relaxed),
            accepts: self.accepts.load(Relaxed),
            accept_failures: self.accept_failures.load(Relaxed),
            connections_closed: self.connections_closed.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            frames_too_large: self.frames_too_large.load(Relaxed),
        }
    }
}
