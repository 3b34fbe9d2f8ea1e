//! Fetch and ListOffsets, served by partition leaders from committed data only.
//!
//! Fetch returns the stored batch bytes, never re-encoded, and never a batch at or above the
//! high watermark. It long-polls: when fewer than `min_bytes` are ready and nothing failed, it
//! waits (at most `max_wait_ms`) for any of the partitions' high watermark to move. Sessions
//! (KIP-227) are not kept: every answer has session id 0, which tells clients to send full
//! fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use futures::future::select_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::messages::ListOffsetsRequest;
use kafka_protocol::messages::ListOffsetsResponse;
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::fetch_response::LeaderIdAndEpoch;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::list_offsets_response::ListOffsetsTopicResponse;
use uuid::Uuid;

use super::Answer;
use super::Request;
use super::codes::broker_id;
use super::codes::topic_by_id;
use super::respond;
use crate::node::Node;
use crate::partition::Replica;

/// Longest long poll, whatever a client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// A partition of a fetch, resolved once.
struct Wanted {
    topic: usize,
    group: Option<u64>,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
    current_leader_epoch: i32,
    replica: Result<Arc<Replica>, ResponseError>,
}

/// Looks up the leader replica of (`topic`, `partition`) on this node.
pub(crate) fn leader_replica(
    node: &Node,
    group: Option<u64>,
    unknown: ResponseError,
) -> Result<Arc<Replica>, ResponseError> {
    let group = group.ok_or(unknown)?;
    match node.replica(group) {
        Some(r) if r.is_leader() => Ok(r),
        _ => Err(ResponseError::NotLeaderOrFollower),
    }
}

/// The group of `partition` of the topic named by `name` (or `id` from v13 on).
pub(crate) fn group_of(node: &Node, name: &str, id: Uuid, by_id: bool, partition: i32) -> (Option<u64>, ResponseError) {
    node.meta().sm().with_state(|s| {
        let topic = if by_id { topic_by_id(s, id) } else { s.topics.get(name) };
        let unknown = if by_id && topic.is_none() {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let group =
            topic.and_then(|t| usize::try_from(partition).ok().and_then(|i| t.partitions.get(i))).map(|a| a.group);
        (group, unknown)
    })
}

pub(crate) async fn fetch(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: FetchRequest = req.decode()?;
    let v = req.version;
    let by_id = v >= 13;
    if request.replica_id.0 >= 0 {
        // Broker-to-broker replication fetches: Keel replicates through Raft, never this way.
        let body = FetchResponse::default().with_error_code(ResponseError::InvalidRequest.code());
        return respond(req, &body);
    }
    let mut wanted = Vec::new();
    for (ti, ft) in request.topics.iter().enumerate() {
        for fp in &ft.partitions {
            let (group, unknown) = group_of(node, ft.topic.0.as_str(), ft.topic_id, by_id, fp.partition);
            wanted.push(Wanted {
                topic: ti,
                group,
                partition: fp.partition,
                fetch_offset: fp.fetch_offset,
                partition_max_bytes: usize::try_from(fp.partition_max_bytes).unwrap_or(0),
                current_leader_epoch: if v >= 9 { fp.current_leader_epoch } else { -1 },
                replica: leader_replica(node, group, unknown),
            });
        }
    }
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes).ok().filter(|m| *m > 0).unwrap_or(usize::MAX);
    let (partitions, bytes) = loop {
        // Register for wake-ups before reading, so an append in between is not missed.
        let notifies: Vec<Arc<tokio::sync::Notify>> =
            wanted.iter().filter_map(|w| w.replica.as_ref().ok()).map(|r| r.advanced().clone()).collect();
        let mut waits: Vec<_> = notifies.iter().map(|n| Box::pin(n.notified())).collect();
        for w in waits.iter_mut() {
            w.as_mut().enable();
        }
        let (partitions, bytes, errors) = read_all(node, &wanted, max_bytes, v);
        if bytes >= min_bytes || errors || waits.is_empty() || tokio::time::Instant::now() >= deadline {
            break (partitions, bytes);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = tokio::time::timeout(left, select_all(waits)).await;
    };
    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|ft| {
            let t = FetchableTopicResponse::default();
            if by_id { t.with_topic_id(ft.topic_id) } else { t.with_topic(ft.topic.clone()) }
        })
        .collect();
    for (w, p) in wanted.iter().zip(partitions) {
        topics[w.topic].partitions.push(p);
    }
    node.metrics().fetched(bytes);
    let body = FetchResponse::default().with_session_id(0).with_responses(topics);
    respond(req, &body)
}

