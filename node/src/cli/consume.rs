//! `keel consume TOPIC`: prints records of a topic's partitions (all, or `--partition`).
//!
//! Where it starts: `--from-beginning` (the log start), `--offset N`, else the end (only records
//! produced from now on, as `kafka-console-consumer`). Without `--follow` it stops at the end
//! each partition had when it started; with `--follow` it waits for more. `--max-messages`
//! stops after that many. Each record prints as its value (`KEY<sep>VALUE` with
//! `--key-separator`), or with `--json` as one JSON object per line.
//!
//! Fetches go to each partition's leader; a leader change refreshes the metadata and goes on
//! from the same offset. Compressed batches are not decoded (the CLI has no codecs): they are
//! skipped with a warning on stderr.
//!
//! With `--group G` it reads as a member of consumer group G instead: see
//! [`consume_group`](super::consume_group).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use keel_core::batch;
use keel_node::kafka_client::EARLIEST_TIMESTAMP;
use keel_node::kafka_client::LATEST_TIMESTAMP;
use keel_node::kafka_client::split_batches;
use serde_json::json;

use super::kafka::Kafka;
use super::kafka::REQUEST_TIMEOUT;
use super::kafka::check;
use super::kafka::error_text;
use super::kafka::is_leader_change;
use super::kafka::leader_of;
use super::kafka::partition_ids;
use super::output::Output;

const FETCH_BYTES_MAX: i32 = 1 << 20;
/// How long a fetch waits on the broker for new records when following.
pub const FOLLOW_WAIT_MS: i32 = 500;
/// Consecutive failures (no leader, broken connections) before giving up on a partition.
const FAILURES_MAX: u32 = 50;

#[derive(clap::Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Start at the first stored record.
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, short = 'o')]
    pub offset: Option<i64>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub max_messages: Option<u64>,
    /// Print `KEY<SEP>VALUE` instead of the value alone.
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Consume as a member of this consumer group: the group's leader member assigns the
    /// partitions, reading starts at the group's committed offsets (else --from-beginning or the
    /// end) and each fetch's records are committed once printed; Ctrl-C leaves the group.
    #[arg(long, short = 'g', conflicts_with_all = ["partition", "offset"])]
    pub group: Option<String>,
    /// With --group: how the leader member assigns partitions (`range` or `roundrobin`).
    #[arg(long, default_value = "range", requires = "group")]
    pub assignor: String,
}

/// Where one partition's reading is.
pub struct Cursor {
    /// The offset after the last record printed (or skipped: control and compressed batches).
    pub next: i64,
    /// Without `--follow`: the end it had at the start.
    pub end: Option<i64>,
    failures: u32,
}

impl Cursor {
    pub fn new(next: i64, end: Option<i64>) -> Cursor {
        Cursor { next, end, failures: 0 }
    }

    /// Whether records below its end remain (always, when following).
    pub fn open(&self) -> bool {
        self.end.is_none_or(|e| self.next < e)
    }
}

