//! Produce: one record batch per partition, checked on arrival, appended through the
//! partition's Raft group and stored as received (only `baseOffset` and
//! `partitionLeaderEpoch`, which the CRC does not cover, are rewritten).
//!
//! acks=-1 answers once the batch is committed: a quorum holds it fsynced and it is applied.
//! acks=1 answers once the leader holds it fsynced (Kafka's acks=1, weaker: a leader failure
//! right after may lose it). acks=0 appends and sends nothing back. The partitions of one
//! request are appended concurrently.
//!
//! A batch with a producer id (an idempotent producer's) is checked against the partition's
//! producer state first (`Replica::propose`): a retry of a stored batch is answered
//! with the stored batch's offset and never stored twice; a gap in the sequence is
//! OUT_OF_ORDER_SEQUENCE_NUMBER, a fenced epoch INVALID_PRODUCER_EPOCH. Transactional batches
//! are refused.

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
use keel_core::producer::SequenceError;

use super::Answer;
use super::KafkaConfig;
use super::Request;
use super::Turn;
use super::codes::broker_id;
use super::codes::host_port;
use super::codes::str_bytes;
use super::codes::topic_by_id;
use super::respond;
use crate::node::Node;
use crate::partition::Acks;
use crate::partition::AppendError;
use crate::partition::Appended;
use crate::partition::PendingAppend;
use crate::partition::Replica;

/// The longest a produce request waits for its batches to commit, whatever it asks.
const PRODUCE_TIMEOUT_MAX: Duration = Duration::from_secs(300);

/// Where a partition's batch goes, resolved against the metadata.
struct Target {
    group: u64,
    message_bytes_max: usize,
}

