//! A Keel node: the transport, the metadata group, the replicas it hosts, and the dispatch of
//! incoming requests.
//!
//! The node takes its listener, storage and observer from the caller, so the same code runs as a
//! real process, in tests, and inside the simulator. What the node *does* over time — register
//! itself, follow the metadata, open and remove replicas, drive reassignments, move leadership
//! back to preferred leaders, gossip leaders — lives in [`crate::reconcile`].

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::OnceLock;
use std::sync::Weak;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use keel_core::log::LogConfig;
use keel_core::metadata::Command;
use keel_core::metadata::METADATA_GROUP;
use keel_core::metadata::MetaError;
use keel_core::metadata::Reply;
use keel_core::metadata::node_of;
use keel_core::storage::Storage;
use openraft::BasicNode;
use openraft_rt::WatchReceiver;
use thiserror::Error;

use crate::client;
use crate::leaders::LeaderReport;
use crate::leaders::LeaderTable;
use crate::meta::MetaGroup;
use crate::meta::ProposeResponse;
use crate::meta::ReadIndexResponse;
use crate::partition::AppendError;
use crate::partition::Observer;
use crate::partition::Replica;
use crate::partition::ReplicaConfig;
use crate::partition::ReplicaError;
use crate::raft::NodeId;
use crate::raft::heartbeat;
use crate::raft::heartbeat::HeartbeatBatchConfig;
use crate::raft::network;
use crate::transport::Handler;
use crate::transport::Transport;
use crate::transport::TransportConfig;
use crate::transport::TransportError;

/// How often the node's background duties run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlTiming {
    /// Reconcile replicas with the metadata at least this often (and on every metadata change).
    pub reconcile_ms: u64,
    /// Send the leader report to every peer this often.
    pub gossip_ms: u64,
    /// Check reassignments and preferred leaders this often.
    pub rebalance_ms: u64,
    /// A leader keeps leadership at least this long before handing it to the preferred leader.
    pub leader_settle_ms: u64,
    /// Kafka's `replica.lag.time.max.ms`: a follower that has not caught up to its leader's log
    /// end for longer than this leaves the partition's in-sync replicas (`keel_core::isr`).
    pub replica_lag_time_max_ms: u64,
}

impl Default for ControlTiming {
    fn default() -> Self {
        ControlTiming {
            reconcile_ms: 500,
            gossip_ms: 1000,
            rebalance_ms: 1000,
            leader_settle_ms: 3000,
            replica_lag_time_max_ms: 30_000,
        }
    }
}

/// Everything a node needs to start. Built and validated by the caller (CLI or simulator).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Where data lives: `<data_dir>/metadata/` and `<data_dir>/partitions/<group>/`.
    pub data_dir: PathBuf,
    /// This node's node-to-node address as the others reach it.
    pub addr: String,
    /// The address Kafka clients are told to use for this node.
    pub kafka_addr: String,
    /// Failure domain (replicas of a partition spread over racks).
    pub rack: Option<String>,
    /// The metadata group's voters: id → node-to-node address. Every node knows them; nodes not
    /// listed join the metadata group as learners when they register.
    pub voters: BTreeMap<NodeId, String>,
    /// Replication factor of topics created without one (more than the nodes is refused).
    pub default_replication_factor: u16,
    pub replica: ReplicaConfig,
    /// The metadata group's Raft configuration (snapshots on, unlike partitions).
    pub metadata_raft: Arc<openraft::Config>,
    pub transport: TransportConfig,
    /// How Raft heartbeats to one peer are batched.
    pub heartbeat_batch: HeartbeatBatchConfig,
    pub timing: ControlTiming,
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("the metadata group needs at least one voter")]
    NoVoters,
    #[error(transparent)]
    Transport(#[from] crate::transport::ConfigError),
    #[error("invalid node configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    DataFormat(#[from] keel_core::data_format::FormatError),
}

/// Why a routed metadata proposal has no answer.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("no metadata leader answered within {0} ms")]
    Timeout(u64),
    #[error("node is shutting down")]
    Stopped,
}

pub(crate) type Registry = Mutex<BTreeMap<u64, Arc<Replica>>>;

