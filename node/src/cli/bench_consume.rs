//! `keel bench consume --topic T`: reads every partition of a topic from its log start to the
//! end it had when the run started (or until `--messages` in all), as fast as the brokers serve
//! it.
//!
//! One connection per partition leader; each Fetch asks for all of that leader's unfinished
//! partitions, at most `--fetch-bytes` each, and its latency (request written to answer read)
//! goes into the histogram. A partition answered with a leader-change error is asked again (up to
//! [`PARTITION_ERRORS_MAX`] times in a row); any other error ends that partition's reading, and
//! the run exits non-zero after its report. Messages are counted one by one (offsets below the
//! starting end), bytes as their keys and values; a compressed batch counts its records and its
//! batch size (the CLI has no codecs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_request::FetchTopic;
use keel_core::batch;
use keel_node::kafka_client::EARLIEST_TIMESTAMP;
use keel_node::kafka_client::FETCH_VERSION;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::LATEST_TIMESTAMP;
use keel_node::kafka_client::split_batches;
use keel_node::kafka_client::topic_name;
use serde_json::json;
use tokio::time::Instant;

use super::bench::Errors;
use super::bench::Latencies;
use super::bench::Live;
use super::bench::client_error_name;
use super::bench::code_name;
use super::bench::per_second;
use super::kafka::Kafka;
use super::kafka::REQUEST_TIMEOUT;
use super::kafka::check;
use super::kafka::is_leader_change;
use super::kafka::leader_of;
use super::kafka::partition_ids;
use super::output::Output;

const FETCH_BYTES_MIN: i32 = 1024;
const FETCH_BYTES_MAX: i32 = 8 << 20;
/// A Fetch answer's size at most (below the client's 16 MiB response limit).
const FETCH_RESPONSE_BYTES_MAX: i32 = 12 << 20;
/// How long the broker may wait for a first byte.
const FETCH_WAIT_MS: i32 = 500;
/// Errors in a row before a partition (or a connection) is given up.
pub const PARTITION_ERRORS_MAX: u32 = 20;

#[derive(clap::Args)]
pub struct BenchConsumeArgs {
    #[arg(long)]
    pub topic: String,
    /// Stop after this many messages in all [default: every message up to the end the topic
    /// has when the run starts].
    #[arg(long)]
    pub messages: Option<u64>,
    /// Bytes a fetch may return per partition.
    #[arg(long, default_value_t = 1 << 20)]
    pub fetch_bytes: i32,
}

/// One partition's reading.
#[derive(Clone)]
struct Reading {
    partition: i32,
    next: i64,
    end: i64,
    errors_in_row: u32,
    failed: bool,
}

impl Reading {
    fn open(&self) -> bool {
        !self.failed && self.next < self.end
    }
}

/// Messages still to count, when `--messages` bounds the run.
struct Quota {
    counted: AtomicU64,
    limit: u64,
}

impl Quota {
    /// How many of `n` more messages may be counted.
    fn take(&self, n: u64) -> u64 {
        let mut current = self.counted.load(Ordering::Relaxed);
        loop {
            let take = n.min(self.limit.saturating_sub(current));
            if take == 0 {
                return 0;
            }
            match self.counted.compare_exchange_weak(current, current + take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => current = now,
            }
        }
    }

    fn used_up(&self) -> bool {
        self.counted.load(Ordering::Relaxed) >= self.limit
    }
}

#[derive(Default)]
struct Tally {
    messages: u64,
    bytes: u64,
    latencies: Option<Latencies>,
    errors: Errors,
    failed_partitions: Vec<i32>,
}

