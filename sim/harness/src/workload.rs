//! Simulated clients: producers that append through the leader (following redirects) and record
//! every step, a consumer that keeps reading through the leader during the workload, and the
//! final reader that reads each replica's committed log.
//!
//! Outcomes: an append answered `Ok` is `ok` with its offset; `NotLeader`/`Rejected` are `fail`
//! (nothing was proposed); a timeout, a broken connection or `Unknown` is `info` — the record may
//! or may not be in the log, and the checkers allow both.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_checker::EventType;
use keel_checker::Op;
use keel_checker::Produce;
use keel_checker::Read;
use keel_checker::Record;
use keel_core::batch;
use keel_node::client;
use keel_node::raft::network::decode;
use keel_node::raft::network::encode;
use keel_node::transport::ClientOnly;
use keel_node::transport::Transport;
use keel_node::transport::TransportConfig;

use crate::cluster::partition_name;
use crate::recorder::Recorder;

/// A client-side transport for client `id` (a process id outside the node id range).
pub fn client_transport(id: u64, nodes: &[u64], addr: impl Fn(u64) -> String) -> Transport {
    let t = Transport::new(id, TransportConfig::new("keel-sim"), Arc::new(ClientOnly))
        .unwrap_or_else(|e| panic!("the default transport config is valid: {e}"));
    for &n in nodes {
        t.set_peer_addr(n, addr(n));
    }
    t
}

pub const APPEND_TIMEOUT: Duration = Duration::from_secs(3);

