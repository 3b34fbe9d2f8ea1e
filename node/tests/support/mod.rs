//! The in-process 3-node cluster (tokio, real files under a temporary directory) that the Kafka
//! API, group, reassignment, metrics and bench tests start: each node's Raft transport, Kafka
//! listener and HTTP port on loopback, short Raft and control timings. Include with
//! `mod support;`; a test that needs other broker settings or timings passes them in.
#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use keel_core::log::LogConfig;
use keel_core::storage::Storage;
use keel_core::storage::fs::FsStorage;
use keel_node::kafka::BrokerConfig;
use keel_node::kafka::KafkaConfig;
use keel_node::node::ControlTiming;
use keel_node::node::Node;
use keel_node::node::NodeConfig;
use keel_node::partition::LogObserver;
use keel_node::partition::ReplicaConfig;
use keel_node::raft::RaftTiming;
use keel_node::transport::TransportConfig;

/// Raft timings short enough for tests, long enough for a loaded machine.
pub const FAST: RaftTiming =
    RaftTiming { heartbeat_ms: 50, election_timeout_min_ms: 300, election_timeout_max_ms: 600 };

/// A loopback address free right now.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
}

/// How to start a [`Cluster`].
pub struct Options {
    /// The cluster's name (its Raft groups and transport refuse other clusters).
    pub name: &'static str,
    pub timing: RaftTiming,
    /// The brokers' Kafka settings.
    pub broker: BrokerConfig,
    /// How long a partition leader waits before it hands leadership to the preferred replica
    /// on its own (a test of ElectLeaders sets it out of reach).
    pub leader_settle_ms: u64,
    /// Node id → its disk; a node missing here gets the real file system.
    pub storage: BTreeMap<u64, Arc<dyn Storage>>,
}

impl Options {
    /// [`FAST`] timings and Kafka's defaults except that topics are not created on first use.
    pub fn new(name: &'static str) -> Options {
        Options {
            name,
            timing: FAST,
            broker: BrokerConfig { auto_create_topics_enable: false, ..BrokerConfig::default() },
            leader_settle_ms: 1000,
            storage: BTreeMap::new(),
        }
    }
}

/// Node `id`'s configuration in a cluster of `peers` (node id → Raft address).
pub fn node_config(
    name: &str,
    timing: RaftTiming,
    id: u64,
    data: &Path,
    peers: &BTreeMap<u64, String>,
    kafka: &BTreeMap<u64, String>,
) -> NodeConfig {
    NodeConfig {
        id,
        data_dir: data.join(format!("node-{id}")),
        addr: peers[&id].clone(),
        kafka_addr: kafka[&id].clone(),
        rack: None,
        voters: peers.clone(),
        default_replication_factor: 3,
        replica: ReplicaConfig::new(LogConfig::default(), keel_node::raft::config(name, timing).expect("raft")),
        metadata_raft: keel_node::raft::metadata_config(name, timing).expect("raft"),
        transport: TransportConfig::new(name),
        heartbeat_batch: Default::default(),
        timing: ControlTiming {
            reconcile_ms: 100,
            gossip_ms: 100,
            rebalance_ms: 200,
            leader_settle_ms: 1000,
            ..ControlTiming::default()
        },
    }
}

/// Three nodes in this process. Dropping it leaves the nodes' tasks running until the test's
/// runtime ends; [`Cluster::shutdown`] stops them first.
pub struct Cluster {
    pub nodes: BTreeMap<u64, Arc<Node>>,
    /// Node id → Kafka address.
    pub kafka: BTreeMap<u64, String>,
    /// Node id → HTTP address (status page, `/metrics`).
    pub http: BTreeMap<u64, String>,
    _data: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(options: Options) -> Cluster {
        let data = tempfile::tempdir().expect("tempdir");
        let peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
        let kafka: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
        let mut nodes = BTreeMap::new();
        let mut http = BTreeMap::new();
        for id in 1..=3 {
            let listener = tokio::net::TcpListener::bind(&peers[&id]).await.expect("bind");
            let mut config = node_config(options.name, options.timing, id, data.path(), &peers, &kafka);
            config.timing.leader_settle_ms = options.leader_settle_ms;
            let storage = options.storage.get(&id).cloned().unwrap_or_else(|| Arc::new(FsStorage));
            let node = Node::start(config, storage, listener, Arc::new(LogObserver)).await.expect("start");
            let kafka_listener = tokio::net::TcpListener::bind(&kafka[&id]).await.expect("bind kafka");
            let settings = KafkaConfig { broker: options.broker.clone(), ..KafkaConfig::default() };
            tokio::spawn(keel_node::kafka::serve(node.clone(), kafka_listener, settings));
            let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
            http.insert(id, http_listener.local_addr().expect("addr").to_string());
            tokio::spawn(keel_node::http::serve(node.clone(), http_listener, Default::default()));
            nodes.insert(id, node);
        }
        Cluster { nodes, kafka, http, _data: data }
    }

    /// Every Kafka address, comma-separated (a client's bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.kafka.values().cloned().collect::<Vec<_>>().join(",")
    }

    pub async fn shutdown(&self) {
        for node in self.nodes.values() {
            node.shutdown().await;
        }
    }
}
