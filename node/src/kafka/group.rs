//! Consumer-group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat and
//! LeaveGroup, over the node's [`Coordinator`] (see `crate::group`).
//!
//! JoinGroup and SyncGroup may be answered later than they arrive (when the join phase ends,
//! when the leader's assignment comes); the handler waits for the coordinator's deferred reply,
//! bounded by [`DEFERRED_WAIT_MAX`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::messages::FindCoordinatorResponse;
use kafka_protocol::messages::HeartbeatRequest;
use kafka_protocol::messages::HeartbeatResponse;
use kafka_protocol::messages::JoinGroupRequest;
use kafka_protocol::messages::JoinGroupResponse;
use kafka_protocol::messages::LeaveGroupRequest;
use kafka_protocol::messages::LeaveGroupResponse;
use kafka_protocol::messages::SyncGroupRequest;
use kafka_protocol::messages::SyncGroupResponse;
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use keel_core::group::GroupError;
use keel_core::group::JoinReply;
use keel_core::group::JoinRequest;
use keel_core::group::Protocol;
use keel_core::group::Reply;
use keel_core::group::SyncReply;
use keel_core::group::SyncRequest;
use keel_core::group::membership::Leaving;

use super::Answer;
use super::KafkaConfig;
use super::Request;
use super::codes::broker_id;
use super::codes::host_port;
use super::codes::str_bytes;
use super::respond;
use crate::group::CoordError;
use crate::group::Coordinator;
use crate::node::Node;

/// The longest a JoinGroup or SyncGroup waits for its deferred answer (the state machine
/// answers by the rebalance timeout; this only bounds a lost answer).
const DEFERRED_WAIT_MAX: Duration = Duration::from_secs(330);
/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

pub(crate) fn coordinator(node: &Arc<Node>, config: &KafkaConfig) -> Arc<Coordinator> {
    Coordinator::of(node, &config.broker.coordinator_config())
}

/// Kafka's error for a refused group request.
pub(crate) fn group_error(e: GroupError) -> ResponseError {
    match e {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
    }
}

/// Kafka's error for a request this node cannot serve.
pub(crate) fn coord_error(e: CoordError) -> ResponseError {
    match e {
        CoordError::NotCoordinator => ResponseError::NotCoordinator,
        CoordError::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
        CoordError::NotAvailable => ResponseError::CoordinatorNotAvailable,
        CoordError::Group(g) => group_error(g),
    }
}

fn code(e: Option<GroupError>) -> i16 {
    e.map_or(0, |e| group_error(e).code())
}

/// The coordinator of `key`: (broker, host, port).
async fn locate(node: &Arc<Node>, coord: &Coordinator, key: &str) -> Result<(BrokerId, String, i32), ResponseError> {
    coord.ensure_topic(node).await.map_err(coord_error)?;
    let (_, raft_group) = coord.locate(node, key).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let leader = match node.replica(raft_group) {
        Some(r) if r.is_leader() => Some(node.id),
        _ => node.live_leader(raft_group).map(|l| l.leader),
    };
    let leader = leader.ok_or(ResponseError::CoordinatorNotAvailable)?;
    let addr = node.meta().sm().with_state(|s| s.nodes.get(&leader).map(|n| n.kafka_addr.clone()));
    let addr = match addr {
        Some(a) => a,
        None if leader == node.id => node.config.kafka_addr.clone(),
        None => return Err(ResponseError::CoordinatorNotAvailable),
    };
    let (host, port) = host_port(&addr);
    Ok((broker_id(leader), host, port))
}

pub(crate) async fn find_coordinator(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: FindCoordinatorRequest = req.decode()?;
    let v = req.version;
    let coord = coordinator(node, config);
    let keys: Vec<String> = if v >= 4 {
        request.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![request.key.to_string()]
    };
    let mut entries = Vec::with_capacity(keys.len());
    for key in keys {
        let found = if request.key_type != KEY_TYPE_GROUP {
            Err((ResponseError::CoordinatorNotAvailable, "Keel does not support transactions".to_string()))
        } else {
            locate(node, &coord, &key).await.map_err(|e| (e, e.to_string()))
        };
        let entry = match found {
            Ok((id, host, port)) => CoordinatorEntry::default()
                .with_key(str_bytes(key))
                .with_node_id(id)
                .with_host(str_bytes(host))
                .with_port(port),
            Err((e, message)) => CoordinatorEntry::default()
                .with_key(str_bytes(key))
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(message))),
        };
        entries.push(entry);
    }
    let body = if v >= 4 {
        FindCoordinatorResponse::default().with_coordinators(entries)
    } else {
        let e = entries.pop().unwrap_or_default();
        let mut b = FindCoordinatorResponse::default()
            .with_error_code(e.error_code)
            .with_node_id(e.node_id)
            .with_host(e.host)
            .with_port(e.port);
        if v >= 1 {
            b = b.with_error_message(e.error_message);
        }
        b
    };
    respond(req, &body)
}