/// Produces unique values to `group` until `deadline_ns` of simulated time.
pub async fn producer(
    process: u64,
    group: u64,
    nodes: Vec<u64>,
    transport: Transport,
    recorder: Recorder,
    deadline_ns: u64,
) {
    let partition = partition_name(group);
    let mut target = nodes[(process as usize) % nodes.len()];
    let mut n = 0u64;
    while recorder.elapsed_ns() < deadline_ns {
        let key = format!("k{}", n % 5);
        let value = format!("c{process}-{n}");
        n += 1;
        let produce =
            Produce {
            partition: partition.clone(),
            key: Some(key.clone()),
            value: value.clone(),
            offset: None,
            idempotent: false,
        };
        recorder.record(process, EventType::Invoke, Op::Produce(produce.clone()));
        let mut b = batch::BatchBuilder::new(0);
        b.push(0, Some(key.as_bytes()), Some(value.as_bytes()));
        let body = Bytes::from(b.build());
        let answer = transport.call(target, group, client::KIND_APPEND, body, APPEND_TIMEOUT).await;
        let decoded = answer.map_err(|e| e.to_string()).and_then(|b| decode::<client::AppendResponse>(&b));
        let mut pause_ms = 0;
        match decoded {
            Ok(client::AppendResponse::Ok { base_offset, .. }) => {
                let ok = Produce { offset: Some(base_offset), ..produce };
                recorder.record(process, EventType::Ok, Op::Produce(ok));
            }
            Ok(client::AppendResponse::NotLeader { leader }) => {
                recorder.record(process, EventType::Fail, Op::Produce(produce));
                match leader {
                    Some(l) if l != target && nodes.contains(&l) => target = l,
                    _ => {
                        target = next_node(&nodes, target);
                        pause_ms = 100;
                    }
                }
            }
            Ok(client::AppendResponse::Rejected(_)) => {
                // Refused, e.g. by a node whose metadata does not know the partition yet.
                recorder.record(process, EventType::Fail, Op::Produce(produce));
                target = next_node(&nodes, target);
                pause_ms = 100;
            }
            Ok(client::AppendResponse::Unknown(_)) | Err(_) => {
                recorder.record(process, EventType::Info, Op::Produce(produce));
                target = next_node(&nodes, target);
                pause_ms = 100;
            }
        }
        if pause_ms > 0 {
            madsim::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    }
}

fn next_node(nodes: &[u64], current: u64) -> u64 {
    let i = nodes.iter().position(|n| *n == current).unwrap_or(0);
    nodes[(i + 1) % nodes.len()]
}

/// Pause between a consumer's reads when it is caught up (or was refused).
pub const CONSUMER_PAUSE: Duration = Duration::from_millis(20);
pub const CONSUMER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads `group` through whoever leads (`leader_only`), incrementally from offset 0, until
/// `deadline_ns`; every read that answers is recorded `ok` with the records it returned and
/// `node: None` (`read_committed_only` judges them against the final log). Refusals are `fail`,
/// timeouts `info`.
pub async fn consumer(
    process: u64,
    group: u64,
    nodes: Vec<u64>,
    transport: Transport,
    recorder: Recorder,
    deadline_ns: u64,
) {
    let partition = partition_name(group);
    let mut target = nodes[(process as usize) % nodes.len()];
    let mut offset = 0u64;
    while recorder.elapsed_ns() < deadline_ns {
        let invoke = Read { partition: partition.clone(), node: None, records: Vec::new(), caught_up: false };
        recorder.record(process, EventType::Invoke, Op::Read(invoke.clone()));
        let req = client::ReadRequest { offset, bytes_max: 64 << 10, leader_only: true };
        let resp = match encode(&req) {
            Ok(body) => {
                let answer = transport.call(target, group, client::KIND_READ, body, CONSUMER_READ_TIMEOUT).await;
                answer.map_err(|e| e.to_string()).and_then(|b| decode::<client::ReadResponse>(&b))
            }
            Err(e) => Ok(client::ReadResponse::Error(e)),
        };
        match resp {
            Ok(client::ReadResponse::Ok { batches, .. }) => match records_of(&batches) {
                Ok((records, next)) => {
                    let more = next > offset;
                    offset = offset.max(next);
                    recorder.record(process, EventType::Ok, Op::Read(Read { records, ..invoke }));
                    if more {
                        continue;
                    }
                }
                Err(_) => recorder.record(process, EventType::Fail, Op::Read(invoke)),
            },
            Ok(client::ReadResponse::NotLeader { leader }) => {
                recorder.record(process, EventType::Fail, Op::Read(invoke));
                target = match leader {
                    Some(l) if nodes.contains(&l) => l,
                    _ => next_node(&nodes, target),
                };
            }
            Ok(client::ReadResponse::Error(_)) => {
                recorder.record(process, EventType::Fail, Op::Read(invoke));
                target = next_node(&nodes, target);
            }
            Err(_) => {
                recorder.record(process, EventType::Info, Op::Read(invoke));
                target = next_node(&nodes, target);
            }
        }
        madsim::time::sleep(CONSUMER_PAUSE).await;
    }
}

/// The data records of `batches` (control batches skipped) and the offset after the last batch.
fn records_of(batches: &[Bytes]) -> Result<(Vec<Record>, u64), String> {
    let mut records = Vec::new();
    let mut next = 0u64;
    for b in batches {
        let header = batch::BatchHeader::parse(b).map_err(|e| e.to_string())?;
        next = header.last_offset() as u64 + 1;
        if header.is_control() {
            continue;
        }
        for r in batch::records(b).map_err(|e| e.to_string())? {
            let text = |v: Option<Bytes>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
            records.push(Record {
                offset: header.base_offset as u64 + r.offset_delta as u64,
                key: text(r.key),
                value: text(r.value).unwrap_or_default(),
            });
        }
    }
    Ok((records, next))
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
    let invoke = Read { partition: partition.clone(), node: Some(node), records: Vec::new(), caught_up };
    recorder.record(process, EventType::Invoke, Op::Read(invoke.clone()));
    let mut records = Vec::new();
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
        let (more, next) = records_of(&batches)?;
        records.extend(more);
        offset = next;
        if offset >= high_watermark {
            break;
        }
    }
    let ok = Read { records, ..invoke };
    recorder.record(process, EventType::Ok, Op::Read(ok));
    Ok(())
}
