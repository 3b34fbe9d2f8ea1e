//! The cluster metadata model (`keel_core::metadata`): topics and their partitions, Kafka's name
//! rules, replication factors, the two-phase reassignment, decommissioning, topic configs and
//! node registration — each test names the guarantee it protects. Model-based and placement
//! properties live in `proptests/tests/metadata_model.rs` and `proptests/tests/placement.rs`.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use keel_core::metadata::topic_config;
use keel_core::metadata::{
    Command, FIRST_PARTITION_GROUP, MetaError, MetadataState, NodeId, Reply, TOPIC_NAME_BYTES_MAX,
    TOPIC_PARTITIONS_MAX, validate_topic_name,
};

/// A metadata state and the log index of the next entry, as the Raft state machine feeds it.
struct Meta {
    state: MetadataState,
    index: u64,
}

impl Meta {
    fn new(default_rf: u16) -> Meta {
        Meta { state: MetadataState::new(default_rf), index: 0 }
    }

    /// A cluster of nodes `1..=n`, no racks.
    fn cluster(n: u64, default_rf: u16) -> Meta {
        let mut m = Meta::new(default_rf);
        for id in 1..=n {
            m.ok(register(id, None));
        }
        m
    }

    fn apply(&mut self, cmd: Command) -> Result<Reply, MetaError> {
        self.index += 1;
        self.state.apply(self.index, &cmd)
    }

    fn ok(&mut self, cmd: Command) -> Reply {
        let shown = format!("{cmd:?}");
        self.apply(cmd).unwrap_or_else(|e| panic!("{shown} refused: {e}"))
    }

    /// Applies a command that must be refused, and checks the refusal changed nothing but the
    /// applied index.
    fn refused(&mut self, cmd: Command) -> MetaError {
        let before = self.state.clone();
        let shown = format!("{cmd:?}");
        let err = match self.apply(cmd) {
            Ok(reply) => panic!("{shown} accepted ({reply:?}), expected a refusal"),
            Err(e) => e,
        };
        assert_eq!(self.state.applied_index, self.index, "a refused command still advances applied_index");
        let mut expected = before;
        expected.applied_index = self.index;
        assert_eq!(self.state, expected, "refused {shown} ({err}) changed the state");
        err
    }

