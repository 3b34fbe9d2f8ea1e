//! The cluster metadata model: registered nodes, topics and the replica assignment of every
//! partition — and the decisions about them that need no I/O.
//!
//! The metadata Raft group's state machine applies [`Command`]s to a [`MetadataState`] in log
//! order; every node holds an identical copy (voters and learners apply the same entries), so
//! [`MetadataState::apply`] must be a pure function of the state, the command and the entry's log
//! index: no clock, no randomness, `BTreeMap`s only.
//!
//! Layout:
//! - this file: the state, the commands, their validation and application;
//! - [`placement`]: where the replicas of new partitions go, and where a decommissioned node's
//!   replicas move;
//! - [`topic_config`]: the per-topic settings Keel accepts, with Kafka's names.
//!
//! Every partition is a Raft group with a cluster-unique id (`group`). Ids are handed out in
//! increasing order and never reused, so a node that finds a directory for a group the metadata
//! no longer assigns to it knows the group was deleted or moved away — never "not created yet"
//! when the id is below [`MetadataState::next_group`].
//!
//! Reassignment is two-phase, so no replica is dropped before its replacement holds the data:
//! [`Command::Reassign`] records a *target* replica set (the partition is hosted on the union of
//! both sets meanwhile) and bumps the assignment epoch; the partition's Raft leader adds the new
//! replicas as learners, waits for them to catch up, changes the Raft membership to the target,
//! and only then proposes [`Command::CompleteReassignment`], after which the old replicas may
//! delete their copies.

pub mod placement;
pub mod topic_config;

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;
use thiserror::Error;

pub type NodeId = u64;

/// The Raft group id of the metadata group itself.
pub const METADATA_GROUP: u64 = 0;
/// The first Raft group id handed to a partition.
pub const FIRST_PARTITION_GROUP: u64 = 1;
/// Longest topic name (Kafka's limit).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: u32 = 10_000;
/// Most partitions the whole cluster may have (every one is a Raft group on RF nodes).
pub const CLUSTER_PARTITIONS_MAX: u64 = 100_000;
/// Most producer ids one [`Command::AllocateProducerIds`] may take.
pub const PRODUCER_ID_BLOCK_MAX: u32 = 1 << 20;

/// A node as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Node-to-node transport address (`host:port`).
    pub addr: String,
    /// Address Kafka clients are told to connect to (`host:port`).
    pub kafka_addr: String,
    /// Failure domain; replicas of a partition are spread over racks when nodes declare them.
    pub rack: Option<String>,
    /// Being drained: receives no new replicas; its replicas are being moved away.
    pub decommissioning: bool,
}

/// Where one partition's replicas live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// The partition's Raft group id.
    pub group: u64,
    /// The replica set; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// The replica set a reassignment in progress moves to.
    pub target: Option<Vec<NodeId>>,
    /// Bumped by every reassignment. Epoch 0 means "never reassigned": only then may a replica
    /// bootstrap the Raft group (with `replicas` as voters).
    pub epoch: u64,
    /// Node → the epoch at which its current replica joined, for every node hosting one.
    /// Together they form the replica's Raft id ([`raft_id`]): a node removed from a partition
    /// and later added back gets a new id, so members that still know the old configuration can
    /// never mistake the new, empty replica for the removed one (and, say, win its vote with a
    /// log it would have refused).
    pub incarnations: BTreeMap<NodeId, u64>,
}

/// The Raft id of `node`'s replica that joined a partition at `incarnation` (an epoch): the node
/// id in the low 32 bits, the incarnation above.
pub fn raft_id(node: NodeId, incarnation: u64) -> u64 {
    node | (incarnation << 32)
}

/// The node a replica's Raft id belongs to.
pub fn node_of(raft_id: u64) -> NodeId {
    raft_id & 0xffff_ffff
}

/// Largest node id: node ids share a replica's Raft id with its incarnation.
pub const NODE_ID_MAX: NodeId = 0xffff_ffff;

impl PartitionAssignment {
    fn new(group: u64, replicas: Vec<NodeId>) -> PartitionAssignment {
        let incarnations = replicas.iter().map(|n| (*n, 0)).collect();
        PartitionAssignment { group, replicas, target: None, epoch: 0, incarnations }
    }

