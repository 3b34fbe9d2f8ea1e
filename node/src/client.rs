//! Keel's internal client protocol: append, read and status requests over the node-to-node
//! transport (the simulator's clients and `keel` admin commands use it; Kafka clients speak the
//! Kafka protocol instead). Bodies are bincode; kinds are distinct from the Raft RPC kinds.
//!
//! Metadata requests are addressed to the metadata group ([`METADATA_GROUP`]): propose a
//! [`Command`](keel_core::metadata::Command) (answered with a
//! [`ProposeResponse`](crate::meta::ProposeResponse)), or read the cluster as this node knows
//! it ([`ClusterView`]). Node-level messages (leader gossip) use [`NODE_GROUP`].

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::raft::NodeId;

pub const KIND_APPEND: u8 = 32;
pub const KIND_READ: u8 = 33;
pub const KIND_STATUS: u8 = 34;
/// Body: a bincode `Command`; answer: `ProposeResponse`. Group: [`METADATA_GROUP`].
pub const KIND_META_PROPOSE: u8 = 40;
/// Body: empty; answer: [`ClusterView`]. Group: [`METADATA_GROUP`].
pub const KIND_META_READ: u8 = 41;
/// Body: empty; answer: `ReadIndexResponse` (from the metadata leader). Group: [`METADATA_GROUP`].
pub const KIND_META_READ_INDEX: u8 = 43;
/// Body: a `LeaderReport`; answer: empty. Group: [`NODE_GROUP`].
pub const KIND_LEADERS: u8 = 42;
/// Body: empty; answer: empty. Group: [`NODE_GROUP`]. The sender drains before stopping: hand it
/// no leadership (see `crate::drain`).
pub const KIND_DRAINING: u8 = 44;
/// Body: empty; answer: [`ElectAnswer`]. Group: a partition's. Asks the partition's leader to
/// hand leadership to the preferred replica (Kafka's ElectLeaders, preferred).
pub const KIND_ELECT_PREFERRED: u8 = 45;

/// The group id of node-level messages (no Raft group has it).
pub use crate::raft::heartbeat::NODE_GROUP;
pub use keel_core::metadata::METADATA_GROUP;

/// The cluster as one node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub node: NodeId,
    pub metadata_leader: Option<NodeId>,
    pub metadata: keel_core::metadata::MetadataState,
    /// Partition group → its leader and epoch, as far as this node knows; never a leader on a
    /// node in `down`.
    pub leaders: std::collections::BTreeMap<u64, crate::leaders::LeaderInfo>,
    /// Partition group → its in-sync replicas as its leader last reported them.
    pub isr: std::collections::BTreeMap<u64, crate::leaders::IsrInfo>,
    /// Nodes the transport knows are down (see `Transport::peers_down`).
    pub down: std::collections::BTreeSet<NodeId>,
}

/// Answer to an append (the request body is the raw RecordBatch v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// Committed by a quorum that fsynced it; the batch's first offset and its leader epoch.
    Ok { base_offset: u64, offset_count: u64, leader_epoch: u64 },
    /// Not written: this node is not the leader.
    NotLeader { leader: Option<NodeId> },
    /// Not written: the batch was refused (corrupt, too large, unknown partition).
    Rejected(String),
    /// May or may not be written (leadership changed while waiting, storage failed, ...).
    Unknown(String),
}

/// Answer to [`KIND_ELECT_PREFERRED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectAnswer {
    /// The leader asked the preferred replica to take over.
    Transferring,
    /// The preferred replica leads already.
    NotNeeded,
    /// This node does not lead the partition.
    NotLeader { leader: Option<NodeId> },
    /// The preferred replica cannot take over now (down, draining, not a voter, behind).
    NotAvailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    pub offset: u64,
    pub bytes_max: u32,
    /// Refuse unless this node believes it leads the partition.
    pub leader_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadResponse {
    /// Committed batches, each exactly as stored.
    Ok {
        batches: Vec<Bytes>,
        high_watermark: u64,
        log_start_offset: u64,
    },
    NotLeader {
        leader: Option<NodeId>,
    },
    Error(String),
}

/// One replica's view of its partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: NodeId,
    pub group: u64,
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub high_watermark: u64,
    pub failed: Option<String>,
    /// Last log index this replica holds durably (fsynced).
    pub durable_index: Option<u64>,
    /// Last committed log index this replica knows of.
    pub committed_index: Option<u64>,
    /// Voter sets of the membership in effect: one set, or two during joint consensus.
    pub voters: Vec<Vec<NodeId>>,
    /// The membership in effect is committed (no change in flight).
    pub membership_committed: bool,
    /// The replica's Raft id (node and incarnation); a replica removed and re-created differs.
    pub raft_id: u64,
}
