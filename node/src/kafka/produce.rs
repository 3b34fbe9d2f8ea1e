//! Produce: one record batch per partition, checked on arrival, appended through the
//! partition's Raft group and stored as received (only `baseOffset` and
//! `partitionLeaderEpoch`, which the CRC does not cover, are rewritten).
//!
//! acks=-1 answers once the batch is committed: a quorum holds it fsynced and it is applied.
//! acks=1 answers once the leader holds it fsynced (Kafka's acks=1, weaker: a leader failure
//! right after may lose it). acks=0 appends and sends nothing back. The partitions of one
//! request are appended concurrently.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::ProduceResponse;
use kafka_protocol::messages::produce_response::LeaderIdAndEpoch;
use kafka_protocol::messages::produce_response::NodeEndpoint;
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::produce_response::TopicProduceResponse;
use keel_core::batch;
use keel_core::batch::BatchHeader;

use super::Answer;
use super::KafkaConfig;
use super::Request;
use super::codes::broker_id;
use super::codes::host_port;
use super::codes::str_bytes;
use super::codes::topic_by_id;
use super::respond;
use crate::node::Node;
use crate::partition::AppendError;

/// The longest a produce request waits for its batches to commit, whatever it asks.
const PRODUCE_TIMEOUT_MAX: Duration = Duration::from_secs(300);

/// Where a partition's batch goes, resolved against the metadata.
struct Target {
    group: u64,
    message_bytes_max: usize,
}

