//! [`LogError`]: everything a partition log operation can fail with.

use std::io;
use std::path::{Path, PathBuf};

use crate::batch::BatchError;

/// Errors of [`super::PartitionLog`]. `Io` and `Corrupt` met while changing the log put it into
/// the failed state; every later call then returns [`LogError::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt log file {} at byte {position}: {reason}", path.display())]
    Corrupt { path: PathBuf, position: u64, reason: String },
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("append at index {got}, but the next index is {expected}")]
    NotContiguous { expected: u64, got: u64 },
    #[error("term {0} does not fit the batch's 32-bit partitionLeaderEpoch")]
    TermTooLarge(u64),
    #[error("term {got} is below the last entry's term {last}")]
    TermRegressed { last: u64, got: u64 },
    #[error("offset {0} does not fit a batch's 64-bit signed baseOffset")]
    OffsetOverflow(u64),
    /// Raft indexes stay below `i64::MAX` (openraft and on-disk relative indexes assume room).
    #[error("raft index {0} is out of range")]
    IndexOverflow(u64),
    /// Fail-closed: an earlier storage error stopped this log.
    #[error("log failed earlier and is closed: {0}")]
    Failed(String),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
        let path = path.to_path_buf();
        move |source| LogError::Io { op, path, source }
    }

    /// Whether this is a full disk (ENOSPC) met while writing — not while syncing: a failed
    /// fsync may have dropped written pages, whatever its error code.
    pub fn is_no_space(&self) -> bool {
        matches!(self, LogError::Io { op, source, .. }
            if source.kind() == io::ErrorKind::StorageFull && !op.starts_with("fsync"))
    }

    pub(crate) fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt { path: path.to_path_buf(), position, reason: reason.into() }
    }
}
