//! Broker and topic settings with Kafka's names: DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs.
//!
//! Topic settings live in the metadata group (validated there, see
//! `keel_core::metadata::topic_config`). Broker settings are static: set at startup, reported
//! read-only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::AlterConfigsRequest;
use kafka_protocol::messages::AlterConfigsResponse;
use kafka_protocol::messages::DescribeConfigsRequest;
use kafka_protocol::messages::DescribeConfigsResponse;
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::messages::IncrementalAlterConfigsResponse;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResourceResponse;
use keel_core::metadata::Command;
use keel_core::metadata::topic_config;

use super::Answer;
use super::KafkaConfig;
use super::Request;
use super::codes::meta_error;
use super::codes::propose_error;
use super::codes::str_bytes;
use super::respond;
use crate::node::Node;

/// Kafka's resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's config sources.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Kafka's config types (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// How long a config change waits for the metadata group.
const ALTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker settings Kafka tools look for, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// `auto.create.topics.enable`: a Metadata request for an unknown topic creates it.
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of a topic created without a count.
    pub num_partitions: u32,
    /// `default.replication.factor`: replicas of a topic created without a factor (more than
    /// the nodes that can take replicas is refused with INVALID_REPLICATION_FACTOR, as in Kafka).
    pub default_replication_factor: u16,
    /// `message.max.bytes`: largest record batch a producer may send (a topic's
    /// `max.message.bytes` overrides it).
    pub message_max_bytes: usize,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` (each a Raft group).
    pub offsets_topic_num_partitions: u32,
    /// `offsets.topic.replication.factor`: its replicas (capped by the node count).
    pub offsets_topic_replication_factor: u16,
    /// `offsets.retention.minutes`: offsets of a group that has been empty this long expire.
    pub offsets_retention_minutes: u64,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`: the session timeouts
    /// members may ask for.
    pub group_min_session_timeout_ms: u64,
    pub group_max_session_timeout_ms: u64,
    /// `replica.lag.time.max.ms`: a follower not caught up to its leader's log end for this
    /// long leaves the partition's in-sync replicas.
    pub replica_lag_time_max_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            auto_create_topics_enable: true,
            num_partitions: 1,
            default_replication_factor: 3,
            message_max_bytes: 1_048_588,
            offsets_topic_num_partitions: 8,
            offsets_topic_replication_factor: 3,
            offsets_retention_minutes: 10_080,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            replica_lag_time_max_ms: 30_000,
        }
    }
}

impl BrokerConfig {
    /// The group coordinator's settings.
    pub fn coordinator_config(&self) -> crate::group::CoordinatorConfig {
        crate::group::CoordinatorConfig {
            offsets_partitions: self.offsets_topic_num_partitions,
            offsets_replication_factor: self.offsets_topic_replication_factor,
            offsets_retention_ms: self.offsets_retention_minutes.saturating_mul(60_000),
            group: keel_core::group::GroupConfig {
                session_timeout_ms_min: self.group_min_session_timeout_ms,
                session_timeout_ms_max: self.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
                ..keel_core::group::GroupConfig::default()
            },
        }
    }

