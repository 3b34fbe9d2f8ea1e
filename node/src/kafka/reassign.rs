//! AlterPartitionReassignments and ListPartitionReassignments: Kafka's reassignment API over
//! Keel's two-phase reassignment (`Command::Reassign`, carried out by the partition's Raft
//! leader; see `keel_core::metadata` and `crate::reconcile`).
//!
//! Any node answers, as for the other admin APIs. It first brings its copy of the metadata up
//! to date (a ReadIndex through the metadata leader, [`Node::metadata_fresh`]), so an answer
//! never misses a topic or a reassignment committed before the request arrived; a node that
//! cannot within the request's timeout answers REQUEST_TIMED_OUT for the whole request (nothing
//! changed). Alter then checks each partition against that metadata ([`decide`], no I/O) and
//! proposes one `Reassign` per partition through the metadata leader, which checks again.
//!
//! Where Keel differs from Kafka:
//! - a reassignment in flight is not replaced by a new one: a request for another target gets
//!   REASSIGNMENT_IN_PROGRESS (the same target again is accepted, and changes nothing);
//! - a reassignment in flight cannot be cancelled (null replicas): the partition leader may
//!   already have moved the Raft membership to the target, and Keel has no way back but to
//!   finish. Such a request gets INVALID_REQUEST saying so; a cancellation of a partition that
//!   is not moving gets NO_REASSIGNMENT_IN_PROGRESS, as in Kafka.
//!
//! ListPartitionReassignments reports what the metadata records: a partition is being
//! reassigned from `Reassign` until `CompleteReassignment` commits (the leader proposes it once
//! the Raft membership is the target). `replicas` is the target followed by the replicas that
//! leave, as Kafka lists it; `adding` the target's replicas that are new, `removing` those that
//! leave.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::AlterPartitionReassignmentsRequest;
use kafka_protocol::messages::AlterPartitionReassignmentsResponse;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::ListPartitionReassignmentsRequest;
use kafka_protocol::messages::ListPartitionReassignmentsResponse;
use kafka_protocol::messages::alter_partition_reassignments_response::ReassignablePartitionResponse;
use kafka_protocol::messages::alter_partition_reassignments_response::ReassignableTopicResponse;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::list_partition_reassignments_response::OngoingPartitionReassignment;
use kafka_protocol::messages::list_partition_reassignments_response::OngoingTopicReassignment;
use keel_core::metadata::Command;
use keel_core::metadata::MetaError;
use keel_core::metadata::MetadataState;
use keel_core::metadata::NodeId;
use keel_core::metadata::PartitionAssignment;
use keel_core::metadata::Topic;

use super::Answer;
use super::Request;
use super::admin::timeout_of;
use super::codes::broker_id;
use super::codes::meta_error;
use super::codes::propose_error;
use super::codes::str_bytes;
use super::codes::topic_name;
use super::respond;
use crate::node::Node;

/// The longest one ReadIndex attempt may take before it is tried again (the metadata group may
/// be electing a leader).
const FRESH_TRY_MAX: Duration = Duration::from_secs(2);
/// Pause between ReadIndex attempts.
const FRESH_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// An error for the request or a partition: Kafka's code and a message for people.
type Refusal = (ResponseError, String);

/// What one partition of an AlterPartitionReassignments request comes to, checked against the
/// metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Propose `Command::Reassign { group, replicas }`.
    Propose { group: u64, replicas: Vec<NodeId> },
    /// The partition is already moving to exactly these replicas: nothing to do.
    AlreadyMoving,
    /// Answer this error; nothing changes.
    Refuse(ResponseError, String),
}

