//! Metadata and DescribeCluster: brokers, topics, partitions and their leaders.
//!
//! Leaders and epochs come from the node's leader table (its own replicas' Raft state plus
//! every node's leader reports), replicas from the metadata group's assignment, the ISR from
//! the leaders' reports of their followers' progress. A partition whose leader is not known
//! (or is on a node the transport knows is down) answers LEADER_NOT_AVAILABLE with leader -1,
//! which clients retry. A topic this request just auto-created answers LEADER_NOT_AVAILABLE
//! with no partitions, an illegal name INVALID_TOPIC_EXCEPTION, as Kafka answers them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::DescribeClusterRequest;
use kafka_protocol::messages::DescribeClusterResponse;
use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::messages::MetadataResponse;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::metadata_response::MetadataResponsePartition;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use keel_core::metadata::Command;
use keel_core::metadata::MetaError;
use keel_core::metadata::MetadataState;
use keel_core::metadata::Topic;
use keel_core::metadata::validate_topic_name;
use uuid::Uuid;

use super::Answer;
use super::KafkaConfig;
use super::Request;
use super::codes::broker_id;
use super::codes::host_port;
use super::codes::meta_error;
use super::codes::str_bytes;
use super::codes::topic_by_id;
use super::codes::topic_name;
use super::codes::uuid_of;
use super::respond;
use crate::client::ClusterView;
use crate::leaders::LeaderInfo;
use crate::leaders::in_sync;
use crate::node::Node;

/// How long a Metadata request waits for an auto-created topic to be committed.
const AUTO_CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// What this request's auto-creation of a missing topic came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AutoCreate {
    /// Created (by this request or a concurrent one), or asked for and not answered in time.
    Created,
    /// Refused by the metadata group (e.g. INVALID_REPLICATION_FACTOR).
    Refused(ResponseError),
}

/// The topic-level error for a topic this node cannot describe: Kafka's answers
/// (`KafkaApis.getTopicMetadata`, `AutoTopicCreationManager`):
/// - an illegal name: INVALID_TOPIC_EXCEPTION, whether or not auto-creation is on (clients
///   give up at once instead of retrying until their timeout);
/// - just auto-created: LEADER_NOT_AVAILABLE with no partitions — clients retry and then see
///   every partition (librdkafka takes a partition list sent with it as the topic's whole
///   partition count);
/// - auto-creation refused: the refusal's error;
/// - otherwise UNKNOWN_TOPIC_OR_PARTITION.
fn missing_topic_error(name: &str, auto_create: Option<AutoCreate>) -> ResponseError {
    if validate_topic_name(name).is_err() {
        return ResponseError::InvalidTopicException;
    }
    match auto_create {
        Some(AutoCreate::Created) => ResponseError::LeaderNotAvailable,
        Some(AutoCreate::Refused(code)) => code,
        None => ResponseError::UnknownTopicOrPartition,
    }
}

