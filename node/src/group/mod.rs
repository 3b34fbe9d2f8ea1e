//! The group coordinator of a node: consumer groups whose offsets partition this node leads.
//!
//! Group state lives in the internal topic [`OFFSETS_TOPIC`] (`__consumer_offsets`), created
//! through the metadata group on first need. A group maps to one of its partitions by Kafka's
//! rule ([`partition_for`]); that partition's Raft leader is the group's coordinator. For every
//! offsets partition this node leads in term T it keeps a [`Slot`]: first *loading* (see
//! [`load`]: wait until an entry of term T is applied, then fold the committed log into a
//! [`Groups`]), then *ready*. Requests for a loading slot get COORDINATOR_LOAD_IN_PROGRESS, for
//! a group this node does not coordinate NOT_COORDINATOR; losing leadership drops the slot.
//!
//! Every request runs the pure state machine under the slot's lock; the records it asks for
//! are appended to the partition (acks=all, still under the lock) and the replies are
//! delivered only once they are committed — persist, then acknowledge. A failed
//! append drops the slot, so the state is rebuilt from what the log holds. A background duty
//! ([`Coordinator::run`]) starts loads, drops stale slots, fires the state machine's timers and
//! expires the offsets of long-empty groups.

mod load;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use keel_core::batch::BatchBuilder;
use keel_core::group::GroupConfig;
use keel_core::group::GroupError;
use keel_core::group::Groups;
use keel_core::group::Output;
use keel_core::group::Reply;
use keel_core::group::RequestId;
use keel_core::metadata::Command;
use keel_core::metadata::MetaError;

use crate::clock::wall_clock_ms;
use crate::node::Node;
use crate::node::lock;
use crate::partition::Acks;
use crate::partition::Replica;

/// The internal topic holding committed offsets and group metadata (Kafka's name).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often the duty looks at leadership and fires timers.
const TICK_MS: u64 = 100;
/// How often empty groups' offsets are checked for expiry
/// (`offsets.retention.check.interval.ms`).
const RETENTION_CHECK_MS: u64 = 60_000;
/// How long an append of group records may take before the request fails.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the offsets topic's creation may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the coordinator (Kafka's broker settings of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// `offsets.topic.num.partitions` (each one a Raft group: kept small).
    pub offsets_partitions: u32,
    /// `offsets.topic.replication.factor`, capped by the number of nodes.
    pub offsets_replication_factor: u16,
    /// `offsets.retention.minutes`, in milliseconds: offsets of a group Empty this long expire.
    pub offsets_retention_ms: u64,
    pub group: GroupConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            offsets_partitions: 8,
            offsets_replication_factor: 3,
            offsets_retention_ms: 10_080 * 60_000,
            group: GroupConfig::default(),
        }
    }
}

/// Why a group request cannot be served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordError {
    /// This node does not lead the group's offsets partition.
    NotCoordinator,
    /// It does, and is still loading the partition.
    LoadInProgress,
    /// The offsets topic does not exist (yet) or its partition has no leader.
    NotAvailable,
    /// The state machine refused the request.
    Group(GroupError),
}

/// Kafka's `partitionFor`: Java's `String.hashCode` of the group id, made non-negative, modulo
/// the partition count.
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    ((h & 0x7fff_ffff) as u32) % partitions.max(1)
}

/// One offsets partition this node leads.
struct Slot {
    /// The Raft group of the partition.
    raft_group: u64,
    /// The term this slot serves; a new term starts a new slot.
    term: u64,
    state: tokio::sync::Mutex<SlotState>,
}

enum SlotState {
    Loading,
    Ready(Box<Groups>),
    /// An append failed: the slot is dropped and reloaded.
    Failed,
}

/// The coordinator of one node.
pub struct Coordinator {
    pub config: CoordinatorConfig,
    /// Offsets partition index → its slot.
    slots: Mutex<BTreeMap<u32, Arc<Slot>>>,
    /// Requests waiting for a deferred reply (JoinGroup, SyncGroup), with the offsets
    /// partition whose state owes it: dropping a partition's state drops its waiters, whose
    /// requests then answer NOT_COORDINATOR (and the clients find the new coordinator).
    waiters: Mutex<BTreeMap<RequestId, (u32, tokio::sync::oneshot::Sender<Reply>)>>,
    next_request: AtomicU64,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Coordinator {
        Coordinator {
            config,
            slots: Mutex::new(BTreeMap::new()),
            waiters: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(1),
        }
    }

    /// The node's coordinator, started on first use (by the Kafka listener).
    pub fn of(node: &Arc<Node>, config: &CoordinatorConfig) -> Arc<Coordinator> {
        let mut started = false;
        let c = node
            .coordinator
            .get_or_init(|| {
                started = true;
                Arc::new(Coordinator::new(config.clone()))
            })
            .clone();
        if started {
            crate::rt::spawn(Coordinator::run(Arc::downgrade(node), c.clone()));
        }
        c
    }