pub struct Node {
    pub id: NodeId,
    pub(crate) config: NodeConfig,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) transport: Transport,
    pub(crate) meta: Arc<MetaGroup>,
    pub(crate) replicas: Registry,
    pub(crate) leaders: LeaderTable,
    pub(crate) observer: Arc<dyn Observer>,
    /// Groups whose reassignment this node is driving right now.
    pub(crate) driving: Mutex<BTreeSet<u64>>,
    /// Peer → when its last leader report arrived (a liveness hint for leadership transfer).
    pub(crate) heard: Mutex<BTreeMap<NodeId, tokio::time::Instant>>,
    /// Group → (term, when this node became its leader), for the leadership settle time.
    pub(crate) leading_since: Mutex<BTreeMap<u64, (u64, tokio::time::Instant)>>,
    /// One reconciliation at a time.
    pub(crate) reconciling: tokio::sync::Mutex<()>,
    /// The idempotent-producer ids this node hands out (InitProducerId).
    pub(crate) producer_ids: tokio::sync::Mutex<crate::kafka::ProducerIdBlock>,
    pub(crate) stopped: AtomicBool,
    /// Set when a graceful stop begins (see [`crate::drain`]): no leadership may come here.
    pub(crate) draining: AtomicBool,
    /// Peer → when its last drain notice arrived (see [`crate::drain`]).
    pub(crate) peers_draining: Mutex<BTreeMap<NodeId, tokio::time::Instant>>,
    /// The group coordinator, started by the Kafka listener on first use.
    pub(crate) coordinator: OnceLock<Arc<crate::group::Coordinator>>,
    /// Counters and histograms of what this node serves (`/metrics`).
    pub(crate) metrics: crate::metrics::NodeMetrics,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The transport's handler: routes each request to the node once it exists.
struct Dispatch {
    node: Arc<OnceLock<Weak<Node>>>,
}

impl Handler for Dispatch {
    fn handle(&self, from: NodeId, group: u64, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let node = self.node.get().and_then(Weak::upgrade);
        async move {
            let Some(node) = node else { return Err("node is starting".to_string()) };
            node.handle(from, group, kind, payload).await
        }
        .boxed()
    }
}

