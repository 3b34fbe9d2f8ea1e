//! Keel's internal client protocol: append, read and status requests over the node-to-node
//! transport (the simulator's clients and `keel` admin commands use it; Kafka clients speak the
//! Kafka protocol instead). Bodies are bincode; kinds are distinct from the Raft RPC kinds.

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::raft::NodeId;

pub const KIND_APPEND: u8 = 32;
pub const KIND_READ: u8 = 33;
pub const KIND_STATUS: u8 = 34;

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
}
