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
