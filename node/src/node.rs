//! A Keel node: the transport, the replicas it hosts and the dispatch of incoming requests.
//!
//! The node takes its listener, storage and observer from the caller, so the same code runs as a
//! real process, in tests, and inside the simulator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use keel_core::storage::Storage;
use openraft::BasicNode;
use openraft_rt::WatchReceiver;
use thiserror::Error;

use crate::client;
use crate::partition::AppendError;
use crate::partition::Observer;
use crate::partition::Replica;
use crate::partition::ReplicaConfig;
use crate::partition::ReplicaError;
use crate::raft::NodeId;
use crate::raft::network;
use crate::transport::Handler;
use crate::transport::Transport;
use crate::transport::TransportConfig;

/// Everything a node needs to start. Built and validated by the caller (CLI or simulator).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Where partition logs live: `<data_dir>/partitions/<group>/`.
    pub data_dir: PathBuf,
    /// Every voter of the partitions, this node included: id → transport address.
    pub peers: BTreeMap<NodeId, String>,
    /// The partitions (Raft group ids) this node replicates; every peer replicates each of them.
    pub partitions: Vec<u64>,
    pub replica: ReplicaConfig,
    pub transport: TransportConfig,
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("node {0} is not among its own peers")]
    NotAPeer(NodeId),
    #[error(transparent)]
    Transport(#[from] crate::transport::ConfigError),
}

type Registry = Arc<Mutex<BTreeMap<u64, Arc<Replica>>>>;

fn lock(r: &Registry) -> MutexGuard<'_, BTreeMap<u64, Arc<Replica>>> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Node {
    pub id: NodeId,
    transport: Transport,
    replicas: Registry,
}

struct Dispatch {
    node_id: NodeId,
    replicas: Registry,
}

impl Handler for Dispatch {
    fn handle(&self, _from: NodeId, group: u64, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let replica = lock(&self.replicas).get(&group).cloned();
        let node_id = self.node_id;
        async move {
            let Some(replica) = replica else {
                return match kind {
                    client::KIND_APPEND => {
                        network::encode(&client::AppendResponse::Rejected(format!("unknown partition {group}")))
                    }
                    _ => Err(format!("node {node_id} has no partition {group}")),
                };
            };
            match kind {
                client::KIND_APPEND => network::encode(&append(&replica, payload).await),
                client::KIND_READ => network::encode(&read(&replica, &payload)),
                client::KIND_STATUS => network::encode(&status(&replica)),
                raft_kind => network::serve(replica.raft(), raft_kind, &payload).await,
            }
        }
        .boxed()
    }
}

async fn append(replica: &Replica, batch: Bytes) -> client::AppendResponse {
    match replica.append(batch).await {
        Ok(a) => client::AppendResponse::Ok {
            base_offset: a.base_offset,
            offset_count: a.offset_count,
            leader_epoch: a.leader_epoch,
        },
        Err(AppendError::NotLeader { leader }) => client::AppendResponse::NotLeader { leader },
        Err(e @ (AppendError::Corrupt(_) | AppendError::TooLarge(_))) => {
            client::AppendResponse::Rejected(e.to_string())
        }
        Err(AppendError::Unknown(e)) => client::AppendResponse::Unknown(e),
    }
}

fn read(replica: &Replica, body: &[u8]) -> client::ReadResponse {
    let req: client::ReadRequest = match network::decode(body) {
        Ok(r) => r,
        Err(e) => return client::ReadResponse::Error(e),
    };
    if req.leader_only {
        let leader = replica.raft().metrics().borrow_watched().current_leader;
        if leader != Some(replica.node_id) {
            return client::ReadResponse::NotLeader { leader };
        }
    }
    match replica.read(req.offset, req.bytes_max as usize) {
        Ok(r) => client::ReadResponse::Ok {
            batches: r.batches.into_iter().map(|e| e.bytes).collect(),
            high_watermark: r.high_watermark,
            log_start_offset: r.log_start_offset,
        },
        Err(e) => client::ReadResponse::Error(e),
    }
}

fn status(replica: &Replica) -> client::Status {
    let m = replica.raft().metrics().borrow_watched().clone();
    client::Status {
        node: replica.node_id,
        group: replica.group,
        state: format!("{:?}", m.state),
        term: m.current_term,
        leader: m.current_leader,
        applied_index: replica.applied_index(),
        last_log_index: m.last_log_index,
        high_watermark: replica.high_watermark(),
        failed: replica.failed(),
    }
}

impl Node {
    /// Starts the node: serves `listener`, opens every partition, bootstraps brand-new groups
    /// (from the lowest-id peer). Returns once every replica is running.
    pub async fn start(
        config: NodeConfig,
        storage: Arc<dyn Storage>,
        listener: tokio::net::TcpListener,
        observer: Arc<dyn Observer>,
    ) -> Result<Arc<Node>, NodeError> {
        if !config.peers.contains_key(&config.id) {
            return Err(NodeError::NotAPeer(config.id));
        }
        let replicas: Registry = Arc::new(Mutex::new(BTreeMap::new()));
        let dispatch = Arc::new(Dispatch { node_id: config.id, replicas: replicas.clone() });
        let transport = Transport::new(config.id, config.transport.clone(), dispatch)?;
        for (id, addr) in &config.peers {
            if *id != config.id {
                transport.set_peer_addr(*id, addr.clone());
            }
        }
        let t = transport.clone();
        tokio::spawn(async move { t.serve(listener).await });

        let members: BTreeMap<NodeId, BasicNode> =
            config.peers.iter().map(|(id, addr)| (*id, BasicNode::new(addr.clone()))).collect();
        let bootstrapper = config.peers.keys().next().copied() == Some(config.id);
        for &group in &config.partitions {
            let dir = config.data_dir.join("partitions").join(group.to_string());
            let replica = Replica::open(
                config.id,
                group,
                storage.clone(),
                dir,
                &config.replica,
                transport.clone(),
                observer.clone(),
            )
            .await?;
            if bootstrapper {
                replica.initialize(members.clone()).await?;
            }
            lock(&replicas).insert(group, replica);
        }
        Ok(Arc::new(Node { id: config.id, transport, replicas }))
    }

    pub fn replica(&self, group: u64) -> Option<Arc<Replica>> {
        lock(&self.replicas).get(&group).cloned()
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Stops every replica's Raft group and the transport.
    pub async fn shutdown(&self) {
        let replicas: Vec<_> = lock(&self.replicas).values().cloned().collect();
        for r in replicas {
            r.shutdown().await;
        }
        self.transport.shutdown();
    }
}