pub async fn run(kafka: &mut Kafka, out: &mut Output, args: BenchConsumeArgs) -> anyhow::Result<()> {
    if !(FETCH_BYTES_MIN..=FETCH_BYTES_MAX).contains(&args.fetch_bytes) {
        bail!("--fetch-bytes {} is out of range: {FETCH_BYTES_MIN} to {FETCH_BYTES_MAX}", args.fetch_bytes);
    }
    if args.messages == Some(0) {
        bail!("--messages must be at least 1");
    }
    let (md, topic) = kafka.topic(&args.topic).await?;
    let ids = partition_ids(&topic);
    let mut lanes: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for &p in &ids {
        let Some((_, _, addr)) = leader_of(&md, &topic, p) else {
            bail!("partition {p} of '{}' has no leader right now; try again", args.topic);
        };
        let start = list_offset(kafka, &addr, &args.topic, p, EARLIEST_TIMESTAMP).await?;
        let end = list_offset(kafka, &addr, &args.topic, p, LATEST_TIMESTAMP).await?;
        let reading = Reading { partition: p, next: start, end, errors_in_row: 0, failed: false };
        lanes.entry(addr).or_default().push(reading);
    }
    let quota = Arc::new(Quota { counted: AtomicU64::new(0), limit: args.messages.unwrap_or(u64::MAX) });
    let live = Arc::new(Live::default());
    let to_read: u64 = lanes.values().flatten().map(|r| (r.end - r.next).max(0) as u64).sum();
    let bar =
        super::bench::progress(out.json, Some(args.messages.map_or(to_read, |m| m.min(to_read))), None, live.clone());
    let start = Instant::now();
    let client_id = kafka.client.client_id().to_string();
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|(addr, readings)| {
            let (topic, quota, live) = (args.topic.clone(), quota.clone(), live.clone());
            tokio::spawn(lane(addr, client_id.clone(), topic, readings, args.fetch_bytes, quota, live))
        })
        .collect();
    let connections = tasks.len();
    let mut total = Tally { latencies: Some(Latencies::new()), ..Tally::default() };
    for t in tasks {
        let tally = match t.await {
            Ok(t) => t,
            Err(e) => bail!("a fetch connection's task failed: {e}"),
        };
        total.messages += tally.messages;
        total.bytes += tally.bytes;
        total.errors.merge(&tally.errors);
        total.failed_partitions.extend(tally.failed_partitions);
        if let (Some(all), Some(l)) = (total.latencies.as_mut(), tally.latencies.as_ref()) {
            all.merge(l);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    total.failed_partitions.sort_unstable();
    report(out, &args.topic, ids.len(), connections, &total, seconds)?;
    if !total.failed_partitions.is_empty() {
        bail!(
            "reading partitions {:?} of '{}' failed (errors: {})",
            total.failed_partitions,
            args.topic,
            total.errors.text()
        );
    }
    Ok(())
}

fn report(
    out: &mut Output,
    topic: &str,
    partitions: usize,
    connections: usize,
    t: &Tally,
    seconds: f64,
) -> anyhow::Result<()> {
    let latencies = t.latencies.as_ref().filter(|l| l.count() > 0);
    if out.json {
        return out.json_value(&json!({
            "command": "consume",
            "topic": topic,
            "partitions": partitions,
            "connections": connections,
            "messages": t.messages,
            "bytes": t.bytes,
            "seconds": seconds,
            "msgs_per_s": per_second(t.messages, seconds),
            "mb_per_s": per_second(t.bytes, seconds) / 1e6,
            "latency": latencies.map_or(serde_json::Value::Null, Latencies::json),
            "histogram": latencies.map_or(serde_json::Value::Array(Vec::new()), Latencies::histogram_json),
            "errors": t.errors.json(),
            "failed_partitions": t.failed_partitions,
        }));
    }
    out.line(&format!("bench consume: topic {topic} ({partitions} partitions, {connections} connections)"))?;
    out.line(&format!("  messages    {} read in {seconds:.2} s", t.messages))?;
    out.line(&format!(
        "  throughput  {:.0} msgs/s, {:.2} MB/s",
        per_second(t.messages, seconds),
        per_second(t.bytes, seconds) / 1e6
    ))?;
    match latencies {
        Some(l) => out.line(&format!("  latency     {} ({} fetch requests)", l.summary(), l.count()))?,
        None => out.line("  latency     no fetches answered")?,
    }
    out.line(&format!("  errors      {}", t.errors.text()))?;
    if let Some(l) = latencies {
        out.line("")?;
        out.line("  fetch latency per request")?;
        for line in l.histogram_lines() {
            out.line(&line)?;
        }
    }
    Ok(())
}

async fn list_offset(
    kafka: &mut Kafka,
    addr: &str,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> anyhow::Result<i64> {
    let r = kafka.client.list_offset(addr, topic, partition, timestamp, REQUEST_TIMEOUT).await?;
    check(r.error_code, &format!("offsets of {topic}/{partition}"), None)?;
    Ok(r.offset)
}

/// Reads `readings` (partitions `addr` leads) to their ends.
async fn lane(
    addr: String,
    client_id: String,
    topic: String,
    mut readings: Vec<Reading>,
    fetch_bytes: i32,
    quota: Arc<Quota>,
    live: Arc<Live>,
) -> Tally {
    let mut tally = Tally { latencies: Some(Latencies::new()), ..Tally::default() };
    let mut client = KafkaClient::new(client_id, vec![addr.clone()], 0);
    let mut call_errors_in_row = 0u32;
    loop {
        let open: Vec<&Reading> = readings.iter().filter(|r| r.open()).collect();
        if open.is_empty() || quota.used_up() {
            return tally;
        }
        let partitions = open
            .iter()
            .map(|r| {
                FetchPartition::default()
                    .with_partition(r.partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(r.next)
                    .with_partition_max_bytes(fetch_bytes)
            })
            .collect();
        let max_bytes = fetch_bytes.saturating_mul(open.len() as i32).min(FETCH_RESPONSE_BYTES_MAX);
        let request = FetchRequest::default()
            .with_max_wait_ms(FETCH_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(0)
            .with_topics(vec![FetchTopic::default().with_topic(topic_name(&topic)).with_partitions(partitions)]);
        let sent_at = Instant::now();
        let answer = client.request_to(&addr, FETCH_VERSION, &request, REQUEST_TIMEOUT).await;
        let took = sent_at.elapsed();
        let answer = match answer {
            Ok(a) if a.error_code == 0 => a,
            Ok(a) => {
                tally.errors.add(&code_name(a.error_code), 1);
                call_errors_in_row += 1;
                if call_errors_in_row >= PARTITION_ERRORS_MAX || !is_leader_change(a.error_code) {
                    fail_all(&mut readings, &mut tally);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => {
                tally.errors.add(client_error_name(&e), 1);
                call_errors_in_row += 1;
                if call_errors_in_row >= PARTITION_ERRORS_MAX {
                    fail_all(&mut readings, &mut tally);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        call_errors_in_row = 0;
        if let Some(l) = tally.latencies.as_mut() {
            l.record(took);
        }
        let answered = answer.responses.into_iter().filter(|t| t.topic.0.as_str() == topic).flat_map(|t| t.partitions);
        for data in answered {
            let Some(r) = readings.iter_mut().find(|r| r.partition == data.partition_index && r.open()) else {
                continue;
            };
            if data.error_code != 0 {
                tally.errors.add(&code_name(data.error_code), 1);
                r.errors_in_row += 1;
                if r.errors_in_row >= PARTITION_ERRORS_MAX || !is_leader_change(data.error_code) {
                    r.failed = true;
                    tally.failed_partitions.push(r.partition);
                }
                continue;
            }
            r.errors_in_row = 0;
            let records = data.records.unwrap_or_default();
            let batches = match split_batches(&records) {
                Ok(b) => b,
                Err(_) => {
                    tally.errors.add("CORRUPT_ANSWER", 1);
                    r.failed = true;
                    tally.failed_partitions.push(r.partition);
                    continue;
                }
            };
            if count_batches(r, &batches, &quota, &mut tally, &live).is_err() {
                tally.errors.add("CORRUPT_ANSWER", 1);
                r.failed = true;
                tally.failed_partitions.push(r.partition);
            }
        }
    }
}

fn fail_all(readings: &mut [Reading], tally: &mut Tally) {
    for r in readings.iter_mut().filter(|r| r.open()) {
        r.failed = true;
        tally.failed_partitions.push(r.partition);
    }
}

/// Counts the messages of `batches` below the reading's end (within the quota) and moves the
/// reading past them.
fn count_batches(
    r: &mut Reading,
    batches: &[bytes::Bytes],
    quota: &Quota,
    tally: &mut Tally,
    live: &Live,
) -> Result<(), keel_core::batch::BatchError> {
    for b in batches {
        let h = batch::BatchHeader::parse(b)?;
        let after = h.last_offset() + 1;
        if !h.is_control() {
            // (offset, bytes) of every message to count in this batch.
            let counted: Vec<(i64, u64)> = if h.compression() != 0 {
                let from = h.base_offset.max(r.next);
                let to = after.min(r.end);
                let n = (to - from).max(0);
                (from..to).map(|o| (o, b.len() as u64 / n.max(1) as u64)).collect()
            } else {
                batch::records(b)?
                    .into_iter()
                    .map(|rec| {
                        let offset = h.base_offset + i64::from(rec.offset_delta);
                        let bytes = rec.key.as_ref().map_or(0, |k| k.len()) + rec.value.as_ref().map_or(0, |v| v.len());
                        (offset, bytes as u64)
                    })
                    .filter(|(o, _)| *o >= r.next && *o < r.end)
                    .collect()
            };
            let granted = quota.take(counted.len() as u64) as usize;
            let bytes: u64 = counted[..granted].iter().map(|(_, b)| b).sum();
            tally.messages += granted as u64;
            tally.bytes += bytes;
            live.messages.fetch_add(granted as u64, Ordering::Relaxed);
            live.bytes.fetch_add(bytes, Ordering::Relaxed);
            if granted < counted.len() {
                r.next = r.end;
                return Ok(());
            }
        }
        r.next = r.next.max(after);
    }
    Ok(())
}