pub(crate) async fn metadata(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: MetadataRequest = req.decode()?;
    let v = req.version;
    // v0: an empty list means every topic; v1+: null does.
    let wanted: Option<Vec<(Option<String>, Uuid)>> = match request.topics {
        None => None,
        Some(t) if t.is_empty() && v == 0 => None,
        Some(t) => Some(t.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()),
    };
    let allow_auto_create = (v < 4 || request.allow_auto_topic_creation) && config.broker.auto_create_topics_enable;
    // Auto-create what is missing first; each outcome decides that topic's answer below.
    let mut created: BTreeMap<String, AutoCreate> = BTreeMap::new();
    if allow_auto_create && let Some(list) = &wanted {
        let missing: Vec<String> = node
            .meta()
            .sm()
            .with_state(|s| list.iter().filter_map(|(n, _)| n.clone()).filter(|n| !s.topics.contains_key(n)).collect());
        for name in missing {
            if validate_topic_name(&name).is_err() || created.contains_key(&name) {
                continue;
            }
            let cmd = Command::CreateTopic {
                name: name.clone(),
                partitions: config.broker.num_partitions,
                replication_factor: None,
                configs: BTreeMap::new(),
            };
            let outcome = match node.propose(&cmd, AUTO_CREATE_TIMEOUT).await {
                Ok(Ok(_)) | Ok(Err(MetaError::TopicExists(_))) => {
                    tracing::info!(topic = %name, "topic auto-created");
                    AutoCreate::Created
                }
                Ok(Err(e)) => {
                    tracing::info!(topic = %name, error = %e, "topic not auto-created");
                    AutoCreate::Refused(meta_error(&e))
                }
                Err(e) => {
                    tracing::info!(topic = %name, error = %e, "topic auto-creation timed out");
                    AutoCreate::Created
                }
            };
            created.insert(name, outcome);
        }
    }
    let view = node.view();
    let state = &view.metadata;
    let mut topics = Vec::new();
    match wanted {
        None => topics.extend(state.topics.values().map(|t| topic_entry(&view, t, v))),
        Some(list) => {
            for (name, id) in list {
                let topic = match &name {
                    Some(n) => state.topics.get(n),
                    None => topic_by_id(state, id),
                };
                let just_created = name.as_ref().and_then(|n| created.get(n)).copied();
                let entry = match (topic, &name) {
                    (Some(t), _) if just_created != Some(AutoCreate::Created) => topic_entry(&view, t, v),
                    (_, Some(n)) => MetadataResponseTopic::default()
                        .with_name(Some(topic_name(n)))
                        .with_error_code(missing_topic_error(n, just_created).code()),
                    (_, None) => MetadataResponseTopic::default()
                        .with_topic_id(id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                };
                topics.push(entry);
            }
        }
    }
    let mut body = MetadataResponse::default().with_brokers(brokers(node, state)).with_topics(topics);
    if v >= 1 {
        body = body.with_controller_id(view.metadata_leader.map_or(BrokerId(-1), broker_id));
    }
    if v >= 2 {
        body = body.with_cluster_id(Some(str_bytes(node.config.transport.cluster_id.clone())));
    }
    respond(req, &body)
}

/// Every registered node, and always this one: a node answering before its registration is
/// committed still lists itself, so a client bootstrapping from it has a broker to talk to.
fn brokers(node: &Node, state: &MetadataState) -> Vec<MetadataResponseBroker> {
    let entry = |id: u64, kafka_addr: &str, rack: Option<&String>| {
        let (host, port) = host_port(kafka_addr);
        MetadataResponseBroker::default()
            .with_node_id(broker_id(id))
            .with_host(str_bytes(host))
            .with_port(port)
            .with_rack(rack.cloned().map(str_bytes))
    };
    let mut out: Vec<MetadataResponseBroker> =
        state.nodes.values().map(|n| entry(n.id, &n.kafka_addr, n.rack.as_ref())).collect();
    if !state.nodes.contains_key(&node.id) {
        out.push(entry(node.id, &node.config.kafka_addr, node.config.rack.as_ref()));
    }
    out
}

fn topic_entry(view: &ClusterView, topic: &Topic, v: i16) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let replicas: Vec<BrokerId> = a.replicas.iter().map(|n| broker_id(*n)).collect();
            // `view.leaders` names no leader on a node known to be down.
            let leader = view.leaders.get(&a.group).filter(|l| a.hosts().contains(&l.leader)).copied();
            let isr = in_sync(leader, view.isr.get(&a.group), &a.replicas, &view.down);
            let mut p = MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_replica_nodes(replicas)
                .with_isr_nodes(isr.into_iter().map(broker_id).collect());
            match leader {
                Some(LeaderInfo { leader, term }) => {
                    p = p.with_leader_id(broker_id(leader));
                    if v >= 7 {
                        p = p.with_leader_epoch(i32::try_from(term).unwrap_or(i32::MAX));
                    }
                }
                None => {
                    p = p.with_leader_id(BrokerId(-1)).with_error_code(ResponseError::LeaderNotAvailable.code());
                }
            }
            p
        })
        .collect();
    let mut t = MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_partitions(partitions)
        .with_is_internal(v >= 1 && topic.name == crate::group::OFFSETS_TOPIC);
    if v >= 10 {
        t = t.with_topic_id(uuid_of(topic.id));
    }
    t
}

pub(crate) fn describe_cluster(node: &Arc<Node>, req: &mut Request) -> Answer {
    let _request: DescribeClusterRequest = req.decode()?;
    let view = node.view();
    let brokers = view
        .metadata
        .nodes
        .values()
        .map(|n| {
            let (host, port) = host_port(&n.kafka_addr);
            DescribeClusterBroker::default()
                .with_broker_id(broker_id(n.id))
                .with_host(str_bytes(host))
                .with_port(port)
                .with_rack(n.rack.clone().map(str_bytes))
        })
        .collect();
    let body = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(node.config.transport.cluster_id.clone()))
        .with_controller_id(view.metadata_leader.map_or(BrokerId(-1), broker_id))
        .with_brokers(brokers);
    respond(req, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protects clients from retrying a name that can never exist (librdkafka test 0057) and
    /// from reading a just-created topic as having no partitions (kcat's 0002-delim): the
    /// topic-level answers Kafka gives.
    #[test]
    fn missing_topics_answer_as_kafka_does() {
        let cases = [
            ("ok-name", None, ResponseError::UnknownTopicOrPartition),
            ("ok-name", Some(AutoCreate::Created), ResponseError::LeaderNotAvailable),
            (
                "ok-name",
                Some(AutoCreate::Refused(ResponseError::InvalidReplicationFactor)),
                ResponseError::InvalidReplicationFactor,
            ),
            ("bad name", None, ResponseError::InvalidTopicException),
            ("bad/name", Some(AutoCreate::Created), ResponseError::InvalidTopicException),
            ("..", None, ResponseError::InvalidTopicException),
            ("", None, ResponseError::InvalidTopicException),
        ];
        for (name, auto, want) in cases {
            assert_eq!(missing_topic_error(name, auto), want, "{name:?} {auto:?}");
        }
        let long = "a".repeat(250);
        assert_eq!(missing_topic_error(&long, None), ResponseError::InvalidTopicException);
        assert_eq!(missing_topic_error(&"a".repeat(249), None), ResponseError::UnknownTopicOrPartition);
    }
}