    /// A fresh request id.
    pub fn request_id(&self) -> RequestId {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a waiter for the deferred reply to `request` about `group`.
    pub fn wait_for(&self, node: &Node, group: &str, request: RequestId) -> tokio::sync::oneshot::Receiver<Reply> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let partition = self.locate(node, group).map_or(u32::MAX, |(p, _)| p);
        lock(&self.waiters).insert(request, (partition, tx));
        rx
    }

    /// Drops the waiters of `partition` (its state is gone).
    fn drop_waiters(&self, partition: u32) {
        lock(&self.waiters).retain(|_, (p, _)| *p != partition);
    }

    /// Drops the state of `partition` and its waiters.
    fn drop_slot(&self, partition: u32) -> bool {
        let dropped = lock(&self.slots).remove(&partition).is_some();
        self.drop_waiters(partition);
        dropped
    }

    /// Forgets a waiter that gave up.
    pub fn forget(&self, request: RequestId) {
        lock(&self.waiters).remove(&request);
    }

    /// The offsets partition of `group`, and the Raft group behind it, if the topic exists.
    pub fn locate(&self, node: &Node, group: &str) -> Option<(u32, u64)> {
        node.meta().sm().with_state(|s| {
            let topic = s.topics.get(OFFSETS_TOPIC)?;
            let p = partition_for(group, topic.partitions.len() as u32);
            Some((p, topic.partitions.get(p as usize)?.group))
        })
    }