pub(crate) async fn produce(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request, mut turn: Turn) -> Answer {
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
    // Resolve every partition against the metadata first (one lookup per topic).
    let mut topics = Vec::new();
    let mut work: Vec<Work> = Vec::new();
    for td in request.topic_data {
        let ti = topics.len();
        node.meta().sm().with_state(|s| {
            let topic = if v >= 13 { topic_by_id(s, td.topic_id) } else { s.topics.get(td.name.0.as_str()) };
            for pd in td.partition_data {
                let target = match topic {
                    None if v >= 13 => Err(ResponseError::UnknownTopicId),
                    None => Err(ResponseError::UnknownTopicOrPartition),
                    Some(t) if t.name == crate::group::OFFSETS_TOPIC => Err(ResponseError::InvalidTopicException),
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
                work.push((ti, pd.index, pd.records, target));
            }
        });
        topics.push(TopicProduceResponse::default().with_name(td.name).with_topic_id(if v >= 13 {
            td.topic_id
        } else {
            Default::default()
        }));
    }
    // Propose in the connection's request order (a client pipelines requests and expects each
    // partition's batches stored in the order it sent them), then wait for the answers of all
    // partitions together.
    turn.wait().await;
    let acks = if acks == 1 { Acks::Leader } else { Acks::Quorum };
    let mut waits = Vec::with_capacity(work.len());
    for (ti, index, records, target) in work {
        let submitted = match target {
            Err(code) => {
                Submitted::Answer(PartitionProduceResponse::default().with_base_offset(-1).with_error_code(code.code()))
            }
            Ok(target) => submit(node, &target, records, acks, v).await,
        };
        waits.push((ti, index, submitted));
    }
    drop(turn);
    let answers = join_all(waits.into_iter().map(|(ti, index, submitted)| async move {
        let answer = match submitted {
            Submitted::Answer(a) => a,
            Submitted::Pending { group, replica, pending, bytes, records } => {
                let answer = finish(node, group, &replica, tokio::time::timeout(timeout, pending).await, timeout, v);
                if answer.error_code == 0 {
                    node.metrics().produced(bytes, records);
                }
                answer
            }
        };
        (ti, answer.with_index(index))
    }))
    .await;
    for (ti, answer) in answers {
        topics[ti].partition_responses.push(answer);
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

/// One partition of a request: (topic position in the answer, partition, batch, target).
type Work = (usize, i32, Option<Bytes>, Result<Target, ResponseError>);

/// A partition's batch after submission: answered at once (refused), or proposed.
enum Submitted {
    Answer(PartitionProduceResponse),
    /// `bytes` and `records` of the batch count in the metrics once it is acknowledged.
    Pending {
        group: u64,
        replica: Arc<Replica>,
        pending: PendingAppend,
        bytes: usize,
        records: u64,
    },
}

fn failure(code: ResponseError, message: String, v: i16) -> PartitionProduceResponse {
    let r = PartitionProduceResponse::default().with_base_offset(-1).with_error_code(code.code());
    if v >= 8 { r.with_error_message(Some(str_bytes(message))) } else { r }
}

/// Checks one partition's batch and proposes it; the answer carries everything but the
/// partition index.
async fn submit(node: &Arc<Node>, target: &Target, records: Option<Bytes>, acks: Acks, v: i16) -> Submitted {
    let refuse = |code: ResponseError, message: String| Submitted::Answer(failure(code, message, v));
    let Some(records) = records else {
        return refuse(ResponseError::CorruptMessage, "no records".into());
    };
    if records.len() > target.message_bytes_max {
        return refuse(
            ResponseError::MessageTooLarge,
            format!("batch of {} bytes is above the limit of {} bytes", records.len(), target.message_bytes_max),
        );
    }
    let header = match check_one_batch(&records) {
        Ok(h) => h,
        Err((code, message)) => return refuse(code, message),
    };
    if header.is_transactional() {
        return refuse(ResponseError::InvalidRecord, "transactional batches are not supported".into());
    }
    let replica = match node.replica(target.group) {
        Some(r) if r.is_leader() => r,
        _ => return Submitted::Answer(not_leader(node, target.group, v)),
    };
    if let Some(reason) = replica.failed() {
        return refuse(ResponseError::KafkaStorageError, format!("partition stopped: {reason}"));
    }
    let (bytes, count) = (records.len(), u64::try_from(header.records_count).unwrap_or(0));
    match replica.propose(records, acks).await {
        Ok(pending) => Submitted::Pending { group: target.group, replica, pending, bytes, records: count },
        Err(e) => Submitted::Answer(finish(node, target.group, &replica, Ok(Err(e)), Duration::ZERO, v)),
    }
}

/// The answer to a proposed batch.
fn finish(
    node: &Node,
    group: u64,
    replica: &Replica,
    outcome: Result<Result<Appended, AppendError>, tokio::time::error::Elapsed>,
    timeout: Duration,
    v: i16,
) -> PartitionProduceResponse {
    match outcome {
        Ok(Ok(appended)) => {
            let mut r = PartitionProduceResponse::default()
                .with_base_offset(appended.base_offset as i64)
                .with_log_append_time_ms(-1);
            if v >= 5 {
                r = r.with_log_start_offset(replica.log_start_offset() as i64);
            }
            r
        }
        Ok(Err(AppendError::NotLeader { .. })) => not_leader(node, group, v),
        Ok(Err(AppendError::TooLarge(n))) => {
            failure(ResponseError::MessageTooLarge, format!("batch of {n} bytes is above the log's limit"), v)
        }
        Ok(Err(AppendError::Corrupt(m))) => failure(ResponseError::CorruptMessage, m, v),
        Ok(Err(AppendError::Sequence(e @ SequenceError::InvalidEpoch { .. }))) => {
            tracing::info!(group, error = %e, "idempotent batch refused");
            failure(ResponseError::InvalidProducerEpoch, e.to_string(), v)
        }
        Ok(Err(AppendError::Sequence(e @ SequenceError::OutOfOrder { .. }))) => {
            tracing::info!(group, error = %e, "idempotent batch refused");
            failure(ResponseError::OutOfOrderSequenceNumber, e.to_string(), v)
        }
        // A new leader still applying earlier terms: the client retries after a metadata refresh.
        Ok(Err(AppendError::NotReady)) => not_leader(node, group, v),
        // Refused before it was proposed: the disk is full or the partition stopped.
        Ok(Err(AppendError::Storage(m))) => failure(ResponseError::KafkaStorageError, m, v),
        // The entry may still commit: the client retries (a duplicate is possible without
        // idempotence), and a replica that lost leadership meanwhile says so.
        Ok(Err(AppendError::Unknown(m))) => {
            if replica.is_leader() {
                failure(ResponseError::RequestTimedOut, format!("outcome unknown: {m}"), v)
            } else {
                not_leader(node, group, v)
            }
        }
        Err(_) => {
            failure(ResponseError::RequestTimedOut, format!("not committed within {} ms", timeout.as_millis()), v)
        }
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
    match node.live_leader(group).filter(|l| l.leader != node.id) {
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