/// Checks one partition of an AlterPartitionReassignments request against `state`. `replicas`
/// `None` asks to cancel a pending reassignment. `allow_rf_change` false (v1+) refuses a
/// replica list of another length than the partition has.
pub(crate) fn decide(
    state: &MetadataState,
    topic: &str,
    partition: i32,
    replicas: Option<&[BrokerId]>,
    allow_rf_change: bool,
) -> Decision {
    let name = format!("{topic}-{partition}");
    let refuse = |code: ResponseError, message: String| Decision::Refuse(code, message);
    let Some(t) = state.topics.get(topic) else {
        return refuse(ResponseError::UnknownTopicOrPartition, format!("unknown topic '{topic}'"));
    };
    let Some(a) = usize::try_from(partition).ok().and_then(|p| t.partitions.get(p)) else {
        return refuse(
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{topic}' has {} partition(s); there is no partition {partition}", t.partitions.len()),
        );
    };
    let Some(replicas) = replicas else {
        return match &a.target {
            None => refuse(
                ResponseError::NoReassignmentInProgress,
                format!("{name} is not being reassigned: there is nothing to cancel"),
            ),
            Some(target) => refuse(
                ResponseError::InvalidRequest,
                format!(
                    "{name} is moving from {:?} to {target:?}, and Keel cannot cancel a reassignment in flight \
                     (the partition's Raft membership may already be the target); it completes once the new \
                     replicas have caught up, and the partition can then be moved back",
                    a.replicas
                ),
            ),
        };
    };
    let invalid = |message: String| refuse(ResponseError::InvalidReplicaAssignment, format!("{name}: {message}"));
    if replicas.is_empty() {
        return invalid("the replica list is empty (a null list cancels a reassignment)".into());
    }
    if replicas.len() > state.nodes.len() {
        return invalid(format!(
            "{} replicas named, but the cluster has {} node(s)",
            replicas.len(),
            state.nodes.len()
        ));
    }
    let mut ids: Vec<NodeId> = Vec::with_capacity(replicas.len());
    for b in replicas {
        let Some(info) = u64::try_from(b.0).ok().and_then(|id| state.nodes.get(&id)) else {
            let known: Vec<NodeId> = state.nodes.keys().copied().collect();
            return invalid(format!("broker {} is not a registered node (the nodes are {known:?})", b.0));
        };
        if ids.contains(&info.id) {
            return invalid(format!("broker {} is named twice", info.id));
        }
        if info.decommissioning && !a.replicas.contains(&info.id) {
            return invalid(format!("broker {} is being decommissioned and takes no new replicas", info.id));
        }
        ids.push(info.id);
    }
    if !allow_rf_change && ids.len() != a.replicas.len() {
        return refuse(
            ResponseError::InvalidReplicationFactor,
            format!(
                "{name} has {} replicas and the request names {}, but does not allow changing the replication factor",
                a.replicas.len(),
                ids.len()
            ),
        );
    }
    match &a.target {
        Some(target) if *target == ids => Decision::AlreadyMoving,
        Some(target) => refuse(
            ResponseError::ReassignmentInProgress,
            format!(
                "{name} is already moving from {:?} to {target:?}; Keel does not replace a reassignment in flight \
                 (ask again once ListPartitionReassignments no longer lists the partition)",
                a.replicas
            ),
        ),
        None => Decision::Propose { group: a.group, replicas: ids },
    }
}

/// The reassignment of `a` as ListPartitionReassignments reports it, if one is in flight.
fn ongoing_partition(partition: i32, a: &PartitionAssignment) -> Option<OngoingPartitionReassignment> {
    let target = a.target.as_ref()?;
    let leaving: Vec<NodeId> = a.replicas.iter().copied().filter(|n| !target.contains(n)).collect();
    let adding: Vec<NodeId> = target.iter().copied().filter(|n| !a.replicas.contains(n)).collect();
    let brokers = |ids: &[NodeId]| ids.iter().map(|n| broker_id(*n)).collect::<Vec<BrokerId>>();
    Some(
        OngoingPartitionReassignment::default()
            .with_partition_index(partition)
            .with_replicas(brokers(&[target.as_slice(), leaving.as_slice()].concat()))
            .with_adding_replicas(brokers(&adding))
            .with_removing_replicas(brokers(&leaving)),
    )
}