    /// The Raft id of `node`'s replica, if it hosts one.
    pub fn raft_id_of(&self, node: NodeId) -> Option<u64> {
        self.incarnations.get(&node).map(|i| raft_id(node, *i))
    }

    /// Moves towards `target` in a new epoch: nodes joining get that epoch as incarnation.
    fn start_move(&mut self, target: Vec<NodeId>) {
        self.epoch += 1;
        for n in &target {
            self.incarnations.entry(*n).or_insert(self.epoch);
        }
        self.target = Some(target);
    }

    pub fn preferred_leader(&self) -> Option<NodeId> {
        self.target.as_ref().unwrap_or(&self.replicas).first().copied()
    }

    /// Every node that must host a replica now: the current set and, during a reassignment, the
    /// target set.
    pub fn hosts(&self) -> BTreeSet<NodeId> {
        self.replicas.iter().chain(self.target.iter().flatten()).copied().collect()
    }

    pub fn is_hosted_by(&self, node: NodeId) -> bool {
        self.replicas.contains(&node) || self.target.as_ref().is_some_and(|t| t.contains(&node))
    }
}

/// A 128-bit topic id, as Kafka's topic UUIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicId(pub [u8; 16]);

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    pub id: TopicId,
    pub replication_factor: u16,
    /// Indexed by partition number.
    pub partitions: Vec<PartitionAssignment>,
    /// Per-topic settings that differ from the broker defaults (validated by [`topic_config`]).
    pub configs: BTreeMap<String, String>,
}

/// A change to the metadata: one Raft entry each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A node announces itself (again, after a restart or an address change).
    RegisterNode {
        id: NodeId,
        addr: String,
        kafka_addr: String,
        rack: Option<String>,
    },
    /// `replication_factor` `None` = the broker default (`default.replication.factor`), never
    /// capped: more than the nodes that can take replicas is refused, as Kafka refuses it.
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: Option<u16>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows a topic to `total` partitions.
    CreatePartitions {
        name: String,
        total: u32,
    },
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// Starts moving a partition to `replicas` (the first is the new preferred leader).
    Reassign {
        group: u64,
        replicas: Vec<NodeId>,
    },
    /// The partition's Raft membership is now the target of reassignment `epoch`.
    CompleteReassignment {
        group: u64,
        epoch: u64,
    },
    /// Drain a node: no new replicas; move every replica it holds elsewhere.
    Decommission {
        node: NodeId,
    },
    /// Forget a drained node that hosts nothing any more.
    RemoveNode {
        node: NodeId,
    },
    /// Hand `count` idempotent-producer ids to `node` (a block it gives out to InitProducerId
    /// requests): ids are unique in the cluster because the metadata group hands each out once.
    AllocateProducerIds {
        node: NodeId,
        count: u32,
    },
}

/// What a successfully applied command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Done,
    TopicCreated {
        id: TopicId,
        groups: Vec<u64>,
    },
    PartitionsCreated {
        groups: Vec<u64>,
    },
    /// A reassignment started (or, for a decommission, this many did).
    Reassigning {
        partitions: usize,
    },
    /// Producer ids `first .. first + count` are the asking node's to hand out.
    ProducerIds {
        first: i64,
        count: u32,
    },
}

/// Why a command was refused; refusing changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum MetaError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// Holds Kafka's own sentence for the rule broken (`Topic.validate`).
    #[error("{0}")]
    InvalidTopicName(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    /// Kafka's words (its replica placer), so clients and tools show what they show for Kafka.
    #[error(
        "Unable to replicate the partition {requested} time(s): The target replication factor of {requested} cannot be reached because only {available} broker(s) are registered."
    )]
    InvalidReplicationFactor { requested: u16, available: usize },
    #[error("invalid topic config: {0}")]
    InvalidConfig(String),
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    #[error("unknown partition group {0}")]
    UnknownGroup(u64),
    #[error("partition group {0} is already being reassigned")]
    ReassignmentInProgress(u64),
    #[error("invalid replica set: {0}")]
    InvalidReplicas(String),
    #[error("stale reassignment completion for group {group} (epoch {epoch})")]
    StaleReassignment { group: u64, epoch: u64 },
    #[error("node {node} still hosts {partitions} partition(s)")]
    NodeNotDrained { node: NodeId, partitions: usize },
    #[error("node {0} is not being decommissioned")]
    NotDecommissioning(NodeId),
    #[error("invalid producer id block: {0}")]
    InvalidProducerIds(String),
    #[error("node {0} conflicts with a registered node: {1}")]
    NodeConflict(NodeId, String),
    /// The entry did not hold a command (a bug or corruption; the entry changes nothing).
    #[error("undecodable metadata entry: {0}")]
    Undecodable(String),
}

