//! Model-based test of the cluster metadata state machine (`keel_core::metadata`): random
//! sequences of commands over a small universe (node ids 1–6, of which 6 never registers; five
//! topic names, two of them invalid; live, deleted and never-created groups; current, stale and
//! future epochs), applied to `MetadataState` and checked after every step against a plain model
//! of nodes, topics, partition counts, group ids and configs.
//!
//! The model predicts acceptance of every command except Decommission (whose room rule is the
//! code's own); reassignment-related steps are checked against the state before the step: what
//! must change, and that nothing else does. After every accepted Decommission, a copy of the
//! state drives every reassignment in progress to completion (as the partitions' leaders would):
//! every draining node must then host nothing and be removable.
//!
//! `PROPTEST_CASES=20000` for a longer hunt.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use keel_core::metadata::{
    Command, FIRST_PARTITION_GROUP, MetadataState, NodeId, PRODUCER_ID_BLOCK_MAX, PartitionAssignment, Reply,
    TOPIC_PARTITIONS_MAX,
};
use proptest::prelude::*;

/// Node ids the ops name; the last is never registered.
const NODE_IDS: u64 = 6;
const NAMES: [&str; 5] = ["a", "b", "c", "bad name", ""];
const RACKS: [&str; 3] = ["r1", "r2", "r3"];
/// Single-setting config maps and whether Keel must accept them.
const CONFIGS: [(&str, &str, bool); 7] = [
    ("", "", true), // no setting
    ("retention.ms", "1000", true),
    ("compression.type", "gzip", true),
    ("min.insync.replicas", "2", true),
    ("retention.ms", "soon", false),
    ("segment.bytes", "13", false),
    ("no.such.setting", "1", false),
];

#[derive(Debug, Clone)]
enum Op {
    /// `addr_of`: whose addresses to register with (0 = empty ones); `kafka_only`: only the Kafka
    /// address is taken from `addr_of`, the transport address is the node's own.
    Register {
        id: NodeId,
        addr_of: NodeId,
        kafka_only: bool,
        rack: Option<usize>,
    },
    Create {
        name: usize,
        partitions: u32,
        rf: Option<u16>,
        config: usize,
    },
    Delete {
        name: usize,
    },
    /// Grows to `have + extra - 1` partitions (`extra` 0 and 1 are refusals), or past the limit.
    Grow {
        name: usize,
        extra: u32,
        huge: bool,
    },
    Alter {
        name: usize,
        set: usize,
        delete: usize,
    },
    Reassign {
        group: u8,
        replicas: Vec<NodeId>,
    },
    /// Completes with the current epoch plus `epoch_delta`.
    Complete {
        group: u8,
        epoch_delta: i8,
    },
    Decommission {
        node: NodeId,
    },
    Remove {
        node: NodeId,
    },
    /// Producer ids for `node`: `count` 0 and past the block limit are refusals.
    ProducerIds {
        node: NodeId,
        count: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 1..=NODE_IDS;
    prop_oneof![
        2 => (1..NODE_IDS, prop_oneof![8 => Just(None), 1 => Just(Some(0u64)), 1 => (1..NODE_IDS).prop_map(Some)],
              any::<bool>(), proptest::option::of(0..RACKS.len()))
            .prop_map(|(id, addr_of, kafka_only, rack)| Op::Register { id, addr_of: addr_of.unwrap_or(id), kafka_only, rack }),
        6 => (prop_oneof![6 => 0usize..3, 1 => 3usize..NAMES.len()],
              prop_oneof![8 => 1u32..5, 1 => Just(0), 1 => Just(TOPIC_PARTITIONS_MAX + 1)],
              proptest::option::of(0u16..5),
              prop_oneof![4 => Just(0usize), 2 => 0..CONFIGS.len()])
            .prop_map(|(name, partitions, rf, config)| Op::Create { name, partitions, rf, config }),
        2 => (0..NAMES.len()).prop_map(|name| Op::Delete { name }),
        2 => (0..NAMES.len(), 0u32..4, proptest::bool::weighted(0.05))
            .prop_map(|(name, extra, huge)| Op::Grow { name, extra, huge }),
        1 => (0..NAMES.len(), 0..CONFIGS.len(), 0..CONFIGS.len())
            .prop_map(|(name, set, delete)| Op::Alter { name, set, delete }),
        4 => (any::<u8>(), replica_set()).prop_map(|(group, replicas)| Op::Reassign { group, replicas }),
        4 => (any::<u8>(), prop_oneof![6 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)])
            .prop_map(|(group, epoch_delta)| Op::Complete { group, epoch_delta }),
        2 => node.clone().prop_map(|node| Op::Decommission { node }),
        2 => node.clone().prop_map(|node| Op::Remove { node }),
        2 => (node, prop_oneof![8 => 1u32..2000, 1 => Just(0), 1 => Just(PRODUCER_ID_BLOCK_MAX + 1)])
            .prop_map(|(node, count)| Op::ProducerIds { node, count }),
    ]
}