impl Node {
    /// Starts the node: serves `listener`, opens the metadata group (bootstrapping it if this
    /// node is a voter), and starts the background duties that register the node and reconcile
    /// its replicas with the metadata. Returns at once; replicas open as the metadata arrives.
    pub async fn start(
        config: NodeConfig,
        storage: Arc<dyn Storage>,
        listener: tokio::net::TcpListener,
        observer: Arc<dyn Observer>,
    ) -> Result<Arc<Node>, NodeError> {
        if config.voters.is_empty() {
            return Err(NodeError::NoVoters);
        }
        keel_core::data_format::check_or_stamp(storage.as_ref(), &config.data_dir)?;
        // One entry as large as the largest batch the log accepts must fit one replication
        // message, or a follower could never receive it.
        crate::raft::replicate_bytes::check_fits(config.transport.frame_bytes_max, config.replica.log.batch_bytes_max)
            .map_err(NodeError::Config)?;
        let metrics = crate::metrics::NodeMetrics::new()?;
        let cell = Arc::new(OnceLock::new());
        let transport = Transport::new(config.id, config.transport.clone(), Arc::new(Dispatch { node: cell.clone() }))?;
        // Every node serves heartbeat batches (see `handle`), so every node may send them.
        heartbeat::enable(&transport, config.heartbeat_batch).map_err(|e| NodeError::Config(e.to_string()))?;
        for (id, addr) in &config.voters {
            if *id != config.id {
                transport.set_peer_addr(*id, addr.clone());
            }
        }
        let meta = MetaGroup::open(
            config.id,
            storage.clone(),
            config.data_dir.join("metadata"),
            metadata_log_config(&config.replica.log),
            config.metadata_raft.clone(),
            config.default_replication_factor,
            transport.clone(),
        )
        .await?;
        if config.voters.contains_key(&config.id) {
            // Addresses stay out of the membership entry: every voter must write identical bytes.
            let voters = config.voters.keys().map(|id| (*id, BasicNode::new(""))).collect();
            meta.initialize(voters).await?;
        }
        let node = Arc::new(Node {
            id: config.id,
            config,
            storage,
            transport: transport.clone(),
            meta,
            replicas: Mutex::new(BTreeMap::new()),
            leaders: LeaderTable::default(),
            observer,
            driving: Mutex::new(BTreeSet::new()),
            heard: Mutex::new(BTreeMap::new()),
            leading_since: Mutex::new(BTreeMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            producer_ids: tokio::sync::Mutex::new(Default::default()),
            stopped: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            peers_draining: Mutex::new(BTreeMap::new()),
            coordinator: OnceLock::new(),
            metrics,
        });
        let _ = cell.set(Arc::downgrade(&node));
        crate::rt::spawn(async move { transport.serve(listener).await });
        crate::reconcile::spawn_duties(&node);
        Ok(node)
    }

    pub fn replica(&self, group: u64) -> Option<Arc<Replica>> {
        lock(&self.replicas).get(&group).cloned()
    }

    /// The groups this node hosts right now.
    pub fn hosted(&self) -> Vec<u64> {
        lock(&self.replicas).keys().copied().collect()
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// `group`'s leader as clients may be told it: none on a node known to be down.
    pub fn live_leader(&self, group: u64) -> Option<crate::leaders::LeaderInfo> {
        self.leaders.get(group).filter(|l| !self.transport.peers_down().contains(&l.leader))
    }

    pub fn meta(&self) -> &Arc<MetaGroup> {
        &self.meta
    }

    pub fn leaders(&self) -> &LeaderTable {
        &self.leaders
    }

    /// This node's counters and histograms.
    pub fn metrics(&self) -> &crate::metrics::NodeMetrics {
        &self.metrics
    }

    /// The group coordinator, once the Kafka listener started it.
    pub fn coordinator(&self) -> Option<&Arc<crate::group::Coordinator>> {
        self.coordinator.get()
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Proposes `cmd` to the metadata group through its leader, waiting at most `timeout`.
    ///
    /// A proposal whose outcome was unknown is retried, so a command may apply twice; every
    /// command is safe to repeat (the second answer may be a refusal such as `TopicExists`).
    pub async fn propose(&self, cmd: &Command, timeout: Duration) -> Result<Result<Reply, MetaError>, ProposeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let voters: Vec<NodeId> = self.config.voters.keys().copied().collect();
        let mut next_voter = 0usize;
        let mut target = self.meta.leader();
        loop {
            if self.is_stopped() {
                return Err(ProposeError::Stopped);
            }
            let to = target.unwrap_or_else(|| {
                next_voter += 1;
                voters[next_voter % voters.len()]
            });
            let resp = if to == self.id {
                self.meta.propose_local(cmd).await
            } else {
                self.propose_remote(to, cmd, deadline).await
            };
            match resp {
                ProposeResponse::Applied(r) => return Ok(r),
                ProposeResponse::NotLeader { leader: Some(l) } if Some(l) != target => target = Some(l),
                ProposeResponse::NotLeader { .. } | ProposeResponse::Unknown(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    target = self.meta.leader().filter(|l| Some(*l) != target);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProposeError::Timeout(timeout.as_millis() as u64));
            }
        }
    }

    /// Waits (at most `timeout`) until this node's copy of the metadata holds everything
    /// committed before the call — a ReadIndex through the metadata leader, then local apply.
    /// Returns whether it does; a node that might act on stale metadata must not create or
    /// delete replicas (after a restart, its copy may start from an old snapshot).
    pub async fn metadata_fresh(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(index) = self.read_index(deadline).await else { return false };
        loop {
            let changed = self.meta.sm().changed().clone();
            let wait = changed.notified();
            if self.meta.sm().last_applied().is_some_and(|l| l.index >= index) {
                return true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.is_stopped() {
                return false;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), wait).await;
        }
    }

    async fn read_index(&self, deadline: tokio::time::Instant) -> Option<u64> {
        let mut target = self.meta.leader()?;
        for _ in 0..3 {
            let resp = if target == self.id {
                if !self.meta.is_leader() {
                    return None;
                }
                match self.meta.read_index().await {
                    Ok(i) => ReadIndexResponse::Index(i),
                    Err(e) => ReadIndexResponse::Error(e),
                }
            } else {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return None;
                }
                let answer = self
                    .transport
                    .call(target, METADATA_GROUP, client::KIND_META_READ_INDEX, Bytes::new(), left)
                    .await
                    .ok()?;
                network::decode(&answer).ok()?
            };
            match resp {
                ReadIndexResponse::Index(i) => return Some(i),
                ReadIndexResponse::NotLeader { leader: Some(l) } => target = l,
                _ => return None,
            }
        }
        None
    }

    async fn propose_remote(&self, to: NodeId, cmd: &Command, deadline: tokio::time::Instant) -> ProposeResponse {
        let body = match network::encode(cmd) {
            Ok(b) => b,
            Err(e) => return ProposeResponse::Unknown(e),
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(1));
        match self.transport.call(to, METADATA_GROUP, client::KIND_META_PROPOSE, body, left).await {
            Ok(resp) => network::decode(&resp).unwrap_or_else(ProposeResponse::Unknown),
            Err(TransportError::Remote(e)) => ProposeResponse::Unknown(e),
            Err(e) => ProposeResponse::Unknown(e.to_string()),
        }
    }

    /// The cluster as this node knows it.
    pub fn view(&self) -> client::ClusterView {
        // What this node's own replicas know is the freshest; fold it in first.
        let replicas: Vec<Arc<Replica>> = lock(&self.replicas).values().cloned().collect();
        for r in replicas {
            let (leader, term) = {
                let rx = r.raft().metrics();
                let m = rx.borrow_watched();
                (m.current_leader, m.current_term)
            };
            if let Some(l) = leader {
                self.leaders.observe(r.group, node_of(l), term);
            }
        }
        let down = self.transport.peers_down();
        client::ClusterView {
            node: self.id,
            metadata_leader: self.meta.leader(),
            metadata: self.meta.sm().state(),
            leaders: crate::leaders::without_down(self.leaders.all(), &down),
            isr: self.leaders.isr_all(),
            down,
        }
    }

    async fn handle(self: Arc<Self>, from: NodeId, group: u64, kind: u8, payload: Bytes) -> Result<Bytes, String> {
        if group == client::NODE_GROUP {
            return match kind {
                heartbeat::KIND_HEARTBEAT_BATCH => {
                    let lookup = |g: u64| self.replica(g).map(|r| (r.raft().clone(), r.raft_id));
                    heartbeat::serve_heartbeat_batch(lookup, &payload).await
                }
                client::KIND_LEADERS => {
                    let report: LeaderReport = network::decode(&payload)?;
                    if report.from == from {
                        self.leaders.merge(&report);
                        lock(&self.heard).insert(from, tokio::time::Instant::now());
                    }
                    Ok(Bytes::new())
                }
                client::KIND_DRAINING => {
                    self.note_peer_draining(from);
                    Ok(Bytes::new())
                }
                other => Err(format!("unknown node-level request kind {other}")),
            };
        }
        if kind == network::KIND_TRANSFER_LEADER
            && self.is_draining()
            && network::transfer_leader_target(&payload).is_ok_and(|to| node_of(to) == self.id)
        {
            // A draining node takes no leadership (see `crate::drain`). The leader that asked
            // has given up its lease; the group's other voters elect one of themselves.
            return Err(format!("node {} is draining and takes no leadership", self.id));
        }
        if group == METADATA_GROUP {
            return match kind {
                client::KIND_META_PROPOSE => {
                    let cmd: Command = network::decode(&payload)?;
                    let resp = if self.meta.is_leader() {
                        self.meta.propose_local(&cmd).await
                    } else {
                        ProposeResponse::NotLeader { leader: self.meta.leader() }
                    };
                    network::encode(&resp)
                }
                client::KIND_META_READ => network::encode(&self.view()),
                client::KIND_META_READ_INDEX => {
                    let resp = if self.meta.is_leader() {
                        match self.meta.read_index().await {
                            Ok(i) => ReadIndexResponse::Index(i),
                            Err(e) => ReadIndexResponse::Error(e),
                        }
                    } else {
                        ReadIndexResponse::NotLeader { leader: self.meta.leader() }
                    };
                    network::encode(&resp)
                }
                client::KIND_STATUS => network::encode(&meta_status(&self)),
                raft_kind => network::serve(self.meta.raft(), self.id, raft_kind, &payload).await,
            };
        }
        let Some(replica) = self.replica(group) else {
            let leader = self.leaders.get(group).map(|l| l.leader).filter(|l| *l != self.id);
            let known = self.meta.sm().with_state(|s| s.groups.contains_key(&group));
            return match kind {
                client::KIND_APPEND if known => network::encode(&client::AppendResponse::NotLeader { leader }),
                client::KIND_APPEND => {
                    network::encode(&client::AppendResponse::Rejected(format!("unknown partition {group}")))
                }
                client::KIND_READ if known => network::encode(&client::ReadResponse::NotLeader { leader }),
                client::KIND_ELECT_PREFERRED => network::encode(&client::ElectAnswer::NotLeader { leader }),
                client::KIND_STATUS if !self.holds_copy(group) => network::encode(&absent_status(self.id, group)),
                _ => Err(format!("node {} has no partition {group} open", self.id)),
            };
        };
        match kind {
            client::KIND_APPEND => network::encode(&append(&replica, payload).await),
            client::KIND_READ => network::encode(&read(&replica, &payload)),
            client::KIND_STATUS => network::encode(&status(&replica)),
            client::KIND_ELECT_PREFERRED => network::encode(&crate::reconcile::elect_preferred(&self, &replica).await),
            raft_kind => network::serve(replica.raft(), replica.raft_id, raft_kind, &payload).await,
        }
    }

    /// The node's data directory (its one Kafka log directory), absolute when it can be made so.
    pub fn data_dir(&self) -> std::path::PathBuf {
        std::path::absolute(&self.config.data_dir).unwrap_or_else(|_| self.config.data_dir.clone())
    }

    /// Whether this node's disk may hold a copy of `group` (its directory exists and is not
    /// half-deleted), open or not.
    pub(crate) fn holds_copy(&self, group: u64) -> bool {
        let dir = self.config.data_dir.join("partitions").join(group.to_string());
        let half_deleted = self.storage.exists(&dir.join(crate::reconcile::DELETING_MARKER)).unwrap_or(false);
        self.storage.exists(&dir).unwrap_or(true) && !half_deleted
    }

    /// Stops the duties, every replica's Raft group, the metadata group and the transport.
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        let replicas: Vec<_> = lock(&self.replicas).values().cloned().collect();
        for r in replicas {
            r.shutdown().await;
        }
        self.meta.shutdown().await;
        self.transport.shutdown();
    }
}