/// The whole cluster metadata. Identical on every node that applied the same entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub topics: BTreeMap<String, Topic>,
    /// The next partition group id to hand out; ids below it were handed out once.
    pub next_group: u64,
    /// group → (topic, partition number), for every live partition.
    pub groups: BTreeMap<u64, (String, u32)>,
    /// Log index of the last applied command (0 before any).
    pub applied_index: u64,
    /// Replication factor used when a topic does not name one (refused, like any other, when
    /// fewer nodes can take replicas).
    pub default_replication_factor: u16,
    /// The first idempotent-producer id not handed out yet; every id below it was handed out
    /// once, in a block to one node.
    pub next_producer_id: i64,
}

impl MetadataState {
    pub fn new(default_replication_factor: u16) -> MetadataState {
        MetadataState {
            next_group: FIRST_PARTITION_GROUP,
            default_replication_factor: default_replication_factor.max(1),
            ..MetadataState::default()
        }
    }

    /// The assignment of `group`, if the partition exists.
    pub fn assignment(&self, group: u64) -> Option<&PartitionAssignment> {
        let (topic, p) = self.groups.get(&group)?;
        self.topics.get(topic)?.partitions.get(*p as usize)
    }

    fn assignment_mut(&mut self, group: u64) -> Option<&mut PartitionAssignment> {
        let (topic, p) = self.groups.get(&group)?;
        self.topics.get_mut(topic)?.partitions.get_mut(*p as usize)
    }

    /// Every partition assignment, in group order.
    pub fn assignments(&self) -> impl Iterator<Item = &PartitionAssignment> {
        self.groups.keys().filter_map(|g| self.assignment(*g))
    }

    /// The groups `node` must host, with their assignments.
    pub fn hosted_by(&self, node: NodeId) -> BTreeMap<u64, &PartitionAssignment> {
        self.assignments().filter(|a| a.is_hosted_by(node)).map(|a| (a.group, a)).collect()
    }

    /// Nodes that may receive new replicas.
    pub fn eligible_nodes(&self) -> Vec<&NodeInfo> {
        self.nodes.values().filter(|n| !n.decommissioning).collect()
    }