    /// (name, value, type, documentation) of every reported broker setting.
    fn entries(&self) -> Vec<(&'static str, String, i8, &'static str)> {
        // Raft commits on a majority of the replicas: that majority is the insync minimum.
        let majority = self.default_replication_factor / 2 + 1;
        vec![
            (
                "auto.create.topics.enable",
                self.auto_create_topics_enable.to_string(),
                TYPE_BOOLEAN,
                "Create unknown topics named in Metadata requests.",
            ),
            (
                "num.partitions",
                self.num_partitions.to_string(),
                TYPE_INT,
                "Partitions of an auto-created topic or one created without a count.",
            ),
            (
                "default.replication.factor",
                self.default_replication_factor.to_string(),
                TYPE_INT,
                "Replicas of a topic created without a factor; more than the registered nodes is refused (INVALID_REPLICATION_FACTOR).",
            ),
            (
                "message.max.bytes",
                self.message_max_bytes.to_string(),
                TYPE_INT,
                "Largest record batch a producer may send.",
            ),
            (
                "min.insync.replicas",
                majority.to_string(),
                TYPE_INT,
                "Implied by Raft: every acks=all write is fsynced by a majority of the partition's replicas before it is acknowledged.",
            ),
            (
                "unclean.leader.election.enable",
                "false".into(),
                TYPE_BOOLEAN,
                "Never: only a replica holding every committed record can lead (Raft).",
            ),
            (
                "offsets.topic.num.partitions",
                self.offsets_topic_num_partitions.to_string(),
                TYPE_INT,
                "Partitions of __consumer_offsets, which holds committed offsets and group metadata (each partition is a Raft group).",
            ),
            (
                "offsets.topic.replication.factor",
                self.offsets_topic_replication_factor.to_string(),
                TYPE_INT,
                "Replicas of __consumer_offsets (capped by the node count when it is created).",
            ),
            (
                "offsets.retention.minutes",
                self.offsets_retention_minutes.to_string(),
                TYPE_INT,
                "Committed offsets of a group that has been empty this long expire.",
            ),
            (
                "group.initial.rebalance.delay.ms",
                self.group_initial_rebalance_delay_ms.to_string(),
                TYPE_INT,
                "How long the first rebalance of an empty group waits for more members.",
            ),
            (
                "group.min.session.timeout.ms",
                self.group_min_session_timeout_ms.to_string(),
                TYPE_INT,
                "Shortest session timeout a group member may ask for.",
            ),
            (
                "group.max.session.timeout.ms",
                self.group_max_session_timeout_ms.to_string(),
                TYPE_INT,
                "Longest session timeout a group member may ask for.",
            ),
            (
                "replica.lag.time.max.ms",
                self.replica_lag_time_max_ms.to_string(),
                TYPE_LONG,
                "A follower not caught up to its leader's log end within this long leaves the in-sync replicas.",
            ),
            (
                "log.retention.ms",
                topic_config::default_of("retention.ms").unwrap_or("-1").into(),
                TYPE_LONG,
                "Default retention of topics.",
            ),
            (
                "log.segment.bytes",
                topic_config::default_of("segment.bytes").unwrap_or("-1").into(),
                TYPE_INT,
                "Default segment size of topics.",
            ),
        ]
    }
}

fn config_type(name: &str) -> i8 {
    match topic_config::DEFAULTS.iter().find(|(n, _, _)| *n == name).map(|(_, _, k)| *k) {
        Some(topic_config::Kind::Int { max, .. }) if max > i32::MAX as i64 => TYPE_LONG,
        Some(topic_config::Kind::Int { .. }) => TYPE_INT,
        _ => TYPE_STRING,
    }
}

pub(crate) fn describe_configs(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: DescribeConfigsRequest = req.decode()?;
    let v = req.version;
    let mut results = Vec::new();
    for resource in request.resources {
        // Null or empty: every setting (as Kafka answers both).
        let keys: Option<Vec<String>> = resource
            .configuration_keys
            .filter(|k| !k.is_empty())
            .map(|k| k.into_iter().map(|s| s.as_str().to_string()).collect());
        let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == name));
        let name = resource.resource_name.as_str().to_string();
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let entry = |name: &str, value: String, read_only: bool, source: i8, kind: i8, doc: Option<&str>| {
            let mut e = DescribeConfigsResourceResult::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(value)))
                .with_read_only(read_only)
                .with_config_source(source);
            if v >= 3 {
                e = e.with_config_type(kind).with_documentation(doc.map(str_bytes));
            }
            e
        };
        match resource.resource_type {
            RESOURCE_TOPIC => {
                let topic = node.meta().sm().with_state(|s| s.topics.get(&name).map(|t| t.configs.clone()));
                match topic {
                    None => {
                        result = result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!("unknown topic '{name}'"))));
                    }
                    Some(overrides) => {
                        let configs = topic_config::DEFAULTS
                            .iter()
                            .filter(|(n, _, _)| wanted(n))
                            .map(|(n, default, _)| match overrides.get(*n) {
                                Some(value) => {
                                    entry(n, value.clone(), false, SOURCE_DYNAMIC_TOPIC, config_type(n), None)
                                }
                                None => entry(n, default.to_string(), false, SOURCE_DEFAULT, config_type(n), None),
                            })
                            .collect();
                        result = result.with_configs(configs);
                    }
                }
            }
            RESOURCE_BROKER => {
                let known = name.is_empty() || name.parse::<u64>().is_ok_and(|id| id == node.id);
                if known {
                    let configs = config
                        .broker
                        .entries()
                        .into_iter()
                        .filter(|(n, ..)| wanted(n))
                        .map(|(n, value, kind, doc)| entry(n, value, true, SOURCE_STATIC_BROKER, kind, Some(doc)))
                        .collect();
                    result = result.with_configs(configs);
                } else {
                    result = result.with_error_code(ResponseError::InvalidRequest.code()).with_error_message(Some(
                        str_bytes(format!("broker '{name}' is not this node ({}); ask that broker", node.id)),
                    ));
                }
            }
            other => {
                result = result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(format!("resource type {other} has no configs in Keel"))));
            }
        }
        results.push(result);
    }
    respond(req, &DescribeConfigsResponse::default().with_results(results))
}

