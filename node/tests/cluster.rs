//! A real 3-node cluster on loopback with real files (tokio, `FsStorage`): a topic created
//! through the metadata group; acks=all appends are dense and readable from every replica; the
//! leader stops, a new one takes over with nothing acknowledged lost; the old leader restarts
//! from its files and catches up.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_core::batch;
use keel_core::log::LogConfig;
use keel_core::metadata::Command;
use keel_core::metadata::Reply;
use keel_core::storage::fs::FsStorage;
use keel_node::client;
use keel_node::node::ControlTiming;
use keel_node::node::Node;
use keel_node::node::NodeConfig;
use keel_node::partition::LogObserver;
use keel_node::partition::ReplicaConfig;
use keel_node::raft::RaftTiming;
use keel_node::raft::network::decode;
use keel_node::raft::network::encode;
use keel_node::transport::ClientOnly;
use keel_node::transport::Transport;
use keel_node::transport::TransportConfig;

const CLUSTER: &str = "keel-test";

/// The partition group of the topic the test creates first (group ids start at 1).
const GROUP: u64 = 1;

fn config(id: u64, data: &Path, peers: &BTreeMap<u64, String>) -> NodeConfig {
    let timing = RaftTiming { heartbeat_ms: 50, election_timeout_min_ms: 300, election_timeout_max_ms: 600 };
    NodeConfig {
        id,
        data_dir: data.join(format!("node-{id}")),
        addr: peers[&id].clone(),
        kafka_addr: peers[&id].clone(),
        rack: None,
        voters: peers.clone(),
        default_replication_factor: 3,
        replica: ReplicaConfig {
            log: LogConfig { segment_bytes_max: 4096, ..LogConfig::default() },
            raft: keel_node::raft::config(CLUSTER, timing).expect("raft config"),
            sm_checkpoint_every_entries: 16,
            disk_reserve_bytes: keel_node::partition::disk_reserve_bytes_for(&LogConfig::default()),
        },
        metadata_raft: keel_node::raft::metadata_config(CLUSTER, timing).expect("raft config"),
        transport: TransportConfig::new(CLUSTER),
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

async fn start(id: u64, data: &Path, peers: &BTreeMap<u64, String>) -> Arc<Node> {
    let listener = tokio::net::TcpListener::bind(&peers[&id]).await.expect("bind");
    Node::start(config(id, data, peers), Arc::new(FsStorage), listener, Arc::new(LogObserver)).await.expect("start")
}

struct TestClient {
    transport: Transport,
}

impl TestClient {
    async fn status(&self, node: u64) -> Option<client::Status> {
        let r = self.transport.call(node, GROUP, client::KIND_STATUS, encode(&()).ok()?, Duration::from_secs(1)).await;
        decode(&r.ok()?).ok()
    }

    async fn leader(&self, nodes: &[u64]) -> u64 {
        for _ in 0..100 {
            for &n in nodes {
                if let Some(s) = self.status(n).await
                    && s.state == "Leader"
                {
                    return n;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader among {nodes:?}");
    }

    /// Appends `value`, following redirects; returns the acknowledged offset.
    async fn append(&self, nodes: &[u64], value: &str) -> u64 {
        let mut b = batch::BatchBuilder::new(0);
        b.push(0, Some(b"k"), Some(value.as_bytes()));
        let body = Bytes::from(b.build());
        for _ in 0..50 {
            let target = self.leader(nodes).await;
            let r = self.transport.call(target, GROUP, client::KIND_APPEND, body.clone(), Duration::from_secs(5)).await;
            if let Ok(bytes) = r
                && let Ok(client::AppendResponse::Ok { base_offset, .. }) = decode(&bytes)
            {
                return base_offset;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("append of {value} never succeeded");
    }

    /// Every data record value of `node`'s committed log, with its offset.
    async fn read_all(&self, node: u64) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let req = client::ReadRequest { offset, bytes_max: 1 << 20, leader_only: false };
            let r = self
                .transport
                .call(node, GROUP, client::KIND_READ, encode(&req).unwrap(), Duration::from_secs(5))
                .await;
            let Ok(client::ReadResponse::Ok { batches, high_watermark, .. }) = decode(&r.expect("read")) else {
                panic!("read refused");
            };
            for b in &batches {
                let h = batch::BatchHeader::parse(b).expect("stored batch parses");
                if !h.is_control() {
                    for r in batch::records(b).expect("records") {
                        let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                        out.push((h.base_offset as u64 + r.offset_delta as u64, v));
                    }
                }
                offset = h.last_offset() as u64 + 1;
            }
            if batches.is_empty() || offset >= high_watermark {
                return out;
            }
        }
    }

    async fn wait_applied_equal(&self, nodes: &[u64]) {
        for _ in 0..100 {
            let mut applied = Vec::new();
            for &n in nodes {
                applied.push(self.status(n).await.and_then(|s| s.applied_index));
            }
            if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("replicas did not converge");
    }
}

/// Waits until `node`'s copy of the metadata lists `count` registered nodes (a topic's
/// replication factor can only be met once enough nodes registered).
async fn wait_registered(node: &Node, count: usize) {
    for _ in 0..200 {
        if node.meta().sm().with_state(|s| s.nodes.len()) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{count} nodes never registered");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_leader_stop_and_restart() {
    let data = tempfile::tempdir().unwrap();
    let peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
    let nodes: Vec<u64> = peers.keys().copied().collect();
    let mut running = BTreeMap::new();
    for &id in &nodes {
        running.insert(id, start(id, data.path(), &peers).await);
    }
    let transport = Transport::new(1000, TransportConfig::new(CLUSTER), Arc::new(ClientOnly)).unwrap();
    for (id, addr) in &peers {
        transport.set_peer_addr(*id, addr.clone());
    }
    let c = TestClient { transport };
    let create =
        Command::CreateTopic { name: "t".into(), partitions: 1, replication_factor: Some(3), configs: BTreeMap::new() };
    wait_registered(&running[&1], 3).await;
    let reply = running[&1].propose(&create, Duration::from_secs(20)).await.expect("metadata answers");
    assert!(matches!(reply, Ok(Reply::TopicCreated { ref groups, .. }) if groups == &[GROUP]), "{reply:?}");

    let mut acked = Vec::new();
    for i in 0..100 {
        let v = format!("v{i}");
        acked.push((c.append(&nodes, &v).await, v));
    }
    // Offsets strictly increase with acknowledgement order (one record per batch).
    assert!(acked.windows(2).all(|w| w[0].0 < w[1].0), "offsets not increasing: {acked:?}");

    let old_leader = c.leader(&nodes).await;
    running.remove(&old_leader).unwrap().shutdown().await;
    let survivors: Vec<u64> = nodes.iter().copied().filter(|n| *n != old_leader).collect();
    for i in 100..150 {
        let v = format!("v{i}");
        acked.push((c.append(&survivors, &v).await, v));
    }

    running.insert(old_leader, start(old_leader, data.path(), &peers).await);
    c.wait_applied_equal(&nodes).await;
    let reference = c.read_all(nodes[0]).await;
    for &n in &nodes {
        assert_eq!(c.read_all(n).await, reference, "replica {n} differs");
    }
    let stored: BTreeMap<u64, String> = reference.into_iter().collect();
    for (offset, value) in &acked {
        assert_eq!(stored.get(offset), Some(value), "acknowledged {value} at {offset} is missing");
    }
    for n in running.values() {
        n.shutdown().await;
    }
}