/// One pass over every partition: (answers, record bytes, whether any partition failed).
fn read_all(node: &Node, wanted: &[Wanted], max_bytes: usize, v: i16) -> (Vec<PartitionData>, usize, bool) {
    let mut budget = max_bytes;
    let mut total = 0usize;
    let mut errors = false;
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let base = PartitionData::default()
            .with_partition_index(w.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_aborted_transactions(None)
            .with_records(Some(Bytes::new()));
        let replica = match &w.replica {
            Ok(r) => r,
            Err(code) => {
                errors = true;
                out.push(with_leader(node, base.with_error_code(code.code()), w, v));
                continue;
            }
        };
        match read_partition(replica, w, budget, total == 0) {
            Ok((records, n, hw, start)) => {
                total += n;
                budget = budget.saturating_sub(n);
                out.push(
                    base.with_high_watermark(hw as i64)
                        .with_last_stable_offset(hw as i64)
                        .with_log_start_offset(start as i64)
                        .with_records(Some(records)),
                );
            }
            Err(code) => {
                errors = true;
                out.push(with_leader(node, base.with_error_code(code.code()), w, v));
            }
        }
    }
    (out, total, errors)
}

/// Tells the client who leads now (Fetch v12+ `current_leader`, a tagged field).
fn with_leader(node: &Node, p: PartitionData, w: &Wanted, v: i16) -> PartitionData {
    if v < 12 || p.error_code != ResponseError::NotLeaderOrFollower.code() {
        return p;
    }
    match w.group.and_then(|g| node.live_leader(g)).filter(|l| l.leader != node.id) {
        Some(l) => p.with_current_leader(
            LeaderIdAndEpoch::default()
                .with_leader_id(broker_id(l.leader))
                .with_leader_epoch(i32::try_from(l.term).unwrap_or(i32::MAX)),
        ),
        None => p,
    }
}

/// Reads one partition: (records, their size, high watermark, log start offset).
fn read_partition(
    replica: &Replica,
    w: &Wanted,
    budget: usize,
    first_in_response: bool,
) -> Result<(Bytes, usize, u64, u64), ResponseError> {
    if replica.failed().is_some() {
        return Err(ResponseError::KafkaStorageError);
    }
    if w.current_leader_epoch >= 0 {
        let term = replica.term();
        let asked = w.current_leader_epoch as u64;
        if asked < term {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if asked > term {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
    }
    let start = replica.log_start_offset();
    let end = replica.log_end_offset();
    let Ok(offset) = u64::try_from(w.fetch_offset) else {
        return Err(ResponseError::OffsetOutOfRange);
    };
    if offset < start || offset > end {
        return Err(ResponseError::OffsetOutOfRange);
    }
    // KIP-74: the first batch of a response is returned even when larger than the limits, so
    // a consumer always makes progress.
    let limit = w.partition_max_bytes.min(budget);
    let limit = if first_in_response { limit.max(1) } else { limit };
    if limit == 0 {
        let hw = replica.high_watermark();
        return Ok((Bytes::new(), 0, hw, start));
    }
    let read = replica.read(offset, limit).map_err(|_| ResponseError::KafkaStorageError)?;
    let size: usize = read.batches.iter().map(|b| b.bytes.len()).sum();
    let records = match read.batches.len() {
        0 => Bytes::new(),
        1 => read.batches[0].bytes.clone(),
        _ => {
            let mut joined = BytesMut::with_capacity(size);
            for b in &read.batches {
                joined.extend_from_slice(&b.bytes);
            }
            joined.freeze()
        }
    };
    Ok((records, size, read.high_watermark, read.log_start_offset))
}

pub(crate) fn list_offsets(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: ListOffsetsRequest = req.decode()?;
    let v = req.version;
    let mut topics = Vec::new();
    for lt in request.topics {
        let mut partitions = Vec::new();
        for lp in lt.partitions {
            let (group, unknown) = group_of(node, lt.name.0.as_str(), Uuid::nil(), false, lp.partition_index);
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(lp.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            match leader_replica(node, group, unknown) {
                Err(code) => r = r.with_error_code(code.code()),
                Ok(replica) => match offset_of(&replica, lp.timestamp, v) {
                    Ok((offset, ts)) => {
                        r = r.with_offset(offset).with_timestamp(ts);
                        if v >= 4 {
                            let term = replica.term();
                            r = r.with_leader_epoch(i32::try_from(term).unwrap_or(i32::MAX));
                        }
                    }
                    Err(code) => r = r.with_error_code(code.code()),
                },
            }
            partitions.push(r);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(lt.name).with_partitions(partitions));
    }
    respond(req, &ListOffsetsResponse::default().with_topics(topics))
}

/// (offset, timestamp) for one ListOffsets query; -1 offset when no record qualifies.
fn offset_of(replica: &Replica, timestamp: i64, v: i16) -> Result<(i64, i64), ResponseError> {
    if replica.failed().is_some() {
        return Err(ResponseError::KafkaStorageError);
    }
    match timestamp {
        LATEST => Ok((replica.high_watermark() as i64, -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((replica.log_start_offset() as i64, -1)),
        MAX_TIMESTAMP if v >= 7 => {
            match replica.max_timestamp_offset().map_err(|_| ResponseError::KafkaStorageError)? {
                Some((offset, ts)) => Ok((offset as i64, ts)),
                None => Ok((-1, -1)),
            }
        }
        ts if ts >= 0 => match replica.offset_for_timestamp(ts).map_err(|_| ResponseError::KafkaStorageError)? {
            Some((offset, at)) => Ok((offset as i64, at)),
            None => Ok((-1, -1)),
        },
        _ => Err(ResponseError::InvalidRequest),
    }
}