/// The metadata log rolls small segments, so purging after a snapshot frees space.
fn metadata_log_config(partition: &LogConfig) -> LogConfig {
    LogConfig { segment_bytes_max: partition.segment_bytes_max.min(8 << 20), ..partition.clone() }
}

async fn append(replica: &Arc<Replica>, batch: Bytes) -> client::AppendResponse {
    match replica.append(batch).await {
        Ok(a) => client::AppendResponse::Ok {
            base_offset: a.base_offset,
            offset_count: a.offset_count,
            leader_epoch: a.leader_epoch,
        },
        Err(AppendError::NotLeader { leader }) => client::AppendResponse::NotLeader { leader },
        Err(
            e @ (AppendError::Corrupt(_)
            | AppendError::TooLarge(_)
            | AppendError::Sequence(_)
            | AppendError::Storage(_)),
        ) => client::AppendResponse::Rejected(e.to_string()),
        Err(AppendError::NotReady) => client::AppendResponse::NotLeader { leader: None },
        Err(AppendError::Unknown(e)) => client::AppendResponse::Unknown(e),
    }
}

fn read(replica: &Replica, body: &[u8]) -> client::ReadResponse {
    let req: client::ReadRequest = match network::decode(body) {
        Ok(r) => r,
        Err(e) => return client::ReadResponse::Error(e),
    };
    if req.leader_only && !replica.is_leader() {
        return client::ReadResponse::NotLeader { leader: replica.leader_node() };
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

/// The voter sets of a membership, as node ids.
fn membership_of(m: &crate::raft::StoredMembership) -> Vec<Vec<NodeId>> {
    m.membership().get_joint_config().iter().map(|set| set.iter().map(|id| node_of(*id)).collect()).collect()
}

fn status(replica: &Replica) -> client::Status {
    let m = replica.raft().metrics().borrow_watched().clone();
    client::Status {
        node: replica.node_id,
        group: replica.group,
        state: format!("{:?}", m.state),
        term: m.current_term,
        leader: m.current_leader.map(node_of),
        applied_index: replica.applied_index(),
        last_log_index: m.last_log_index,
        high_watermark: replica.high_watermark(),
        failed: replica.failed(),
        durable_index: replica.durable_index(),
        committed_index: m.cluster_committed.map(|c| c.index),
        voters: membership_of(&m.membership_config),
        membership_committed: m.membership_config.log_id() == m.committed_membership_config.log_id(),
        raft_id: replica.raft_id,
    }
}

/// The status of a partition this node holds no copy of at all.
fn absent_status(node: NodeId, group: u64) -> client::Status {
    client::Status {
        node,
        group,
        state: "Absent".to_string(),
        term: 0,
        leader: None,
        applied_index: None,
        last_log_index: None,
        high_watermark: 0,
        failed: None,
        durable_index: None,
        committed_index: None,
        voters: Vec::new(),
        membership_committed: false,
        raft_id: 0,
    }
}

fn meta_status(node: &Node) -> client::Status {
    let m = node.meta.raft().metrics().borrow_watched().clone();
    client::Status {
        node: node.id,
        group: METADATA_GROUP,
        state: format!("{:?}", m.state),
        term: m.current_term,
        leader: m.current_leader,
        applied_index: m.last_applied.map(|l| l.index),
        last_log_index: m.last_log_index,
        high_watermark: 0,
        failed: node.meta.failed(),
        durable_index: None,
        committed_index: m.cluster_committed.map(|c| c.index),
        voters: membership_of(&m.membership_config),
        membership_committed: m.membership_config.log_id() == m.committed_membership_config.log_id(),
        raft_id: node.id,
    }
}
