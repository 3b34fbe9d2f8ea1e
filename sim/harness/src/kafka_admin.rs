//! The simulated operator's administration over the Kafka protocol: CreateTopics v5,
//! DeleteTopics v4 and CreatePartitions v2 (the same requests `keel topic` sends),
//! AlterPartitionReassignments v0 and ListPartitionReassignments v0, sent to any node's Kafka
//! listener as a Kafka admin client would, through `keel_node::kafka_client::KafkaClient` over
//! madsim's TCP.
//!
//! Outcomes, as the history records them: no error is `ok`; an error that says the cluster
//! refused the request before changing anything (the topic exists or does not, a bad partition
//! count, replication factor or replica set, a reassignment already in flight, an invalid
//! request) is `fail`; everything else — a timeout, a broken connection, `REQUEST_TIMED_OUT` or
//! `NOT_CONTROLLER` while the metadata group is without a leader, any other code — is `info`:
//! the change may or may not have been applied.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::AlterPartitionReassignmentsRequest;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::CreatePartitionsRequest;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::DeleteTopicsRequest;
use kafka_protocol::messages::ListPartitionReassignmentsRequest;
use kafka_protocol::messages::alter_partition_reassignments_request::ReassignablePartition;
use kafka_protocol::messages::alter_partition_reassignments_request::ReassignableTopic;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::topic_name;

/// CreateTopics v5 (flexible; answers the created topic's settings).
const CREATE_TOPICS_VERSION: i16 = 5;
/// DeleteTopics v4 (flexible; topics by name).
const DELETE_TOPICS_VERSION: i16 = 4;
/// CreatePartitions v2 (flexible).
const CREATE_PARTITIONS_VERSION: i16 = 2;
/// AlterPartitionReassignments v0 (flexible; v1 only adds `allow_replication_factor_change`).
const ALTER_REASSIGNMENTS_VERSION: i16 = 0;
/// ListPartitionReassignments v0 (flexible; the only version).
const LIST_REASSIGNMENTS_VERSION: i16 = 0;
/// How long the broker may take (the request's `timeout_ms`).
const BROKER_TIMEOUT_MS: i32 = 5_000;
/// How long the operator waits for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(6);

/// What an admin request did, as far as the operator can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    /// Applied; the text describes the answer.
    Ok(String),
    /// Refused before anything changed.
    Refused(String),
    /// Unknown: it may or may not have been applied.
    Unknown(String),
}

impl AdminOutcome {
    /// The error code's outcome (`what` names the answer for the history).
    fn of(code: i16, message: Option<&str>, what: String) -> AdminOutcome {
        if code == 0 {
            return AdminOutcome::Ok(what);
        }
        let name = ResponseError::try_from_code(code).map_or_else(|| "unknown error".to_string(), |e| format!("{e:?}"));
        let text = format!("{name} ({code}): {}", message.unwrap_or(""));
        let refused = [
            ResponseError::TopicAlreadyExists,
            ResponseError::UnknownTopicOrPartition,
            ResponseError::InvalidPartitions,
            ResponseError::InvalidReplicationFactor,
            ResponseError::InvalidReplicaAssignment,
            ResponseError::ReassignmentInProgress,
            ResponseError::NoReassignmentInProgress,
            ResponseError::InvalidTopicException,
            ResponseError::InvalidRequest,
            ResponseError::InvalidConfig,
            ResponseError::PolicyViolation,
        ];
        if refused.iter().any(|e| e.code() == code) { AdminOutcome::Refused(text) } else { AdminOutcome::Unknown(text) }
    }

    /// Whether the answer was "the topic already exists".
    pub fn is_topic_exists(&self) -> bool {
        matches!(self, AdminOutcome::Refused(t) if t.starts_with("TopicAlreadyExists "))
    }
}

/// Creates `name` with `partitions` partitions and `replication_factor` replicas.
pub async fn create_topic(
    client: &mut KafkaClient,
    name: &str,
    partitions: u32,
    replication_factor: u16,
) -> AdminOutcome {
    let request = CreateTopicsRequest::default().with_timeout_ms(BROKER_TIMEOUT_MS).with_topics(vec![
        CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(i32::try_from(partitions).unwrap_or(i32::MAX))
            .with_replication_factor(i16::try_from(replication_factor).unwrap_or(i16::MAX)),
    ]);
    match client.request_any(CREATE_TOPICS_VERSION, &request, ANSWER_TIMEOUT).await {
        Ok((_, answer)) => match answer.topics.first() {
            Some(r) => AdminOutcome::of(
                r.error_code,
                r.error_message.as_deref(),
                format!("created: {} partitions, replication factor {}", r.num_partitions, r.replication_factor),
            ),
            None => AdminOutcome::Unknown("the answer names no topic".into()),
        },
        Err(e) => AdminOutcome::Unknown(e.to_string()),
    }
}

/// Deletes `name`.
pub async fn delete_topic(client: &mut KafkaClient, name: &str) -> AdminOutcome {
    let request =
        DeleteTopicsRequest::default().with_timeout_ms(BROKER_TIMEOUT_MS).with_topic_names(vec![topic_name(name)]);
    match client.request_any(DELETE_TOPICS_VERSION, &request, ANSWER_TIMEOUT).await {
        Ok((_, answer)) => match answer.responses.first() {
            Some(r) => AdminOutcome::of(r.error_code, r.error_message.as_deref(), "deleted".into()),
            None => AdminOutcome::Unknown("the answer names no topic".into()),
        },
        Err(e) => AdminOutcome::Unknown(e.to_string()),
    }
}

