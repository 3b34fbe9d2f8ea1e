//! What a node decides with the free-space probe ([`super::Storage::available_bytes`]): pure
//! functions, so the rules are tested without a disk.
//!
//! - **Admission** ([`admits_append`]): a leader refuses a produce before proposing it when its
//!   disk has less than the batch plus a reserve free. The reserve leaves room for what a
//!   partition writes besides batches (a new segment's index files, `raft-state`, the state
//!   machine checkpoint, the metadata group's log), so a full leader answers at once instead of
//!   failing its log half-way through a write.
//! - **Recovery** ([`recovery_action`]): a replica stopped by a full disk (ENOSPC) is reopened
//!   from disk once the probe shows room again, with a growing pause between attempts
//!   ([`retry_delay_ms`]). A replica stopped by any other storage error (EIO, a failed fsync)
//!   stays stopped until an operator restarts the node: an fsync error may have dropped written
//!   pages, and only a restart's recovery is trusted to see what really is on disk.

/// Why a replica stopped (failed closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// A write found the disk full (ENOSPC); nothing written was reported durable.
    NoSpace,
    /// Any other storage error, a failed fsync included.
    Other,
}

/// What to do with a stopped replica now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryAction {
    /// Reopen it from disk (recovery) and let it rejoin its Raft group.
    Reopen,
    /// Not yet: the disk is still full or the pause after the last attempt has not passed.
    Wait,
    /// Never automatically (see the module docs).
    Never,
}

/// First pause after a failed reopen, doubled each time up to [`RETRY_DELAY_MS_MAX`].
pub const RETRY_DELAY_MS_MIN: u64 = 500;
/// Longest pause between two reopen attempts of one replica.
pub const RETRY_DELAY_MS_MAX: u64 = 30_000;

/// Whether a batch of `batch_bytes` may be proposed when the disk has `available_bytes` free
/// (`None`: the storage cannot tell, so the write itself will find out).
pub fn admits_append(available_bytes: Option<u64>, batch_bytes: u64, reserve_bytes: u64) -> bool {
    available_bytes.is_none_or(|free| free >= batch_bytes.saturating_add(reserve_bytes))
}

/// What to do with a replica stopped by `cause`, when the disk has `available_bytes` free and
/// `since_attempt_ms` passed since the last reopen attempt (`None`: none yet), of which
/// `failed_attempts` failed.
pub fn recovery_action(
    cause: StopCause,
    available_bytes: Option<u64>,
    reserve_bytes: u64,
    failed_attempts: u32,
    since_attempt_ms: Option<u64>,
) -> RecoveryAction {
    if cause != StopCause::NoSpace {
        return RecoveryAction::Never;
    }
    let room = available_bytes.is_none_or(|free| free >= reserve_bytes);
    let paused = since_attempt_ms.is_some_and(|ms| ms < retry_delay_ms(failed_attempts));
    if room && !paused { RecoveryAction::Reopen } else { RecoveryAction::Wait }
}

/// The pause after `failed_attempts` failed reopen attempts: doubling from
/// [`RETRY_DELAY_MS_MIN`], at most [`RETRY_DELAY_MS_MAX`].
pub fn retry_delay_ms(failed_attempts: u32) -> u64 {
    RETRY_DELAY_MS_MIN.saturating_mul(1u64 << failed_attempts.min(16)).min(RETRY_DELAY_MS_MAX)
}

/// The index a reopened log must still hold: everything its replica reported durable before it
/// stopped (`durable_before`), which it may have acknowledged to its leader. `Err` names the
/// loss when recovery found less (`last_index`: the reopened log's last entry, if any).
pub fn check_nothing_acknowledged_lost(durable_before: Option<u64>, last_index: Option<u64>) -> Result<(), String> {
    match (durable_before, last_index) {
        (None, _) => Ok(()),
        (Some(d), Some(last)) if last >= d => Ok(()),
        (Some(d), last) => Err(format!(
            "the reopened log ends at index {} but index {d} was reported durable before it stopped",
            last.map_or_else(|| "(empty)".to_string(), |l| l.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full leader answers at once: a batch that would eat into the reserve is refused, one
    /// that leaves the reserve is admitted, and an unknown free space admits (the write decides).
    #[test]
    fn admission_keeps_the_reserve() {
        assert!(admits_append(Some(1_100), 100, 1_000));
        assert!(!admits_append(Some(1_099), 100, 1_000));
        assert!(!admits_append(Some(0), 1, 0));
        assert!(admits_append(None, u64::MAX, u64::MAX));
        assert!(!admits_append(Some(u64::MAX - 1), u64::MAX, 1), "no overflow");
    }

    /// Only a full disk recovers by itself, once there is room and the pause has passed.
    #[test]
    fn only_a_full_disk_recovers_by_itself() {
        assert_eq!(recovery_action(StopCause::Other, Some(u64::MAX), 0, 0, None), RecoveryAction::Never);
        assert_eq!(recovery_action(StopCause::NoSpace, Some(999), 1_000, 0, None), RecoveryAction::Wait);
        assert_eq!(recovery_action(StopCause::NoSpace, Some(1_000), 1_000, 0, None), RecoveryAction::Reopen);
        assert_eq!(recovery_action(StopCause::NoSpace, None, 1_000, 0, None), RecoveryAction::Reopen);
        assert_eq!(recovery_action(StopCause::NoSpace, Some(5_000), 1_000, 2, Some(1_999)), RecoveryAction::Wait);
        assert_eq!(recovery_action(StopCause::NoSpace, Some(5_000), 1_000, 2, Some(2_000)), RecoveryAction::Reopen);
    }

    /// The pause doubles and is capped, without overflow for any attempt count.
    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        assert_eq!(retry_delay_ms(0), 500);
        assert_eq!(retry_delay_ms(1), 1_000);
        assert_eq!(retry_delay_ms(5), 16_000);
        assert_eq!(retry_delay_ms(6), RETRY_DELAY_MS_MAX);
        assert_eq!(retry_delay_ms(u32::MAX), RETRY_DELAY_MS_MAX);
        for a in 0..100 {
            assert!(retry_delay_ms(a + 1) >= retry_delay_ms(a));
        }
    }

    /// A reopened log shorter than what was durable before is refused, naming the loss.
    #[test]
    fn reopened_log_must_hold_everything_durable_before() {
        assert!(check_nothing_acknowledged_lost(None, None).is_ok());
        assert!(check_nothing_acknowledged_lost(Some(7), Some(7)).is_ok());
        assert!(check_nothing_acknowledged_lost(Some(7), Some(9)).is_ok());
        let e = check_nothing_acknowledged_lost(Some(7), Some(6)).unwrap_err();
        assert!(e.contains("index 6") && e.contains("index 7"), "{e}");
        assert!(check_nothing_acknowledged_lost(Some(7), None).unwrap_err().contains("(empty)"));
    }
}