pub(crate) async fn produce(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: ProduceRequest = req.decode()?;
    let v = req.version;
    let timeout = Duration::from_millis(request.timeout_ms.max(1) as u64).min(PRODUCE_TIMEOUT_MAX);
    let acks = request.acks;
    if !(-1..=1).contains(&acks) {
        // Kafka's answer: every partition refused, nothing appended.
        let topics = request
            .topic_data
            .into_iter()
            .map(|td| {
                let partitions = td
                    .partition_data
                    .iter()
                    .map(|pd| {
                        PartitionProduceResponse::default()
                            .with_index(pd.index)
                            .with_base_offset(-1)
                            .with_error_code(ResponseError::InvalidRequiredAcks.code())
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(td.name)
                    .with_topic_id(if v >= 13 { td.topic_id } else { Default::default() })
                    .with_partition_responses(partitions)
            })
            .collect();
        return respond(req, &ProduceResponse::default().with_responses(topics));
    }
    let mut topics = Vec::new();
    for td in request.topic_data {
        // Resolve every partition first (one metadata lookup per topic), then append them all.
        let resolved: Vec<(i32, Option<Bytes>, Result<Target, ResponseError>)> = node.meta().sm().with_state(|s| {
            let topic = if v >= 13 { topic_by_id(s, td.topic_id) } else { s.topics.get(td.name.0.as_str()) };
            td.partition_data
                .into_iter()
                .map(|pd| {
                    let target = match topic {
                        None if v >= 13 => Err(ResponseError::UnknownTopicId),
                        None => Err(ResponseError::UnknownTopicOrPartition),
                        Some(t) => match usize::try_from(pd.index).ok().and_then(|i| t.partitions.get(i)) {
                            None => Err(ResponseError::UnknownTopicOrPartition),
                            Some(a) => {
                                let topic_max = t.configs.get("max.message.bytes").and_then(|m| m.parse().ok());
                                Ok(Target {
                                    group: a.group,
                                    message_bytes_max: topic_max.unwrap_or(config.broker.message_max_bytes),
                                })
                            }
                        },
                    };
                    (pd.index, pd.records, target)
                })
                .collect()
        });
        let answers = join_all(resolved.into_iter().map(|(index, records, target)| async move {
            let response = PartitionProduceResponse::default().with_index(index).with_base_offset(-1);
            match target {
                Err(code) => response.with_error_code(code.code()),
                Ok(target) => append(node, target, records, acks, timeout, v).await.with_index(index),
            }
        }))
        .await;
        topics.push(
            TopicProduceResponse::default()
                .with_name(td.name)
                .with_topic_id(if v >= 13 { td.topic_id } else { Default::default() })
                .with_partition_responses(answers),
        );
    }
    if request.acks == 0 {
        return Ok(None);
    }
    let mut body = ProduceResponse::default().with_responses(topics);
    if v >= 10 {
        let endpoints = endpoints_of_leaders(node, &body);
        body = body.with_node_endpoints(endpoints);
    }
    respond(req, &body)
}

/// Appends one partition's batch; the answer carries everything but the partition index.
async fn append(
    node: &Arc<Node>,
    target: Target,
    records: Option<Bytes>,
    acks: i16,
    timeout: Duration,
    v: i16,
) -> PartitionProduceResponse {
    let fail = |code: ResponseError, message: String| {
        let r = PartitionProduceResponse::default().with_base_offset(-1).with_error_code(code.code());
        if v >= 8 { r.with_error_message(Some(str_bytes(message))) } else { r }
    };
    let Some(records) = records else {
        return fail(ResponseError::CorruptMessage, "no records".into());
    };
    if records.len() > target.message_bytes_max {
        return fail(
            ResponseError::MessageTooLarge,
            format!("batch of {} bytes is above the limit of {} bytes", records.len(), target.message_bytes_max),
        );
    }
    let header = match check_one_batch(&records) {
        Ok(h) => h,
        Err((code, message)) => return fail(code, message),
    };
    if header.producer_id >= 0 || header.is_transactional() {
        return fail(
            ResponseError::InvalidRecord,
            "idempotent and transactional batches are not supported yet; produce with enable.idempotence=false".into(),
        );
    }
    let Some(replica) = node.replica(target.group) else {
        return not_leader(node, target.group, v);
    };
    if !replica.is_leader() {
        return not_leader(node, target.group, v);
    }
    if let Some(reason) = replica.failed() {
        return fail(ResponseError::KafkaStorageError, format!("partition stopped: {reason}"));
    }
    let appended =
        async { if acks == 1 { replica.append_leader_durable(records).await } else { replica.append(records).await } };
    match tokio::time::timeout(timeout, appended).await {
        Ok(Ok(appended)) => {
            let mut r = PartitionProduceResponse::default()
                .with_base_offset(appended.base_offset as i64)
                .with_log_append_time_ms(-1);
            if v >= 5 {
                r = r.with_log_start_offset(replica.log_start_offset() as i64);
            }
            r
        }
        Ok(Err(AppendError::NotLeader { .. })) => not_leader(node, target.group, v),
        Ok(Err(AppendError::TooLarge(n))) => {
            fail(ResponseError::MessageTooLarge, format!("batch of {n} bytes is above the log's limit"))
        }
        Ok(Err(AppendError::Corrupt(m))) => fail(ResponseError::CorruptMessage, m),
        // The entry may still commit: the client retries (a duplicate is possible without
        // idempotence), and a replica that lost leadership meanwhile says so.
        Ok(Err(AppendError::Unknown(m))) => {
            if replica.is_leader() {
                fail(ResponseError::RequestTimedOut, format!("outcome unknown: {m}"))
            } else {
                not_leader(node, target.group, v)
            }
        }
        Err(_) => fail(ResponseError::RequestTimedOut, format!("not committed within {} ms", timeout.as_millis())),
    }
}

/// The batch must be exactly one well-formed RecordBatch v2 (Kafka's rule for Produce v3+).
fn check_one_batch(records: &[u8]) -> Result<BatchHeader, (ResponseError, String)> {
    let reject = |e: batch::BatchError| match e {
        batch::BatchError::BadMagic(m) => {
            (ResponseError::UnsupportedForMessageFormat, format!("record batch magic {m}; only v2 is accepted"))
        }
        other => (ResponseError::CorruptMessage, other.to_string()),
    };
    let first = BatchHeader::parse(records).map_err(reject)?;
    if first.total_bytes < records.len() {
        return Err((
            ResponseError::InvalidRecord,
            format!(
                "a produce request carries one record batch per partition; found {} more bytes after it",
                records.len() - first.total_bytes
            ),
        ));
    }
    let header = batch::validate(records, usize::MAX).map_err(reject)?;
    if header.is_control() {
        return Err((ResponseError::InvalidRecord, "producers may not write control batches".into()));
    }
    Ok(header)
}

fn not_leader(node: &Node, group: u64, v: i16) -> PartitionProduceResponse {
    let r = PartitionProduceResponse::default()
        .with_base_offset(-1)
        .with_error_code(ResponseError::NotLeaderOrFollower.code());
    if v < 10 {
        return r;
    }
    match node.leaders().get(group).filter(|l| l.leader != node.id) {
        Some(l) => r.with_current_leader(
            LeaderIdAndEpoch::default()
                .with_leader_id(broker_id(l.leader))
                .with_leader_epoch(i32::try_from(l.term).unwrap_or(i32::MAX)),
        ),
        None => r,
    }
}

/// The addresses of the leaders named in NOT_LEADER answers (Produce v10+, KIP-951), so the
/// client can go there without a metadata round trip.
fn endpoints_of_leaders(node: &Node, body: &ProduceResponse) -> Vec<NodeEndpoint> {
    let mut ids: Vec<BrokerId> = body
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.current_leader.leader_id)
        .filter(|id| id.0 >= 0)
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Vec::new();
    }
    node.meta().sm().with_state(|s| {
        s.nodes
            .values()
            .filter(|n| ids.contains(&broker_id(n.id)))
            .map(|n| {
                let (host, port) = host_port(&n.kafka_addr);
                NodeEndpoint::default()
                    .with_node_id(broker_id(n.id))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_rack(n.rack.clone().map(str_bytes))
            })
            .collect()
    })
}