/// Applies one topic's config change: `set` and `delete`, validated on a copy of the metadata
/// first when `validate_only`.
async fn alter_topic(
    node: &Arc<Node>,
    name: String,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let cmd = Command::AlterTopicConfigs { name, set, delete };
    if validate_only {
        let mut copy = node.meta().sm().state();
        let index = copy.applied_index + 1;
        return copy.apply(index, &cmd).map(|_| ()).map_err(|e| (meta_error(&e), e.to_string()));
    }
    match node.propose(&cmd, ALTER_TIMEOUT).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err((meta_error(&e), e.to_string())),
        Err(e) => Err((propose_error(&e), e.to_string())),
    }
}

fn broker_refusal(resource_type: i8) -> (ResponseError, String) {
    if resource_type == RESOURCE_BROKER {
        (ResponseError::InvalidRequest, "broker settings are static in Keel: set them at startup".into())
    } else {
        (ResponseError::InvalidRequest, format!("resource type {resource_type} has no configs in Keel"))
    }
}

pub(crate) async fn alter_configs(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: AlterConfigsRequest = req.decode()?;
    let mut responses = Vec::new();
    for resource in request.resources {
        let outcome = if resource.resource_type == RESOURCE_TOPIC {
            let name = resource.resource_name.as_str().to_string();
            // AlterConfigs replaces the whole set of overrides.
            let set: BTreeMap<String, String> = resource
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.as_str().to_string(), v.as_str().to_string())))
                .collect();
            let current = node.meta().sm().with_state(|s| s.topics.get(&name).map(|t| t.configs.clone()));
            let delete = current.unwrap_or_default().into_keys().filter(|k| !set.contains_key(k)).collect();
            alter_topic(node, name, set, delete, request.validate_only).await
        } else {
            Err(broker_refusal(resource.resource_type))
        };
        let mut r = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        if let Err((code, message)) = outcome {
            r = r.with_error_code(code.code()).with_error_message(Some(str_bytes(message)));
        }
        responses.push(r);
    }
    respond(req, &AlterConfigsResponse::default().with_responses(responses))
}

pub(crate) async fn incremental_alter_configs(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: IncrementalAlterConfigsRequest = req.decode()?;
    let mut responses = Vec::new();
    for resource in request.resources {
        let outcome = if resource.resource_type == RESOURCE_TOPIC {
            let mut set = BTreeMap::new();
            let mut delete = Vec::new();
            let mut refused = None;
            for c in &resource.configs {
                let name = c.name.as_str().to_string();
                match (c.config_operation, &c.value) {
                    (OP_SET, Some(value)) => {
                        set.insert(name, value.as_str().to_string());
                    }
                    (OP_SET, None) => refused = Some(format!("SET of '{name}' needs a value")),
                    (OP_DELETE, _) => delete.push(name),
                    (op, _) => {
                        refused = Some(format!("operation {op} on '{name}': Keel's topic settings are not lists"))
                    }
                }
            }
            match refused {
                Some(m) => Err((ResponseError::InvalidConfig, m)),
                None => {
                    alter_topic(node, resource.resource_name.as_str().to_string(), set, delete, request.validate_only)
                        .await
                }
            }
        } else {
            Err(broker_refusal(resource.resource_type))
        };
        let mut r = IncrementalResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        if let Err((code, message)) = outcome {
            r = r.with_error_code(code.code()).with_error_message(Some(str_bytes(message)));
        }
        responses.push(r);
    }
    respond(req, &IncrementalAlterConfigsResponse::default().with_responses(responses))
}
