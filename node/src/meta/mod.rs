//! The metadata group: one Raft group (id [`METADATA_GROUP`]) whose state machine holds the
//! cluster metadata (`keel_core::metadata`). Its voters are configured (normally the first three
//! nodes); every other registered node follows it as a learner, so every node applies the same
//! commands and reconciles its partitions from its own copy.
//!
//! - [`state_machine`]: the in-memory model, its snapshots, the command codec.
//! - [`MetaGroup`]: the running group on one node: open, bootstrap, propose when leader.
//!
//! Proposals from other nodes (registration, topic admin, reassignment completion) reach the
//! leader through the node's dispatcher (`node.rs`): a non-leader answers `NotLeader` with the
//! leader it knows, and the proposer retries there.

pub mod state_machine;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use keel_core::log::LogConfig;
use keel_core::metadata::Command;
use keel_core::metadata::METADATA_GROUP;
use keel_core::metadata::MetaError;
use keel_core::metadata::Reply;
use keel_core::storage::Storage;
use openraft::BasicNode;
use openraft::ServerState;
use openraft::errors::ClientWriteError;
use openraft::errors::InitializeError;
use openraft::errors::RaftError;
use openraft_rt::WatchReceiver;
use serde::Deserialize;
use serde::Serialize;

use self::state_machine::MetaStateMachine;
use crate::partition::ReplicaError;
use crate::raft::NodeId;
use crate::raft::Response;
use crate::raft::TypeConfig;
use crate::raft::log_store::LogShared;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetFactory;
use crate::transport::Transport;

pub type MetaRaft = openraft::Raft<TypeConfig, MetaStateMachine>;

/// Answer to a metadata proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposeResponse {
    /// Committed and applied: the command's reply or why it was refused.
    Applied(Result<Reply, MetaError>),
    /// Not proposed: this node does not lead the metadata group.
    NotLeader { leader: Option<NodeId> },
    /// May or may not have been applied.
    Unknown(String),
}

pub struct MetaGroup {
    pub node_id: NodeId,
    raft: MetaRaft,
    sm: MetaStateMachine,
    log: Arc<LogShared>,
}

impl MetaGroup {
    /// Opens the metadata group stored under `dir` and starts its Raft.
    pub async fn open(
        node_id: NodeId,
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        log_config: LogConfig,
        raft_config: Arc<openraft::Config>,
        default_replication_factor: u16,
        transport: Transport,
    ) -> Result<Arc<MetaGroup>, ReplicaError> {
        let group = METADATA_GROUP;
        let (store, report) = LogStore::open(storage.clone(), dir.clone(), log_config)
            .map_err(|source| ReplicaError::Open { group, source })?;
        if report.truncated_bytes > 0 || !report.indexes_rebuilt.is_empty() {
            tracing::warn!(group, ?report, "metadata log recovered");
        }
        let store = store.with_frame_bytes_max(transport.frame_bytes_max());
        let log = store.shared().clone();
        let sm = MetaStateMachine::open(storage, dir, default_replication_factor)
            .map_err(|source| ReplicaError::Open { group, source })?;
        let network = NetFactory { transport, group };
        let raft = MetaRaft::new(node_id, raft_config, network, store, sm.clone())
            .await
            .map_err(|e| ReplicaError::Raft { group, reason: e.to_string() })?;
        crate::rt::spawn(LogStore::run_flusher(log.clone()));
        Ok(Arc::new(MetaGroup { node_id, raft, sm, log }))
    }

    /// Bootstraps the group with `voters`. Every voter calls this with the same set: openraft
    /// writes the same first entry on each, and a group that already has state is left alone.
    pub async fn initialize(&self, voters: BTreeMap<NodeId, BasicNode>) -> Result<(), ReplicaError> {
        match self.raft.initialize(voters).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ReplicaError::Raft { group: METADATA_GROUP, reason: e.to_string() }),
        }
    }

    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    pub fn sm(&self) -> &MetaStateMachine {
        &self.sm
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    pub fn is_leader(&self) -> bool {
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// Why the group stopped, if it failed closed.
    pub fn failed(&self) -> Option<String> {
        if let Some(reason) = self.log.log().is_failed() {
            return Some(reason.to_string());
        }
        match &self.raft.metrics().borrow_watched().running_state {
            Ok(()) => None,
            Err(fatal) => Some(format!("raft stopped: {fatal}")),
        }
    }

    /// Proposes `cmd` if this node leads the group, and waits until it is applied.
    pub async fn propose_local(&self, cmd: &Command) -> ProposeResponse {
        let payload = match state_machine::encode_command(cmd, crate::clock::wall_clock_ms()) {
            Ok(p) => p,
            Err(e) => return ProposeResponse::Unknown(e),
        };
        match self.raft.client_write(payload).await {
            Ok(resp) => match resp.data {
                Response::Meta(reply) => ProposeResponse::Applied(reply),
                other => ProposeResponse::Unknown(format!("unexpected answer {other:?}")),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                ProposeResponse::NotLeader { leader: f.leader_id }
            }
            Err(e) => ProposeResponse::Unknown(e.to_string()),
        }
    }

    /// The log index up to which a linearizable read must have applied: confirmed with a quorum
    /// (ReadIndex), so no entry committed before this call is missed. Leader only.
    pub async fn read_index(&self) -> Result<u64, String> {
        self.raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
            .await
            .map(|r| r.index())
            .map_err(|e| e.to_string())
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Answer to a read-index request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadIndexResponse {
    /// Apply up to this index, and the local metadata is at least as new as when asked.
    Index(u64),
    NotLeader {
        leader: Option<NodeId>,
    },
    Error(String),
}
