//! The storage seam: every file operation of the log goes through [`Storage`] and [`StorageFile`].
//!
//! - [`fs::FsStorage`] is the real file system (`pwrite`, `fdatasync`, rename, directory fsync).
//! - [`sim::SimStorage`] is an in-memory file system for the simulator. It remembers what has been
//!   made durable: on [`sim::SimStorage::crash`] it drops unsynced writes (keeping a random prefix
//!   of them, the last one possibly torn) and unsynced directory changes; and, when told, it fails a
//!   write or an fsync with EIO or ENOSPC, or asks the caller to wait (slow disk), or is full
//!   for a while (every write that grows a file fails with ENOSPC).
//! - [`space`] holds the decisions taken with the free-space probe [`Storage::available_bytes`]:
//!   whether a produce is admitted, and when a partition stopped by a full disk is reopened.
//!
//! The traits are synchronous: core has no async runtime. The node runs slow calls (fsync) where it
//! will not stall other work, and waits [`Storage::injected_latency`] through its runtime's clock.

pub mod fs;
pub mod sim;
pub mod space;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Kinds of operation a simulated disk can slow down or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Write,
    Sync,
}

/// A file system, scoped by paths. Implementations are cheap to share (`Arc`).
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// Creates `dir` and its parents. Durable only after [`Storage::sync_dir`] of each parent.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files directly in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Names of the directories directly in `dir`, sorted.
    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for reading and writing, creating it when `create` is set (a new file's name is
    /// durable only after [`Storage::sync_dir`]). Fails with `NotFound` when absent and not `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Removes a file. Durable after [`Storage::sync_dir`].
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`. Durable after [`Storage::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it (used when a replica is deleted).
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The free-space probe: bytes an unprivileged writer may still add on the file system that
    /// holds `dir` (`statvfs`'s available blocks on a real disk); `Ok(None)` when the storage
    /// cannot tell. Cheap enough to call before every produce; see [`space`] for what is decided
    /// with it.
    fn available_bytes(&self, _dir: &Path) -> io::Result<Option<u64>> {
        Ok(None)
    }
    /// How long the caller should wait before an `op` (a simulated slow disk); zero for real disks.
    fn injected_latency(&self, _op: Op) -> Duration {
        Duration::ZERO
    }
}

/// One open file. Positional reads and writes, so one handle serves a writer, readers and a
/// concurrent fsync.
pub trait StorageFile: Send + Sync + std::fmt::Debug {
    /// Current length, including unsynced writes.
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads exactly `buf.len()` bytes at `pos`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `pos` (extending the file if needed). Not durable until [`StorageFile::sync`].
    fn write_all_at(&self, pos: u64, data: &[u8]) -> io::Result<()>;
    /// Sets the length (shrinks or zero-extends). Durable after [`StorageFile::sync`].
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: everything written to this file before the call is durable when it returns
    /// `Ok`. An error means the data may be lost and the caller must stop (fail closed).
    fn sync(&self) -> io::Result<()>;
}

/// Writes `bytes` to `dir/name` atomically and durably: write `name.tmp`, fsync it, rename over
/// `name`, fsync the directory. After a crash the file holds either the old or the new bytes.
pub fn write_atomic(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let f = storage.open(&tmp, true)?;
    f.set_len(0)?;
    f.write_all_at(0, bytes)?;
    f.sync()?;
    drop(f);
    storage.rename(&tmp, &dst)?;
    storage.sync_dir(dir)
}

/// Appends the CRC32C of `body` (big-endian), for a small file that must be recognised as damaged.
pub fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

/// The body of bytes written by [`seal`]; `None` if they are too short or fail their checksum.
pub fn unseal(bytes: &[u8]) -> Option<&[u8]> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    (crc32c::crc32c(body).to_be_bytes() == crc).then_some(body)
}

/// Reads a whole (small) file; `Ok(None)` when it does not exist.
pub fn read_whole(storage: &dyn Storage, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let f = match storage.open(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = usize::try_from(f.len()?).map_err(io::Error::other)?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(0, &mut buf)?;
    Ok(Some(buf))
}
