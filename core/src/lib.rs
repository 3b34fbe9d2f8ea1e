//! keel-core: Keel's partition log and the decisions that need no I/O.
//!
//! Layout:
//! - [`batch`]: Kafka RecordBatch v2 headers, CRC32C, the offset/epoch stamp, control batches for
//!   Raft blank and membership entries, a builder and reader for uncompressed batches.
//! - [`data_format`]: the format marker of a node's data directory (dense offsets are format 2;
//!   an older directory is refused with a clear message).
//! - [`storage`]: the storage seam (`Storage`, `StorageFile`), the real file system and the
//!   simulated one that loses unsynced bytes, tears writes and injects EIO/ENOSPC/latency.
//! - [`log`]: the segment log of one partition: segments of batches as Fetch serves them, sparse
//!   offset and time indexes, offset assignment, truncation, purge, crash recovery.
//! - [`group`]: Kafka consumer groups as a pure state machine (the rebalance protocol, committed
//!   offsets, retention, lag) and the records of the offsets topic that persist them.
//! - [`producer`]: idempotent-producer state of a partition (epochs, last batch sequences and
//!   their offsets) and Kafka's rules for accepting, deduplicating or refusing a batch.
//! - [`isr`]: a partition's in-sync replicas from its followers' progress, by Kafka's
//!   `replica.lag.time.max.ms` rule.
//! - [`metadata`]: the cluster metadata model (nodes, topics, partition assignments), the
//!   commands the metadata Raft group applies to it, replica placement and topic configs.
//!
//! Nothing here spawns tasks, reads the clock or opens sockets: time arrives as arguments, files
//! through [`storage::Storage`].

pub mod batch;
pub mod data_format;
pub mod group;
pub mod isr;
pub mod log;
pub mod metadata;
pub mod producer;
pub mod storage;