/// Grows `name` to `total` partitions.
pub async fn create_partitions(client: &mut KafkaClient, name: &str, total: u32) -> AdminOutcome {
    let request = CreatePartitionsRequest::default().with_timeout_ms(BROKER_TIMEOUT_MS).with_topics(vec![
        CreatePartitionsTopic::default()
            .with_name(topic_name(name))
            .with_count(i32::try_from(total).unwrap_or(i32::MAX)),
    ]);
    match client.request_any(CREATE_PARTITIONS_VERSION, &request, ANSWER_TIMEOUT).await {
        Ok((_, answer)) => match answer.results.first() {
            Some(r) => AdminOutcome::of(r.error_code, r.error_message.as_deref(), format!("{total} partitions")),
            None => AdminOutcome::Unknown("the answer names no topic".into()),
        },
        Err(e) => AdminOutcome::Unknown(e.to_string()),
    }
}

/// Moves `topic`-`partition` to `replicas` (the first is the preferred leader).
pub async fn alter_reassignment(
    client: &mut KafkaClient,
    topic: &str,
    partition: u32,
    replicas: &[u64],
) -> AdminOutcome {
    let brokers = replicas.iter().map(|n| BrokerId(i32::try_from(*n).unwrap_or(-1))).collect();
    let request = AlterPartitionReassignmentsRequest::default().with_timeout_ms(BROKER_TIMEOUT_MS).with_topics(vec![
        ReassignableTopic::default().with_name(topic_name(topic)).with_partitions(vec![
            ReassignablePartition::default()
                .with_partition_index(i32::try_from(partition).unwrap_or(i32::MAX))
                .with_replicas(Some(brokers)),
        ]),
    ]);
    match client.request_any(ALTER_REASSIGNMENTS_VERSION, &request, ANSWER_TIMEOUT).await {
        Ok((_, answer)) if answer.error_code != 0 => {
            AdminOutcome::of(answer.error_code, answer.error_message.as_deref(), String::new())
        }
        Ok((_, answer)) => match answer.responses.first().and_then(|t| t.partitions.first()) {
            Some(p) => AdminOutcome::of(p.error_code, p.error_message.as_deref(), format!("moving to {replicas:?}")),
            None => AdminOutcome::Unknown("the answer names no partition".into()),
        },
        Err(e) => AdminOutcome::Unknown(e.to_string()),
    }
}

/// Whether `topic`-`partition` is being reassigned: `Ok(None)` if not, `Ok(Some(text))` with
/// the listed replicas if it is, `Err` if no broker answered or the answer is an error.
pub async fn list_reassignment(
    client: &mut KafkaClient,
    topic: &str,
    partition: u32,
) -> Result<Option<String>, String> {
    let index = i32::try_from(partition).unwrap_or(i32::MAX);
    let request =
        ListPartitionReassignmentsRequest::default().with_timeout_ms(BROKER_TIMEOUT_MS).with_topics(Some(vec![
            ListPartitionReassignmentsTopics::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(vec![index]),
        ]));
    let (_, answer) =
        client.request_any(LIST_REASSIGNMENTS_VERSION, &request, ANSWER_TIMEOUT).await.map_err(|e| e.to_string())?;
    if answer.error_code != 0 {
        let outcome = AdminOutcome::of(answer.error_code, answer.error_message.as_deref(), String::new());
        return Err(format!("{outcome:?}"));
    }
    let ids = |b: &[BrokerId]| b.iter().map(|b| b.0).collect::<Vec<i32>>();
    Ok(answer
        .topics
        .iter()
        .filter(|t| t.name.as_str() == topic)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == index)
        .map(|p| {
            format!(
                "replicas {:?}, adding {:?}, removing {:?}",
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas)
            )
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The history's outcome follows the code: a definite refusal is `fail`, a timeout or an
    /// unknown code `info` (the checkers must allow both results).
    #[test]
    fn outcomes_follow_the_error_code() {
        assert_eq!(AdminOutcome::of(0, None, "x".into()), AdminOutcome::Ok("x".into()));
        assert!(matches!(
            AdminOutcome::of(ResponseError::TopicAlreadyExists.code(), Some("t"), String::new()),
            AdminOutcome::Refused(_)
        ));
        assert!(AdminOutcome::of(ResponseError::TopicAlreadyExists.code(), None, String::new()).is_topic_exists());
        assert!(matches!(
            AdminOutcome::of(ResponseError::RequestTimedOut.code(), None, String::new()),
            AdminOutcome::Unknown(_)
        ));
        assert!(matches!(
            AdminOutcome::of(ResponseError::NotController.code(), None, String::new()),
            AdminOutcome::Unknown(_)
        ));
        assert!(matches!(
            AdminOutcome::of(ResponseError::ReassignmentInProgress.code(), Some("moving"), String::new()),
            AdminOutcome::Refused(_)
        ));
    }
}
