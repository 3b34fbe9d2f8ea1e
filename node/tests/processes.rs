//! Real `keel node` processes on loopback: a 3-node cluster takes 50 topics of 6 partitions
//! (300 Raft groups per node); with one node killed (SIGKILL) every partition still accepts
//! acks=all writes; once the node restarts, leadership returns to the preferred leaders, so it is
//! spread evenly again.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::process::Child;
use std::process::Command as Process;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use keel_core::batch;
use keel_core::metadata::Command;
use keel_core::metadata::MetaError;
use keel_core::metadata::Reply;
use keel_node::client;
use keel_node::client::ClusterView;
use keel_node::meta::ProposeResponse;
use keel_node::raft::network::decode;
use keel_node::raft::network::encode;
use keel_node::transport::ClientOnly;
use keel_node::transport::Transport;
use keel_node::transport::TransportConfig;

const CLUSTER: &str = "keel-processes";
const TOPICS: usize = 50;
const PARTITIONS: u32 = 6;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Cluster {
    nodes: BTreeMap<u64, String>,
    data: tempfile::TempDir,
    children: BTreeMap<u64, Child>,
}

impl Cluster {
    fn nodes_flag(&self) -> String {
        self.nodes.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",")
    }

    fn spawn(&mut self, id: u64) {
        let data = self.data.path().join(format!("node-{id}"));
        let log = std::fs::File::create(self.data.path().join(format!("node-{id}.log"))).expect("log file");
        let child = Process::new(env!("CARGO_BIN_EXE_keel"))
            .args(["node", "--id", &id.to_string(), "--data-dir"])
            .arg(&data)
            .args(["--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--nodes", &self.nodes_flag(), "--cluster-id", CLUSTER])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel node starts");
        self.children.insert(id, child);
    }

    fn kill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(self.data.path().join(format!("node-{id}.log"))).unwrap_or_default();
        text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Client {
    transport: Transport,
    nodes: Vec<u64>,
}

impl Client {
    async fn view(&self, node: u64) -> Option<ClusterView> {
        let r = self
            .transport
            .call(node, client::METADATA_GROUP, client::KIND_META_READ, Bytes::new(), Duration::from_secs(3))
            .await;
        decode(&r.ok()?).ok()
    }

    async fn any_view(&self) -> Option<ClusterView> {
        for &n in &self.nodes {
            if let Some(v) = self.view(n).await {
                return Some(v);
            }
        }
        None
    }

