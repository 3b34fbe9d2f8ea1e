//! What a node does over time, driven by the metadata it follows:
//!
//! - **register**: until the metadata lists this node with its current addresses and rack,
//!   propose `RegisterNode`;
//! - **reconcile**: open (and, for a brand-new partition, bootstrap) every replica the metadata
//!   assigns here; stop and delete every replica it no longer assigns here. Idempotent and
//!   crash-safe: it compares the metadata with what runs and what is on disk, every time, so a
//!   node that crashed half-way converges after restart. A directory is deleted only for a group
//!   id below the metadata's `next_group` (the group existed, and is gone or moved away), never
//!   for one this node's copy of the metadata has not seen yet; deletion first writes a
//!   `DELETING` marker, so a half-deleted directory is never opened as a replica;
//! - **metadata leader duties**: keep every registered node in the metadata group (as a
//!   learner unless it is a configured voter); remove drained, decommissioned nodes;
//! - **partition leader duties**: drive a reassignment to its end (add the new replicas as
//!   learners and wait until they have caught up, change the voters to the target with joint
//!   consensus, then propose `CompleteReassignment` — only then may the old replicas delete
//!   their copies); hand leadership to the preferred leader once it is live and caught up;
//! - **gossip**: tell every peer which groups this node leads and, for each, its in-sync
//!   replicas by Kafka's `replica.lag.time.max.ms` rule (`keel_core::isr`, fed with each
//!   follower's matched index and last acknowledgement from openraft's metrics every gossip
//!   interval; see [`crate::leaders`]).
//!
//! A draining node (see [`crate::drain`]) skips its leader duties, and no node hands preferred
//! leadership to a peer that said it drains.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keel_core::isr::FollowerProgress;
use keel_core::isr::IsrTracker;
use keel_core::metadata::Command;
use keel_core::metadata::MetadataState;
use keel_core::metadata::PartitionAssignment;
use keel_core::metadata::node_of;
use openraft::BasicNode;
use openraft::ChangeMembers;
use openraft::Instant as _;
use openraft::ServerState;
use openraft_rt::WatchReceiver;

use crate::client;
use crate::leaders::LeaderReport;
use crate::node::Node;
use crate::node::lock;
use crate::partition::Replica;
use crate::raft::NodeId;
use crate::raft::TypeConfig;
use crate::raft::network;

pub(crate) const DELETING_MARKER: &str = "DELETING";
/// Holds the Raft id (node and incarnation) of the replica whose data the directory holds.
const REPLICA_ID_FILE: &str = "replica-id";
/// How long a reassignment step may wait for a learner to catch up before it is retried.
const CATCH_UP_WAIT_MS_MAX: u64 = 30_000;
const PROPOSE_WAIT_MS: u64 = 10_000;
/// How long ElectLeaders waits for the preferred replica to catch up before it gives up.
const CATCH_UP_FOR_ELECTION_MS: u64 = 2_000;