    /// Creates the offsets topic if it does not exist (Kafka does so on the first
    /// FindCoordinator). Its records never expire by time: the log is the group state.
    pub async fn ensure_topic(&self, node: &Node) -> Result<(), CoordError> {
        let (exists, nodes) =
            node.meta().sm().with_state(|s| (s.topics.contains_key(OFFSETS_TOPIC), s.eligible_nodes().len()));
        if exists {
            return Ok(());
        }
        if nodes == 0 {
            return Err(CoordError::NotAvailable);
        }
        let rf = self.config.offsets_replication_factor.min(u16::try_from(nodes).unwrap_or(u16::MAX)).max(1);
        let cmd = Command::CreateTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: self.config.offsets_partitions.max(1),
            replication_factor: Some(rf),
            configs: BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]),
        };
        match node.propose(&cmd, CREATE_TIMEOUT).await {
            Ok(Ok(_)) | Ok(Err(MetaError::TopicExists(_))) => {
                tracing::info!(partitions = self.config.offsets_partitions, rf, "offsets topic created");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "offsets topic not created");
                Err(CoordError::NotAvailable)
            }
            Err(_) => Err(CoordError::NotAvailable),
        }
    }

    /// Runs `step` on the state of `group`'s partition; persists the records it produced, then
    /// delivers its replies and returns its result.
    pub async fn run_step<T>(
        &self,
        node: &Node,
        group: &str,
        step: impl FnOnce(&mut Groups, u64, &mut Output) -> T,
    ) -> Result<T, CoordError> {
        let Some((partition, raft_group)) = self.locate(node, group) else { return Err(CoordError::NotAvailable) };
        let replica = node.replica(raft_group).filter(|r| r.is_leader()).ok_or(CoordError::NotCoordinator)?;
        let slot = self.slot(partition, &replica);
        let mut state = slot.state.lock().await;
        let groups = match &mut *state {
            SlotState::Ready(g) => g,
            SlotState::Loading => return Err(CoordError::LoadInProgress),
            SlotState::Failed => return Err(CoordError::NotCoordinator),
        };
        if !replica.is_leader() || replica.term() != slot.term {
            return Err(CoordError::NotCoordinator);
        }
        let now_ms = wall_clock_ms().max(0) as u64;
        let mut out = Output::default();
        let result = step(groups, now_ms, &mut out);
        self.persist_and_deliver(partition, &replica, &slot, &mut state, out).await?;
        Ok(result)
    }

    /// Proposes `out.records` and waits for their commit, under the slot's lock: records enter
    /// the log in the order the state machine produced them, and no step sees state that is
    /// not committed yet (one step per partition at a time). Then delivers the replies. A failure drops the slot and the replies (their waiters see NOT_COORDINATOR).
    async fn persist_and_deliver(
        &self,
        partition: u32,
        replica: &Replica,
        slot: &Slot,
        state: &mut tokio::sync::MutexGuard<'_, SlotState>,
        out: Output,
    ) -> Result<(), CoordError> {
        if !out.records.is_empty() {
            let now_ms = wall_clock_ms();
            let mut batch = BatchBuilder::new(now_ms);
            for r in &out.records {
                let (k, v) = r.encode();
                batch.push(now_ms, Some(&k), v.as_deref());
            }
            let pending = replica.submit(Bytes::from(batch.build()), Acks::Quorum).await;
            let committed = match pending {
                Ok(wait) => matches!(tokio::time::timeout(APPEND_TIMEOUT, wait).await, Ok(Ok(_))),
                Err(_) => false,
            };
            if !committed {
                tracing::warn!(group = slot.raft_group, term = slot.term, "group records not committed; reloading");
                **state = SlotState::Failed;
                let current = lock(&self.slots).get(&partition).is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), slot));
                if current {
                    self.drop_slot(partition);
                }
                return Err(CoordError::NotCoordinator);
            }
        }
        let mut waiters = lock(&self.waiters);
        for (id, reply) in out.replies {
            if let Some((_, tx)) = waiters.remove(&id) {
                let _ = tx.send(reply);
            }
        }
        Ok(())
    }

    /// The slot serving `partition` in the replica's current term (a new one, loading, when
    /// the term moved on).
    fn slot(&self, partition: u32, replica: &Arc<Replica>) -> Arc<Slot> {
        let term = replica.term();
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get(&partition)
            && s.term == term
            && s.raft_group == replica.group
        {
            return s.clone();
        }
        let slot =
            Arc::new(Slot { raft_group: replica.group, term, state: tokio::sync::Mutex::new(SlotState::Loading) });
        if slots.insert(partition, slot.clone()).is_some() {
            // The state of an earlier term is gone: so are the answers it owed.
            self.drop_waiters(partition);
        }
        crate::rt::spawn(load::load(replica.clone(), slot.clone(), self.config.group.clone()));
        slot
    }

    /// Every group this node coordinates, with its committed offsets ((topic, partition) →
    /// offset), for the CLI and metrics.
    pub async fn committed_offsets(&self) -> BTreeMap<String, BTreeMap<(String, i32), i64>> {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        let mut all = BTreeMap::new();
        for s in slots {
            if let SlotState::Ready(g) = &*s.state.lock().await {
                all.extend(g.committed_offsets());
            }
        }
        all
    }

    /// Reads the state of the groups of every ready slot (DescribeGroups, ListGroups).
    pub async fn with_all<T>(&self, mut f: impl FnMut(&Groups) -> T) -> Vec<T> {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        let mut out = Vec::new();
        for s in slots {
            if let SlotState::Ready(g) = &*s.state.lock().await {
                out.push(f(g));
            }
        }
        out
    }

    /// Whether any slot of this node is still loading.
    pub async fn loading(&self) -> bool {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        for s in slots {
            if matches!(&*s.state.lock().await, SlotState::Loading) {
                return true;
            }
        }
        false
    }

    /// The duty: every [`TICK_MS`], start loading partitions this node now leads, drop slots
    /// of partitions it no longer leads, fire timers, and now and then expire offsets.
    async fn run(node: std::sync::Weak<Node>, me: Arc<Coordinator>) {
        let mut last_retention_ms = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
            let Some(node) = node.upgrade() else { return };
            if node.is_stopped() {
                return;
            }
            let partitions: Vec<(u32, u64)> = node.meta().sm().with_state(|s| {
                s.topics
                    .get(OFFSETS_TOPIC)
                    .map(|t| t.partitions.iter().enumerate().map(|(i, a)| (i as u32, a.group)).collect())
                    .unwrap_or_default()
            });
            let now_ms = wall_clock_ms().max(0) as u64;
            let retention_due = now_ms.saturating_sub(last_retention_ms) >= RETENTION_CHECK_MS;
            if retention_due {
                last_retention_ms = now_ms;
            }
            for (partition, raft_group) in partitions {
                match node.replica(raft_group).filter(|r| r.is_leader()) {
                    None => {
                        if me.drop_slot(partition) {
                            tracing::info!(partition, "no longer the offsets partition's leader: groups dropped");
                        }
                    }
                    Some(replica) => {
                        let slot = me.slot(partition, &replica);
                        let mut state = slot.state.lock().await;
                        let SlotState::Ready(groups) = &mut *state else { continue };
                        let mut out = Output::default();
                        groups.tick(now_ms, &mut out);
                        if retention_due {
                            let n = groups.expire_offsets(now_ms, me.config.offsets_retention_ms, &mut out);
                            if n > 0 {
                                tracing::info!(partition, offsets = n, "expired offsets of empty groups");
                            }
                        }
                        if !out.is_empty() {
                            let _ = me.persist_and_deliver(partition, &replica, &slot, &mut state, out).await;
                        }
                    }
                }
            }
        }
    }
}