    async fn propose(&self, cmd: &Command) -> Result<Reply, MetaError> {
        let body = encode(cmd).unwrap();
        let mut target = self.nodes[0];
        for i in 0..200 {
            let r = self
                .transport
                .call(target, client::METADATA_GROUP, client::KIND_META_PROPOSE, body.clone(), Duration::from_secs(10))
                .await;
            match r.ok().and_then(|b| decode::<ProposeResponse>(&b).ok()) {
                Some(ProposeResponse::Applied(r)) => return r,
                Some(ProposeResponse::NotLeader { leader: Some(l) }) if l != target => target = l,
                _ => {
                    target = self.nodes[i % self.nodes.len()];
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("no metadata leader answered {cmd:?}");
    }

    /// Appends one record to `group` with acks=all, following redirects; the acknowledged offset.
    async fn append(&self, group: u64, value: &str, within: Duration) -> Result<u64, String> {
        let mut b = batch::BatchBuilder::new(0);
        b.push(0, None, Some(value.as_bytes()));
        let body = Bytes::from(b.build());
        let deadline = Instant::now() + within;
        let mut target = self.nodes[group as usize % self.nodes.len()];
        let mut last = String::new();
        let mut i = 0;
        while Instant::now() < deadline {
            let r = self.transport.call(target, group, client::KIND_APPEND, body.clone(), Duration::from_secs(5)).await;
            match r.map_err(|e| e.to_string()).and_then(|b| decode::<client::AppendResponse>(&b)) {
                Ok(client::AppendResponse::Ok { base_offset, .. }) => return Ok(base_offset),
                Ok(client::AppendResponse::NotLeader { leader: Some(l) }) if l != target && self.nodes.contains(&l) => {
                    target = l;
                    continue;
                }
                Ok(other) => last = format!("{other:?}"),
                Err(e) => last = e,
            }
            i += 1;
            target = self.nodes[i % self.nodes.len()];
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("group {group}: no acknowledgement within {within:?}; last answer: {last}"))
    }
}

async fn wait_for<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_partitions_survive_a_killed_node_and_leaders_rebalance() {
    let nodes: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
    let mut cluster = Cluster { nodes: nodes.clone(), data: tempfile::tempdir().unwrap(), children: BTreeMap::new() };
    for id in 1..=3 {
        cluster.spawn(id);
    }
    let transport = Transport::new(1 << 40, TransportConfig::new(CLUSTER), Arc::new(ClientOnly)).unwrap();
    for (id, addr) in &nodes {
        transport.set_peer_addr(*id, addr.clone());
    }
    let c = Client { transport, nodes: nodes.keys().copied().collect() };

    let t0 = Instant::now();
    wait_for("3 registered nodes", Duration::from_secs(60), async || {
        c.any_view().await.filter(|v| v.metadata.nodes.len() == 3).map(|_| ())
    })
    .await;
    for t in 0..TOPICS {
        let cmd = Command::CreateTopic {
            name: format!("topic-{t}"),
            partitions: PARTITIONS,
            replication_factor: None,
            configs: BTreeMap::new(),
        };
        match c.propose(&cmd).await {
            Ok(Reply::TopicCreated { groups, .. }) => assert_eq!(groups.len(), PARTITIONS as usize),
            // A proposal retried after a timeout may find its first attempt applied.
            Err(MetaError::TopicExists(_)) => {}
            other => panic!("creating topic-{t}: {other:?}"),
        }
    }
    eprintln!("{:?}: topics created", t0.elapsed());
    let all = TOPICS * PARTITIONS as usize;
    let view = wait_for("node 1 applies every topic", Duration::from_secs(30), async || {
        c.view(1).await.filter(|v| v.metadata.groups.len() == all)
    })
    .await;
    let groups: Vec<u64> = view.metadata.groups.keys().copied().collect();
    for n in 1..=3 {
        assert_eq!(view.metadata.hosted_by(n).len(), groups.len(), "RF 3 on 3 nodes: node {n} hosts every partition");
    }
    let preferred: BTreeMap<u64, u64> =
        view.metadata.assignments().map(|a| (a.group, a.preferred_leader().expect("replicas"))).collect();
    let mut per_node = BTreeMap::new();
    for p in preferred.values() {
        *per_node.entry(*p).or_insert(0) += 1;
    }
    assert!(per_node.values().all(|n| (99..=101).contains(n)), "preferred leaders are spread evenly: {per_node:?}");

    for &g in &groups {
        if let Err(e) = c.append(g, "before", Duration::from_secs(60)).await {
            panic!("{e}\nnode logs:\n{}\n{}\n{}", cluster.log_tail(1), cluster.log_tail(2), cluster.log_tail(3));
        }
    }

    eprintln!("{:?}: one write per partition", t0.elapsed());
    cluster.kill(3);
    let survivors = Client { transport: c.transport.clone(), nodes: vec![1, 2] };
    for &g in &groups {
        if let Err(e) = survivors.append(g, "during", Duration::from_secs(60)).await {
            panic!("with node 3 down: {e}\nnode logs:\n{}\n{}", cluster.log_tail(1), cluster.log_tail(2));
        }
    }

    eprintln!("{:?}: one write per partition with node 3 down", t0.elapsed());
    cluster.spawn(3);
    // Once node 3 is back and caught up, leadership moves back to the preferred leaders.
    let balanced = wait_for("leaders back on their preferred nodes", Duration::from_secs(180), async || {
        let v = c.view(1).await?;
        let on_preferred = preferred.iter().filter(|(g, p)| v.leaders.get(g).is_some_and(|l| l.leader == **p)).count();
        (on_preferred == preferred.len()).then_some(v)
    })
    .await;
    eprintln!("{:?}: leaders rebalanced", t0.elapsed());
    let mut leading = BTreeMap::new();
    for l in balanced.leaders.values() {
        *leading.entry(l.leader).or_insert(0) += 1;
    }
    assert_eq!(leading, per_node, "leadership follows the preferred leaders");
    for &g in groups.iter().take(30) {
        c.append(g, "after", Duration::from_secs(60)).await.expect("writes after the restart");
    }
}
