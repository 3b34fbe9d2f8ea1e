//! CreateTopics, DeleteTopics and CreatePartitions, as commands of the metadata group.
//!
//! `validate_only` applies the command to a copy of this node's metadata (the model is pure),
//! so it refuses exactly what the real command would, and changes nothing. A created topic's
//! answer waits (within the request timeout, at most a few seconds) until every partition has
//! a leader, so a client that produces right after creating finds one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::CreatePartitionsRequest;
use kafka_protocol::messages::CreatePartitionsResponse;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::CreateTopicsResponse;
use kafka_protocol::messages::DeleteTopicsRequest;
use kafka_protocol::messages::DeleteTopicsResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicConfigs;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use keel_core::metadata::Command;
use keel_core::metadata::Reply;
use keel_core::metadata::topic_config;

use super::Answer;
use super::KafkaConfig;
use super::Request;
use super::codes::meta_error;
use super::codes::propose_error;
use super::codes::str_bytes;
use super::codes::topic_by_id;
use super::codes::topic_name;
use super::codes::uuid_of;
use super::respond;
use crate::node::Node;

/// Used when a request names no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a creation waits for its partitions' first leaders.
const LEADERS_WAIT_MAX: Duration = Duration::from_secs(10);

pub(super) fn timeout_of(ms: i32) -> Duration {
    if ms <= 0 { DEFAULT_TIMEOUT } else { Duration::from_millis(ms as u64).min(Duration::from_secs(300)) }
}

/// Runs `cmd`: for real through the metadata group, or on a copy when `validate_only`.
async fn run(
    node: &Arc<Node>,
    cmd: &Command,
    validate_only: bool,
    timeout: Duration,
) -> Result<Reply, (ResponseError, String)> {
    if validate_only {
        let mut copy = node.meta().sm().state();
        let index = copy.applied_index + 1;
        return copy.apply(index, cmd).map_err(|e| (meta_error(&e), e.to_string()));
    }
    match node.propose(cmd, timeout).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err((meta_error(&e), e.to_string())),
        Err(e) => Err((propose_error(&e), e.to_string())),
    }
}

/// Waits until every group in `groups` has a known leader, or `deadline`.
async fn wait_for_leaders(node: &Node, groups: &[u64], deadline: tokio::time::Instant) {
    loop {
        let view = node.view();
        if groups.iter().all(|g| view.leaders.contains_key(g)) || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn create_topics(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: CreateTopicsRequest = req.decode()?;
    let v = req.version;
    let timeout = timeout_of(request.timeout_ms);
    let mut results = Vec::new();
    for t in request.topics {
        let name = t.name.0.as_str().to_string();
        let mut r = CreatableTopicResult::default().with_name(t.name.clone());
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| c.value.as_ref().map(|v| (c.name.as_str().to_string(), v.as_str().to_string())))
            .collect();
        let outcome = if !t.assignments.is_empty() {
            Err((
                ResponseError::InvalidReplicaAssignment,
                "manual replica assignment is not supported; Keel places replicas (move them afterwards with AlterPartitionReassignments or `keel cluster reassign`)"
                    .to_string(),
            ))
        } else if t.num_partitions == 0 || t.num_partitions < -1 {
            // Kafka's texts (ReplicationControlManager.createTopic).
            Err((
                ResponseError::InvalidPartitions,
                "Number of partitions was set to an invalid non-positive value.".to_string(),
            ))
        } else if t.replication_factor == 0 || t.replication_factor < -1 {
            Err((
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0, or -1 to use the default value.".to_string(),
            ))
        } else {
            let partitions =
                if t.num_partitions == -1 { config.broker.num_partitions } else { t.num_partitions as u32 };
            let replication_factor = (t.replication_factor != -1).then_some(t.replication_factor as u16);
            let cmd =
                Command::CreateTopic { name: name.clone(), partitions, replication_factor, configs: configs.clone() };
            run(node, &cmd, request.validate_only, timeout).await
        };
        match outcome {
            Ok(reply) => {
                if let Reply::TopicCreated { groups, .. } = &reply
                    && !request.validate_only
                {
                    let deadline = tokio::time::Instant::now() + timeout.min(LEADERS_WAIT_MAX);
                    wait_for_leaders(node, groups, deadline).await;
                }
                let topic = if request.validate_only {
                    None
                } else {
                    node.meta().sm().with_state(|s| s.topics.get(&name).cloned())
                };
                if v >= 7
                    && let Some(topic) = &topic
                {
                    r = r.with_topic_id(uuid_of(topic.id));
                }
                if v >= 5 {
                    let (partitions, rf, overrides) = match (&topic, &reply) {
                        (Some(t), _) => (t.partitions.len() as i32, t.replication_factor as i16, t.configs.clone()),
                        (None, Reply::TopicCreated { groups, .. }) => (groups.len() as i32, -1, configs),
                        (None, _) => (-1, -1, configs),
                    };
                    let described = topic_config::DEFAULTS
                        .iter()
                        .map(|(n, default, _)| {
                            let (value, source) = match overrides.get(*n) {
                                Some(v) => (v.clone(), 1),
                                None => (default.to_string(), 5),
                            };
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(*n))
                                .with_value(Some(str_bytes(value)))
                                .with_config_source(source)
                        })
                        .collect();
                    r = r.with_num_partitions(partitions).with_replication_factor(rf).with_configs(Some(described));
                }
            }
            Err((code, message)) => {
                r = r.with_error_code(code.code()).with_error_message(Some(str_bytes(message)));
            }
        }
        results.push(r);
    }
    respond(req, &CreateTopicsResponse::default().with_topics(results))
}

