//! The metadata group's `RaftStateMachine`: a [`MetadataState`] in memory, snapshotted to disk.
//!
//! Unlike a partition, the metadata group's data is small and derived entirely from its commands,
//! so it follows the textbook shape: apply commands to an in-memory model; snapshot the model
//! (openraft's `SnapshotPolicy` decides when); openraft then purges the log below the snapshot,
//! which keeps the metadata log bounded. Each snapshot is written atomically to `meta-snapshot`
//! (write temp, fsync, rename, fsync dir) before openraft may purge the entries it covers; on
//! restart the model starts from that file and openraft re-applies the log after it.
//!
//! A command travels as a one-record RecordBatch whose value is the bincode-encoded
//! [`Command`] (so the metadata log is a partition log like any other).

use std::io;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use bincode::Options;
use futures::Stream;
use futures::TryStreamExt;
use keel_core::batch;
use keel_core::metadata::Command;
use keel_core::metadata::MetaError;
use keel_core::metadata::MetadataState;
use keel_core::metadata::Reply;
use keel_core::storage::Storage;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::storage::EntryResponder;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;

use crate::raft::Batch;
use crate::raft::LogId;
use crate::raft::Response;
use crate::raft::StoredMembership;
use crate::raft::TypeConfig;

/// Largest encoded command or snapshot accepted when decoding.
const META_BYTES_MAX: u64 = 256 << 20;
const SNAPSHOT_FILE: &str = "meta-snapshot";

fn opts() -> impl Options {
    bincode::DefaultOptions::new().with_limit(META_BYTES_MAX).with_fixint_encoding()
}

/// The entry payload carrying `cmd`.
pub fn encode_command(cmd: &Command, now_ms: i64) -> Result<Batch, String> {
    let value = opts().serialize(cmd).map_err(|e| format!("encode command: {e}"))?;
    let mut b = batch::BatchBuilder::new(now_ms);
    b.push(now_ms, None, Some(&value));
    Ok(Batch(b.build().into()))
}

/// The command in an entry payload; an error for anything that is not one.
pub fn decode_command(bytes: &[u8]) -> Result<Command, String> {
    let records = batch::records(bytes).map_err(|e| format!("metadata entry: {e}"))?;
    let [record] = records.as_slice() else {
        return Err(format!("metadata entry holds {} records, not 1", records.len()));
    };
    let value = record.value.as_ref().ok_or("metadata entry without a value")?;
    opts().deserialize(value).map_err(|e| format!("metadata entry: {e}"))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MetaData {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: MetadataState,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMetaOf<TypeConfig>,
    data: Vec<u8>,
}

struct Inner {
    data: MetaData,
    snapshot: Option<(SnapshotMetaOf<TypeConfig>, Vec<u8>)>,
}

/// Cheap to clone; every clone sees the same state.
#[derive(Clone)]
pub struct MetaStateMachine {
    inner: Arc<Mutex<Inner>>,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// Bumped after every applied batch of entries and every installed snapshot.
    version: Arc<AtomicU64>,
    /// Woken whenever `version` moves.
    changed: Arc<tokio::sync::Notify>,
}

impl MetaStateMachine {
    /// The state machine of the metadata group stored in `dir`, starting from its snapshot file
    /// if there is a readable one. A damaged snapshot file is an error: the log below it may be
    /// purged, so starting empty would silently lose metadata.
    pub fn open(storage: Arc<dyn Storage>, dir: PathBuf, default_replication_factor: u16) -> io::Result<Self> {
        let path = dir.join(SNAPSHOT_FILE);
        let (data, snapshot) = match keel_core::storage::read_whole(&*storage, &path)? {
            None => (MetaData { state: MetadataState::new(default_replication_factor), ..MetaData::default() }, None),
            Some(bytes) => {
                let body = keel_core::storage::unseal(&bytes).ok_or_else(|| corrupt(&path, "checksum mismatch"))?;
                let file: SnapshotFile = opts().deserialize(body).map_err(|e| corrupt(&path, &e.to_string()))?;
                let data: MetaData = opts().deserialize(&file.data).map_err(|e| corrupt(&path, &e.to_string()))?;
                (data, Some((file.meta, file.data)))
            }
        };
        Ok(MetaStateMachine {
            inner: Arc::new(Mutex::new(Inner { data, snapshot })),
            storage,
            dir,
            version: Arc::new(AtomicU64::new(0)),
            changed: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the current metadata.
    pub fn with_state<T>(&self, f: impl FnOnce(&MetadataState) -> T) -> T {
        f(&self.inner().data.state)
    }

    /// A copy of the current metadata.
    pub fn state(&self) -> MetadataState {
        self.inner().data.state.clone()
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.inner().data.last_applied
    }

    /// Moves whenever the metadata changes.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn changed(&self) -> &Arc<tokio::sync::Notify> {
        &self.changed
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    async fn persist(&self, meta: &SnapshotMetaOf<TypeConfig>, data: &[u8]) -> io::Result<()> {
        let body =
            opts().serialize(&SnapshotFile { meta: meta.clone(), data: data.to_vec() }).map_err(io::Error::other)?;
        let body = keel_core::storage::seal(body);
        let (storage, dir) = (self.storage.clone(), self.dir.clone());
        crate::rt::blocking(move || keel_core::storage::write_atomic(&*storage, &dir, SNAPSHOT_FILE, &body)).await?
    }
}

fn corrupt(path: &std::path::Path, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("metadata snapshot {} is damaged: {why}", path.display()))
}

impl RaftSnapshotBuilder<TypeConfig> for MetaStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Cursor<Vec<u8>>>, io::Error> {
        let (meta, bytes) = {
            let g = self.inner();
            let bytes = opts().serialize(&g.data).map_err(io::Error::other)?;
            let meta = SnapshotMetaOf::<TypeConfig> {
                last_log_id: g.data.last_applied,
                last_membership: g.data.membership.clone(),
            };
            (meta, bytes)
        };
        // Durable before openraft purges the log it covers.
        self.persist(&meta, &bytes).await?;
        self.inner().snapshot = Some((meta.clone(), bytes.clone()));
        Ok(SnapshotOf::<TypeConfig, _> { meta, snapshot: Cursor::new(bytes) })
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let g = self.inner();
        Ok((g.data.last_applied, g.data.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let reply = {
                let mut g = self.inner();
                g.data.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Normal(Batch(bytes)) => match decode_command(&bytes) {
                        Ok(cmd) => g.data.state.apply(entry.log_id.index, &cmd),
                        Err(e) => {
                            tracing::error!(index = entry.log_id.index, error = %e, "undecodable metadata entry");
                            g.data.state.applied_index = entry.log_id.index;
                            Err(MetaError::Undecodable(e))
                        }
                    },
                    EntryPayload::Membership(m) => {
                        g.data.membership = StoredMembership::new(Some(entry.log_id), m);
                        Ok(Reply::Done)
                    }
                    EntryPayload::Blank => Ok(Reply::Done),
                }
            };
            if let Some(r) = responder {
                r.send(Response::Meta(reply));
            }
        }
        self.bump();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let data: MetaData =
            opts().deserialize(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.persist(meta, &bytes).await?;
        {
            let mut g = self.inner();
            g.data = data;
            g.snapshot = Some((meta.clone(), bytes));
        }
        self.bump();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, Cursor<Vec<u8>>>>, io::Error> {
        let g = self.inner();
        Ok(g.snapshot
            .as_ref()
            .map(|(m, d)| SnapshotOf::<TypeConfig, _> { meta: m.clone(), snapshot: Cursor::new(d.clone()) }))
    }
}