/// Mostly distinct nodes (a plausible reassignment), sometimes any list (empty, repeats).
fn replica_set() -> impl Strategy<Value = Vec<NodeId>> {
    prop_oneof![
        4 => (Just((1..=NODE_IDS).collect::<Vec<_>>()).prop_shuffle(), 1usize..5)
            .prop_map(|(nodes, len)| nodes[..len].to_vec()),
        1 => proptest::collection::vec(1..=NODE_IDS, 0..5),
    ]
}

/// The racks (or none) of nodes registered before the ops, with ids from 1.
fn initial_nodes(count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Option<usize>>> {
    proptest::collection::vec(proptest::option::of(0..RACKS.len()), count)
}

fn addr(id: NodeId) -> String {
    format!("n{id}:7000")
}

fn kafka_addr(id: NodeId) -> String {
    format!("n{id}:9092")
}

fn configs_of(i: usize) -> BTreeMap<String, String> {
    let (k, v, _) = CONFIGS[i];
    if k.is_empty() { BTreeMap::new() } else { BTreeMap::from([(k.to_string(), v.to_string())]) }
}

/// Picks a group: usually a live one (for a completion, often one being reassigned), sometimes
/// any id below 12 (deleted, never created, or 0).
fn pick_group(state: &MetadataState, pick: u8, prefer_moving: bool) -> u64 {
    let moving: Vec<u64> = state.assignments().filter(|a| a.target.is_some()).map(|a| a.group).collect();
    let live: Vec<u64> = state.groups.keys().copied().collect();
    match pick {
        0..150 if prefer_moving && !moving.is_empty() => moving[pick as usize % moving.len()],
        0..220 if !live.is_empty() => live[pick as usize % live.len()],
        _ => u64::from(pick % 12),
    }
}

/// Turns an op into the command it stands for in `state` (ops name groups and epochs relative to
/// the state, so shrinking keeps them meaningful).
fn command(state: &MetadataState, op: &Op) -> Command {
    match op {
        Op::Register { id, addr_of, kafka_only, rack } => {
            let (a, k) = match (*addr_of, *kafka_only) {
                (0, _) => (String::new(), String::new()),
                (of, true) => (addr(*id), kafka_addr(of)),
                (of, false) => (addr(of), kafka_addr(*id)),
            };
            Command::RegisterNode { id: *id, addr: a, kafka_addr: k, rack: rack.map(|r| RACKS[r].to_string()) }
        }
        Op::Create { name, partitions, rf, config } => Command::CreateTopic {
            name: NAMES[*name].into(),
            partitions: *partitions,
            replication_factor: *rf,
            configs: configs_of(*config),
        },
        Op::Delete { name } => Command::DeleteTopic { name: NAMES[*name].into() },
        Op::Grow { name, extra, huge } => {
            let have = state.topics.get(NAMES[*name]).map_or(0, |t| t.partitions.len() as u32);
            let total = if *huge { TOPIC_PARTITIONS_MAX + 1 } else { (have + extra).saturating_sub(1) };
            Command::CreatePartitions { name: NAMES[*name].into(), total }
        }
        Op::Alter { name, set, delete } => Command::AlterTopicConfigs {
            name: NAMES[*name].into(),
            set: configs_of(*set),
            delete: configs_of(*delete).into_keys().collect(),
        },
        Op::Reassign { group, replicas } => {
            Command::Reassign { group: pick_group(state, *group, false), replicas: replicas.clone() }
        }
        Op::Complete { group, epoch_delta } => {
            let group = pick_group(state, *group, true);
            let epoch = state.assignment(group).map_or(0, |a| a.epoch);
            Command::CompleteReassignment { group, epoch: epoch.saturating_add_signed(i64::from(*epoch_delta)) }
        }
        Op::Decommission { node } => Command::Decommission { node: *node },
        Op::Remove { node } => Command::RemoveNode { node: *node },
        Op::ProducerIds { node, count } => Command::AllocateProducerIds { node: *node, count: *count },
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelNode {
    addr: String,
    kafka_addr: String,
    rack: Option<String>,
    draining: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelTopic {
    rf: u16,
    /// Group of each partition, by partition number.
    groups: Vec<u64>,
    configs: BTreeMap<String, String>,
}

/// What the metadata must hold, kept without looking at the code under test.
#[derive(Debug, Clone)]
struct Model {
    default_rf: u16,
    nodes: BTreeMap<NodeId, ModelNode>,
    topics: BTreeMap<String, ModelTopic>,
    next_group: u64,
    /// Every group id ever handed out.
    handed_out: BTreeSet<u64>,
    /// Producer ids handed out: every block starts where the last ended, from 0.
    next_producer_id: i64,
}

impl Model {
    fn eligible(&self) -> usize {
        self.nodes.values().filter(|n| !n.draining).count()
    }
}

/// Kafka's topic name rule, written out again.
fn valid_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn valid_configs(c: &BTreeMap<String, String>) -> bool {
    c.iter().all(|(k, v)| CONFIGS.iter().any(|(ck, cv, ok)| ck == k && cv == v && *ok))
}

/// Nodes hosting `a` now (current and target sets), computed without the code's helpers.
fn hosts(a: &PartitionAssignment) -> BTreeSet<NodeId> {
    a.replicas.iter().chain(a.target.iter().flatten()).copied().collect()
}

fn all_assignments(s: &MetadataState) -> Vec<&PartitionAssignment> {
    s.topics.values().flat_map(|t| &t.partitions).collect()
}

fn hosting(s: &MetadataState, node: NodeId) -> usize {
    all_assignments(s).into_iter().filter(|a| hosts(a).contains(&node)).count()
}

/// `before` with only `applied_index` moved on: what a refused command must leave.
fn unchanged(before: &MetadataState, index: u64) -> MetadataState {
    MetadataState { applied_index: index, ..before.clone() }
}

/// Applies `cmd` at `index`, checks the outcome against the model and updates it.
fn step(
    s: &mut MetadataState,
    m: &mut Model,
    index: u64,
    cmd: &Command,
) -> Result<Result<Reply, keel_core::metadata::MetaError>, TestCaseError> {
    let before = s.clone();
    let result = s.apply(index, cmd);
    prop_assert_eq!(s.applied_index, index);
    if let Err(e) = &result {
        prop_assert_eq!(&*s, &unchanged(&before, index), "refused {:?} ({}) changed the state", cmd, e);
    }
    let ok = result.is_ok();
    // Groups whose replica sets this step may have placed anew: they must avoid draining nodes.
    let mut placed: Vec<u64> = Vec::new();
    match cmd {
        Command::RegisterNode { id, addr, kafka_addr, rack } => {
            let conflict =
                m.nodes.iter().any(|(n, info)| n != id && (info.addr == *addr || info.kafka_addr == *kafka_addr));
            let expect = !addr.is_empty() && !kafka_addr.is_empty() && !conflict;
            prop_assert_eq!(ok, expect, "{:?} -> {:?}", cmd, result);
            if ok {
                let draining = m.nodes.get(id).is_some_and(|n| n.draining);
                m.nodes.insert(
                    *id,
                    ModelNode { addr: addr.clone(), kafka_addr: kafka_addr.clone(), rack: rack.clone(), draining },
                );
            }
        }
        Command::CreateTopic { name, partitions, replication_factor, configs } => {
            let eligible = m.eligible();
            let rf = replication_factor.unwrap_or(m.default_rf);
            let expect = valid_name(name)
                && !m.topics.contains_key(name)
                && (1..=TOPIC_PARTITIONS_MAX).contains(partitions)
                && valid_configs(configs)
                && rf >= 1
                && rf as usize <= eligible;
            prop_assert_eq!(ok, expect, "{:?} -> {:?}", cmd, result);
            if ok {
                let groups: Vec<u64> = (m.next_group..m.next_group + u64::from(*partitions)).collect();
                for g in &groups {
                    prop_assert!(m.handed_out.insert(*g), "group {} handed out twice", g);
                }
                let expected = Reply::TopicCreated { id: s.topics[name].id, groups: groups.clone() };
                prop_assert_eq!(&result, &Ok(expected));
                m.next_group += u64::from(*partitions);
                placed.extend(&groups);
                m.topics.insert(name.clone(), ModelTopic { rf, groups, configs: configs.clone() });
            }
        }
        Command::DeleteTopic { name } => {
            prop_assert_eq!(ok, m.topics.remove(name).is_some(), "{:?} -> {:?}", cmd, result);
        }
        Command::CreatePartitions { name, total } => {
            let eligible = m.eligible();
            let expect = m.topics.get(name).is_some_and(|t| {
                *total as usize > t.groups.len() && *total <= TOPIC_PARTITIONS_MAX && t.rf as usize <= eligible
            });
            prop_assert_eq!(ok, expect, "{:?} -> {:?}", cmd, result);
            if ok {
                let t = m.topics.get_mut(name).expect("exists");
                let more = u64::from(*total) - t.groups.len() as u64;
                let groups: Vec<u64> = (m.next_group..m.next_group + more).collect();
                for g in &groups {
                    prop_assert!(m.handed_out.insert(*g), "group {} handed out twice", g);
                }
                prop_assert_eq!(&result, &Ok(Reply::PartitionsCreated { groups: groups.clone() }));
                m.next_group += more;
                t.groups.extend(&groups);
                placed.extend(&groups);
            }
        }
        Command::AlterTopicConfigs { name, set, delete } => {
            let expect = m.topics.contains_key(name) && valid_configs(set);
            prop_assert_eq!(ok, expect, "{:?} -> {:?}", cmd, result);
            if ok {
                let c = &mut m.topics.get_mut(name).expect("exists").configs;
                for k in delete {
                    c.remove(k);
                }
                c.extend(set.clone());
            }
        }
        Command::Reassign { group, replicas } => {
            let a = before.assignment(*group);
            let distinct = replicas.iter().collect::<BTreeSet<_>>().len() == replicas.len();
            let expect = a.is_some_and(|a| {
                a.target.is_none()
                    && !replicas.is_empty()
                    && distinct
                    && replicas.iter().all(|n| m.nodes.get(n).is_some_and(|i| !i.draining || a.replicas.contains(n)))
            });
            prop_assert_eq!(ok, expect, "{:?} -> {:?}", cmd, result);
            if ok {
                let a = a.expect("accepted");
                let now = s.assignment(*group).expect("still there");
                if a.replicas == *replicas {
                    prop_assert_eq!(&*s, &unchanged(&before, index), "reassigning to the current set is a no-op");
                } else {
                    prop_assert_eq!(&now.replicas, &a.replicas, "phase one drops no replica");
                    prop_assert_eq!(now.target.as_ref(), Some(replicas));
                    prop_assert_eq!(now.epoch, a.epoch + 1);
                    let mut expected = unchanged(&before, index);
                    *expected_assignment(&mut expected, *group) = now.clone();
                    prop_assert_eq!(&*s, &expected, "Reassign changed another partition");
                }
            }
        }
        Command::CompleteReassignment { group, epoch } => {
            let a = before.assignment(*group);
            let expect = a.is_some_and(|a| a.target.is_some() && a.epoch == *epoch);
            prop_assert_eq!(ok, expect, "{:?} -> {:?}", cmd, result);
            if ok {
                let a = a.expect("accepted");
                let new = a.target.clone().expect("in progress");
                let now = s.assignment(*group).expect("still there").clone();
                prop_assert_eq!(&now.replicas, &new, "completion swaps in the target");
                let draining_in: Vec<NodeId> = new.iter().copied().filter(|n| m.nodes[n].draining).collect();
                let spare = m.nodes.iter().any(|(n, i)| !i.draining && !new.contains(n));
                match &now.target {
                    None => {
                        prop_assert_eq!(now.epoch, a.epoch);
                        prop_assert!(
                            draining_in.is_empty() || !spare,
                            "a draining replica stays with room to move: {:?}",
                            now
                        );
                    }
                    Some(next) => {
                        prop_assert!(!draining_in.is_empty(), "moved on with no draining replica: {:?}", now);
                        prop_assert_eq!(now.epoch, a.epoch + 1);
                        check_drain_target(m, &new, next, &draining_in)?;
                        placed.push(*group);
                    }
                }
                let mut expected = unchanged(&before, index);
                *expected_assignment(&mut expected, *group) = now.clone();
                prop_assert_eq!(&*s, &expected, "CompleteReassignment changed another partition");
            }
        }
        Command::Decommission { node } => {
            if !m.nodes.contains_key(node) {
                prop_assert!(!ok, "{:?} -> {:?}", cmd, result);
            }
            let eligible_after: BTreeSet<NodeId> =
                m.nodes.iter().filter(|(n, i)| !i.draining && *n != node).map(|(n, _)| *n).collect();
            let hosted: Vec<&PartitionAssignment> =
                all_assignments(&before).into_iter().filter(|a| hosts(a).contains(node)).collect();
            // Room: once every move completes, each partition must shed every draining node (this
            // one included), and each of its replicas then needs a distinct eligible node.
            let draining_after: BTreeSet<NodeId> =
                m.nodes.iter().filter(|(n, i)| i.draining || *n == node).map(|(n, _)| *n).collect();
            let no_room = |a: &PartitionAssignment| {
                let last = a.target.as_ref().unwrap_or(&a.replicas);
                last.iter().any(|n| draining_after.contains(n)) && eligible_after.len() < last.len()
            };
            let cramped = all_assignments(&before).into_iter().any(no_room);
            if m.nodes.contains_key(node) {
                prop_assert_eq!(!ok, cramped, "{:?} -> {:?}: refused iff some partition has no room", cmd, result);
            }
            if ok {
                m.nodes.get_mut(node).expect("known").draining = true;
                let mut moved = 0;
                for a in &hosted {
                    let now = s.assignment(a.group).expect("still there");
                    prop_assert_eq!(&now.replicas, &a.replicas);
                    if a.target.is_some() {
                        prop_assert_eq!(now, *a, "a reassignment in progress is not disturbed");
                    } else {
                        let next = now.target.as_ref().expect("a replica on a draining node starts moving");
                        prop_assert_eq!(now.epoch, a.epoch + 1);
                        check_drain_target(m, &a.replicas, next, &[*node])?;
                        placed.push(a.group);
                        moved += 1;
                    }
                }
                prop_assert_eq!(&result, &Ok(Reply::Reassigning { partitions: moved }));
                let mut expected = unchanged(&before, index);
                expected.nodes.get_mut(node).expect("known").decommissioning = true;
                for a in &hosted {
                    *expected_assignment(&mut expected, a.group) = s.assignment(a.group).expect("there").clone();
                }
                prop_assert_eq!(&*s, &expected, "Decommission changed something else");
            }
        }
        Command::RemoveNode { node } => {
            let expect = m.nodes.get(node).is_some_and(|i| i.draining) && hosting(&before, *node) == 0;
            prop_assert_eq!(ok, expect, "{:?} -> {:?}", cmd, result);
            if ok {
                m.nodes.remove(node);
            }
        }
        Command::AllocateProducerIds { node, count } => {
            let expect = m.nodes.contains_key(node) && (1..=PRODUCER_ID_BLOCK_MAX).contains(count);
            prop_assert_eq!(ok, expect, "{:?} -> {:?}", cmd, result);
            if ok {
                prop_assert_eq!(&result, &Ok(Reply::ProducerIds { first: m.next_producer_id, count: *count }));
                m.next_producer_id += i64::from(*count);
                let expected = MetadataState { next_producer_id: m.next_producer_id, ..unchanged(&before, index) };
                prop_assert_eq!(&*s, &expected, "AllocateProducerIds changed something else");
            }
        }
    }
    check(s, m, &before)?;
    for g in placed {
        let a = s.assignment(g).expect("placed group exists");
        let new_set = a.target.as_ref().unwrap_or(&a.replicas);
        for n in new_set {
            let newly_placed = a.target.is_none() || !a.replicas.contains(n);
            prop_assert!(!newly_placed || !s.nodes[n].decommissioning, "group {} placed on draining node {}", g, n);
        }
    }
    Ok(result)
}

fn expected_assignment(state: &mut MetadataState, group: u64) -> &mut PartitionAssignment {
    let (topic, p) = state.groups[&group].clone();
    &mut state.topics.get_mut(&topic).expect("topic").partitions[p as usize]
}

/// A drain target replaces each draining node of `from` in place (where a node could take it)
/// by an eligible node not already in the set, and keeps every other replica where it is.
fn check_drain_target(m: &Model, from: &[NodeId], next: &[NodeId], draining: &[NodeId]) -> Result<(), TestCaseError> {
    prop_assert_eq!(next.len(), from.len());
    for (old, new) in from.iter().zip(next) {
        if old != new {
            prop_assert!(draining.contains(old), "{:?} -> {:?} moved a replica that is not draining", from, next);
            prop_assert!(!m.nodes[new].draining, "{:?} -> {:?} moves onto a draining node", from, next);
            prop_assert!(!from.contains(new), "{:?} -> {:?} duplicates a replica", from, next);
        }
    }
    Ok(())
}

/// The state agrees with the model, and the invariants hold.
fn check(s: &MetadataState, m: &Model, before: &MetadataState) -> Result<(), TestCaseError> {
    s.check_invariants();
    prop_assert!(s.next_group >= before.next_group, "next_group went back");
    prop_assert_eq!(s.next_group, m.next_group);
    prop_assert_eq!(s.default_replication_factor, m.default_rf);
    let nodes: BTreeMap<NodeId, ModelNode> = s
        .nodes
        .iter()
        .map(|(id, n)| {
            assert_eq!(n.id, *id);
            let info = ModelNode {
                addr: n.addr.clone(),
                kafka_addr: n.kafka_addr.clone(),
                rack: n.rack.clone(),
                draining: n.decommissioning,
            };
            (*id, info)
        })
        .collect();
    prop_assert_eq!(&nodes, &m.nodes);
    prop_assert_eq!(s.topics.keys().collect::<Vec<_>>(), m.topics.keys().collect::<Vec<_>>());
    let mut live = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (name, t) in &s.topics {
        let mt = &m.topics[name];
        prop_assert!(ids.insert(t.id), "topic id {} shared", t.id);
        prop_assert_eq!(t.replication_factor, mt.rf);
        prop_assert_eq!(&t.configs, &mt.configs);
        prop_assert_eq!(t.partitions.iter().map(|a| a.group).collect::<Vec<_>>(), mt.groups.clone());
        for a in &t.partitions {
            prop_assert!(a.group >= FIRST_PARTITION_GROUP && m.handed_out.contains(&a.group));
            live.insert(a.group);
            if a.epoch == 0 {
                prop_assert_eq!(a.replicas.len(), mt.rf as usize, "a never-moved partition has RF replicas");
                prop_assert!(a.target.is_none());
            }
            for set in std::iter::once(&a.replicas).chain(a.target.iter()) {
                prop_assert!(!set.is_empty());
                prop_assert_eq!(set.iter().collect::<BTreeSet<_>>().len(), set.len(), "duplicate replica in {:?}", a);
                prop_assert!(set.iter().all(|n| s.nodes.contains_key(n)), "unregistered replica in {:?}", a);
            }
        }
    }
    prop_assert_eq!(s.groups.keys().copied().collect::<BTreeSet<_>>(), live);
    prop_assert!(m.handed_out.iter().all(|g| (FIRST_PARTITION_GROUP..m.next_group).contains(g)));
    for id in s.nodes.keys() {
        let via_code: BTreeSet<u64> = s.hosted_by(*id).keys().copied().collect();
        let via_model: BTreeSet<u64> =
            all_assignments(s).into_iter().filter(|a| hosts(a).contains(id)).map(|a| a.group).collect();
        prop_assert_eq!(via_code, via_model);
    }
    Ok(())
}

/// Completes every reassignment in progress, in group order, as the partitions' leaders would
/// (a completion may start the next move off a draining node); then every draining node must
/// host nothing, and RemoveNode must succeed for each.
fn drain_to_completion(s: &MetadataState, mut index: u64) -> Result<(), TestCaseError> {
    let mut s = s.clone();
    let mut rounds = 0;
    loop {
        let moving = s.assignments().find(|a| a.target.is_some()).map(|a| (a.group, a.epoch));
        let Some((group, epoch)) = moving else { break };
        rounds += 1;
        prop_assert!(rounds < 1000, "reassignments never finish");
        index += 1;
        let r = s.apply(index, &Command::CompleteReassignment { group, epoch });
        prop_assert!(r.is_ok(), "completing group {} epoch {}: {:?}", group, epoch, r);
    }
    let draining: Vec<NodeId> = s.nodes.values().filter(|n| n.decommissioning).map(|n| n.id).collect();
    for node in draining {
        prop_assert_eq!(
            s.hosted_by(node).keys().copied().collect::<Vec<_>>(),
            Vec::<u64>::new(),
            "draining node {} still hosts partitions after every reassignment completed: {:?}",
            node,
            s
        );
        index += 1;
        let r = s.apply(index, &Command::RemoveNode { node });
        prop_assert!(r.is_ok(), "RemoveNode {} after draining: {:?}", node, r);
    }
    Ok(())
}

fn run(default_rf: u16, initial: Vec<Option<usize>>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut s = MetadataState::new(default_rf);
    let mut m = Model {
        default_rf: default_rf.max(1),
        nodes: BTreeMap::new(),
        topics: BTreeMap::new(),
        next_group: FIRST_PARTITION_GROUP,
        handed_out: BTreeSet::new(),
        next_producer_id: 0,
    };
    let initial = initial.into_iter().enumerate().map(|(i, rack)| Op::Register {
        id: i as u64 + 1,
        addr_of: i as u64 + 1,
        kafka_only: false,
        rack,
    });
    let mut log: Vec<(Command, Result<Reply, keel_core::metadata::MetaError>)> = Vec::new();
    for op in initial.chain(ops) {
        let cmd = command(&s, &op);
        let index = log.len() as u64 + 1;
        let result = step(&mut s, &mut m, index, &cmd)?;
        if matches!(cmd, Command::Decommission { .. }) && result.is_ok() {
            drain_to_completion(&s, index)?;
        }
        log.push((cmd, result));
    }
    // Determinism: the same entries give the same replies, state and digest.
    let mut again = MetadataState::new(default_rf);
    for (i, (cmd, result)) in log.iter().enumerate() {
        prop_assert_eq!(&again.apply(i as u64 + 1, cmd), result);
    }
    prop_assert_eq!(&again, &s);
    prop_assert_eq!(again.digest(), s.digest());
    Ok(())
}

proptest! {
    // 512 cases by default (a few seconds); `PROPTEST_CASES=20000` for a longer hunt.
    #![proptest_config(ProptestConfig::with_cases(
        keel_proptests::cases(512),
    ))]

    /// Protects the metadata state machine's contract under any sequence of commands: the model
    /// agrees, invariants hold, refusals change nothing, placements avoid draining nodes,
    /// decommissioning drains completely, and replicas applying the same entries agree.
    #[test]
    fn metadata_matches_model(
        default_rf in 0u16..4,
        initial in prop_oneof![1 => initial_nodes(0..3), 3 => initial_nodes(3..6)],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        run(default_rf, initial, ops)?;
    }
}
