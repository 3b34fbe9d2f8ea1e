//! `keel produce TOPIC`: lines from stdin become records (`KEY<sep>VALUE` with
//! `--key-separator`, else the whole line is the value).
//!
//! Partitioning is Kafka's: a keyed record goes to `murmur2(key) & 0x7fffffff % partitions`
//! (the Java client's default and librdkafka's `murmur2_random`, so keel, kcat with
//! `-X partitioner=murmur2_random` and Java producers put a key in the same partition); records
//! without a key go round-robin; `--partition` overrides both. Lines that are already waiting on
//! stdin travel together, one batch per partition per request; each batch is sent to the
//! partition's leader and retried (after a metadata refresh) when the leader moved, so a record
//! may be stored twice if an answer is lost (at least once, like a producer without
//! idempotence).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use bytes::Bytes;
use keel_core::batch::BatchBuilder;
use keel_node::kafka_client::PRODUCE_VERSION;
use keel_node::kafka_client::produce_request;
use serde_json::json;

use super::kafka::Kafka;
use super::kafka::REQUEST_TIMEOUT;
use super::kafka::check;
use super::kafka::is_leader_change;
use super::kafka::leader_of;
use super::output::Output;

/// Records gathered into one request at most.
const BATCH_RECORDS_MAX: usize = 1000;
/// How often a batch is retried when its partition's leader moved.
const RETRIES: usize = 20;

#[derive(clap::Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Every record goes to this partition (default: by key hash, round-robin without a key).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Splits each line at the first SEP into key and value.
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// `all` (-1: every replica, the default), `1` (the leader) or `0` (no answer).
    #[arg(long, default_value = "all")]
    pub acks: String,
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % partitions.max(1)) as i32
}

/// `--acks` as the Produce request's value.
pub fn parse_acks(acks: &str) -> anyhow::Result<i16> {
    match acks {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        other => bail!("--acks {other:?}: expected all, -1, 1 or 0"),
    }
}

pub async fn run(kafka: &mut Kafka, out: &mut Output, args: ProduceArgs) -> anyhow::Result<()> {
    let acks = parse_acks(&args.acks)?;
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    let (_, topic) = kafka.topic(&args.topic).await?;
    let partitions = topic.partitions.len();
    if partitions == 0 {
        bail!("topic '{}' has no partitions", args.topic);
    }
    if let Some(p) = args.partition
        && !topic.partitions.iter().any(|x| x.partition_index == p)
    {
        bail!("topic '{}' has {partitions} partitions; there is no partition {p}", args.topic);
    }
    let mut lines = stdin_lines();
    let mut round_robin = 0usize;
    let mut produced: BTreeMap<i32, u64> = BTreeMap::new();
    loop {
        let Some(first) = lines.recv().await else {
            break;
        };
        // Whatever else is already waiting goes in the same request.
        let mut batch = vec![first.context("reading stdin")?];
        while batch.len() < BATCH_RECORDS_MAX {
            match lines.try_recv() {
                Ok(line) => batch.push(line.context("reading stdin")?),
                Err(_) => break,
            }
        }
        let mut by_partition: BTreeMap<i32, BatchBuilder> = BTreeMap::new();
        let now = keel_node::clock::wall_clock_ms();
        for line in &batch {
            let (key, value) = match args.key_separator.as_deref().and_then(|sep| line.split_once(sep)) {
                Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
                None => (None, line.as_bytes()),
            };
            let partition = match (args.partition, key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, partitions),
                (None, None) => {
                    round_robin += 1;
                    ((round_robin - 1) % partitions) as i32
                }
            };
            by_partition.entry(partition).or_insert_with(|| BatchBuilder::new(now)).push(now, key, Some(value));
        }
        for (partition, builder) in by_partition {
            let records = Bytes::from(builder.build());
            let count = keel_core::batch::BatchHeader::parse(&records).map(|h| h.records_count as u64).unwrap_or(0);
            send(kafka, &args.topic, partition, records, acks).await?;
            *produced.entry(partition).or_default() += count;
        }
    }
    let total: u64 = produced.values().sum();
    if out.json {
        let per: serde_json::Map<String, serde_json::Value> =
            produced.iter().map(|(p, n)| (p.to_string(), json!(n))).collect();
        out.json_value(&json!({"topic": args.topic, "records": total, "partitions": per}))
    } else {
        eprintln!("produced {total} records to {}", args.topic);
        Ok(())
    }
}

/// Stdin's lines, read on the runtime's blocking pool (a read of stdin blocks). The command line
/// never runs under the simulator, whose runtime refuses blocking tasks.
#[cfg_attr(madsim, allow(deprecated))]
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(BATCH_RECORDS_MAX);
    tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lock().lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Sends one batch to its partition's leader, following leader changes; the base offset
/// (`None` with acks=0).
pub async fn send(
    kafka: &mut Kafka,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> anyhow::Result<Option<i64>> {
    let mut last = String::from("no leader known");
    for attempt in 0..RETRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (md, t) = kafka.topic(topic).await?;
        let Some((_, _, addr)) = leader_of(&md, &t, partition) else {
            last = format!("partition {partition} has no leader");
            continue;
        };
        if acks == 0 {
            kafka.client.connect(&addr).await?;
            let request = produce_request(topic, partition, records.clone(), 0, 0);
            kafka.client.send_only(&addr, PRODUCE_VERSION, &request, REQUEST_TIMEOUT).await?;
            return Ok(None);
        }
        if let Err(e) = kafka.client.connect(&addr).await {
            last = e.to_string();
            continue;
        }
        match kafka.client.produce_acks(&addr, topic, partition, records.clone(), acks, 10_000, REQUEST_TIMEOUT).await {
            Ok(r) if r.error_code == 0 => return Ok(Some(r.base_offset)),
            Ok(r) if is_leader_change(r.error_code) => {
                last = super::kafka::error_text(r.error_code, r.error_message.as_ref());
            }
            Ok(r) => {
                check(r.error_code, &format!("producing to {topic}/{partition}"), r.error_message.as_ref())?;
            }
            Err(e) => last = e.to_string(),
        }
    }
    bail!("producing to {topic}/{partition} failed {RETRIES} times; last: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values the Java client's `UtilsTest.testMurmur2` pins.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn keys_pick_stable_partitions_in_range() {
        for key in [&b"a"[..], b"k1", b"order-17", b""] {
            let p = partition_for_key(key, 6);
            assert!((0..6).contains(&p));
            assert_eq!(p, partition_for_key(key, 6));
        }
    }

    #[test]
    fn acks_spellings() {
        assert_eq!(parse_acks("all").unwrap(), -1);
        assert_eq!(parse_acks("-1").unwrap(), -1);
        assert_eq!(parse_acks("1").unwrap(), 1);
        assert_eq!(parse_acks("0").unwrap(), 0);
        assert!(parse_acks("2").is_err());
    }
}
