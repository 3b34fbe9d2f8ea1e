//! `keel cluster status`: nodes, partitions, their leaders and replicas, from a Metadata request
//! (so it works against Kafka too). A partition is *offline* without a leader and
//! *under-replicated* when its in-sync replicas are fewer than its replicas, as the broker
//! reports them: Kafka's ISR. Keel's leaders compute it from each follower's Raft progress by
//! Kafka's `replica.lag.time.max.ms` rule (a follower not caught up to the leader's log end
//! within that time, or on a node known down, is out of it).

use std::collections::BTreeMap;

use kafka_protocol::messages::MetadataResponse;
use serde_json::json;

use super::kafka::Kafka;
use super::output::Output;
use super::output::join_ids;

/// One partition as the status shows it.
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub leader: Option<i32>,
    pub epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl PartitionStatus {
    pub fn state(&self) -> &'static str {
        if self.leader.is_none() {
            "offline"
        } else if self.isr.len() < self.replicas.len() {
            "under-replicated"
        } else {
            "ok"
        }
    }
}

/// Every partition of every topic, sorted by topic and partition.
pub fn partitions(md: &MetadataResponse) -> Vec<PartitionStatus> {
    let mut out: Vec<PartitionStatus> = md
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .flat_map(|t| {
            let name = t.name.as_ref().map_or(String::new(), |n| n.0.to_string());
            t.partitions.iter().map(move |p| PartitionStatus {
                topic: name.clone(),
                partition: p.partition_index,
                leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

pub async fn status(kafka: &mut Kafka, out: &mut Output) -> anyhow::Result<()> {
    let md = kafka.metadata(None).await?;
    let parts = partitions(&md);
    let mut brokers: Vec<_> = md.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id.0);
    let mut leading: BTreeMap<i32, usize> = BTreeMap::new();
    let mut hosting: BTreeMap<i32, usize> = BTreeMap::new();
    for p in &parts {
        if let Some(l) = p.leader {
            *leading.entry(l).or_default() += 1;
        }
        for r in &p.replicas {
            *hosting.entry(*r).or_default() += 1;
        }
    }
    let controller = (md.controller_id.0 >= 0).then_some(md.controller_id.0);
    let offline = parts.iter().filter(|p| p.state() == "offline").count();
    let under = parts.iter().filter(|p| p.state() == "under-replicated").count();
    if out.json {
        let nodes: Vec<_> = brokers
            .iter()
            .map(|b| {
                json!({
                    "id": b.node_id.0,
                    "addr": format!("{}:{}", b.host.as_str(), b.port),
                    "rack": b.rack.as_ref().map(|r| r.to_string()),
                    "replicas": hosting.get(&b.node_id.0).copied().unwrap_or(0),
                    "leading": leading.get(&b.node_id.0).copied().unwrap_or(0),
                    "controller": controller == Some(b.node_id.0),
                })
            })
            .collect();
        let partitions: Vec<_> = parts
            .iter()
            .map(|p| {
                json!({
                    "topic": p.topic, "partition": p.partition, "leader": p.leader, "epoch": p.epoch,
                    "replicas": p.replicas, "isr": p.isr, "state": p.state(),
                })
            })
            .collect();
        return out.json_value(&json!({
            "cluster_id": md.cluster_id.as_ref().map(|c| c.to_string()),
            "controller": controller,
            "nodes": nodes,
            "partitions": partitions,
            "under_replicated": under,
            "offline": offline,
        }));
    }
    out.line(&format!(
        "cluster {}: {} nodes, {} partitions, {} under-replicated, {} offline; metadata leader {}",
        md.cluster_id.as_ref().map_or("-".to_string(), |c| c.to_string()),
        brokers.len(),
        parts.len(),
        under,
        offline,
        controller.map_or("-".to_string(), |c| c.to_string()),
    ))?;
    out.line("")?;
    let rows = brokers
        .iter()
        .map(|b| {
            vec![
                b.node_id.0.to_string(),
                format!("{}:{}", b.host.as_str(), b.port),
                b.rack.as_ref().map_or("-".to_string(), |r| r.to_string()),
                hosting.get(&b.node_id.0).copied().unwrap_or(0).to_string(),
                leading.get(&b.node_id.0).copied().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    out.table(&["node", "kafka addr", "rack", "replicas", "leading"], rows)?;
    if parts.is_empty() {
        return Ok(());
    }
    out.line("")?;
    let rows = parts
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.leader.map_or("-".to_string(), |l| l.to_string()),
                p.epoch.to_string(),
                join_ids(p.replicas.iter().copied()),
                join_ids(p.isr.iter().copied()),
                p.state().to_string(),
            ]
        })
        .collect();
    out.table(&["topic", "partition", "leader", "epoch", "replicas", "isr", "state"], rows)
}