    fn create(&mut self, name: &str, partitions: u32, rf: Option<u16>) -> Vec<u64> {
        match self.ok(create_cmd(name, partitions, rf)) {
            Reply::TopicCreated { groups, .. } => groups,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn replicas(&self, group: u64) -> Vec<NodeId> {
        self.state.assignment(group).expect("group exists").replicas.clone()
    }
}

fn register(id: NodeId, rack: Option<&str>) -> Command {
    Command::RegisterNode {
        id,
        addr: format!("10.0.0.{id}:7000"),
        kafka_addr: format!("10.0.0.{id}:9092"),
        rack: rack.map(str::to_string),
    }
}

fn create_cmd(name: &str, partitions: u32, rf: Option<u16>) -> Command {
    Command::CreateTopic { name: name.into(), partitions, replication_factor: rf, configs: BTreeMap::new() }
}

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// ---------------------------------------------------------------------------------------------
// Topics and partitions

/// Protects CreateTopic: consecutive fresh group ids, one assignment per partition with RF
/// distinct registered replicas, epoch 0 (so a replica may bootstrap the group), and the group
/// index pointing back at (topic, partition).
#[test]
fn create_topic_hands_out_consecutive_groups_and_places_every_partition() {
    let mut m = Meta::cluster(3, 3);
    let groups = m.create("orders", 4, Some(2));
    assert_eq!(groups, vec![1, 2, 3, 4]);
    assert_eq!(groups[0], FIRST_PARTITION_GROUP);
    assert_eq!(m.state.next_group, 5);
    let topic = &m.state.topics["orders"];
    assert_eq!(topic.replication_factor, 2);
    assert_eq!(topic.partitions.len(), 4);
    for (p, a) in topic.partitions.iter().enumerate() {
        assert_eq!(a.group, groups[p]);
        assert_eq!(m.state.groups[&a.group], ("orders".to_string(), p as u32));
        assert_eq!(a.replicas.len(), 2);
        assert_eq!(a.replicas.iter().collect::<BTreeSet<_>>().len(), 2, "distinct replicas");
        assert!(a.replicas.iter().all(|n| m.state.nodes.contains_key(n)));
        assert_eq!((a.target.clone(), a.epoch), (None, 0));
    }
    assert_eq!(m.refused(create_cmd("orders", 1, None)), MetaError::TopicExists("orders".into()));
}

/// Protects the topic id: derived from the entry index and name, so two topics (even one
/// re-created under the same name) never share an id, and every replica computes the same one.
#[test]
fn topic_ids_differ_across_recreation_and_agree_across_replicas() {
    let mut a = Meta::cluster(1, 1);
    let first = a.state.clone();
    a.create("t", 1, None);
    let id1 = a.state.topics["t"].id;
    a.ok(Command::DeleteTopic { name: "t".into() });
    a.create("t", 1, None);
    assert_ne!(a.state.topics["t"].id, id1, "a re-created topic gets a new id");

    let mut b = Meta { state: first, index: 1 };
    b.create("t", 1, None);
    assert_eq!(b.state.topics["t"].id, id1, "same entry, same id on every replica");
    let shown = id1.to_string();
    assert_eq!(shown.len(), 36);
    assert_eq!(shown.matches('-').count(), 4);
}

/// Protects CreateTopic's partition count bounds.
#[test]
fn create_topic_refuses_zero_or_too_many_partitions() {
    let mut m = Meta::cluster(3, 1);
    assert!(matches!(m.refused(create_cmd("t", 0, None)), MetaError::InvalidPartitions(_)));
    assert!(matches!(m.refused(create_cmd("t", TOPIC_PARTITIONS_MAX + 1, None)), MetaError::InvalidPartitions(_)));
    assert!(m.state.topics.is_empty());
}

/// Protects DeleteTopic: the topic and its groups vanish; the groups are gone from every
/// node's hosting list; an unknown topic is refused.
#[test]
fn delete_topic_forgets_its_partitions() {
    let mut m = Meta::cluster(3, 3);
    let groups = m.create("a", 2, None);
    m.create("b", 1, None);
    m.ok(Command::DeleteTopic { name: "a".into() });
    assert!(!m.state.topics.contains_key("a"));
    for g in &groups {
        assert!(m.state.assignment(*g).is_none());
        assert!(!m.state.groups.contains_key(g));
    }
    for n in 1..=3 {
        assert_eq!(m.state.hosted_by(n).keys().copied().collect::<Vec<_>>(), vec![3]);
    }
    assert_eq!(m.refused(Command::DeleteTopic { name: "a".into() }), MetaError::UnknownTopic("a".into()));
}

/// Protects the rule that group ids are never reused: a directory found for a group below
/// `next_group` that the metadata no longer assigns is a deleted or moved partition, never a
/// future one.
#[test]
fn group_ids_are_never_reused_after_delete() {
    let mut m = Meta::cluster(2, 1);
    let first = m.create("t", 3, None);
    m.ok(Command::DeleteTopic { name: "t".into() });
    assert_eq!(m.state.next_group, 4, "deleting does not give ids back");
    let again = m.create("t", 3, None);
    assert_eq!(again, vec![4, 5, 6]);
    let grown = match m.ok(Command::CreatePartitions { name: "t".into(), total: 4 }) {
        Reply::PartitionsCreated { groups } => groups,
        other => panic!("{other:?}"),
    };
    assert_eq!(grown, vec![7]);
    let all: BTreeSet<u64> = first.iter().chain(&again).chain(&grown).copied().collect();
    assert_eq!(all.len(), 7);
}

/// Protects CreatePartitions: appends partitions with fresh groups and the topic's RF, keeps the
/// existing ones untouched, and refuses shrinking, the same count, too many, or unknown topics.
#[test]
fn create_partitions_grows_a_topic_and_refuses_anything_else() {
    let mut m = Meta::cluster(3, 2);
    m.create("t", 2, None);
    let before: Vec<_> = m.state.topics["t"].partitions.clone();
    assert_eq!(
        m.ok(Command::CreatePartitions { name: "t".into(), total: 5 }),
        Reply::PartitionsCreated { groups: vec![3, 4, 5] }
    );
    let t = &m.state.topics["t"];
    assert_eq!(t.partitions.len(), 5);
    assert_eq!(&t.partitions[..2], &before[..]);
    for (p, a) in t.partitions.iter().enumerate() {
        assert_eq!(a.replicas.len(), 2);
        assert_eq!(m.state.groups[&a.group], ("t".to_string(), p as u32));
    }
    for total in [0, 4, 5, TOPIC_PARTITIONS_MAX + 1] {
        assert!(matches!(
            m.refused(Command::CreatePartitions { name: "t".into(), total }),
            MetaError::InvalidPartitions(_)
        ));
    }
    assert_eq!(
        m.refused(Command::CreatePartitions { name: "nope".into(), total: 9 }),
        MetaError::UnknownTopic("nope".into())
    );
}

/// Protects CreatePartitions after the cluster shrank: the topic's RF must still be met by the
/// nodes that can take replicas.
#[test]
fn create_partitions_needs_rf_eligible_nodes() {
    let mut m = Meta::cluster(3, 3);
    m.create("t", 1, None);
    // Every node holds a replica of `t` and no other node could take one: draining any of them
    // is refused with the RF error, and nothing changes.
    let err = m.refused(Command::Decommission { node: 2 });
    assert_eq!(err, MetaError::InvalidReplicationFactor { requested: 3, available: 2 });
    m.ok(register(4, None));
    m.ok(Command::Decommission { node: 4 });
    let err = m.refused(Command::Decommission { node: 1 });
    assert_eq!(err, MetaError::InvalidReplicationFactor { requested: 3, available: 2 });
    m.ok(Command::CreatePartitions { name: "t".into(), total: 2 });
    assert_eq!(m.state.topics["t"].partitions[1].replicas.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Topic names (Kafka's rules)

/// Protects Kafka's topic-name rules: 1–249 bytes of `[a-zA-Z0-9._-]`, not `.` or `..`.
#[test]
fn topic_names_follow_kafka_rules() {
    let longest = "x".repeat(TOPIC_NAME_BYTES_MAX);
    for good in ["a", "orders", "Orders.v2", "my_topic-1", "...", ".hidden", "__consumer_offsets", &longest] {
        assert_eq!(validate_topic_name(good), Ok(()), "{good:?} is a valid Kafka topic name");
    }
    let too_long = "x".repeat(TOPIC_NAME_BYTES_MAX + 1);
    for bad in ["", ".", "..", "a b", "a/b", "a:b", "tópico", "a\0", "a\n", "*", &too_long] {
        assert!(matches!(validate_topic_name(bad), Err(MetaError::InvalidTopicName(_))), "{bad:?} must be refused");
    }
}

/// Protects CreateTopic against invalid names: refused before anything changes.
#[test]
fn create_topic_refuses_invalid_names() {
    let mut m = Meta::cluster(1, 1);
    for bad in ["", ".", "..", "a b", &"y".repeat(250)] {
        assert!(matches!(m.refused(create_cmd(bad, 1, None)), MetaError::InvalidTopicName(_)));
    }
    assert_eq!(m.state.next_group, FIRST_PARTITION_GROUP);
}

// ---------------------------------------------------------------------------------------------
// Replication factor

/// Protects durability from silent weakening (issue 17): a topic without an RF gets the broker
/// default, and when fewer nodes can take replicas the creation is refused with Kafka's
/// INVALID_REPLICATION_FACTOR, never created with fewer replicas; default 0 means 1.
#[test]
fn replication_factor_defaults_to_broker_default_and_is_never_capped() {
    let mut m = Meta::cluster(2, 3);
    assert_eq!(
        m.refused(create_cmd("small", 1, None)),
        MetaError::InvalidReplicationFactor { requested: 3, available: 2 },
        "2 nodes cannot hold the default 3 replicas"
    );
    assert!(!m.state.topics.contains_key("small"));
    m.ok(register(3, None));
    m.ok(Command::Decommission { node: 3 });
    assert_eq!(
        m.refused(create_cmd("after", 1, None)),
        MetaError::InvalidReplicationFactor { requested: 3, available: 2 },
        "decommissioning nodes do not count"
    );
    for id in 4..=5 {
        m.ok(register(id, None));
    }
    m.create("big", 1, None);
    assert_eq!(m.state.topics["big"].replication_factor, 3, "the default, with 4 eligible nodes");
    assert_eq!(m.state.topics["big"].partitions[0].replicas.len(), 3);

    assert_eq!(MetadataState::new(0).default_replication_factor, 1);
}

/// Protects the clear error when RF exceeds the nodes that can take replicas: it names the RF
/// asked for and how many nodes are available, and nothing changes.
#[test]
fn replication_factor_above_eligible_nodes_is_refused_with_a_clear_error() {
    let mut m = Meta::cluster(3, 1);
    let err = m.refused(create_cmd("t", 1, Some(4)));
    assert_eq!(err, MetaError::InvalidReplicationFactor { requested: 4, available: 3 });
    // Kafka's text (StripedReplicaPlacer, wrapped by ReplicationControlManager).
    assert_eq!(
        err.to_string(),
        "Unable to replicate the partition 4 time(s): The target replication factor of 4 cannot be reached because only 3 broker(s) are registered."
    );

    m.ok(register(4, None));
    m.ok(Command::Decommission { node: 4 });
    assert_eq!(
        m.refused(create_cmd("t", 1, Some(4))),
        MetaError::InvalidReplicationFactor { requested: 4, available: 3 },
        "a decommissioning node cannot take replicas"
    );
    assert!(matches!(m.refused(create_cmd("t", 1, Some(0))), MetaError::InvalidReplicationFactor { .. }));

    let mut empty = Meta::new(3);
    assert_eq!(
        empty.refused(create_cmd("t", 1, None)),
        MetaError::InvalidReplicationFactor { requested: 3, available: 0 },
        "no nodes at all"
    );
}

// ---------------------------------------------------------------------------------------------
// Reassignment (two-phase)

/// Protects phase one of a reassignment: Reassign records the target, bumps the epoch, keeps
/// the current replicas (nothing dropped before the new ones hold the data), hosts the union,
/// and makes the target's first node the preferred leader.
#[test]
fn reassign_sets_target_and_bumps_epoch_without_dropping_replicas() {
    let mut m = Meta::cluster(4, 2);
    let g = m.create("t", 1, None)[0];
    let old = m.replicas(g);
    let new: Vec<NodeId> = (1..=4).filter(|n| !old.contains(n)).collect();
    assert_eq!(m.ok(Command::Reassign { group: g, replicas: new.clone() }), Reply::Reassigning { partitions: 1 });
    let a = m.state.assignment(g).expect("exists").clone();
    assert_eq!(a.replicas, old);
    assert_eq!(a.target, Some(new.clone()));
    assert_eq!(a.epoch, 1);
    assert_eq!(a.hosts(), (1..=4).collect());
    assert_eq!(a.preferred_leader(), Some(new[0]));
    for n in 1..=4 {
        assert!(m.state.hosted_by(n).contains_key(&g), "node {n} hosts the union");
    }
    assert_eq!(
        m.refused(Command::Reassign { group: g, replicas: old.clone() }),
        MetaError::ReassignmentInProgress(g),
        "one reassignment at a time"
    );
}

/// Protects phase two: CompleteReassignment with the current epoch swaps the replicas for the
/// target; the old-only replicas stop hosting the partition.
#[test]
fn complete_reassignment_swaps_replicas() {
    let mut m = Meta::cluster(3, 2);
    let g = m.create("t", 1, None)[0];
    let old = m.replicas(g);
    let spare = (1..=3).find(|n| !old.contains(n)).expect("a third node");
    let new = vec![spare, old[0]];
    m.ok(Command::Reassign { group: g, replicas: new.clone() });
    m.ok(Command::CompleteReassignment { group: g, epoch: 1 });
    let a = m.state.assignment(g).expect("exists");
    assert_eq!((a.replicas.clone(), a.target.clone(), a.epoch), (new, None, 1));
    assert!(!m.state.hosted_by(old[1]).contains_key(&g));
    // A second reassignment gets epoch 2.
    m.ok(Command::Reassign { group: g, replicas: old.clone() });
    assert_eq!(m.state.assignment(g).expect("exists").epoch, 2);
}

/// Protects the epoch check: a completion for an older (or newer) epoch than the reassignment in
/// progress — e.g. a leader of a previous reassignment proposing late — is refused and leaves the
/// reassignment in progress untouched.
#[test]
fn stale_complete_reassignment_is_refused_and_keeps_the_target() {
    let mut m = Meta::cluster(3, 2);
    let g = m.create("t", 1, None)[0];
    let old = m.replicas(g);
    let spare = (1..=3).find(|n| !old.contains(n)).expect("a third node");
    m.ok(Command::Reassign { group: g, replicas: vec![old[0], spare] });
    m.ok(Command::CompleteReassignment { group: g, epoch: 1 });
    m.ok(Command::Reassign { group: g, replicas: old.clone() });
    for epoch in [0, 1, 3] {
        assert_eq!(
            m.refused(Command::CompleteReassignment { group: g, epoch }),
            MetaError::StaleReassignment { group: g, epoch }
        );
    }
    assert_eq!(m.state.assignment(g).expect("exists").target, Some(old.clone()));
    m.ok(Command::CompleteReassignment { group: g, epoch: 2 });
    assert_eq!(m.replicas(g), old);
}

/// Protects CompleteReassignment when nothing is in progress (a duplicate completion): refused,
/// nothing changes.
#[test]
fn complete_reassignment_without_a_reassignment_is_refused() {
    let mut m = Meta::cluster(3, 2);
    let g = m.create("t", 1, None)[0];
    assert_eq!(
        m.refused(Command::CompleteReassignment { group: g, epoch: 0 }),
        MetaError::StaleReassignment { group: g, epoch: 0 }
    );
    assert_eq!(m.refused(Command::CompleteReassignment { group: 99, epoch: 0 }), MetaError::UnknownGroup(99));
}

/// Protects Reassign's validation: unknown groups and nodes, empty or duplicate sets and new
/// replicas on a draining node are refused; naming the current set is a no-op.
#[test]
fn reassign_refuses_invalid_replica_sets() {
    let mut m = Meta::cluster(4, 2);
    let g = m.create("t", 1, None)[0];
    let old = m.replicas(g);
    assert_eq!(m.refused(Command::Reassign { group: 99, replicas: vec![1] }), MetaError::UnknownGroup(99));
    assert!(matches!(m.refused(Command::Reassign { group: g, replicas: vec![] }), MetaError::InvalidReplicas(_)));
    assert!(matches!(m.refused(Command::Reassign { group: g, replicas: vec![1, 1] }), MetaError::InvalidReplicas(_)));
    assert_eq!(m.refused(Command::Reassign { group: g, replicas: vec![1, 9] }), MetaError::UnknownNode(9));
    let spare: Vec<NodeId> = (1..=4).filter(|n| !old.contains(n)).collect();
    m.ok(Command::Decommission { node: spare[0] });
    assert!(matches!(
        m.refused(Command::Reassign { group: g, replicas: vec![old[0], spare[0]] }),
        MetaError::InvalidReplicas(_)
    ));
    let before = m.state.clone();
    assert_eq!(m.ok(Command::Reassign { group: g, replicas: old.clone() }), Reply::Reassigning { partitions: 0 });
    assert_eq!(m.state.assignment(g), before.assignment(g), "reassigning to the current set changes nothing");
}

// ---------------------------------------------------------------------------------------------
// Decommission and RemoveNode

/// Drives every reassignment in progress to completion, as the partitions' leaders would.
fn complete_all(m: &mut Meta) {
    for _ in 0..1000 {
        let Some((group, epoch)) = m.state.assignments().find(|a| a.target.is_some()).map(|a| (a.group, a.epoch))
        else {
            return;
        };
        m.ok(Command::CompleteReassignment { group, epoch });
    }
    panic!("reassignments never finished");
}

/// Protects decommissioning: every replica on the node gets a reassignment to a node that can
/// take it (the node stays hosting until each completes); once all complete it hosts nothing and
/// RemoveNode succeeds — and not before.
#[test]
fn decommission_moves_every_replica_off_and_remove_waits_until_drained() {
    let mut m = Meta::cluster(4, 3);
    m.create("a", 6, None);
    m.create("b", 3, Some(2));
    let hosted: Vec<u64> = m.state.hosted_by(2).keys().copied().collect();
    assert!(!hosted.is_empty());
    assert_eq!(m.refused(Command::RemoveNode { node: 2 }), MetaError::NotDecommissioning(2));

    assert_eq!(m.ok(Command::Decommission { node: 2 }), Reply::Reassigning { partitions: hosted.len() });
    assert!(m.state.nodes[&2].decommissioning);
    for &g in &hosted {
        let a = m.state.assignment(g).expect("exists");
        let target = a.target.clone().expect("a reassignment started");
        assert!(!target.contains(&2));
        assert_eq!(target.len(), a.replicas.len());
        assert_eq!(target.iter().collect::<BTreeSet<_>>().len(), target.len());
        assert_eq!(a.epoch, 1);
    }
    assert_eq!(
        m.refused(Command::RemoveNode { node: 2 }),
        MetaError::NodeNotDrained { node: 2, partitions: hosted.len() }
    );
    complete_all(&mut m);
    assert!(m.state.hosted_by(2).is_empty());
    m.ok(Command::RemoveNode { node: 2 });
    assert!(!m.state.nodes.contains_key(&2));
    assert_eq!(m.refused(Command::RemoveNode { node: 2 }), MetaError::UnknownNode(2));
}

/// Protects decommissioning's room check: refused (changing nothing) when some partition would
/// have nowhere to go.
#[test]
fn decommission_is_refused_without_room() {
    let mut m = Meta::cluster(3, 3);
    m.create("t", 2, None);
    assert_eq!(
        m.refused(Command::Decommission { node: 1 }),
        MetaError::InvalidReplicationFactor { requested: 3, available: 2 }
    );
    assert_eq!(m.refused(Command::Decommission { node: 9 }), MetaError::UnknownNode(9));
}

/// Protects new placements against draining nodes: topics created after a Decommission never
/// land on it, and re-registering (a restart) keeps it draining.
#[test]
fn decommissioning_node_gets_no_new_replicas_even_after_reregistering() {
    let mut m = Meta::cluster(3, 2);
    m.ok(Command::Decommission { node: 3 });
    m.ok(register(3, None));
    assert!(m.state.nodes[&3].decommissioning);
    m.create("t", 12, None);
    assert!(m.state.hosted_by(3).is_empty());
}

/// Protects a decommission that arrives while a partition on the node is already moving: the
/// move completes first, then the partition moves on off the draining node.
#[test]
fn decommission_during_a_reassignment_moves_on_after_completion() {
    let mut m = Meta::cluster(4, 2);
    let g = m.create("t", 1, None)[0];
    let old = m.replicas(g);
    let spare: Vec<NodeId> = (1..=4).filter(|n| !old.contains(n)).collect();
    m.ok(Command::Reassign { group: g, replicas: vec![old[0], spare[0]] });
    m.ok(Command::Decommission { node: old[0] });
    assert_eq!(m.state.assignment(g).expect("exists").target, Some(vec![old[0], spare[0]]), "not disturbed");
    assert_eq!(m.ok(Command::CompleteReassignment { group: g, epoch: 1 }), Reply::Reassigning { partitions: 1 });
    let a = m.state.assignment(g).expect("exists");
    assert_eq!(a.epoch, 2);
    assert!(!a.target.as_ref().expect("moves on").contains(&old[0]));
    complete_all(&mut m);
    m.ok(Command::RemoveNode { node: old[0] });
}

/// Protects Decommission's promise ("check there is room before marking anything") when a
/// reassignment is in progress: a second decommission that leaves too few nodes for the moving
/// partition must be refused — otherwise the node can never be drained or removed.
#[test]
fn decommission_with_a_reassignment_in_progress_checks_room() {
    let mut m = Meta::cluster(3, 2);
    let g = m.create("t", 1, None)[0];
    assert_eq!(m.replicas(g), vec![1, 2]);
    m.ok(Command::Decommission { node: 1 });
    assert_eq!(m.state.assignment(g).expect("exists").target, Some(vec![3, 2]));
    // Only node 3 would remain eligible: the partition (RF 2) has nowhere to go from node 2.
    let err = m.refused(Command::Decommission { node: 2 });
    assert!(matches!(err, MetaError::InvalidReplicationFactor { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Topic configs

/// Protects topic config validation: Kafka's names with in-range values are accepted; unknown
/// names, non-numbers, out-of-range numbers and unknown words are refused.
#[test]
fn topic_configs_are_validated_by_name_and_range() {
    for (k, v, _) in topic_config::DEFAULTS {
        assert_eq!(topic_config::validate(&configs(&[(k, v)])), Ok(()), "the default of {k} is valid");
        assert_eq!(topic_config::default_of(k), Some(*v));
    }
    let good = [
        ("retention.ms", "-1"),
        ("retention.bytes", "1048576"),
        ("segment.bytes", "14"),
        ("segment.ms", "1"),
        ("min.insync.replicas", "2"),
        ("compression.type", "zstd"),
        ("message.timestamp.type", "LogAppendTime"),
    ];
    assert_eq!(topic_config::validate(&configs(&good)), Ok(()));
    let bad = [
        ("no.such.setting", "1"),
        ("retention.ms", "-2"),
        ("retention.ms", "soon"),
        ("retention.ms", ""),
        ("segment.bytes", "13"),
        ("segment.bytes", "2147483648"),
        ("segment.ms", "0"),
        ("min.insync.replicas", "0"),
        ("cleanup.policy", "compact"),
        ("compression.type", "brotli"),
        ("message.timestamp.type", "createtime"),
    ];
    for (k, v) in bad {
        assert!(
            matches!(topic_config::validate(&configs(&[(k, v)])), Err(MetaError::InvalidConfig(_))),
            "{k}={v} must be refused"
        );
    }
    assert_eq!(topic_config::default_of("no.such.setting"), None);
}

/// Protects CreateTopic and AlterTopicConfigs with configs: invalid ones refuse the whole
/// command; deletes apply before sets; the stored configs are exactly the overrides.
#[test]
fn create_and_alter_topic_configs() {
    let mut m = Meta::cluster(1, 1);
    let bad = Command::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: None,
        configs: configs(&[("retention.ms", "x")]),
    };
    assert!(matches!(m.refused(bad), MetaError::InvalidConfig(_)));
    m.ok(Command::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: None,
        configs: configs(&[("retention.ms", "1000"), ("segment.bytes", "1024")]),
    });
    assert_eq!(m.state.topics["t"].configs, configs(&[("retention.ms", "1000"), ("segment.bytes", "1024")]));

    m.ok(Command::AlterTopicConfigs {
        name: "t".into(),
        set: configs(&[("retention.ms", "2000"), ("compression.type", "lz4")]),
        delete: vec!["segment.bytes".into(), "retention.ms".into()],
    });
    assert_eq!(m.state.topics["t"].configs, configs(&[("compression.type", "lz4"), ("retention.ms", "2000")]));

    let alter = |set: &[(&str, &str)]| Command::AlterTopicConfigs {
        name: "t".into(),
        set: configs(set),
        delete: vec!["compression.type".into()],
    };
    assert!(matches!(m.refused(alter(&[("segment.ms", "0")])), MetaError::InvalidConfig(_)), "all or nothing");
    assert_eq!(
        m.refused(Command::AlterTopicConfigs { name: "u".into(), set: BTreeMap::new(), delete: vec![] }),
        MetaError::UnknownTopic("u".into())
    );
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// Protects node registration: a node may re-register (restart, new address, new rack), but
/// not with an address another node uses, nor with an empty address.
#[test]
fn register_with_a_conflicting_address_is_refused() {
    let mut m = Meta::cluster(2, 1);
    let taken = |addr: &str, kafka_addr: &str| Command::RegisterNode {
        id: 3,
        addr: addr.into(),
        kafka_addr: kafka_addr.into(),
        rack: None,
    };
    assert!(matches!(m.refused(taken("10.0.0.1:7000", "10.0.0.3:9092")), MetaError::NodeConflict(3, _)));
    assert!(matches!(m.refused(taken("10.0.0.3:7000", "10.0.0.2:9092")), MetaError::NodeConflict(3, _)));
    assert!(matches!(m.refused(taken("", "10.0.0.3:9092")), MetaError::NodeConflict(3, _)));
    assert!(matches!(m.refused(taken("10.0.0.3:7000", "")), MetaError::NodeConflict(3, _)));

    // The same node re-registering with its own or a fresh address is fine.
    m.ok(register(1, Some("r1")));
    assert_eq!(m.state.nodes[&1].rack.as_deref(), Some("r1"));
    m.ok(Command::RegisterNode { id: 1, addr: "h1:7000".into(), kafka_addr: "h1:9092".into(), rack: None });
    assert_eq!(m.state.nodes[&1].addr, "h1:7000");
    // Its old address is free again.
    m.ok(taken("10.0.0.1:7000", "10.0.0.1:9092"));
}

// ---------------------------------------------------------------------------------------------
// Refusals and determinism

/// Protects "a refused command changes nothing but `applied_index`" for every kind of command,
/// on a state with topics, configs, a draining node and a reassignment in progress.
#[test]
fn a_refused_command_changes_nothing_but_applied_index() {
    let mut m = Meta::cluster(4, 2);
    m.ok(Command::CreateTopic {
        name: "t".into(),
        partitions: 3,
        replication_factor: None,
        configs: configs(&[("retention.ms", "5")]),
    });
    m.ok(Command::Decommission { node: 4 });
    let g = m.state.topics["t"].partitions[0].group;
    if m.state.assignment(g).expect("exists").target.is_none() {
        m.ok(Command::Reassign { group: g, replicas: vec![1, 2, 3] });
    }
    let refusals = vec![
        Command::RegisterNode { id: 9, addr: "10.0.0.1:7000".into(), kafka_addr: "h9:9092".into(), rack: None },
        create_cmd("t", 1, None),
        create_cmd("bad name", 1, None),
        create_cmd("u", 1, Some(9)),
        Command::DeleteTopic { name: "u".into() },
        Command::CreatePartitions { name: "t".into(), total: 2 },
        Command::AlterTopicConfigs { name: "t".into(), set: configs(&[("x", "1")]), delete: vec![] },
        Command::Reassign { group: g, replicas: vec![1] },
        Command::Reassign { group: 99, replicas: vec![1] },
        Command::CompleteReassignment { group: 99, epoch: 0 },
        Command::Decommission { node: 9 },
        Command::RemoveNode { node: 1 },
        Command::RemoveNode { node: 9 },
    ];
    for cmd in refusals {
        m.refused(cmd);
    }
}

/// Protects replica agreement: the same entries give the same state and digest; a different
/// history gives a different digest.
#[test]
fn same_entries_same_state_and_digest() {
    let run = || {
        let mut m = Meta::cluster(4, 3);
        m.create("a", 5, None);
        m.create("b", 2, Some(1));
        m.ok(Command::Decommission { node: 2 });
        complete_all(&mut m);
        m.ok(Command::RemoveNode { node: 2 });
        m
    };
    let (a, b) = (run(), run());
    assert_eq!(a.state, b.state);
    assert_eq!(a.state.digest(), b.state.digest());
    let mut c = run();
    c.ok(Command::DeleteTopic { name: "b".into() });
    assert_ne!(a.state.digest(), c.state.digest());
    a.state.check_invariants();
}
