//! openraft glue for one partition (one Raft group).
//!
//! - [`TypeConfig`]: the Raft types. One leader per term (`leader_id_std`), so the term is Kafka's
//!   leader epoch. Application data is a producer [`Batch`]; the response is the batch's offset.
//! - [`entry_codec`]: Raft entry ⇄ stored RecordBatch (blank and membership entries are control
//!   batches), so the Raft log *is* the partition log.
//! - [`log_store`]: `RaftLogStorage` over `keel_core::log::PartitionLog`, with group commit.
//! - [`hard_state`]: the vote and last purged log id, written atomically and fsynced.
//! - [`state_machine`]: `RaftStateMachine`: applied position and membership; no second copy of data.
//! - [`network`]: `RaftNetworkV2` over the node-to-node transport.
//! - [`replicate_bytes`]: the byte bound of one replication message (never over a frame).
//! - [`heartbeat`]: heartbeats of every group batched per peer node, both sides.

pub mod entry_codec;
pub mod hard_state;
pub mod heartbeat;
pub mod log_store;
pub mod network;
pub mod replicate_bytes;
pub mod state_machine;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

/// A producer RecordBatch v2, bytes as the client sent them (the log stamps offset and epoch).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Bytes);

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({} bytes)", self.0.len())
    }
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({} bytes)", self.0.len())
    }
}

/// What applying a partition entry answers: the Kafka offset range it occupies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub base_offset: u64,
    pub offset_count: u64,
}

/// What applying an entry answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A partition entry: the offsets its batch was given.
    Partition(Applied),
    /// A metadata command: its reply, or why it was refused (refusing changes nothing).
    Meta(Result<keel_core::metadata::Reply, keel_core::metadata::MetaError>),
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Keel's Raft types, for partition groups and the metadata group alike.
    pub TypeConfig:
        D = Batch,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
        AsyncRuntime = crate::rt::Runtime,
);

pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;

/// Builds a log id from its parts (with one leader per term, the committed leader id is the term).
pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(term.into(), index)
}

/// The term of a log id.
pub fn term_of(log_id: &LogId) -> u64 {
    log_id.leader_id.term
}

/// Raft timing of a partition group; everything else is fixed by [`config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming { heartbeat_ms: 100, election_timeout_min_ms: 500, election_timeout_max_ms: 1000 }
    }
}

/// The openraft configuration of every partition group. The safety-relevant choices live here,
/// in one place:
/// - pre-vote on: a node cut off by a partition does not inflate terms and depose a healthy
///   leader when it comes back;
/// - leader restore off: a restarted leader must win a new election in a new term. Restoring
///   leadership in the old term would let it write new entries under log ids (term, index) that
///   its lost, unflushed entries already had on followers — two different entries with one log
///   id, which breaks Raft's log matching (found by the simulation; pinned as
///   `sim/regressions/bug-leader-restore.json`);
/// - no Raft-driven snapshots or purges: the log is the data (see `state_machine`).
pub fn config(cluster_name: &str, timing: RaftTiming) -> Result<std::sync::Arc<openraft::Config>, String> {
    let c = openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_timeout_min_ms,
        election_timeout_max: timing.election_timeout_max_ms,
        enable_pre_vote: Some(true),
        enable_leader_restore: Some(false),
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_payload_entries: 64,
        ..Default::default()
    };
    c.validate().map(std::sync::Arc::new).map_err(|e| e.to_string())
}

/// Metadata entries between two snapshots of the metadata group.
pub const METADATA_SNAPSHOT_EVERY_ENTRIES: u64 = 1024;
/// Entries kept below a metadata snapshot, so a briefly lagging learner catches up from the log.
pub const METADATA_LOG_KEPT_ENTRIES: u64 = 256;

/// The openraft configuration of the metadata group: the partition settings, plus snapshots
/// every [`METADATA_SNAPSHOT_EVERY_ENTRIES`] entries after which the log below is purged — its
/// state is a small model, not data, so unlike a partition its log stays bounded.
pub fn metadata_config(cluster_name: &str, timing: RaftTiming) -> Result<std::sync::Arc<openraft::Config>, String> {
    let mut c = (*config(cluster_name, timing)?).clone();
    c.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(METADATA_SNAPSHOT_EVERY_ENTRIES);
    c.max_in_snapshot_log_to_keep = METADATA_LOG_KEPT_ENTRIES;
    c.validate().map(std::sync::Arc::new).map_err(|e| e.to_string())
}
