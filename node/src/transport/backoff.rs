//! Redial backoff for one peer: pure bookkeeping, time passed in.
//!
//! After the n-th consecutive failed dial the peer is left alone for
//! `min(backoff_min_ms * 2^(n-1), backoff_max_ms)`; a successful dial resets it. No jitter: the
//! simulation must replay exactly, and with one connection per pair there is no thundering herd
//! to spread out.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// Consecutive failed dials since the last success.
    failures: u32,
    /// No dial before this instant; calls fail fast until then.
    retry_at: Option<Instant>,
    /// Why the last dial failed, reported to callers that fail fast.
    last_error: String,
}

impl Backoff {
    /// The delay after `failures` consecutive failures (`failures >= 1`).
    pub(crate) fn delay(failures: u32, backoff_min_ms: u64, backoff_max_ms: u64) -> Duration {
        let shift = failures.saturating_sub(1).min(32);
        let ms = backoff_min_ms.saturating_mul(1u64 << shift).min(backoff_max_ms);
        Duration::from_millis(ms)
    }

    pub(crate) fn record_failure(&mut self, now: Instant, error: String, min_ms: u64, max_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + Self::delay(self.failures, min_ms, max_ms));
        self.last_error = error;
    }

    pub(crate) fn record_success(&mut self) {
        *self = Backoff::default();
    }

    /// The last dial failed (no success since).
    pub(crate) fn failing(&self) -> bool {
        self.failures > 0
    }

    /// `Some(reason)` while dialing is suppressed.
    pub(crate) fn blocked(&self, now: Instant) -> Option<String> {
        match self.retry_at {
            Some(at) if now < at => Some(format!(
                "backing off for {} ms after {} failed dial(s): {}",
                at.saturating_duration_since(now).as_millis(),
                self.failures,
                self.last_error
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_min_and_caps_at_max() {
        let ms: Vec<u128> = (1..=8).map(|n| Backoff::delay(n, 50, 1000).as_millis()).collect();
        assert_eq!(ms, vec![50, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(Backoff::delay(u32::MAX, 50, 1000).as_millis(), 1000);
        assert_eq!(Backoff::delay(40, u64::MAX / 2, u64::MAX).as_millis(), u64::MAX as u128);
    }
}
