//! openraft's own storage conformance suite (`openraft::testing::log::Suite`) against Keel's log
//! store (segment log + hard state) and state machine, on the real file system and on the
//! simulated disk.
#![cfg(not(madsim))]

use std::sync::Arc;

use keel_core::log::LogConfig;
use keel_core::storage::Storage;
use keel_core::storage::fs::FsStorage;
use keel_core::storage::sim::SimStorage;
use keel_node::raft::TypeConfig;
use keel_node::raft::log_store::LogStore;
use keel_node::raft::state_machine::StateMachine;
use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;

/// Small segments, so the suite's appends, truncations and purges cross segment boundaries.
fn small_segments() -> LogConfig {
    LogConfig { segment_bytes_max: 256, ..LogConfig::default() }
}

struct FsBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FsBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        let (store, _) = LogStore::open(storage, dir.path().join("p0"), small_segments())
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        tokio::spawn(LogStore::run_flusher(store.shared().clone()));
        Ok((dir, store, StateMachine::new(None, 1)))
    }
}

struct SimBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for SimBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
        let storage: Arc<dyn Storage> = SimStorage::new(7);
        let (store, _) = LogStore::open(storage, "/keel/p0".into(), small_segments())
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        tokio::spawn(LogStore::run_flusher(store.shared().clone()));
        Ok(((), store, StateMachine::new(None, 1)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_on_the_file_system() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(FsBuilder).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_on_the_simulated_disk() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(SimBuilder).await
}

/// Issue 17: librdkafka's default producer fills 1 MB batches; openraft asks for up to 64
/// entries per AppendEntries, and the reader used to return them all (about 64 MiB) for a
/// transport whose frames hold 16 MiB — the follower never received them. Replication reads
/// now return the longest prefix that fits one frame, and successive reads cover the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_reads_of_one_megabyte_batches_fit_one_frame() {
    use keel_node::raft::Batch;
    use keel_node::raft::log_id;
    use keel_node::raft::network::encode;
    use keel_node::raft::replicate_bytes;
    use keel_node::transport::TransportConfig;
    use keel_node::transport::frame;
    use openraft::entry::RaftEntry;
    use openraft::storage::IOFlushed;
    use openraft::storage::RaftLogReader;
    use openraft::storage::RaftLogStorage;

    let storage: Arc<dyn Storage> = SimStorage::new(7);
    let (store, _) = LogStore::open(storage, "/keel/p0".into(), LogConfig::default()).expect("open");
    tokio::spawn(LogStore::run_flusher(store.shared().clone()));
    let frame_bytes_max = TransportConfig::new("c").frame_bytes_max;
    let mut store = store.with_frame_bytes_max(frame_bytes_max);
    // 64 batches of 1,000 records of about 1 KiB each: just under message.max.bytes.
    let value = vec![b'x'; 1024];
    let mut b = keel_core::batch::BatchBuilder::new(0);
    for _ in 0..1000 {
        b.push(0, None, Some(&value));
    }
    let batch = bytes::Bytes::from(b.build());
    assert!(batch.len() > 1_000_000 && batch.len() <= LogConfig::default().batch_bytes_max, "{}", batch.len());
    let entries: Vec<_> = (1..=64)
        .map(|i| keel_node::raft::Entry::new(log_id(1, i), openraft::EntryPayload::Normal(Batch(batch.clone()))))
        .collect();
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await.expect("append");
    rx.await.expect("flushed").expect("durable");

    let mut next = 1u64;
    let mut messages = 0;
    while next <= 64 {
        let got = store.limited_get_log_entries(next, 65).await.expect("read");
        assert!(!got.is_empty(), "a read of a non-empty range returns at least one entry");
        assert_eq!(got[0].log_id.index, next, "the prefix starts where asked");
        let req = openraft::raft::AppendEntriesRequest::<keel_node::raft::TypeConfig> {
            vote: keel_node::raft::Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(1, next - 1)),
            leader_commit: Some(log_id(1, 64)),
            entries: got.clone(),
        };
        let body = encode(&(2u64, &req)).expect("encode");
        assert!(frame::wire_bytes(body.len()) <= frame_bytes_max, "{} entries: {} bytes", got.len(), body.len());
        // The longest prefix: one more entry would not have fit.
        if next + (got.len() as u64) <= 64 {
            let one_more = replicate_bytes::entry_wire_bytes(&got[0]);
            assert!(frame::wire_bytes(body.len() + one_more) > frame_bytes_max);
        }
        next += got.len() as u64;
        messages += 1;
    }
    assert!(messages >= 4, "64 MiB over 16 MiB frames takes at least 4 messages, took {messages}");
}
