//! `keel cluster reassign|decommission`: the administration only Keel has, over Keel's internal
//! protocol to the metadata group (Kafka has no request for either). `--nodes` names the
//! metadata voters' node-to-node addresses, as for `keel node`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use bytes::Bytes;
use keel_core::metadata::Command as MetaCommand;
use keel_core::metadata::MetaError;
use keel_core::metadata::Reply;
use keel_node::client;
use keel_node::meta::ProposeResponse;
use keel_node::raft::network::decode;
use keel_node::raft::network::encode;
use keel_node::transport::ClientOnly;
use keel_node::transport::Transport;
use keel_node::transport::TransportConfig;

use super::node_config::DEV_CLUSTER_ID;
use super::node_config::DEV_NODES;
use super::node_config::Voters;
use super::output::Output;

/// Where the metadata group is, for the commands that speak Keel's internal protocol.
#[derive(clap::Args, Clone)]
pub struct ClusterArgs {
    /// The metadata group's voters: `ID=HOST:PORT,...` (node-to-node addresses).
    #[arg(long, global = true, env = "KEEL_NODES", default_value = DEV_NODES)]
    pub nodes: String,
    /// Cluster id; connections between different clusters are refused.
    #[arg(long, global = true, env = "KEEL_CLUSTER_ID", default_value = DEV_CLUSTER_ID)]
    pub cluster_id: String,
}

/// A client of the cluster over the internal protocol.
struct Client {
    transport: Transport,
    nodes: Vec<u64>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    fn new(cluster: &ClusterArgs) -> anyhow::Result<Client> {
        let peers = cluster.nodes.parse::<Voters>().map_err(|e| anyhow::anyhow!("--nodes {}: {e}", cluster.nodes))?.0;
        if peers.is_empty() {
            bail!("--nodes names no node");
        }
        // A client id far above node ids, from the process id so concurrent CLIs differ.
        let id = (1u64 << 40) + u64::from(std::process::id());
        let transport = Transport::new(id, TransportConfig::new(cluster.cluster_id.clone()), Arc::new(ClientOnly))?;
        for (n, addr) in &peers {
            transport.set_peer_addr(*n, addr.clone());
        }
        Ok(Client { transport, nodes: peers.keys().copied().collect() })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        node: u64,
        group: u64,
        kind: u8,
        body: Bytes,
    ) -> anyhow::Result<T> {
        let resp = self.transport.call(node, group, kind, body, CALL_TIMEOUT).await?;
        decode(&resp).map_err(anyhow::Error::msg)
    }

    /// The cluster as the first answering node knows it; learns every node's address.
    async fn view(&self) -> anyhow::Result<client::ClusterView> {
        let mut last = None;
        for &n in &self.nodes {
            match self
                .call::<client::ClusterView>(n, client::METADATA_GROUP, client::KIND_META_READ, Bytes::new())
                .await
            {
                Ok(v) => {
                    for info in v.metadata.nodes.values() {
                        self.transport.set_peer_addr(info.id, info.addr.clone());
                    }
                    return Ok(v);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no node")))
            .context("no node answered (is the cluster running? try `keel dev`)")
    }

    /// Proposes a metadata command through the metadata leader.
    async fn propose(&self, cmd: &MetaCommand) -> anyhow::Result<Result<Reply, MetaError>> {
        let body = encode(cmd).map_err(anyhow::Error::msg)?;
        let mut target = self.view().await?.metadata_leader;
        for attempt in 0..30 {
            let to = target.unwrap_or(self.nodes[attempt % self.nodes.len()]);
            match self
                .call::<ProposeResponse>(to, client::METADATA_GROUP, client::KIND_META_PROPOSE, body.clone())
                .await
            {
                Ok(ProposeResponse::Applied(r)) => return Ok(r),
                Ok(ProposeResponse::NotLeader { leader }) => target = leader,
                Ok(ProposeResponse::Unknown(e)) => bail!("outcome unknown (it may or may not apply): {e}"),
                Err(_) => target = None,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("no metadata leader answered")
    }

    /// The group id of a topic's partition.
    async fn group(&self, topic: &str, partition: u32) -> anyhow::Result<u64> {
        let v = self.view().await?;
        let t = v.metadata.topics.get(topic).with_context(|| format!("unknown topic '{topic}'"))?;
        let p = t.partitions.get(partition as usize).with_context(|| {
            format!("topic '{topic}' has {} partitions; there is no partition {partition}", t.partitions.len())
        })?;
        Ok(p.group)
    }
}

fn meta_result(r: Result<Reply, MetaError>) -> anyhow::Result<Reply> {
    r.map_err(|e| anyhow::anyhow!("refused: {e}"))
}

/// `keel cluster reassign`: moves a partition to another replica set (the first is the
/// preferred leader).
pub async fn reassign(
    cluster: &ClusterArgs,
    out: &mut Output,
    topic: &str,
    partition: u32,
    replicas: &str,
) -> anyhow::Result<()> {
    let c = Client::new(cluster)?;
    let group = c.group(topic, partition).await?;
    let replicas: Vec<u64> = replicas
        .split(',')
        .map(|r| r.trim().parse::<u64>().with_context(|| format!("replica {r:?} is not a node id")))
        .collect::<anyhow::Result<_>>()?;
    meta_result(c.propose(&MetaCommand::Reassign { group, replicas: replicas.clone() }).await?)?;
    if out.json {
        out.json_value(
            &serde_json::json!({"topic": topic, "partition": partition, "replicas": replicas, "started": true}),
        )
    } else {
        out.line(&format!("reassignment of {topic}/{partition} started"))
    }
}

/// `keel cluster decommission`: drains a node (its replicas move away), then it leaves.
pub async fn decommission(cluster: &ClusterArgs, out: &mut Output, node: u64) -> anyhow::Result<()> {
    let c = Client::new(cluster)?;
    let moving = match meta_result(c.propose(&MetaCommand::Decommission { node }).await?)? {
        Reply::Reassigning { partitions } => partitions,
        _ => 0,
    };
    if out.json {
        out.json_value(&serde_json::json!({"node": node, "partitions_moving": moving}))
    } else {
        out.line(&format!("node {node} is being decommissioned: {moving} partition(s) moving"))
    }
}
