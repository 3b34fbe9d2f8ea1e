//! Simulated idempotent producers: Kafka's `enable.idempotence=true` over the real protocol.
//!
//! A producer asks InitProducerId (v4) for a producer id and epoch, then sends one keyed record
//! per batch to the workload partition with the next sequence number, acks=all. One produce
//! operation of the history is one record: the producer resends **the same batch** (same
//! producer id, epoch and sequence) after every timeout, broken connection or retriable error,
//! following leadership through Metadata, until it is acknowledged (`ok`) or the workload ends
//! (`info`: it may be stored once). Only then does it move to the next sequence, as a real
//! idempotent producer does with one batch in flight. An answer that says the producer's state
//! no longer fits (OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH) ends the operation as
//! `info` (an earlier send may have stored it) and starts over with a new producer id, as
//! librdkafka does on such errors.
//!
//! `idempotent_no_duplicates` then requires every such record at most once in the final log, in
//! send order; the other checkers judge them like any produce.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::InitProducerIdRequest;
use kafka_protocol::messages::InitProducerIdResponse;
use kafka_protocol::messages::ProducerId;
use keel_checker::EventType;
use keel_checker::Op;
use keel_checker::Produce;
use keel_core::batch;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::Leader;

use crate::cluster::partition_name;
use crate::recorder::Recorder;
use crate::workload::APPEND_TIMEOUT;
use crate::workload::PARTITION;
use crate::workload::TOPIC;

/// InitProducerId v4: flexible, with the producer id and epoch fields (KIP-360).
const INIT_PRODUCER_ID_VERSION: i16 = 4;
const INIT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the broker may wait for the commit (`timeout_ms` of the Produce request).
const PRODUCE_BROKER_TIMEOUT_MS: i32 = 2_500;
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A producer id and epoch, and the next sequence to send.
#[derive(Debug, Clone, Copy)]
struct Session {
    producer_id: i64,
    epoch: i16,
    next_seq: i32,
}

/// Asks the bootstrap brokers in turn for a producer id; None once `deadline_ns` passed.
async fn init_producer_id(
    client: &mut KafkaClient,
    bootstrap: &[String],
    recorder: &Recorder,
    deadline_ns: u64,
) -> Option<Session> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let mut turn = 0usize;
    while recorder.elapsed_ns() < deadline_ns {
        let addr = &bootstrap[turn % bootstrap.len()];
        turn += 1;
        let answer = match client.connect(addr).await {
            Ok(()) => {
                client
                    .call::<_, InitProducerIdResponse>(
                        addr,
                        ApiKey::InitProducerId,
                        INIT_PRODUCER_ID_VERSION,
                        &request,
                        INIT_TIMEOUT,
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(r) if r.error_code == 0 && r.producer_id.0 >= 0 => {
                return Some(Session { producer_id: r.producer_id.0, epoch: r.producer_epoch, next_seq: 0 });
            }
            _ => madsim::time::sleep(RETRY_PAUSE).await,
        }
    }
    None
}

/// What one send of the current batch came to.
enum Sent {
    /// Stored (now or by an earlier send) at this base offset.
    Acked(u64),
    /// The producer's state does not fit: start over with a new producer id.
    Fenced,
    /// No answer, or a retriable one: send the same batch again.
    Retry,
}

async fn send_once(client: &mut KafkaClient, leader: &mut Option<Leader>, batch: &Bytes) -> Sent {
    let Some(addr) = leader.as_ref().map(|l| l.addr.clone()) else {
        match client.leader(TOPIC, PARTITION, METADATA_TIMEOUT).await {
            Ok(Some(l)) => *leader = Some(l),
            Ok(None) | Err(_) => madsim::time::sleep(RETRY_PAUSE).await,
        }
        return Sent::Retry;
    };
    let answer = match client.connect(&addr).await {
        Ok(()) => {
            client.produce(&addr, TOPIC, PARTITION, batch.clone(), PRODUCE_BROKER_TIMEOUT_MS, APPEND_TIMEOUT).await
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(p) if p.error_code == 0 && p.base_offset >= 0 => Sent::Acked(p.base_offset as u64),
        Ok(p)
            if p.error_code == ResponseError::OutOfOrderSequenceNumber.code()
                || p.error_code == ResponseError::InvalidProducerEpoch.code() =>
        {
            Sent::Fenced
        }
        Ok(p) => {
            if p.error_code != ResponseError::NotLeaderOrFollower.code() {
                madsim::time::sleep(RETRY_PAUSE).await;
            }
            *leader = None;
            Sent::Retry
        }
        Err(_) => {
            *leader = None;
            madsim::time::sleep(RETRY_PAUSE).await;
            Sent::Retry
        }
    }
}

/// Produces unique keyed values idempotently to the workload partition until `deadline_ns`.
pub async fn producer(process: u64, group: u64, bootstrap: Vec<String>, recorder: Recorder, deadline_ns: u64) {
    let partition = partition_name(group);
    let mut client = KafkaClient::new(format!("idempotent-producer-{process}"), bootstrap.clone(), process as usize);
    let mut leader: Option<Leader> = None;
    let mut session: Option<Session> = None;
    let mut n = 0u64;
    while recorder.elapsed_ns() < deadline_ns {
        let s = match session {
            Some(s) => s,
            None => match init_producer_id(&mut client, &bootstrap, &recorder, deadline_ns).await {
                Some(s) => *session.insert(s),
                None => return,
            },
        };
        let key = format!("k{}", n % 5);
        let value = format!("i{process}-{n}");
        n += 1;
        let produce = Produce {
            partition: partition.clone(),
            key: Some(key.clone()),
            value: value.clone(),
            offset: None,
            idempotent: true,
        };
        recorder.record(process, EventType::Invoke, Op::Produce(produce.clone()));
        let mut b = batch::BatchBuilder::new(0).producer(s.producer_id, s.epoch, s.next_seq);
        b.push(0, Some(key.as_bytes()), Some(value.as_bytes()));
        let bytes = Bytes::from(b.build());
        let outcome = loop {
            if recorder.elapsed_ns() >= deadline_ns {
                break None;
            }
            match send_once(&mut client, &mut leader, &bytes).await {
                Sent::Acked(offset) => break Some(Ok(offset)),
                Sent::Fenced => break Some(Err(())),
                Sent::Retry => {}
            }
        };
        match outcome {
            Some(Ok(offset)) => {
                recorder.record(process, EventType::Ok, Op::Produce(Produce { offset: Some(offset), ..produce }));
                session = Some(Session { next_seq: s.next_seq.wrapping_add(1).max(0), ..s });
            }
            Some(Err(())) => {
                recorder.record(process, EventType::Info, Op::Produce(produce));
                session = None;
            }
            None => recorder.record(process, EventType::Info, Op::Produce(produce)),
        }
    }
}
