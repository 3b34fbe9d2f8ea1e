//! Simulated clients: producers and a consumer that speak the Kafka protocol to the nodes'
//! Kafka listeners (`keel_node::kafka_client::KafkaClient` over madsim's TCP: Metadata v12,
//! Produce v9, Fetch v12), and the final reader that reads each replica's committed log over
//! the internal protocol (it reads every replica, which Kafka cannot).
//!
//! Batches as real producers send them: librdkafka at its defaults (linger.ms 5, batch.size
//! 1 MB) fills batches of many records up to `message.max.bytes` under load. Each produce
//! operation is one tracked record (its key and value are what the checkers follow), sent either
//! alone or as the first record of a batch padded with filler records (null key, value starting
//! with [`FILLER_PREFIX`]) up to a size drawn from the seed, as large as `message.max.bytes`
//! (see [`batch_plan`]). Readers set the fillers apart ([`records_of`]): they take offsets, which
//! a read records as `untracked` runs so that density is still checked. Large batches are what
//! wedged replication in issue 17 (64 entries of 1 MB in one 16 MiB-frame message). The padding
//! of one producer is bounded ([`PADDING_BYTES_MAX`]): the simulated disks hold every byte in
//! memory, three times over.
//!
//! Producer outcomes: an answer without error is `ok` with its base offset. An error that
//! means the broker refused the batch before proposing it (`CORRUPT_MESSAGE`,
//! `MESSAGE_TOO_LARGE`, `INVALID_RECORD`, `UNKNOWN_TOPIC_OR_PARTITION`, `KAFKA_STORAGE_ERROR`)
//! is `fail`, as is a connection that could not be opened (nothing was sent). Everything else
//! — `NOT_LEADER_OR_FOLLOWER`, `REQUEST_TIMED_OUT`, any other code, a timeout, a broken
//! connection, an answer that does not decode — is `info`: the record may or may not be in the
//! log, and the checkers allow both. `NOT_LEADER_OR_FOLLOWER` is not a definite refusal in
//! Kafka, nor in Keel: a leader that steps down after proposing the batch answers it too, and
//! the batch may still commit under the next leader (`failed_not_present` caught exactly that
//! on the first seeds when it was mapped to `fail`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use keel_checker::EventType;
use keel_checker::Op;
use keel_checker::Produce;
use keel_checker::Read;
use keel_checker::Record;
use keel_core::batch;
use keel_node::client;
use keel_node::kafka_client::ClientError;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::Leader;
use keel_node::raft::network::decode;
use keel_node::raft::network::encode;
use keel_node::transport::ClientOnly;
use keel_node::transport::Transport;
use keel_node::transport::TransportConfig;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::cluster::partition_name;
use crate::recorder::Recorder;

/// The workload topic; its one partition (index 0) is Raft group `group`, recorded as
/// `p{group}` in the history.
pub const TOPIC: &str = "t";
pub const PARTITION: i32 = 0;

/// A client-side transport for client `id` (a process id outside the node id range).
pub fn client_transport(id: u64, nodes: &[u64], addr: impl Fn(u64) -> String) -> Transport {
    let t = Transport::new(id, TransportConfig::new("keel-sim"), Arc::new(ClientOnly))
        .unwrap_or_else(|e| panic!("the default transport config is valid: {e}"));
    for &n in nodes {
        t.set_peer_addr(n, addr(n));
    }
    t
}

/// How long a producer waits for a Produce answer.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the broker may wait for the commit (`timeout_ms` of the Produce request).
const PRODUCE_BROKER_TIMEOUT_MS: i32 = 2_500;
/// How long a Metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an answer that gives no better place to go.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Whether a Produce error code says the batch was refused before it was proposed.
fn definitely_refused(code: i16) -> bool {
    [
        ResponseError::CorruptMessage,
        ResponseError::MessageTooLarge,
        ResponseError::InvalidRecord,
        ResponseError::UnknownTopicOrPartition,
        ResponseError::KafkaStorageError,
    ]
    .iter()
    .any(|e| e.code() == code)
}

/// Asks Metadata for the partition's leader; None (after a pause) when no broker names one.
async fn find_leader(client: &mut KafkaClient) -> Option<Leader> {
    match client.leader(TOPIC, PARTITION, METADATA_TIMEOUT).await {
        Ok(Some(l)) => Some(l),
        Ok(None) | Err(_) => {
            madsim::time::sleep(RETRY_PAUSE).await;
            None
        }
    }
}

/// Values of filler records start with this; [`records_of`] sets them apart.
pub const FILLER_PREFIX: &str = "~filler:";