pub async fn run(kafka: &mut Kafka, out: &mut Output, args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(o) = args.offset
        && o < 0
    {
        bail!("--offset {o} is negative");
    }
    if let Some(group) = args.group.clone() {
        return super::consume_group::run(kafka, out, &args, &group).await;
    }
    let (md, topic) = kafka.topic(&args.topic).await?;
    let ids = match args.partition {
        Some(p) if partition_ids(&topic).contains(&p) => vec![p],
        Some(p) => bail!("topic '{}' has {} partitions; there is no partition {p}", args.topic, topic.partitions.len()),
        None => partition_ids(&topic),
    };
    let mut cursors = BTreeMap::new();
    for &p in &ids {
        let Some((_, _, addr)) = leader_of(&md, &topic, p) else {
            bail!("partition {p} of '{}' has no leader right now; try again", args.topic);
        };
        let start = match (args.from_beginning, args.offset) {
            (true, _) => list_offset(kafka, &addr, &args.topic, p, EARLIEST_TIMESTAMP).await?,
            (false, Some(o)) => o,
            (false, None) => list_offset(kafka, &addr, &args.topic, p, LATEST_TIMESTAMP).await?,
        };
        let end =
            if args.follow { None } else { Some(list_offset(kafka, &addr, &args.topic, p, LATEST_TIMESTAMP).await?) };
        cursors.insert(p, Cursor::new(start, end));
    }
    let mut printed = 0u64;
    let mut leaders = Leaders::new();
    loop {
        let open: Vec<i32> = cursors.iter().filter(|(_, c)| c.open()).map(|(p, _)| *p).collect();
        if open.is_empty() || args.max_messages.is_some_and(|m| printed >= m) {
            return Ok(());
        }
        // With several partitions, a long wait on one would delay the others.
        let wait_ms = if args.follow && open.len() == 1 { FOLLOW_WAIT_MS } else { 0 };
        let mut got_any = false;
        for p in open {
            let cursor = cursors.get_mut(&p).expect("open partitions have cursors");
            got_any |= poll(kafka, out, &args, &mut leaders, p, cursor, wait_ms, &mut printed).await? > 0;
        }
        if !got_any && args.follow && wait_ms == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Partition → (leader epoch, leader address), as last learnt.
pub type Leaders = BTreeMap<i32, (i32, String)>;

/// One fetch of partition `p` from its leader: prints its records from the cursor on (below
/// the cursor's end, up to `--max-messages` in all, counted by `printed`), moving the cursor
/// past each record as it is printed. Answers how many it printed. A leader change or a failed
/// call forgets the leader and counts a failure; too many in a row is an error.
#[allow(clippy::too_many_arguments)]
pub async fn poll(
    kafka: &mut Kafka,
    out: &mut Output,
    args: &ConsumeArgs,
    leaders: &mut Leaders,
    p: i32,
    cursor: &mut Cursor,
    wait_ms: i32,
    printed: &mut u64,
) -> anyhow::Result<u64> {
    let (epoch, addr) = match leaders.get(&p) {
        Some(known) => known.clone(),
        None => {
            let (md, topic) = kafka.topic(&args.topic).await?;
            let Some((_, epoch, addr)) = leader_of(&md, &topic, p) else {
                fail(cursor, p, &args.topic, "no leader")?;
                return Ok(0);
            };
            leaders.insert(p, (epoch, addr.clone()));
            (epoch, addr)
        }
    };
    if let Err(e) = kafka.client.connect(&addr).await {
        leaders.remove(&p);
        fail(cursor, p, &args.topic, &e.to_string())?;
        return Ok(0);
    }
    let data = match kafka
        .client
        .fetch(&addr, &args.topic, p, cursor.next, epoch, FETCH_BYTES_MAX, wait_ms, REQUEST_TIMEOUT)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            leaders.remove(&p);
            fail(cursor, p, &args.topic, &e.to_string())?;
            return Ok(0);
        }
    };
    if data.error_code != 0 {
        if is_leader_change(data.error_code) {
            leaders.remove(&p);
            fail(cursor, p, &args.topic, &error_text(data.error_code, None))?;
            return Ok(0);
        }
        check(data.error_code, &format!("reading {}/{p} at offset {}", args.topic, cursor.next), None)?;
    }
    cursor.failures = 0;
    let records = data.records.unwrap_or_default();
    let batches = split_batches(&records).map_err(|e| anyhow::anyhow!("{}/{p}: {e}", args.topic))?;
    let mut count = 0u64;
    for b in batches {
        let h = batch::BatchHeader::parse(&b)?;
        let next = h.last_offset() + 1;
        if h.is_control() {
            cursor.next = cursor.next.max(next);
            continue;
        }
        if h.compression() != 0 {
            eprintln!(
                "keel: skipping a compressed batch at {}/{p} offsets {}..={} (compression {})",
                args.topic,
                h.base_offset,
                h.last_offset(),
                h.compression()
            );
            cursor.next = cursor.next.max(next);
            continue;
        }
        for r in batch::records(&b)? {
            let offset = h.base_offset + i64::from(r.offset_delta);
            if offset < cursor.next || cursor.end.is_some_and(|e| offset >= e) {
                continue;
            }
            if args.max_messages.is_some_and(|m| *printed >= m) {
                return Ok(count);
            }
            let text = |b: &Option<bytes::Bytes>| b.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
            if out.json {
                out.json_line(&json!({
                    "topic": args.topic,
                    "partition": p,
                    "offset": offset,
                    "timestamp_ms": h.base_timestamp + r.timestamp_delta,
                    "key": text(&r.key),
                    "value": text(&r.value),
                }))?;
            } else {
                let value = text(&r.value).unwrap_or_default();
                match &args.key_separator {
                    Some(sep) => out.line(&format!("{}{sep}{value}", text(&r.key).unwrap_or_default()))?,
                    None => out.line(&value)?,
                }
            }
            *printed += 1;
            count += 1;
            cursor.next = offset + 1;
        }
        // Past the batch, but never past the end: what lies beyond was not printed.
        cursor.next = cursor.next.max(cursor.end.map_or(next, |e| next.min(e)));
    }
    Ok(count)
}

pub async fn list_offset(
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

/// Counts a failure on partition `p`; too many in a row is an error.
fn fail(cursor: &mut Cursor, p: i32, topic: &str, why: &str) -> anyhow::Result<()> {
    cursor.failures += 1;
    if cursor.failures >= FAILURES_MAX {
        bail!("reading {topic}/{p} failed {FAILURES_MAX} times in a row; last: {why}");
    }
    Ok(())
}
