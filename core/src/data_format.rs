//! The format of a node's data directory, named by a small sealed file `keel-format` at its top.
//!
//! Format 2 (this build): Kafka offsets are dense per partition — Raft's blank and membership
//! entries take no offset ([`crate::batch::BatchHeader::offset_count`]). Format 1 (Keel before
//! 2026-12; no `keel-format` file) gave every Raft entry an offset, so its segments stamp offsets
//! that a format-2 log reads as corruption, and its committed consumer offsets count Raft's
//! entries. Such a directory is **refused**, not migrated: rewriting the offsets would move every
//! record under every consumer group's committed position and every client's cached position.
//! The refusal says what the directory is and what to do.

use std::io;
use std::path::Path;

use crate::storage::{self, Storage};

/// Name of the marker file at the top of a data directory.
pub const FORMAT_FILE: &str = "keel-format";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Subdirectories a node's data directory holds once it has run (`metadata/`, `partitions/`).
pub const DATA_SUBDIRS: [&str; 2] = ["metadata", "partitions"];

const MAGIC: &str = "keel-data-format ";

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "data directory {dir} was written by an older Keel (format 1: Raft's own entries took Kafka offsets); \
         this Keel keeps Kafka offsets dense (format {FORMAT_VERSION}) and cannot read it. Move it aside and \
         start with an empty directory (data in it stays readable by the Keel that wrote it)"
    )]
    Format1 { dir: String },
    #[error("data directory {dir} has format {found}; this Keel reads format {FORMAT_VERSION} only")]
    Unknown { dir: String, found: u32 },
    #[error("data directory {dir}: {FORMAT_FILE} is damaged ({reason})")]
    Damaged { dir: String, reason: String },
    #[error("data directory {dir}: {0}", dir = .1)]
    Io(#[source] io::Error, String),
}

/// What to do with a data directory, decided from what is in it (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The marker says this format: use it.
    Use,
    /// A new (or empty) directory: write the marker, then use it.
    Stamp,
}

/// Decides from the marker's bytes (if the file exists) and whether the directory already holds
/// node data.
pub fn decide(dir: &str, marker: Option<&[u8]>, holds_data: bool) -> Result<Verdict, FormatError> {
    let Some(bytes) = marker else {
        return if holds_data { Err(FormatError::Format1 { dir: dir.to_owned() }) } else { Ok(Verdict::Stamp) };
    };
    let damaged = |reason: &str| FormatError::Damaged { dir: dir.to_owned(), reason: reason.to_owned() };
    let body = storage::unseal(bytes).ok_or_else(|| damaged("checksum mismatch"))?;
    let text = std::str::from_utf8(body).map_err(|_| damaged("not text"))?;
    let version: u32 =
        text.trim_end().strip_prefix(MAGIC).and_then(|v| v.parse().ok()).ok_or_else(|| damaged("not a format line"))?;
    if version == FORMAT_VERSION {
        Ok(Verdict::Use)
    } else {
        Err(FormatError::Unknown { dir: dir.to_owned(), found: version })
    }
}

/// The marker file's bytes for this build's format.
pub fn marker() -> Vec<u8> {
    storage::seal(format!("{MAGIC}{FORMAT_VERSION}\n").into_bytes())
}

/// Checks `dir` (creating it when missing) and stamps a new one; refuses a directory of another
/// format with a message that says what to do.
pub fn check_or_stamp(storage: &dyn Storage, dir: &Path) -> Result<(), FormatError> {
    let shown = dir.display().to_string();
    let io = |e: io::Error| FormatError::Io(e, shown.clone());
    storage.create_dir_all(dir).map_err(io)?;
    let marker_bytes = storage::read_whole(storage, &dir.join(FORMAT_FILE)).map_err(io)?;
    let subdirs = storage.list_dirs(dir).map_err(io)?;
    let holds_data = subdirs.iter().any(|d| DATA_SUBDIRS.contains(&d.as_str()));
    match decide(&shown, marker_bytes.as_deref(), holds_data)? {
        Verdict::Use => Ok(()),
        Verdict::Stamp => storage::write_atomic(storage, dir, FORMAT_FILE, &marker()).map_err(io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protects the refusal of a wave-1 directory (its offsets would be misread as corruption or,
    /// worse, shift under consumers) and the acceptance of this build's own marker.
    #[test]
    fn decisions() {
        assert_eq!(decide("d", None, false).unwrap(), Verdict::Stamp);
        let old = decide("d", None, true).unwrap_err();
        assert!(matches!(old, FormatError::Format1 { .. }));
        assert!(old.to_string().contains("Move it aside"), "{old}");
        assert_eq!(decide("d", Some(&marker()), true).unwrap(), Verdict::Use);
        let v3 = storage::seal(b"keel-data-format 3\n".to_vec());
        assert!(matches!(decide("d", Some(&v3), true), Err(FormatError::Unknown { found: 3, .. })));
        let mut torn = marker();
        torn[3] ^= 1;
        assert!(matches!(decide("d", Some(&torn), true), Err(FormatError::Damaged { .. })));
        assert!(matches!(decide("d", Some(b""), false), Err(FormatError::Damaged { .. })));
    }

    /// The marker is written once and read back as this format; a directory holding data but no
    /// marker is refused.
    #[test]
    fn stamps_a_new_directory_and_refuses_an_old_one() {
        let storage = crate::storage::sim::SimStorage::new(1);
        let dir = Path::new("/n1/data");
        check_or_stamp(storage.as_ref(), dir).expect("new directory");
        check_or_stamp(storage.as_ref(), dir).expect("same format");
        let old = Path::new("/n2/data");
        storage.create_dir_all(&old.join("partitions")).unwrap();
        assert!(matches!(check_or_stamp(storage.as_ref(), old), Err(FormatError::Format1 { .. })));
    }
}