    /// Applies the command of the entry at `index`. A refused command changes nothing but the
    /// applied index.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<Reply, MetaError> {
        self.applied_index = index;
        let result = match cmd {
            Command::RegisterNode { id, addr, kafka_addr, rack } => {
                self.register(*id, addr, kafka_addr, rack.clone()).map(|()| Reply::Done)
            }
            Command::CreateTopic { name, partitions, replication_factor, configs } => {
                self.create_topic(index, name, *partitions, *replication_factor, configs)
            }
            Command::DeleteTopic { name } => self.delete_topic(name).map(|()| Reply::Done),
            Command::CreatePartitions { name, total } => self.create_partitions(name, *total),
            Command::AlterTopicConfigs { name, set, delete } => {
                self.alter_configs(name, set, delete).map(|()| Reply::Done)
            }
            Command::Reassign { group, replicas } => self.reassign(*group, replicas),
            Command::CompleteReassignment { group, epoch } => self.complete_reassignment(*group, *epoch),
            Command::Decommission { node } => self.decommission(*node),
            Command::RemoveNode { node } => self.remove_node(*node).map(|()| Reply::Done),
            Command::AllocateProducerIds { node, count } => self.allocate_producer_ids(*node, *count),
        };
        self.check_invariants();
        result
    }

    fn register(&mut self, id: NodeId, addr: &str, kafka_addr: &str, rack: Option<String>) -> Result<(), MetaError> {
        if id == 0 || id > NODE_ID_MAX {
            return Err(MetaError::NodeConflict(id, format!("node ids are between 1 and {NODE_ID_MAX}")));
        }
        if addr.is_empty() || kafka_addr.is_empty() {
            return Err(MetaError::NodeConflict(id, "empty address".into()));
        }
        if let Some(other) = self.nodes.values().find(|n| n.id != id && (n.addr == addr || n.kafka_addr == kafka_addr))
        {
            return Err(MetaError::NodeConflict(id, format!("node {} already uses that address", other.id)));
        }
        let decommissioning = self.nodes.get(&id).is_some_and(|n| n.decommissioning);
        self.nodes.insert(
            id,
            NodeInfo { id, addr: addr.to_string(), kafka_addr: kafka_addr.to_string(), rack, decommissioning },
        );
        Ok(())
    }

    fn create_topic(
        &mut self,
        index: u64,
        name: &str,
        partitions: u32,
        replication_factor: Option<u16>,
        configs: &BTreeMap<String, String>,
    ) -> Result<Reply, MetaError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(MetaError::TopicExists(name.to_string()));
        }
        if partitions == 0 || partitions > TOPIC_PARTITIONS_MAX {
            return Err(MetaError::InvalidPartitions(format!(
                "{partitions} (must be between 1 and {TOPIC_PARTITIONS_MAX})"
            )));
        }
        self.check_cluster_room(partitions as u64)?;
        topic_config::validate(configs)?;
        let rf = replication_factor.unwrap_or(self.default_replication_factor);
        let replicas = placement::place_new(self, partitions as usize, rf)?;
        let id = topic_id(index, name);
        let groups: Vec<u64> = (0..partitions as u64).map(|p| self.next_group + p).collect();
        self.next_group += partitions as u64;
        let parts =
            groups.iter().zip(replicas).map(|(&group, replicas)| PartitionAssignment::new(group, replicas)).collect();
        for (p, &g) in groups.iter().enumerate() {
            self.groups.insert(g, (name.to_string(), p as u32));
        }
        self.topics.insert(
            name.to_string(),
            Topic { name: name.to_string(), id, replication_factor: rf, partitions: parts, configs: configs.clone() },
        );
        Ok(Reply::TopicCreated { id, groups })
    }

    fn check_cluster_room(&self, more: u64) -> Result<(), MetaError> {
        let have = self.groups.len() as u64;
        if have + more > CLUSTER_PARTITIONS_MAX {
            return Err(MetaError::InvalidPartitions(format!(
                "the cluster would have {} partitions (at most {CLUSTER_PARTITIONS_MAX})",
                have + more
            )));
        }
        Ok(())
    }

    fn delete_topic(&mut self, name: &str) -> Result<(), MetaError> {
        let topic = self.topics.remove(name).ok_or_else(|| MetaError::UnknownTopic(name.to_string()))?;
        for p in &topic.partitions {
            self.groups.remove(&p.group);
        }
        Ok(())
    }

    fn create_partitions(&mut self, name: &str, total: u32) -> Result<Reply, MetaError> {
        let topic = self.topics.get(name).ok_or_else(|| MetaError::UnknownTopic(name.to_string()))?;
        let have = topic.partitions.len() as u32;
        if total <= have || total > TOPIC_PARTITIONS_MAX {
            return Err(MetaError::InvalidPartitions(format!(
                "topic '{name}' has {have} partitions; the new count must be larger (and at most {TOPIC_PARTITIONS_MAX}), not {total}"
            )));
        }
        let more = total - have;
        self.check_cluster_room(more as u64)?;
        let rf = topic.replication_factor;
        let replicas = placement::place_new(self, more as usize, rf)?;
        let groups: Vec<u64> = (0..more as u64).map(|p| self.next_group + p).collect();
        self.next_group += more as u64;
        let topic = self.topics.get_mut(name).expect("checked above");
        for (&group, replicas) in groups.iter().zip(replicas) {
            let p = topic.partitions.len() as u32;
            topic.partitions.push(PartitionAssignment::new(group, replicas));
            self.groups.insert(group, (name.to_string(), p));
        }
        Ok(Reply::PartitionsCreated { groups })
    }

    fn alter_configs(
        &mut self,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<(), MetaError> {
        let topic = self.topics.get(name).ok_or_else(|| MetaError::UnknownTopic(name.to_string()))?;
        let mut configs = topic.configs.clone();
        for k in delete {
            configs.remove(k);
        }
        configs.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        topic_config::validate(&configs)?;
        self.topics.get_mut(name).expect("checked above").configs = configs;
        Ok(())
    }

    fn reassign(&mut self, group: u64, replicas: &[NodeId]) -> Result<Reply, MetaError> {
        let a = self.assignment(group).ok_or(MetaError::UnknownGroup(group))?;
        if a.target.is_some() {
            return Err(MetaError::ReassignmentInProgress(group));
        }
        if replicas.is_empty() {
            return Err(MetaError::InvalidReplicas("empty".into()));
        }
        let distinct: BTreeSet<_> = replicas.iter().collect();
        if distinct.len() != replicas.len() {
            return Err(MetaError::InvalidReplicas(format!("{replicas:?} names a node twice")));
        }
        for n in replicas {
            match self.nodes.get(n) {
                None => return Err(MetaError::UnknownNode(*n)),
                Some(info) if info.decommissioning && !a.replicas.contains(n) => {
                    return Err(MetaError::InvalidReplicas(format!("node {n} is being decommissioned")));
                }
                Some(_) => {}
            }
        }
        if a.replicas == replicas {
            return Ok(Reply::Reassigning { partitions: 0 });
        }
        self.assignment_mut(group).expect("checked above").start_move(replicas.to_vec());
        Ok(Reply::Reassigning { partitions: 1 })
    }

    fn complete_reassignment(&mut self, group: u64, epoch: u64) -> Result<Reply, MetaError> {
        let a = self.assignment_mut(group).ok_or(MetaError::UnknownGroup(group))?;
        if a.target.is_none() || a.epoch != epoch {
            return Err(MetaError::StaleReassignment { group, epoch });
        }
        a.replicas = a.target.take().expect("checked above");
        let kept: BTreeSet<NodeId> = a.replicas.iter().copied().collect();
        a.incarnations.retain(|n, _| kept.contains(n));
        // A partition that still holds a draining node moves on at once.
        let draining: Vec<NodeId> = self.nodes.values().filter(|n| n.decommissioning).map(|n| n.id).collect();
        let moved = self.drain_partition(group, &draining);
        Ok(Reply::Reassigning { partitions: moved })
    }

    fn decommission(&mut self, node: NodeId) -> Result<Reply, MetaError> {
        if !self.nodes.contains_key(&node) {
            return Err(MetaError::UnknownNode(node));
        }
        // Check there is room before marking anything: every partition must be able to shed
        // every draining node (this one and any earlier), counting moves already under way from
        // their target sets.
        let mut trial = self.clone();
        trial.nodes.get_mut(&node).expect("checked above").decommissioning = true;
        let draining: Vec<NodeId> = trial.nodes.values().filter(|n| n.decommissioning).map(|n| n.id).collect();
        for a in trial.assignments() {
            let mut after = PartitionAssignment {
                replicas: a.target.clone().unwrap_or_else(|| a.replicas.clone()),
                target: None,
                ..a.clone()
            };
            for &d in &draining {
                if !after.replicas.contains(&d) {
                    continue;
                }
                let Some(new) = placement::replacement(&trial, &after, d) else {
                    return Err(MetaError::InvalidReplicationFactor {
                        requested: after.replicas.len() as u16,
                        available: trial.eligible_nodes().len(),
                    });
                };
                for r in after.replicas.iter_mut() {
                    if *r == d {
                        *r = new;
                    }
                }
            }
        }
        let hosted: Vec<u64> = self.hosted_by(node).keys().copied().collect();
        *self = trial;
        let moved = hosted.iter().map(|&g| self.drain_partition(g, &[node])).sum();
        Ok(Reply::Reassigning { partitions: moved })
    }

    /// Starts moving `group` off the `draining` nodes, if it is not already moving. Returns 1 if
    /// a reassignment started.
    fn drain_partition(&mut self, group: u64, draining: &[NodeId]) -> usize {
        let Some(a) = self.assignment(group) else { return 0 };
        if a.target.is_some() {
            return 0;
        }
        let mut target = a.replicas.clone();
        let mut changed = false;
        for &node in draining {
            if !target.contains(&node) {
                continue;
            }
            let current = PartitionAssignment { target: None, replicas: target.clone(), ..a.clone() };
            let Some(new) = placement::replacement(self, &current, node) else { continue };
            for r in target.iter_mut() {
                if *r == node {
                    *r = new;
                }
            }
            changed = true;
        }
        if !changed {
            return 0;
        }
        self.assignment_mut(group).expect("checked above").start_move(target);
        1
    }

    fn remove_node(&mut self, node: NodeId) -> Result<(), MetaError> {
        let info = self.nodes.get(&node).ok_or(MetaError::UnknownNode(node))?;
        if !info.decommissioning {
            return Err(MetaError::NotDecommissioning(node));
        }
        let partitions = self.hosted_by(node).len();
        if partitions > 0 {
            return Err(MetaError::NodeNotDrained { node, partitions });
        }
        self.nodes.remove(&node);
        Ok(())
    }

    fn allocate_producer_ids(&mut self, node: NodeId, count: u32) -> Result<Reply, MetaError> {
        if !self.nodes.contains_key(&node) {
            return Err(MetaError::UnknownNode(node));
        }
        if count == 0 || count > PRODUCER_ID_BLOCK_MAX {
            return Err(MetaError::InvalidProducerIds(format!(
                "{count} ids (must be between 1 and {PRODUCER_ID_BLOCK_MAX})"
            )));
        }
        let first = self.next_producer_id;
        let next = first
            .checked_add(i64::from(count))
            .ok_or_else(|| MetaError::InvalidProducerIds("the producer id space is used up".into()))?;
        self.next_producer_id = next;
        Ok(Reply::ProducerIds { first, count })
    }

    /// A checksum of the whole state, to compare replicas of the metadata cheaply.
    pub fn digest(&self) -> u32 {
        let text = format!("{self:?}");
        crc32c::crc32c(text.as_bytes())
    }

    /// The invariants every applied state keeps; violated only by a bug in this module.
    pub fn check_invariants(&self) {
        let mut seen = BTreeSet::new();
        for (name, t) in &self.topics {
            assert_eq!(&t.name, name);
            for (p, a) in t.partitions.iter().enumerate() {
                assert!(a.group < self.next_group, "group {} not below next_group", a.group);
                assert!(seen.insert(a.group), "group {} assigned twice", a.group);
                assert_eq!(self.groups.get(&a.group), Some(&(name.clone(), p as u32)));
                let hosts: Vec<NodeId> = a.incarnations.keys().copied().collect();
                assert_eq!(hosts, a.hosts().into_iter().collect::<Vec<_>>(), "group {} incarnations", a.group);
                assert!(a.incarnations.values().all(|i| *i <= a.epoch), "group {} incarnation past its epoch", a.group);
                for set in std::iter::once(&a.replicas).chain(a.target.iter()) {
                    let distinct: BTreeSet<_> = set.iter().collect();
                    assert_eq!(distinct.len(), set.len(), "group {} has a duplicate replica", a.group);
                    assert!(!set.is_empty(), "group {} has no replicas", a.group);
                }
            }
        }
        assert_eq!(seen.len(), self.groups.len());
        assert!(self.next_producer_id >= 0, "next producer id {} is negative", self.next_producer_id);
    }
}