pub(crate) async fn join_group(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: JoinGroupRequest = req.decode()?;
    let v = req.version;
    let coord = coordinator(node, config);
    let group = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let session_ms = request.session_timeout_ms.max(0) as u64;
    let join = JoinRequest {
        group: group.clone(),
        member_id: member_id.clone(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: req.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: String::new(),
        session_timeout_ms: session_ms,
        rebalance_timeout_ms: if v >= 1 { request.rebalance_timeout_ms.max(0) as u64 } else { session_ms },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| Protocol { name: p.name.to_string(), metadata: p.metadata.clone() })
            .collect(),
        require_known_member_id: v >= 4,
    };
    let id = coord.request_id();
    let rx = coord.wait_for(node, &group, id);
    let reply = match coord.run_step(node, &group, |g, now, out| g.join(now, id, join, out)).await {
        Err(e) => {
            coord.forget(id);
            Err(coord_error(e))
        }
        Ok(()) => match tokio::time::timeout(DEFERRED_WAIT_MAX, rx).await {
            Ok(Ok(Reply::Join(r))) => Ok(r),
            Ok(Ok(Reply::Sync(_))) => Err(ResponseError::UnknownServerError),
            Ok(Err(_)) => Err(ResponseError::NotCoordinator),
            Err(_) => {
                coord.forget(id);
                Err(ResponseError::RebalanceInProgress)
            }
        },
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            let mut r = JoinReply::error(&member_id, GroupError::UnknownMemberId);
            r.error = None;
            return respond(req, &join_response(r, v).with_error_code(e.code()));
        }
    };
    respond(req, &join_response(reply, v))
}

fn join_response(r: JoinReply, v: i16) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(m.member_id))
                .with_group_instance_id(m.instance_id.map(str_bytes))
                .with_metadata(m.metadata)
        })
        .collect();
    // The protocol name is nullable only from v7 on.
    let protocol_name = match r.protocol_name {
        None if v < 7 => Some(str_bytes("")),
        other => other.map(str_bytes),
    };
    JoinGroupResponse::default()
        .with_error_code(code(r.error))
        .with_generation_id(r.generation)
        .with_protocol_type(r.protocol_type.map(str_bytes))
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(r.leader))
        .with_skip_assignment(r.skip_assignment)
        .with_member_id(str_bytes(r.member_id))
        .with_members(members)
}

pub(crate) async fn sync_group(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: SyncGroupRequest = req.decode()?;
    let coord = coordinator(node, config);
    let group = request.group_id.0.to_string();
    let sync = SyncRequest {
        group: group.clone(),
        generation: request.generation_id,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect::<BTreeMap<_, _>>(),
    };
    let id = coord.request_id();
    let rx = coord.wait_for(node, &group, id);
    let reply = match coord.run_step(node, &group, |g, now, out| g.sync(now, id, sync, out)).await {
        Err(e) => {
            coord.forget(id);
            Err(coord_error(e))
        }
        Ok(()) => match tokio::time::timeout(DEFERRED_WAIT_MAX, rx).await {
            Ok(Ok(Reply::Sync(r))) => Ok(r),
            Ok(Ok(Reply::Join(_))) => Err(ResponseError::UnknownServerError),
            Ok(Err(_)) => Err(ResponseError::NotCoordinator),
            Err(_) => {
                coord.forget(id);
                Err(ResponseError::RebalanceInProgress)
            }
        },
    };
    let body = match reply {
        Ok(SyncReply { error, protocol_type, protocol_name, assignment }) => SyncGroupResponse::default()
            .with_error_code(code(error))
            .with_protocol_type(protocol_type.map(str_bytes))
            .with_protocol_name(protocol_name.map(str_bytes))
            .with_assignment(assignment),
        Err(e) => SyncGroupResponse::default().with_error_code(e.code()),
    };
    respond(req, &body)
}

pub(crate) async fn heartbeat(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: HeartbeatRequest = req.decode()?;
    let coord = coordinator(node, config);
    let group = request.group_id.0.to_string();
    let member = request.member_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let result = coord
        .run_step(node, &group, |g, now, _| {
            g.heartbeat(now, &group, &member, instance.as_deref(), request.generation_id)
        })
        .await;
    let error = match result {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => group_error(e).code(),
        Err(e) => coord_error(e).code(),
    };
    respond(req, &HeartbeatResponse::default().with_error_code(error))
}

pub(crate) async fn leave_group(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: LeaveGroupRequest = req.decode()?;
    let v = req.version;
    let coord = coordinator(node, config);
    let group = request.group_id.0.to_string();
    let leaving: Vec<Leaving> = if v >= 3 {
        request
            .members
            .iter()
            .map(|m| Leaving {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            })
            .collect()
    } else {
        vec![Leaving { member_id: request.member_id.to_string(), instance_id: None }]
    };
    let result = coord.run_step(node, &group, |g, now, out| g.leave(now, &group, &leaving, out)).await;
    let body = match result {
        Err(e) => LeaveGroupResponse::default().with_error_code(coord_error(e).code()),
        Ok(Err(e)) => LeaveGroupResponse::default().with_error_code(group_error(e).code()),
        Ok(Ok(answers)) if v >= 3 => {
            let members = leaving
                .iter()
                .zip(answers)
                .map(|(l, a)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(l.member_id.clone()))
                        .with_group_instance_id(l.instance_id.clone().map(str_bytes))
                        .with_error_code(a.err().map_or(0, |e| group_error(e).code()))
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        }
        Ok(Ok(answers)) => LeaveGroupResponse::default()
            .with_error_code(answers.into_iter().next().and_then(|a| a.err()).map_or(0, |e| group_error(e).code())),
    };
    respond(req, &body)
}