/// The reassignments in flight in `state`: of every partition when `wanted` is `None`, else of
/// the partitions named (unknown topics and partitions, and those not moving, are left out, as
/// Kafka does). Topics without a partition moving are left out.
pub(crate) fn ongoing(
    state: &MetadataState,
    wanted: Option<&[ListPartitionReassignmentsTopics]>,
) -> Vec<OngoingTopicReassignment> {
    let entry = |name: &str, partitions: Vec<OngoingPartitionReassignment>| {
        (!partitions.is_empty())
            .then(|| OngoingTopicReassignment::default().with_name(topic_name(name)).with_partitions(partitions))
    };
    let Some(wanted) = wanted else {
        return state
            .topics
            .values()
            .filter_map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .enumerate()
                    .filter_map(|(p, a)| ongoing_partition(i32::try_from(p).ok()?, a))
                    .collect();
                entry(&t.name, partitions)
            })
            .collect();
    };
    // Each topic answered once, in the order first named, each partition once: the request may
    // name them several times.
    let mut order: Vec<&Topic> = Vec::new();
    let mut asked: BTreeMap<&str, Vec<&[i32]>> = BTreeMap::new();
    for w in wanted {
        let Some(t) = state.topics.get(w.name.as_str()) else { continue };
        asked
            .entry(t.name.as_str())
            .or_insert_with(|| {
                order.push(t);
                Vec::new()
            })
            .push(&w.partition_indexes);
    }
    let mut out = Vec::new();
    for t in order {
        // Only moving partitions are remembered: at most the topic's partition count.
        let mut seen = BTreeSet::new();
        let partitions = asked
            .get(t.name.as_str())
            .into_iter()
            .flatten()
            .flat_map(|indexes| indexes.iter().copied())
            .filter_map(|p| {
                let moving = ongoing_partition(p, t.partitions.get(usize::try_from(p).ok()?)?)?;
                seen.insert(p).then_some(moving)
            })
            .collect();
        out.extend(entry(&t.name, partitions));
    }
    out
}

/// Waits until this node's metadata holds everything committed before the call, retrying
/// while the metadata group has no leader, until `deadline`.
async fn fresh_metadata(node: &Node, deadline: tokio::time::Instant) -> Result<(), Refusal> {
    loop {
        if node.is_stopped() {
            return Err((ResponseError::NotController, "this node is shutting down".into()));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if node.metadata_fresh(left.min(FRESH_TRY_MAX)).await {
            return Ok(());
        }
        if tokio::time::Instant::now() + FRESH_RETRY_PAUSE >= deadline {
            return Err((
                ResponseError::RequestTimedOut,
                "the metadata leader did not confirm this node's metadata is current within the request's timeout"
                    .into(),
            ));
        }
        tokio::time::sleep(FRESH_RETRY_PAUSE).await;
    }
}

/// A refusal of a proposed `Reassign` by the metadata leader, in Kafka's terms.
fn refusal(topic: &str, partition: i32, e: &MetaError) -> Refusal {
    let code = match e {
        MetaError::UnknownGroup(_) => ResponseError::UnknownTopicOrPartition,
        MetaError::UnknownNode(_) => ResponseError::InvalidReplicaAssignment,
        other => meta_error(other),
    };
    let message = match e {
        MetaError::UnknownGroup(_) => format!("{topic}-{partition} was deleted meanwhile"),
        other => format!("{topic}-{partition}: {other}"),
    };
    (code, message)
}

/// Carries out one partition's decision.
async fn alter_one(
    node: &Node,
    topic: &str,
    partition: i32,
    decision: Decision,
    deadline: tokio::time::Instant,
) -> Result<(), Refusal> {
    let (group, replicas) = match decision {
        Decision::Propose { group, replicas } => (group, replicas),
        Decision::AlreadyMoving => return Ok(()),
        Decision::Refuse(code, message) => return Err((code, message)),
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if left.is_zero() {
        return Err((
            ResponseError::RequestTimedOut,
            format!("{topic}-{partition}: the request's timeout passed before it was proposed (nothing changed)"),
        ));
    }
    let cmd = Command::Reassign { group, replicas: replicas.clone() };
    match node.propose(&cmd, left).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e @ MetaError::ReassignmentInProgress(_))) => {
            // A proposal whose answer was lost is retried (see `Node::propose`), so this may be
            // our own reassignment, applied by the first try: then the partition is moving to
            // (or already on) exactly these replicas.
            fresh_metadata(node, deadline).await?;
            let ours = node.meta().sm().with_state(|s| {
                s.assignment(group).is_some_and(|a| a.target.as_ref().unwrap_or(&a.replicas) == &replicas)
            });
            if ours { Ok(()) } else { Err(refusal(topic, partition, &e)) }
        }
        Ok(Err(e)) => Err(refusal(topic, partition, &e)),
        Err(e) => Err((propose_error(&e), format!("{topic}-{partition}: {e} (it may or may not have started)"))),
    }
}