pub(crate) async fn delete_topics(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: DeleteTopicsRequest = req.decode()?;
    let v = req.version;
    let timeout = timeout_of(request.timeout_ms);
    // (name if known, id as named, error if the id is unknown)
    let targets: Vec<(Option<String>, Option<uuid::Uuid>)> = if v >= 6 {
        request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.as_str().to_string()), Some(t.topic_id))).collect()
    } else {
        request.topic_names.iter().map(|n| (Some(n.0.as_str().to_string()), None)).collect()
    };
    let mut responses = Vec::new();
    for (name, id) in targets {
        let name = match name {
            Some(n) => Some(n),
            None => id.and_then(|id| node.meta().sm().with_state(|s| topic_by_id(s, id).map(|t| t.name.clone()))),
        };
        let mut r = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name));
        if v >= 6 {
            r = r.with_topic_id(id.unwrap_or_default());
        }
        let outcome = match &name {
            None => Err((ResponseError::UnknownTopicId, "unknown topic id".to_string())),
            Some(n) => run(node, &Command::DeleteTopic { name: n.clone() }, false, timeout).await.map(|_| ()),
        };
        if let Err((code, message)) = outcome {
            r = r.with_error_code(code.code());
            if v >= 5 {
                r = r.with_error_message(Some(str_bytes(message)));
            }
        }
        responses.push(r);
    }
    respond(req, &DeleteTopicsResponse::default().with_responses(responses))
}

pub(crate) async fn create_partitions(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: CreatePartitionsRequest = req.decode()?;
    let timeout = timeout_of(request.timeout_ms);
    let mut results = Vec::new();
    for t in request.topics {
        let name = t.name.0.as_str().to_string();
        let outcome = if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err((
                ResponseError::InvalidReplicaAssignment,
                "manual replica assignment is not supported; Keel places replicas".to_string(),
            ))
        } else if t.count <= 0 {
            Err((ResponseError::InvalidPartitions, format!("{} partitions", t.count)))
        } else {
            let cmd = Command::CreatePartitions { name: name.clone(), total: t.count as u32 };
            run(node, &cmd, request.validate_only, timeout).await.map(|_| ())
        };
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err((code, message)) = outcome {
            r = r.with_error_code(code.code()).with_error_message(Some(str_bytes(message)));
        }
        results.push(r);
    }
    respond(req, &CreatePartitionsResponse::default().with_results(results))
}
