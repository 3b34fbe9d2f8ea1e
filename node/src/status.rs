//! What one node knows about the cluster right now, gathered on demand: the nodes, every
//! partition with its leader and replicas, this node's replicas in detail (term, Raft indexes,
//! offsets, lag, under-replication), and the consumer groups it coordinates with their lag.
//!
//! Both HTTP views read it: `/status.json` (and the status page that polls it) serializes it,
//! and `/metrics` turns it into gauges ([`crate::metrics`]). Nothing is polled in the background:
//! a [`Snapshot`] is taken per request from the node's state.
//!
//! Under-replicated, as Kafka means it: a partition this node leads whose in-sync replicas are
//! fewer than its replicas — a follower not caught up to the leader's log end within
//! `replica.lag.time.max.ms` (`keel_core::isr`), or on a node the transport knows is down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_core::metadata::node_of;
use openraft::ServerState;
use openraft_rt::WatchReceiver;
use serde::Serialize;

use crate::node::Node;
use crate::node::lock;
use crate::partition::Replica;
use crate::raft::NodeId;

/// A peer is live if its leader report arrived within this many gossip intervals.
pub const LIVE_GOSSIP_INTERVALS: u64 = 4;

/// Everything the status page shows, as seen by node [`Snapshot::node`].
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The node that answered.
    pub node: NodeId,
    /// The metadata group's leader as this node knows it.
    pub metadata_leader: Option<NodeId>,
    pub nodes: Vec<NodeRow>,
    /// Every partition of every topic, by topic name then partition index.
    pub partitions: Vec<PartitionRow>,
    /// Partitions this node leads that are under-replicated (see the module doc).
    pub under_replicated_partitions: u64,
    /// Consumer groups this node coordinates (the leader of their offsets partition).
    pub groups: Vec<GroupRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    pub id: NodeId,
    /// The address Kafka clients use.
    pub kafka_addr: String,
    pub rack: Option<String>,
    pub decommissioning: bool,
    /// Whether this node heard from it lately (always true for itself).
    pub live: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionRow {
    pub topic: String,
    pub partition: u32,
    /// The partition's Raft group id.
    pub group: u64,
    /// Assigned replicas; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// The leader as this node knows it (own replica first, then gossip).
    pub leader: Option<NodeId>,
    /// The term of that leader.
    pub term: Option<u64>,
    /// In-sync replicas (as Metadata reports them).
    pub isr: Vec<NodeId>,
    /// This node's replica, if it hosts one.
    pub local: Option<LocalReplica>,
}

