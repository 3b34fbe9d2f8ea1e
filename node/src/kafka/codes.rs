//! Keel's errors and identifiers in Kafka's terms.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use keel_core::metadata::MetaError;
use keel_core::metadata::MetadataState;
use keel_core::metadata::Topic;
use keel_core::metadata::TopicId;
use uuid::Uuid;

use crate::node::ProposeError;
use crate::raft::NodeId;

/// A Kafka broker id for a Keel node id (node ids are validated to fit at startup; one that
/// does not is reported as -1, "none").
pub(crate) fn broker_id(node: NodeId) -> BrokerId {
    BrokerId(i32::try_from(node).unwrap_or(-1))
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub(crate) fn uuid_of(id: TopicId) -> Uuid {
    Uuid::from_bytes(id.0)
}

/// The topic named `id`, if any.
pub(crate) fn topic_by_id(state: &MetadataState, id: Uuid) -> Option<&Topic> {
    let id = TopicId(*id.as_bytes());
    state.topics.values().find(|t| t.id == id)
}

/// Splits `host:port` (the port after the last colon, so bracketed IPv6 works).
pub(crate) fn host_port(addr: &str) -> (String, i32) {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            (host, port.parse().unwrap_or(-1))
        }
        None => (addr.to_string(), -1),
    }
}

/// The Kafka error for a refused metadata command.
pub(crate) fn meta_error(e: &MetaError) -> ResponseError {
    match e {
        MetaError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetaError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetaError::InvalidTopicName(_) => ResponseError::InvalidTopicException,
        MetaError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        MetaError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        MetaError::InvalidConfig(_) => ResponseError::InvalidConfig,
        MetaError::InvalidReplicas(_) => ResponseError::InvalidReplicaAssignment,
        MetaError::ReassignmentInProgress(_) => ResponseError::ReassignmentInProgress,
        MetaError::UnknownNode(_)
        | MetaError::UnknownGroup(_)
        | MetaError::StaleReassignment { .. }
        | MetaError::NodeNotDrained { .. }
        | MetaError::NotDecommissioning(_)
        | MetaError::NodeConflict(..)
        | MetaError::InvalidProducerIds(_) => ResponseError::InvalidRequest,
        MetaError::Undecodable(_) => ResponseError::UnknownServerError,
    }
}

/// The Kafka error for a metadata proposal without an answer.
pub(crate) fn propose_error(e: &ProposeError) -> ResponseError {
    match e {
        ProposeError::Timeout(_) => ResponseError::RequestTimedOut,
        ProposeError::Stopped => ResponseError::NotController,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_splits_at_the_last_colon() {
        assert_eq!(host_port("127.0.0.1:9092"), ("127.0.0.1".to_string(), 9092));
        assert_eq!(host_port("[::1]:9093"), ("::1".to_string(), 9093));
        assert_eq!(host_port("nohost"), ("nohost".to_string(), -1));
    }

    #[test]
    fn broker_ids_that_do_not_fit_are_none() {
        assert_eq!(broker_id(3), BrokerId(3));
        assert_eq!(broker_id(u64::from(u32::MAX)), BrokerId(-1));
    }
}