pub(crate) async fn alter_partition_reassignments(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: AlterPartitionReassignmentsRequest = req.decode()?;
    let v = req.version;
    let deadline = tokio::time::Instant::now() + timeout_of(request.timeout_ms);
    let allow_rf_change = v < 1 || request.allow_replication_factor_change;
    let mut body = AlterPartitionReassignmentsResponse::default();
    if v >= 1 {
        body = body.with_allow_replication_factor_change(request.allow_replication_factor_change);
    }
    if let Err((code, message)) = fresh_metadata(node, deadline).await {
        body = body.with_error_code(code.code()).with_error_message(Some(str_bytes(message)));
        return respond(req, &body);
    }
    let mut responses = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let topic = t.name.as_str();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let decision = node
                .meta()
                .sm()
                .with_state(|s| decide(s, topic, p.partition_index, p.replicas.as_deref(), allow_rf_change));
            let mut r = ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            match alter_one(node, topic, p.partition_index, decision, deadline).await {
                Ok(()) => {
                    tracing::info!(%topic, partition = p.partition_index, replicas = ?p.replicas, "reassignment accepted")
                }
                Err((code, message)) => {
                    r = r.with_error_code(code.code()).with_error_message(Some(str_bytes(message)));
                }
            }
            partitions.push(r);
        }
        responses.push(ReassignableTopicResponse::default().with_name(t.name.clone()).with_partitions(partitions));
    }
    respond(req, &body.with_responses(responses))
}