/// One replica hosted by this node.
#[derive(Debug, Clone, Serialize)]
pub struct LocalReplica {
    pub is_leader: bool,
    /// The Raft term (Kafka's leader epoch) this replica is in.
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Entries in the log not yet known committed: `last_log_index - commit_index`.
    pub commit_lag_entries: u64,
    /// Committed entries not yet applied: `commit_index - applied_index`.
    pub apply_lag_entries: u64,
    /// The offset below which records are committed (what Fetch serves up to).
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// The offset the next appended record gets, committed or not.
    pub log_end_offset: u64,
    /// For a leader: each other voter's replication progress.
    pub followers: Vec<FollowerRow>,
    /// For a leader: whether the partition is under-replicated (see the module doc).
    pub under_replicated: bool,
    /// Why the replica stopped (a storage failure), if it did.
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FollowerRow {
    pub node: NodeId,
    /// The last log index the leader knows the follower holds.
    pub matched_index: Option<u64>,
    /// `last_log_index - matched_index` on the leader.
    pub lag_entries: u64,
    pub live: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub group: String,
    /// Partitions the group committed offsets for.
    pub partitions: u64,
    /// Sum over those partitions of `high_watermark - committed` (partitions this node hosts).
    pub lag_records: u64,
}

/// Takes a snapshot of `node`'s state.
pub async fn snapshot(node: &Arc<Node>) -> Snapshot {
    let view = node.view();
    let now = tokio::time::Instant::now();
    let live_within = Duration::from_millis(node.config.timing.gossip_ms.saturating_mul(LIVE_GOSSIP_INTERVALS));
    let heard: BTreeMap<NodeId, bool> =
        lock(&node.heard).iter().map(|(id, t)| (*id, now.saturating_duration_since(*t) <= live_within)).collect();
    let is_live = |id: NodeId| id == node.id || heard.get(&id).copied().unwrap_or(false);
    let nodes = view
        .metadata
        .nodes
        .values()
        .map(|n| NodeRow {
            id: n.id,
            kafka_addr: n.kafka_addr.clone(),
            rack: n.rack.clone(),
            decommissioning: n.decommissioning,
            live: is_live(n.id),
        })
        .collect();
    let mut partitions = Vec::new();
    let mut under_replicated = 0u64;
    let mut high_watermarks: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for topic in view.metadata.topics.values() {
        for (index, a) in topic.partitions.iter().enumerate() {
            let known = view.leaders.get(&a.group);
            let isr = crate::leaders::in_sync(known.copied(), view.isr.get(&a.group), &a.replicas, &view.down);
            let short_isr = isr.len() < a.replicas.len();
            let local = node.replica(a.group).map(|r| local_replica(&r, &is_live, short_isr));
            if let Some(l) = &local {
                under_replicated += u64::from(l.under_replicated);
                high_watermarks.insert((topic.name.clone(), index as i32), l.high_watermark);
            }
            partitions.push(PartitionRow {
                topic: topic.name.clone(),
                partition: index as u32,
                group: a.group,
                replicas: a.replicas.clone(),
                leader: known.map(|k| k.leader),
                term: known.map(|k| k.term),
                isr,
                local,
            });
        }
    }
    let groups = match node.coordinator() {
        None => Vec::new(),
        Some(c) => c
            .committed_offsets()
            .await
            .into_iter()
            .map(|(group, offsets)| {
                let partitions = offsets.len() as u64;
                let lag_records = offsets
                    .iter()
                    .filter_map(|(tp, committed)| {
                        let hw = high_watermarks.get(tp)?;
                        Some(hw.saturating_sub(u64::try_from(*committed).unwrap_or(0)))
                    })
                    .sum();
                GroupRow { group, partitions, lag_records }
            })
            .collect(),
    };
    Snapshot {
        node: node.id,
        metadata_leader: view.metadata_leader,
        nodes,
        partitions,
        under_replicated_partitions: under_replicated,
        groups,
    }
}

/// `short_isr`: the partition's in-sync replicas are fewer than its replicas.
fn local_replica(r: &Replica, is_live: &impl Fn(NodeId) -> bool, short_isr: bool) -> LocalReplica {
    let m = r.raft().metrics().borrow_watched().clone();
    let is_leader = m.state == ServerState::Leader && m.current_leader == Some(r.raft_id);
    let commit_index = m.local_committed.map(|c| c.index);
    let applied_index = r.applied_index();
    let last_log_index = m.last_log_index;
    let mut followers = Vec::new();
    if is_leader {
        let matched: BTreeMap<u64, Option<u64>> = m
            .replication
            .as_ref()
            .map(|rep| rep.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        for voter in m.membership_config.membership().voter_ids().filter(|v| *v != r.raft_id) {
            let matched_index = matched.get(&voter).copied().flatten();
            followers.push(FollowerRow {
                node: node_of(voter),
                matched_index,
                lag_entries: behind(last_log_index, matched_index),
                live: is_live(node_of(voter)),
            });
        }
    }
    let under_replicated = is_leader && short_isr;
    LocalReplica {
        is_leader,
        term: m.current_term,
        last_log_index,
        commit_index,
        applied_index,
        commit_lag_entries: behind(last_log_index, commit_index),
        apply_lag_entries: behind(commit_index, applied_index),
        high_watermark: r.high_watermark(),
        log_start_offset: r.log_start_offset(),
        log_end_offset: r.log_end_offset(),
        followers,
        under_replicated,
        failed: r.failed(),
    }
}

/// How far `behind` is from `ahead`, in log entries (an absent index is before index 0).
fn behind(ahead: Option<u64>, behind: Option<u64>) -> u64 {
    match (ahead, behind) {
        (None, _) => 0,
        (Some(a), None) => a + 1,
        (Some(a), Some(b)) => a.saturating_sub(b),
    }
}

#[cfg(test)]
mod tests {
    use super::behind;

    /// The lag gauges never underflow and count an empty follower as missing every entry.
    #[test]
    fn lag_counts_entries_and_never_underflows() {
        assert_eq!(behind(None, None), 0);
        assert_eq!(behind(None, Some(3)), 0);
        assert_eq!(behind(Some(4), None), 5);
        assert_eq!(behind(Some(9), Some(7)), 2);
        assert_eq!(behind(Some(7), Some(9)), 0);
    }
}