/// The largest batch the workload sends: the broker's default `message.max.bytes`.
fn message_max_bytes() -> usize {
    keel_node::kafka::BrokerConfig::default().message_max_bytes
}

/// What one produce sends besides its tracked record: `fillers` filler records of
/// `filler_value_bytes` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    pub fillers: usize,
    pub filler_value_bytes: usize,
}

/// Filler bytes one producer sends in a run, at most; after that its batches are lone records.
/// The simulated disks keep every byte in memory on three replicas: unbounded padding took a
/// run past 20 GB.
pub const PADDING_BYTES_MAX: usize = 24 << 20;

/// Bytes one record adds to a batch besides its value, at most (length, attributes, deltas,
/// key length, header count as varints).
const RECORD_OVERHEAD_BYTES_MAX: usize = 24;

/// Draws one batch: a quarter of them a lone record; the rest padded to a size drawn up to
/// `batch_bytes_max` (half of those in its top quarter, as a loaded librdkafka producer's are),
/// with filler records of 64 bytes to 2 KiB (about 1 KiB: many records per batch).
pub fn batch_plan(rng: &mut impl Rng, batch_bytes_max: usize) -> BatchPlan {
    let lone = BatchPlan { fillers: 0, filler_value_bytes: 0 };
    let target = match rng.gen_range(0..4u8) {
        0 => return lone,
        1 => rng.gen_range(1024..=batch_bytes_max),
        _ => rng.gen_range(batch_bytes_max - batch_bytes_max / 4..=batch_bytes_max),
    };
    let filler_value_bytes = rng.gen_range(64..=2048usize);
    // The batch header, the tracked record (short key and value) and a safety margin.
    let room = target.saturating_sub(batch::HEADER_BYTES + 128);
    BatchPlan { fillers: room / (filler_value_bytes + RECORD_OVERHEAD_BYTES_MAX), filler_value_bytes }
}

/// The batch of one produce: its tracked record first, then the plan's fillers.
pub fn build_batch(key: &str, value: &str, plan: BatchPlan) -> Bytes {
    let mut b = batch::BatchBuilder::new(0);
    b.push(0, Some(key.as_bytes()), Some(value.as_bytes()));
    if plan.fillers > 0 {
        let mut filler = FILLER_PREFIX.as_bytes().to_vec();
        filler.resize(plan.filler_value_bytes.max(filler.len()), b'f');
        for _ in 0..plan.fillers {
            b.push(0, None, Some(&filler));
        }
    }
    Bytes::from(b.build())
}