/// Kafka's topic name rules: 1–249 characters from `[a-zA-Z0-9._-]`, not `.` or `..`; each
/// refusal in Kafka's words (`Topic.validate`), which clients and tools show as they are.
pub fn validate_topic_name(name: &str) -> Result<(), MetaError> {
    let bad = |why: String| Err(MetaError::InvalidTopicName(why));
    if name.is_empty() {
        return bad("Topic name is illegal, it can't be empty".to_string());
    }
    if name == "." || name == ".." {
        return bad("Topic name cannot be \".\" or \"..\"".to_string());
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return bad(format!(
            "Topic name is illegal, it can't be longer than {TOPIC_NAME_BYTES_MAX} characters, topic name: {name}"
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return bad(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A topic id derived from the creating entry's log index and the name: unique (one topic per
/// entry) and identical on every replica.
fn topic_id(index: u64, name: &str) -> TopicId {
    let h = crc32c::crc32c(name.as_bytes()) as u64;
    let a = splitmix64(index ^ (h << 32));
    let b = splitmix64(a ^ index.rotate_left(17) ^ h);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&a.to_be_bytes());
    id[8..].copy_from_slice(&b.to_be_bytes());
    // Version 4 / variant 1 bits, so tools that parse UUIDs accept it.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    TopicId(id)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