pub(crate) fn spawn_duties(node: &Arc<Node>) {
    crate::rt::spawn(register_loop(node.clone()));
    crate::rt::spawn(reconcile_loop(node.clone()));
    crate::rt::spawn(gossip_loop(node.clone()));
    crate::rt::spawn(leader_duties_loop(node.clone()));
    crate::rt::spawn(crate::recovery::recovery_loop(node.clone()));
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Does the metadata want `node` to host this partition?
fn hosts(a: &PartitionAssignment, node: NodeId) -> bool {
    if cfg!(feature = "canary-reassign-drops-early") {
        // CANARY: only the target set hosts a partition being reassigned, so the replicas it
        // replaces delete their copies before the new ones have caught up.
        return a.target.as_ref().unwrap_or(&a.replicas).contains(&node);
    }
    a.is_hosted_by(node)
}

async fn register_loop(node: Arc<Node>) {
    let c = &node.config;
    let cmd = Command::RegisterNode {
        id: c.id,
        addr: c.addr.clone(),
        kafka_addr: c.kafka_addr.clone(),
        rack: c.rack.clone(),
    };
    while !node.is_stopped() {
        let registered = node.meta.sm().with_state(|s| {
            s.nodes.get(&c.id).is_some_and(|n| n.addr == c.addr && n.kafka_addr == c.kafka_addr && n.rack == c.rack)
        });
        // A node removed from the registry (decommissioned, drained) is also dropped from the
        // metadata group, so its own copy stops moving and still lists it: only metadata
        // confirmed fresh tells it that it must register again.
        let fresh = registered && node.metadata_fresh(ms(c.timing.reconcile_ms * 2)).await;
        if !registered || !fresh {
            match node.propose(&cmd, ms(PROPOSE_WAIT_MS)).await {
                Ok(Ok(_)) => tracing::info!(node = c.id, "registered with the metadata group"),
                Ok(Err(e)) => tracing::error!(node = c.id, error = %e, "registration refused"),
                Err(e) => tracing::debug!(node = c.id, error = %e, "registration not answered yet"),
            }
            tokio::time::sleep(ms(c.timing.reconcile_ms)).await;
        } else {
            tokio::time::sleep(ms(c.timing.reconcile_ms * 4)).await;
        }
    }
}

/// A complete pass is repeated this often even when the metadata did not change (a safety net:
/// every pass compares the disk with the metadata again).
const RESYNC_EVERY_PASSES: u32 = 60;

async fn reconcile_loop(node: Arc<Node>) {
    // The metadata version of the last complete pass, and passes skipped since.
    let mut settled: Option<u64> = None;
    let mut skipped = 0;
    while !node.is_stopped() {
        let notified = node.meta.sm().changed().clone();
        let wait = notified.notified();
        let version = node.meta.sm().version();
        if settled == Some(version) && skipped < RESYNC_EVERY_PASSES {
            skipped += 1;
        } else {
            skipped = 0;
            settled = node.reconcile().await.then_some(version);
        }
        let _ = tokio::time::timeout(ms(node.config.timing.reconcile_ms), wait).await;
    }
}

impl Node {
    pub(crate) fn partition_dir(&self, group: u64) -> PathBuf {
        self.config.data_dir.join("partitions").join(group.to_string())
    }

    /// One pass of reconciliation (see the module docs). Returns whether it is complete: the
    /// metadata was fresh and every replica was opened or removed as it asks.
    pub async fn reconcile(&self) -> bool {
        let _one = self.reconciling.lock().await;
        // Creating or deleting a replica needs metadata at least as new as the cluster's: a
        // restarted node's copy may start from an old snapshot, and acting on it could delete a
        // replica the current metadata assigns here (one the partition counts as a voter).
        // Replicas already on disk open on any copy, so a restarted node serves at once.
        let fresh = self.metadata_fresh(ms(self.config.timing.reconcile_ms * 4)).await;
        let state = self.meta.sm().state();
        if state.applied_index == 0 {
            return false;
        }
        let mut complete = fresh;
        for n in state.nodes.values() {
            if n.id != self.id {
                self.transport.set_peer_addr(n.id, n.addr.clone());
            }
        }
        let desired: BTreeMap<u64, &PartitionAssignment> =
            state.assignments().filter(|a| hosts(a, self.id)).map(|a| (a.group, a)).collect();
        for (&group, a) in &desired {
            if self.is_stopped() {
                return false;
            }
            let Some(want) = a.raft_id_of(self.id) else { continue };
            if let Some(r) = self.replica(group) {
                // A replica of an earlier incarnation (removed, then this node added back before
                // it was deleted) gives way to a new, empty one.
                if r.raft_id == want || !fresh {
                    continue;
                }
                self.remove_replica(group).await;
            }
            match self.stored_replica_id(group).await {
                Some(id) if id != want && !fresh => continue,
                Some(id) if id != want => {
                    if let Err(e) = self.delete_dir(group).await {
                        tracing::error!(node = self.id, group, error = %e, "cannot delete an earlier incarnation");
                        complete = false;
                        continue;
                    }
                }
                _ => {}
            }
            if !(fresh || self.holds_copy(group)) {
                continue;
            }
            if let Err(e) = self.open_replica(group, a, want).await {
                tracing::error!(node = self.id, group, error = %e, "cannot open replica");
                complete = false;
            }
        }
        if !fresh {
            return false;
        }
        let running = self.hosted();
        for group in running {
            if !desired.contains_key(&group) && group < state.next_group {
                self.remove_replica(group).await;
            }
        }
        self.remove_leftovers(&state, &desired).await;
        self.leaders.retain(|g| state.groups.contains_key(&g));
        complete
    }

    /// The Raft id recorded in `group`'s directory, if there is one.
    async fn stored_replica_id(&self, group: u64) -> Option<u64> {
        let path = self.partition_dir(group).join(REPLICA_ID_FILE);
        let storage = self.storage.clone();
        let bytes =
            crate::rt::blocking(move || keel_core::storage::read_whole(&*storage, &path)).await.ok()?.ok()??;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    async fn open_replica(&self, group: u64, a: &PartitionAssignment, raft_id: u64) -> Result<(), String> {
        let dir = self.partition_dir(group);
        let storage = self.storage.clone();
        let marker = dir.join(DELETING_MARKER);
        let half_deleted = storage.exists(&marker).map_err(|e| e.to_string())?;
        if half_deleted {
            self.delete_dir(group).await.map_err(|e| e.to_string())?;
        }
        if self.stored_replica_id(group).await.is_none() {
            let (storage, dir, parent) = (self.storage.clone(), dir.clone(), self.config.data_dir.join("partitions"));
            crate::rt::blocking(move || -> std::io::Result<()> {
                storage.create_dir_all(&dir)?;
                storage.sync_dir(&parent)?;
                keel_core::storage::write_atomic(&*storage, &dir, REPLICA_ID_FILE, format!("{raft_id}\n").as_bytes())
            })
            .await
            .and_then(|r| r)
            .map_err(|e| format!("recording the replica id: {e}"))?;
        }
        let replica = Replica::open(
            self.id,
            raft_id,
            group,
            self.storage.clone(),
            dir,
            &self.config.replica,
            self.transport.clone(),
            self.observer.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        replica.record_fsyncs_in(self.metrics.fsync_seconds());
        if self.is_draining() {
            replica.raft().runtime_config().elect(false);
        }
        if a.epoch == 0 {
            // Never reassigned: every replica bootstraps with the same voters (identical first
            // entries), and a replica with state leaves it alone. A reassigned partition's new
            // replicas are added by its leader instead.
            let voters: BTreeMap<u64, BasicNode> =
                a.replicas.iter().filter_map(|n| a.raft_id_of(*n)).map(|id| (id, BasicNode::new(""))).collect();
            replica.initialize(voters).await.map_err(|e| e.to_string())?;
        }
        tracing::info!(node = self.id, group, "replica started");
        lock(&self.replicas).insert(group, replica);
        Ok(())
    }

    async fn remove_replica(&self, group: u64) {
        let replica = lock(&self.replicas).remove(&group);
        if let Some(r) = replica {
            r.shutdown().await;
            // Tasks and requests may still hold the replica; its files close now, so removing
            // the directory frees the space at once (an open file keeps its blocks).
            r.close();
        }
        match self.delete_dir(group).await {
            Ok(()) => tracing::info!(node = self.id, group, "replica removed"),
            Err(e) => tracing::error!(node = self.id, group, error = %e, "cannot delete replica data"),
        }
    }

    /// Deletes directories of groups that existed and are no longer assigned here (removed while
    /// this node was down, or half-deleted by a crash).
    async fn remove_leftovers(&self, state: &MetadataState, desired: &BTreeMap<u64, &PartitionAssignment>) {
        let parent = self.config.data_dir.join("partitions");
        let storage = self.storage.clone();
        let names = match crate::rt::blocking(move || storage.list_dirs(&parent)).await {
            Ok(Ok(names)) => names,
            _ => return,
        };
        for name in names {
            let Ok(group) = name.parse::<u64>() else { continue };
            if group < state.next_group && !desired.contains_key(&group) && self.replica(group).is_none() {
                self.remove_replica(group).await;
            }
        }
    }

    async fn delete_dir(&self, group: u64) -> std::io::Result<()> {
        let dir = self.partition_dir(group);
        let parent = self.config.data_dir.join("partitions");
        let storage = self.storage.clone();
        crate::rt::blocking(move || -> std::io::Result<()> {
            if !storage.exists(&dir)? {
                return Ok(());
            }
            keel_core::storage::write_atomic(&*storage, &dir, DELETING_MARKER, b"")?;
            storage.remove_dir_all(&dir)?;
            storage.sync_dir(&parent)
        })
        .await?
    }
}

async fn gossip_loop(node: Arc<Node>) {
    // The ISR trackers of the groups this node leads, each for one term; time in ms since start
    // on the runtime's clock.
    let start = tokio::time::Instant::now();
    let mut trackers: BTreeMap<u64, (u64, IsrTracker)> = BTreeMap::new();
    while !node.is_stopped() {
        tokio::time::sleep(ms(node.config.timing.gossip_ms)).await;
        let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let lag_ms = node.config.timing.replica_lag_time_max_ms;
        let replicas: Vec<Arc<Replica>> = lock(&node.replicas).values().cloned().collect();
        let mut leads = Vec::new();
        let mut isr = Vec::new();
        let mut led = BTreeSet::new();
        for r in &replicas {
            let m = r.raft().metrics().borrow_watched().clone();
            let (state, leader, term) = (m.state, m.current_leader, m.current_term);
            if let Some(l) = leader {
                node.leaders.observe(r.group, node_of(l), term);
            }
            if state == ServerState::Leader && leader == Some(r.raft_id) {
                leads.push((r.group, term));
                led.insert(r.group);
                let followers = follower_progress(&m, r.raft_id, now_ms);
                if trackers.get(&r.group).is_none_or(|(t, _)| *t != term) {
                    trackers.insert(r.group, (term, IsrTracker::new(now_ms, followers.keys().copied())));
                }
                let Some((_, tracker)) = trackers.get_mut(&r.group) else { continue };
                tracker.observe(now_ms, m.last_log_index.unwrap_or(0), &followers, lag_ms);
                let nodes: Vec<NodeId> = tracker.isr(node_of(r.raft_id), now_ms, lag_ms).into_iter().collect();
                node.leaders.observe_isr(r.group, term, nodes.clone());
                isr.push((r.group, nodes));
            }
        }
        trackers.retain(|g, _| led.contains(g));
        let report = LeaderReport { from: node.id, leads, isr };
        let Ok(body) = network::encode(&report) else { continue };
        let peers: Vec<NodeId> =
            node.meta.sm().with_state(|s| s.nodes.keys().copied().filter(|n| *n != node.id).collect());
        for peer in peers {
            let (t, body) = (node.transport.clone(), body.clone());
            let timeout = ms(node.config.timing.gossip_ms * 2);
            crate::rt::spawn(async move {
                let _ = t.call(peer, client::NODE_GROUP, client::KIND_LEADERS, body, timeout).await;
            });
        }
    }
}

/// Each follower's progress as a leader's Raft metrics show it, keyed by node id: its matched
/// log index and when (ms on the caller's clock, `now_ms` being now) it last acknowledged.
fn follower_progress(
    m: &openraft::RaftMetrics<TypeConfig>,
    self_raft_id: u64,
    now_ms: u64,
) -> BTreeMap<NodeId, FollowerProgress> {
    let matched = |id: u64| m.replication.as_ref().and_then(|rep| rep.get(&id).cloned().flatten()).map(|l| l.index);
    let acked_ms = |id: u64| {
        let at = m.heartbeat.as_ref().and_then(|hb| hb.get(&id).cloned().flatten())?;
        let ago = u64::try_from((*at).elapsed().as_millis()).unwrap_or(u64::MAX);
        Some(now_ms.saturating_sub(ago))
    };
    m.membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| *id != self_raft_id)
        .map(|id| (node_of(id), FollowerProgress { matched: matched(id), acked_ms: acked_ms(id) }))
        .collect()
}

async fn leader_duties_loop(node: Arc<Node>) {
    while !node.is_stopped() {
        tokio::time::sleep(ms(node.config.timing.rebalance_ms)).await;
        if node.is_draining() {
            // The drain moves leadership away; duties would pull in other directions.
            continue;
        }
        if node.meta.is_leader() {
            metadata_leader_duties(&node).await;
        }
        partition_leader_duties(&node).await;
    }
}

/// Keeps the metadata group's membership in line with the node registry.
async fn metadata_leader_duties(node: &Arc<Node>) {
    let state = node.meta.sm().state();
    let m = node.meta.raft().metrics().borrow_watched().clone();
    let members: BTreeSet<NodeId> = m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
    let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
    for id in state.nodes.keys() {
        if !members.contains(id) {
            match node.meta.raft().add_learner(*id, BasicNode::new(""), false).await {
                Ok(_) => tracing::info!(node = node.id, learner = id, "node joins the metadata group as a learner"),
                Err(e) => tracing::warn!(node = node.id, learner = id, error = %e, "cannot add metadata learner"),
            }
        }
    }
    let gone: BTreeSet<NodeId> =
        members.iter().filter(|id| !state.nodes.contains_key(id) && !voters.contains(id)).copied().collect();
    if !gone.is_empty()
        && let Err(e) = node.meta.raft().change_membership(ChangeMembers::RemoveNodes(gone.clone()), false).await
    {
        tracing::warn!(node = node.id, ?gone, error = %e, "cannot remove metadata learners");
    }
    for n in state.nodes.values().filter(|n| n.decommissioning) {
        if state.hosted_by(n.id).is_empty() && !voters.contains(&n.id) {
            let _ = node.propose(&Command::RemoveNode { node: n.id }, ms(PROPOSE_WAIT_MS)).await;
        }
    }
}

/// Reassignments and preferred leadership, for the partitions this node leads.
async fn partition_leader_duties(node: &Arc<Node>) {
    let state = node.meta.sm().state();
    let replicas: Vec<Arc<Replica>> = lock(&node.replicas).values().cloned().collect();
    let now = tokio::time::Instant::now();
    let mut leading = BTreeMap::new();
    for r in replicas {
        if !r.is_leader() {
            continue;
        }
        let m = r.raft().metrics().borrow_watched().clone();
        let since = {
            let known = lock(&node.leading_since).get(&r.group).copied();
            match known {
                Some((term, since)) if term == m.current_term => since,
                _ => now,
            }
        };
        leading.insert(r.group, (m.current_term, since));
        let Some(a) = state.assignment(r.group) else { continue };
        if let Some(target) = &a.target {
            let target_ids: Vec<u64> = target.iter().filter_map(|n| a.raft_id_of(*n)).collect();
            let start = lock(&node.driving).insert(r.group);
            if start {
                crate::rt::spawn(drive_reassignment(node.clone(), r.clone(), a.epoch, target_ids));
            }
            continue;
        }
        if a.replicas.first() == Some(&node.id) {
            continue;
        }
        let settled = now.duration_since(since) >= ms(node.config.timing.leader_settle_ms);
        if !settled {
            continue;
        }
        if let Ok((preferred, preferred_id)) = preferred_ready(node, a, &m) {
            tracing::info!(
                node = node.id,
                group = r.group,
                to = preferred,
                "handing leadership to the preferred leader"
            );
            let _ = r.raft().trigger().transfer_leader(preferred_id).await;
        }
    }
    *lock(&node.leading_since) = leading;
}

/// Whether leadership of the partition `a`, which this node leads (Raft metrics `m`), can go
/// to its preferred replica now: (preferred node, its Raft id), or why not. The preferred
/// replica must be live (heard from within four gossip periods), not draining (it would have to
/// hand leadership on at once, and refuses it), a voter outside joint consensus, and caught up
/// with the leader's log.
pub(crate) fn preferred_ready(
    node: &Node,
    a: &PartitionAssignment,
    m: &openraft::RaftMetrics<crate::raft::TypeConfig>,
) -> Result<(NodeId, u64), String> {
    let preferred = *a.replicas.first().ok_or("the partition has no replicas")?;
    let preferred_id = a.raft_id_of(preferred).ok_or_else(|| format!("node {preferred} has no replica yet"))?;
    let now = tokio::time::Instant::now();
    let live = lock(&node.heard)
        .get(&preferred)
        .is_some_and(|t| now.duration_since(*t) <= ms(node.config.timing.gossip_ms * 4));
    if !live {
        return Err(format!("node {preferred} has not been heard from"));
    }
    if node.peer_draining(preferred) {
        return Err(format!("node {preferred} is draining"));
    }
    let membership = m.membership_config.membership();
    let is_voter = membership.get_joint_config().len() == 1 && membership.voter_ids().any(|v| v == preferred_id);
    if !is_voter {
        return Err(format!("node {preferred} is not a voter of the partition"));
    }
    let caught_up = m
        .replication
        .as_ref()
        .and_then(|rep| rep.get(&preferred_id).cloned().flatten())
        .is_some_and(|matched| Some(matched.index) == m.last_log_index);
    if !caught_up {
        return Err(format!("node {preferred} has not caught up with the leader"));
    }
    Ok((preferred, preferred_id))
}

/// Serves ElectLeaders (preferred) on the node asked to lead a partition's election: hands
/// leadership of `replica` to its preferred replica, waiting up to `CATCH_UP_FOR_ELECTION_MS`
/// for that replica to catch up.
pub(crate) async fn elect_preferred(node: &Node, replica: &Replica) -> client::ElectAnswer {
    let deadline = tokio::time::Instant::now() + ms(CATCH_UP_FOR_ELECTION_MS);
    loop {
        if !replica.is_leader() {
            return client::ElectAnswer::NotLeader { leader: replica.leader_node() };
        }
        let Some(a) = node.meta.sm().state().assignment(replica.group).cloned() else {
            return client::ElectAnswer::NotAvailable(format!("partition {} is gone", replica.group));
        };
        if a.replicas.first() == Some(&node.id) {
            return client::ElectAnswer::NotNeeded;
        }
        if node.is_draining() {
            return client::ElectAnswer::NotAvailable(format!("node {} is draining", node.id));
        }
        let m = replica.raft().metrics().borrow_watched().clone();
        match preferred_ready(node, &a, &m) {
            Ok((_, preferred_id)) => {
                return match replica.raft().trigger().transfer_leader(preferred_id).await {
                    Ok(()) => client::ElectAnswer::Transferring,
                    Err(e) => client::ElectAnswer::NotAvailable(e.to_string()),
                };
            }
            Err(why) if tokio::time::Instant::now() >= deadline => return client::ElectAnswer::NotAvailable(why),
            Err(_) => tokio::time::sleep(ms(50)).await,
        }
    }
}

/// Moves a partition to its target replica set, given as Raft ids (see the module docs).
/// Retried from the next duties pass if any step fails.
async fn drive_reassignment(node: Arc<Node>, replica: Arc<Replica>, epoch: u64, target: Vec<u64>) {
    let group = replica.group;
    let result = reassign_steps(&node, &replica, epoch, &target).await;
    match &result {
        Ok(()) => tracing::info!(node = node.id, group, ?target, "reassignment complete"),
        Err(e) => tracing::warn!(node = node.id, group, ?target, error = %e, "reassignment step failed; will retry"),
    }
    lock(&node.driving).remove(&group);
}

async fn reassign_steps(node: &Node, replica: &Replica, epoch: u64, target: &[u64]) -> Result<(), String> {
    let raft = replica.raft();
    let target_set: BTreeSet<u64> = target.iter().copied().collect();
    let m = raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let done =
        membership.get_joint_config().len() == 1 && membership.voter_ids().collect::<BTreeSet<_>>() == target_set;
    if !done {
        let members: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
        for &n in target.iter().filter(|n| !members.contains(n)) {
            // Blocking: returns once the learner has caught up with the leader's log.
            let add = raft.add_learner(n, BasicNode::new(""), true);
            match tokio::time::timeout(ms(CATCH_UP_WAIT_MS_MAX), add).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("add learner {n}: {e}")),
                Err(_) => return Err(format!("learner {n} did not catch up within {CATCH_UP_WAIT_MS_MAX} ms")),
            }
        }
        raft.change_membership(ChangeMembers::ReplaceAllVoters(target_set), false)
            .await
            .map_err(|e| format!("change membership: {e}"))?;
    }
    match node.propose(&Command::CompleteReassignment { group: replica.group, epoch }, ms(PROPOSE_WAIT_MS)).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("complete reassignment: {e}")),
    }
}