/// Produces unique keyed values (acks=all) to the workload partition until `deadline_ns` of
/// simulated time, following leadership through Metadata; each in a batch drawn by
/// [`batch_plan`] from `seed`.
pub async fn producer(
    seed: u64,
    process: u64,
    group: u64,
    bootstrap: Vec<String>,
    recorder: Recorder,
    deadline_ns: u64,
) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x7072_6f64_7563_6572 ^ process.wrapping_mul(0x9e37_79b9));
    let batch_bytes_max = message_max_bytes();
    let mut padded_bytes = 0usize;
    let partition = partition_name(group);
    let mut client = KafkaClient::new(format!("producer-{process}"), bootstrap, process as usize);
    let mut leader: Option<Leader> = None;
    let mut n = 0u64;
    while recorder.elapsed_ns() < deadline_ns {
        let Some(addr) = leader.as_ref().map(|l| l.addr.clone()) else {
            leader = find_leader(&mut client).await;
            continue;
        };
        let key = format!("k{}", n % 5);
        let value = format!("c{process}-{n}");
        n += 1;
        let produce = Produce {
            partition: partition.clone(),
            key: Some(key.clone()),
            value: value.clone(),
            offset: None,
            idempotent: false,
        };
        recorder.record(process, EventType::Invoke, Op::Produce(produce.clone()));
        let mut plan = batch_plan(&mut rng, batch_bytes_max);
        if padded_bytes + plan.fillers * plan.filler_value_bytes > PADDING_BYTES_MAX {
            plan = BatchPlan { fillers: 0, filler_value_bytes: 0 };
        }
        padded_bytes += plan.fillers * plan.filler_value_bytes;
        let records = build_batch(&key, &value, plan);
        let answer = match client.connect(&addr).await {
            Ok(()) => client.produce(&addr, TOPIC, PARTITION, records, PRODUCE_BROKER_TIMEOUT_MS, APPEND_TIMEOUT).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(p) if p.error_code == 0 && p.base_offset >= 0 => {
                let ok = Produce { offset: Some(p.base_offset as u64), ..produce };
                recorder.record(process, EventType::Ok, Op::Produce(ok));
            }
            Ok(p) => {
                let kind = if definitely_refused(p.error_code) { EventType::Fail } else { EventType::Info };
                recorder.record(process, kind, Op::Produce(produce));
                // Whoever leads now, Metadata says; a refusal for another reason (a stopped
                // partition, metadata not caught up) deserves a pause first.
                if p.error_code != ResponseError::NotLeaderOrFollower.code() {
                    madsim::time::sleep(RETRY_PAUSE).await;
                }
                leader = None;
            }
            Err(ClientError::Connect { .. } | ClientError::Encode { .. }) => {
                // Nothing was sent.
                recorder.record(process, EventType::Fail, Op::Produce(produce));
                leader = None;
                madsim::time::sleep(RETRY_PAUSE).await;
            }
            Err(_) => {
                recorder.record(process, EventType::Info, Op::Produce(produce));
                leader = None;
                madsim::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Pause between a consumer's reads when it is caught up (or was refused).
pub const CONSUMER_PAUSE: Duration = Duration::from_millis(20);
pub const CONSUMER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Fetches the workload partition through whoever leads (with its leader epoch), incrementally
/// from offset 0, until `deadline_ns`; every Fetch answered without error is recorded `ok` with
/// the records it returned and `node: None` (`read_committed_only` judges them against the
/// final log). Error answers and connections that cannot be opened are `fail`, timeouts and
/// broken connections `info`.
pub async fn consumer(process: u64, group: u64, bootstrap: Vec<String>, recorder: Recorder, deadline_ns: u64) {
    let partition = partition_name(group);
    let mut client = KafkaClient::new(format!("consumer-{process}"), bootstrap, process as usize);
    let mut leader: Option<Leader> = None;
    let mut offset = 0u64;
    while recorder.elapsed_ns() < deadline_ns {
        let Some(l) = leader.clone() else {
            leader = find_leader(&mut client).await;
            continue;
        };
        let invoke = Read {
            partition: partition.clone(),
            node: None,
            from: Some(offset),
            records: Vec::new(),
            untracked: Vec::new(),
            caught_up: false,
        };
        recorder.record(process, EventType::Invoke, Op::Read(invoke.clone()));
        let answer = match client.connect(&l.addr).await {
            Ok(()) => {
                let at = i64::try_from(offset).unwrap_or(i64::MAX);
                client.fetch(&l.addr, TOPIC, PARTITION, at, l.epoch, 64 << 10, 0, CONSUMER_READ_TIMEOUT).await
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(p) if p.error_code == 0 => {
                let parsed = p
                    .records
                    .as_ref()
                    .map_or(Ok(Vec::new()), keel_node::kafka_client::split_batches)
                    .and_then(|batches| records_of(&batches));
                match parsed {
                    Ok(Records { records, untracked, next }) => {
                        let more = next > offset;
                        offset = offset.max(next);
                        recorder.record(process, EventType::Ok, Op::Read(Read { records, untracked, ..invoke }));
                        if more {
                            continue;
                        }
                    }
                    Err(_) => recorder.record(process, EventType::Fail, Op::Read(invoke)),
                }
            }
            Ok(p) => {
                recorder.record(process, EventType::Fail, Op::Read(invoke));
                // An offset above this leader's high watermark (it is catching up) is worth
                // asking again; anything else (not the leader, a fenced or unknown epoch, a
                // stopped partition) sends us to Metadata.
                if p.error_code != ResponseError::OffsetOutOfRange.code() {
                    leader = None;
                }
            }
            Err(ClientError::Connect { .. } | ClientError::Encode { .. }) => {
                recorder.record(process, EventType::Fail, Op::Read(invoke));
                leader = None;
            }
            Err(_) => {
                recorder.record(process, EventType::Info, Op::Read(invoke));
                leader = None;
            }
        }
        madsim::time::sleep(CONSUMER_PAUSE).await;
    }
}

/// What a reader makes of fetched batches.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Records {
    /// The tracked records, in log order.
    pub records: Vec<Record>,
    /// The filler records seen, as `[first offset, count]` runs (they count toward density).
    pub untracked: Vec<[u64; 2]>,
    /// The offset after the last batch.
    pub next: u64,
}

/// The records of `batches`: the tracked ones, and the workload's filler records as offset runs
/// (control batches skipped).
pub(crate) fn records_of(batches: &[Bytes]) -> Result<Records, String> {
    let mut out = Records::default();
    for b in batches {
        let header = batch::BatchHeader::parse(b).map_err(|e| e.to_string())?;
        out.next = header.last_offset() as u64 + 1;
        if header.is_control() {
            continue;
        }
        for r in batch::records(b).map_err(|e| e.to_string())? {
            let offset = header.base_offset as u64 + r.offset_delta as u64;
            if r.key.is_none() && r.value.as_ref().is_some_and(|v| v.starts_with(FILLER_PREFIX.as_bytes())) {
                match out.untracked.last_mut() {
                    Some(run) if run[0] + run[1] == offset => run[1] += 1,
                    _ => out.untracked.push([offset, 1]),
                }
                continue;
            }
            let text = |v: Option<Bytes>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
            out.records.push(Record { offset, key: text(r.key), value: text(r.value).unwrap_or_default() });
        }
    }
    Ok(out)
}

/// One replica's status, or None when it does not answer.
pub async fn status(transport: &Transport, node: u64, group: u64) -> Option<client::Status> {
    let body = encode(&()).ok()?;
    let answer = transport.call(node, group, client::KIND_STATUS, body, Duration::from_secs(1)).await.ok()?;
    decode(&answer).ok()
}

/// Reads the whole committed log of `group` on `node` and records it as a `read` operation.
pub async fn read_replica(
    transport: &Transport,
    recorder: &Recorder,
    process: u64,
    node: u64,
    group: u64,
    caught_up: bool,
) -> Result<(), String> {
    let partition = partition_name(group);
    let invoke = Read {
        partition: partition.clone(),
        node: Some(node),
        from: Some(0),
        records: Vec::new(),
        untracked: vec![],
        caught_up,
    };
    recorder.record(process, EventType::Invoke, Op::Read(invoke.clone()));
    let mut records = Vec::new();
    let mut untracked: Vec<[u64; 2]> = Vec::new();
    let mut offset = 0u64;
    loop {
        let req = client::ReadRequest { offset, bytes_max: 1 << 20, leader_only: false };
        let body = encode(&req)?;
        let answer = transport.call(node, group, client::KIND_READ, body, Duration::from_secs(5)).await;
        let resp = answer.map_err(|e| e.to_string()).and_then(|b| decode::<client::ReadResponse>(&b));
        let (batches, high_watermark) = match resp {
            Ok(client::ReadResponse::Ok { batches, high_watermark, .. }) => (batches, high_watermark),
            Ok(other) => {
                recorder.record(process, EventType::Fail, Op::Read(invoke));
                return Err(format!("read of node {node} refused: {other:?}"));
            }
            Err(e) => {
                recorder.record(process, EventType::Info, Op::Read(invoke));
                return Err(format!("read of node {node} failed: {e}"));
            }
        };
        if batches.is_empty() {
            if offset < high_watermark {
                recorder.record(process, EventType::Fail, Op::Read(invoke));
                return Err(format!("node {node} returned nothing below its high watermark {high_watermark}"));
            }
            break;
        }
        let read = records_of(&batches)?;
        records.extend(read.records);
        untracked.extend(read.untracked);
        offset = read.next;
        if offset >= high_watermark {
            break;
        }
    }
    let ok = Read { records, untracked, ..invoke };
    recorder.record(process, EventType::Ok, Op::Read(ok));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches reach message.max.bytes without passing it, many carry hundreds of records, and
    /// readers see only the tracked record of each, at the batch's base offset.
    #[test]
    fn batches_span_one_record_to_message_max_bytes_and_fillers_stay_unseen() {
        let max = message_max_bytes();
        let mut rng = SmallRng::seed_from_u64(1);
        let (mut lone, mut near_max, mut most_records) = (0, 0, 0);
        for n in 0..200 {
            let plan = batch_plan(&mut rng, max);
            let b = build_batch("k1", &format!("c1-{n}"), plan);
            assert!(b.len() <= max, "batch of {} bytes over {max}", b.len());
            lone += usize::from(plan.fillers == 0);
            near_max += usize::from(b.len() > max - max / 4);
            most_records = most_records.max(plan.fillers + 1);
            let Records { records, untracked, next } = records_of(std::slice::from_ref(&b)).expect("parse");
            assert_eq!(records.len(), 1);
            let fillers = if plan.fillers > 0 { vec![[1, plan.fillers as u64]] } else { vec![] };
            assert_eq!(untracked, fillers, "fillers are seen as one run after the tracked record");
            assert_eq!((records[0].offset, records[0].value.as_str()), (0, format!("c1-{n}").as_str()));
            assert_eq!(next, plan.fillers as u64 + 1, "fillers take offsets");
        }
        assert!(lone > 20 && near_max > 50 && most_records > 400, "{lone} {near_max} {most_records}");
    }
}