pub(crate) async fn list_partition_reassignments(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: ListPartitionReassignmentsRequest = req.decode()?;
    let deadline = tokio::time::Instant::now() + timeout_of(request.timeout_ms);
    let body = match fresh_metadata(node, deadline).await {
        Ok(()) => ListPartitionReassignmentsResponse::default()
            .with_topics(node.meta().sm().with_state(|s| ongoing(s, request.topics.as_deref()))),
        Err((code, message)) => ListPartitionReassignmentsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message))),
    };
    respond(req, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes 1..=4 and topic `t` with two partitions of replication factor 2.
    fn cluster() -> MetadataState {
        let mut s = MetadataState::new(3);
        let mut index = 0;
        let mut apply = |s: &mut MetadataState, cmd: Command| {
            index += 1;
            s.apply(index, &cmd).expect("applied");
        };
        for id in 1..=4 {
            let cmd =
                Command::RegisterNode { id, addr: format!("n{id}:1"), kafka_addr: format!("n{id}:2"), rack: None };
            apply(&mut s, cmd);
        }
        let cmd = Command::CreateTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: Some(2),
            configs: BTreeMap::new(),
        };
        apply(&mut s, cmd);
        s
    }

    fn brokers(ids: &[i32]) -> Vec<BrokerId> {
        ids.iter().map(|i| BrokerId(*i)).collect()
    }

    fn code_of(d: &Decision) -> Option<ResponseError> {
        match d {
            Decision::Refuse(code, _) => Some(*code),
            _ => None,
        }
    }

    /// A node id not hosting partition `p` of `t`.
    fn outsider(s: &MetadataState, p: usize) -> i32 {
        let a = &s.topics["t"].partitions[p];
        (1..=4).find(|n| !a.replicas.contains(&(*n as u64))).expect("an outsider")
    }

    #[test]
    fn a_valid_request_proposes_the_reassignment() {
        let s = cluster();
        let a = &s.topics["t"].partitions[1];
        let new = outsider(&s, 1);
        let ask = brokers(&[new, a.replicas[0] as i32]);
        assert_eq!(
            decide(&s, "t", 1, Some(&ask), true),
            Decision::Propose { group: a.group, replicas: vec![new as u64, a.replicas[0]] }
        );
    }

    #[test]
    fn bad_requests_are_refused_with_kafka_codes() {
        let s = cluster();
        let new = outsider(&s, 0);
        // (topic, partition, replicas, allow_replication_factor_change, the expected code)
        type Case = (&'static str, i32, Option<Vec<BrokerId>>, bool, ResponseError);
        let cases: Vec<Case> = vec![
            ("nope", 0, Some(brokers(&[1])), true, ResponseError::UnknownTopicOrPartition),
            ("t", 2, Some(brokers(&[1])), true, ResponseError::UnknownTopicOrPartition),
            ("t", -1, Some(brokers(&[1])), true, ResponseError::UnknownTopicOrPartition),
            ("t", 0, Some(Vec::new()), true, ResponseError::InvalidReplicaAssignment),
            ("t", 0, Some(brokers(&[1, 1])), true, ResponseError::InvalidReplicaAssignment),
            ("t", 0, Some(brokers(&[1, 9])), true, ResponseError::InvalidReplicaAssignment),
            ("t", 0, Some(brokers(&[-1])), true, ResponseError::InvalidReplicaAssignment),
            ("t", 0, Some(brokers(&[1, 2, 3, 4, 1])), true, ResponseError::InvalidReplicaAssignment),
            ("t", 0, Some(brokers(&[new])), false, ResponseError::InvalidReplicationFactor),
            ("t", 0, None, true, ResponseError::NoReassignmentInProgress),
        ];
        for (topic, p, replicas, allow, code) in cases {
            let d = decide(&s, topic, p, replicas.as_deref(), allow);
            assert_eq!(code_of(&d), Some(code), "{topic}-{p} {replicas:?}: {d:?}");
            let Decision::Refuse(_, message) = d else { unreachable!() };
            assert!(message.contains(topic), "the message names the topic: {message}");
        }
    }

    #[test]
    fn a_reassignment_in_flight_is_neither_replaced_nor_cancelled() {
        let mut s = cluster();
        let a = s.topics["t"].partitions[0].clone();
        let new = outsider(&s, 0) as u64;
        let target = vec![new, a.replicas[0]];
        let moving = s.applied_index + 1;
        s.apply(moving, &Command::Reassign { group: a.group, replicas: target.clone() }).expect("started");
        let same: Vec<BrokerId> = target.iter().map(|n| BrokerId(*n as i32)).collect();
        assert_eq!(decide(&s, "t", 0, Some(&same), true), Decision::AlreadyMoving);
        let other = brokers(&[a.replicas[0] as i32]);
        assert_eq!(code_of(&decide(&s, "t", 0, Some(&other), true)), Some(ResponseError::ReassignmentInProgress));
        let cancel = decide(&s, "t", 0, None, true);
        assert_eq!(code_of(&cancel), Some(ResponseError::InvalidRequest));
        let Decision::Refuse(_, message) = cancel else { unreachable!() };
        assert!(message.contains("cannot cancel"), "{message}");
    }

    #[test]
    fn list_reports_target_then_leaving_replicas() {
        let mut s = cluster();
        assert!(ongoing(&s, None).is_empty(), "nothing moves yet");
        let a = s.topics["t"].partitions[1].clone();
        let new = outsider(&s, 1) as u64;
        let (kept, leaving) = (a.replicas[0], a.replicas[1]);
        let moving = s.applied_index + 1;
        s.apply(moving, &Command::Reassign { group: a.group, replicas: vec![new, kept] }).expect("started");
        let expected = OngoingPartitionReassignment::default()
            .with_partition_index(1)
            .with_replicas(brokers(&[new as i32, kept as i32, leaving as i32]))
            .with_adding_replicas(brokers(&[new as i32]))
            .with_removing_replicas(brokers(&[leaving as i32]));
        let all = ongoing(&s, None);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name.as_str(), "t");
        assert_eq!(all[0].partitions, vec![expected.clone()]);
        // Named partitions: unknown topics and partitions, and those not moving, are left out;
        // a partition named twice is answered once.
        let ask = |name: &str, partitions: &[i32]| {
            ListPartitionReassignmentsTopics::default()
                .with_name(topic_name(name))
                .with_partition_indexes(partitions.to_vec())
        };
        let named = ongoing(&s, Some(&[ask("t", &[0, 1, 1, 7, -3]), ask("nope", &[0]), ask("t", &[1])]));
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].partitions, vec![expected]);
        assert!(ongoing(&s, Some(&[ask("t", &[0])])).is_empty(), "partition 0 is not moving");
        // Once complete, nothing is listed.
        let done = s.applied_index + 1;
        let epoch = s.topics["t"].partitions[1].epoch;
        s.apply(done, &Command::CompleteReassignment { group: a.group, epoch }).expect("completed");
        assert!(ongoing(&s, None).is_empty());
    }
}
