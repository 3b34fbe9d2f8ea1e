//! `keel bench produce --topic T`: generated messages, as many as `--messages` or for
//! `--duration-s`, as fast as the brokers acknowledge them or at `--rate`.
//!
//! The topic is created with `--partitions` when it does not exist (an existing topic is used as
//! it is). There is one connection per partition leader (a "lane"); each lane writes Produce
//! requests of one batch of `--batch-records` records to one of its partitions, keeping up to
//! `--in-flight` requests outstanding, while a reader task takes the answers, which a broker
//! sends in request order on a connection. Lanes claim messages from one shared budget, so the
//! total is exact whatever the number of lanes.
//!
//! Keys: with `--keys K`, the keys are `key-0` .. `key-{K-1}` and each goes to the partition
//! `keel produce` (and Kafka's default partitioner) picks for it (murmur2); a lane's batches
//! visit its partitions in proportion to the keys they hold, cycling through each partition's
//! keys. With `--keys 0` records have no key and each lane's batches visit its partitions in
//! turn. Values are `--message-bytes` bytes.
//!
//! Latency is per request, from just before the request is written to its answer being read.
//! An answer with an error counts its records as failed under the error's name; nothing is
//! retried (a benchmark reports what happened). A broken connection fails what was outstanding on
//! it and ends its lane. With acks=0 nothing is answered: the counts are messages written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::ProduceResponse;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use keel_core::batch::BatchBuilder;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::PRODUCE_VERSION;
use keel_node::kafka_client::RESPONSE_BYTES_MAX;
use keel_node::kafka_client::decode_response;
use keel_node::kafka_client::encode_request;
use keel_node::kafka_client::produce_request;
use keel_node::kafka_client::topic_name;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::bench::Errors;
use super::bench::Latencies;
use super::bench::Live;
use super::bench::client_error_name;
use super::bench::code_name;
use super::bench::per_second;
use super::kafka::ADMIN_TIMEOUT_MS;
use super::kafka::Kafka;
use super::kafka::check;
use super::kafka::leader_of;
use super::kafka::partition_ids;
use super::output::Output;
use super::produce::parse_acks;
use super::produce::partition_for_key;

/// Largest `--message-bytes`: below a broker's default `message.max.bytes` (1,048,588).
pub const MESSAGE_BYTES_MAX: u64 = 1_000_000;
/// Largest batch, `--batch-records` × `--message-bytes`, for the same reason.
pub const BATCH_BYTES_MAX: u64 = 1_000_000;
const BATCH_RECORDS_MAX: u64 = 100_000;
const IN_FLIGHT_MAX: u32 = 1024;
const KEYS_MAX: u64 = 1_000_000;
const DURATION_S_MAX: u64 = 86_400;
const MESSAGES_DEFAULT: u64 = 100_000;
/// How long the broker may wait for replicas before it answers (acks=-1).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// How long an answer may take once its request is written.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a new topic's partitions may take to get leaders.
const LEADERS_WAIT: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct BenchProduceArgs {
    #[arg(long)]
    pub topic: String,
    /// Messages to send [default: 100000 unless --duration-s].
    #[arg(long, conflicts_with = "duration_s")]
    pub messages: Option<u64>,
    /// Send for this many seconds instead of a number of messages.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Bytes of each message's value.
    #[arg(long, default_value_t = 100)]
    pub message_bytes: u64,
    /// Distinct keys (key-0, key-1, ...), each in the partition murmur2 picks as `keel produce`
    /// does; 0: no keys, partitions in turn.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// `all` (-1), `1` or `0`.
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    pub acks: String,
    /// Produce requests outstanding per connection (one connection per partition leader).
    #[arg(long, default_value_t = 5)]
    pub in_flight: u32,
    /// Records per batch (one batch per request).
    #[arg(long, default_value_t = 100)]
    pub batch_records: u64,
    /// Partitions of the topic if it must be created [default: the broker's num.partitions];
    /// an existing topic is used as it is.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Target messages per second [default: as fast as they are acknowledged].
    #[arg(long)]
    pub rate: Option<f64>,
}

/// The flags, checked.
struct Plan {
    topic: String,
    messages: Option<u64>,
    duration: Option<Duration>,
    value: Bytes,
    keys: u64,
    acks: i16,
    in_flight: usize,
    batch_records: u64,
    partitions: Option<i32>,
    rate: Option<f64>,
}

fn plan(args: BenchProduceArgs) -> anyhow::Result<Plan> {
    let acks = parse_acks(&args.acks)?;
    if args.message_bytes == 0 || args.message_bytes > MESSAGE_BYTES_MAX {
        bail!("--message-bytes {} is out of range: 1 to {MESSAGE_BYTES_MAX}", args.message_bytes);
    }
    if args.batch_records == 0 || args.batch_records > BATCH_RECORDS_MAX {
        bail!("--batch-records {} is out of range: 1 to {BATCH_RECORDS_MAX}", args.batch_records);
    }
    let batch_bytes = args.batch_records.saturating_mul(args.message_bytes);
    if batch_bytes > BATCH_BYTES_MAX {
        bail!(
            "--batch-records {} × --message-bytes {} is {batch_bytes} bytes per batch, above the {BATCH_BYTES_MAX} a \
             broker takes by default (message.max.bytes); lower --batch-records",
            args.batch_records,
            args.message_bytes
        );
    }
    if args.in_flight == 0 || args.in_flight > IN_FLIGHT_MAX {
        bail!("--in-flight {} is out of range: 1 to {IN_FLIGHT_MAX}", args.in_flight);
    }
    if args.keys > KEYS_MAX {
        bail!("--keys {} is above {KEYS_MAX}", args.keys);
    }
    if args.messages == Some(0) {
        bail!("--messages must be at least 1");
    }
    let duration = match args.duration_s {
        Some(s) if s == 0 || s > DURATION_S_MAX => bail!("--duration-s {s} is out of range: 1 to {DURATION_S_MAX}"),
        Some(s) => Some(Duration::from_secs(s)),
        None => None,
    };
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate {r} must be a positive number of messages per second");
    }
    let partitions = match args.partitions {
        Some(0) => bail!("--partitions must be at least 1"),
        Some(p) => Some(i32::try_from(p).map_err(|_| anyhow::anyhow!("--partitions {p} is too large"))?),
        None => None,
    };
    // The value: printable and the same for every message (no compression is used).
    let value = Bytes::from((0..args.message_bytes).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>());
    Ok(Plan {
        topic: args.topic,
        messages: if duration.is_some() { None } else { Some(args.messages.unwrap_or(MESSAGES_DEFAULT)) },
        duration,
        value,
        keys: args.keys,
        acks,
        in_flight: args.in_flight as usize,
        batch_records: args.batch_records,
        partitions,
        rate: args.rate,
    })
}

/// Messages the lanes take from: a count, a deadline, a pace.
struct Budget {
    claimed: AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
    rate: Option<f64>,
    start: Instant,
}

impl Budget {
    /// Up to `want` messages to send now (after waiting for the pace); 0 when the run is over.
    async fn claim(&self, want: u64) -> u64 {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return 0;
        }
        let mut current = self.claimed.load(Ordering::Relaxed);
        let take = loop {
            if current >= self.limit {
                return 0;
            }
            let take = want.min(self.limit - current);
            match self.claimed.compare_exchange_weak(current, current + take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break take,
                Err(now) => current = now,
            }
        };
        if let Some(rate) = self.rate {
            let at = self.start + Duration::from_secs_f64(current as f64 / rate);
            if self.deadline.is_some_and(|d| at >= d) {
                // Not to be sent: give them back, so they are not counted as failed.
                self.claimed.fetch_sub(take, Ordering::Relaxed);
                return 0;
            }
            tokio::time::sleep_until(at).await;
        }
        take
    }
}

/// Where a lane's batches go: a partition and the keys it holds (none without keys).
struct Route {
    partition: i32,
    keys: Vec<Bytes>,
}

/// The partitions (and keys) each leader gets, by leader address.
fn routes(leaders: &BTreeMap<i32, String>, keys: u64) -> BTreeMap<String, (Vec<Route>, Vec<usize>)> {
    let mut lanes: BTreeMap<String, (Vec<Route>, Vec<usize>)> = BTreeMap::new();
    if keys == 0 {
        for (&partition, addr) in leaders {
            let (routes, picks) = lanes.entry(addr.clone()).or_default();
            picks.push(routes.len());
            routes.push(Route { partition, keys: Vec::new() });
        }
        return lanes;
    }
    let partitions = leaders.len();
    for k in 0..keys {
        let key = Bytes::from(format!("key-{k}"));
        let partition = partition_for_key(&key, partitions);
        let Some(addr) = leaders.get(&partition) else { continue };
        let (routes, picks) = lanes.entry(addr.clone()).or_default();
        let i = match routes.iter().position(|r| r.partition == partition) {
            Some(i) => i,
            None => {
                routes.push(Route { partition, keys: Vec::new() });
                routes.len() - 1
            }
        };
        routes[i].keys.push(key);
        picks.push(i);
    }
    lanes
}

/// What a lane (or its reader) counted.
#[derive(Default)]
struct Tally {
    sent: u64,
    acked: u64,
    failed: u64,
    acked_bytes: u64,
    latencies: Option<Latencies>,
    errors: Errors,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.failed += other.failed;
        self.acked_bytes += other.acked_bytes;
        self.errors.merge(&other.errors);
        if let Some(l) = other.latencies {
            self.latencies.get_or_insert_with(Latencies::new).merge(&l);
        }
    }
}

/// A request written and not yet answered.
struct Pending {
    correlation_id: i32,
    sent_at: Instant,
    partition: i32,
    records: u64,
    bytes: u64,
}

pub async fn run(kafka: &mut Kafka, out: &mut Output, args: BenchProduceArgs) -> anyhow::Result<()> {
    let plan = Arc::new(plan(args)?);
    let leaders = ensure_topic(kafka, &plan.topic, plan.partitions).await?;
    let lanes = routes(&leaders, plan.keys);
    let live = Arc::new(Live::default());
    let bar = super::bench::progress(out.json, plan.messages, plan.duration, live.clone());
    let start = Instant::now();
    let budget = Arc::new(Budget {
        claimed: AtomicU64::new(0),
        limit: plan.messages.unwrap_or(u64::MAX),
        deadline: plan.duration.map(|d| start + d),
        rate: plan.rate,
        start,
    });
    let client_id = kafka.client.client_id().to_string();
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|(addr, (routes, picks))| {
            tokio::spawn(lane(addr, routes, picks, client_id.clone(), plan.clone(), budget.clone(), live.clone()))
        })
        .collect();
    let connections = tasks.len();
    let mut total = Tally::default();
    for t in tasks {
        match t.await {
            Ok(tally) => total.merge(tally),
            Err(e) => bail!("a produce connection's task failed: {e}"),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // Claimed by a lane that could not send them (its connection failed first).
    let unsent = budget.claimed.load(Ordering::Relaxed).min(budget.limit).saturating_sub(total.sent + total.failed);
    total.failed += unsent;
    report(out, &plan, leaders.len(), connections, &total, seconds)?;
    if total.failed > 0 {
        bail!(
            "{} of {} messages were not acknowledged (errors: {})",
            total.failed,
            total.sent + unsent,
            total.errors.text()
        );
    }
    if total.sent == 0 {
        bail!("no message was sent (errors: {})", total.errors.text());
    }
    Ok(())
}

fn report(
    out: &mut Output,
    plan: &Plan,
    partitions: usize,
    connections: usize,
    t: &Tally,
    seconds: f64,
) -> anyhow::Result<()> {
    let latencies = t.latencies.as_ref();
    let done = if plan.acks == 0 { t.sent } else { t.acked };
    let bytes = if plan.acks == 0 { t.sent * plan.value.len() as u64 } else { t.acked_bytes };
    if out.json {
        return out.json_value(&json!({
            "command": "produce",
            "topic": plan.topic,
            "partitions": partitions,
            "connections": connections,
            "message_bytes": plan.value.len(),
            "keys": plan.keys,
            "acks": plan.acks,
            "in_flight": plan.in_flight,
            "batch_records": plan.batch_records,
            "rate": plan.rate,
            "messages_sent": t.sent,
            "messages_acknowledged": if plan.acks == 0 { serde_json::Value::Null } else { json!(t.acked) },
            "messages_failed": t.failed,
            "bytes": bytes,
            "seconds": seconds,
            "msgs_per_s": per_second(done, seconds),
            "mb_per_s": per_second(bytes, seconds) / 1e6,
            "latency": latencies.map_or(serde_json::Value::Null, Latencies::json),
            "histogram": latencies.map_or(serde_json::Value::Array(Vec::new()), Latencies::histogram_json),
            "errors": t.errors.json(),
        }));
    }
    let keys = if plan.keys == 0 { "no keys".to_string() } else { format!("{} keys", plan.keys) };
    out.line(&format!(
        "bench produce: topic {} ({partitions} partitions, {connections} connections), {} B values, {keys}, \
         acks={}, {} records per batch, {} requests in flight per connection{}",
        plan.topic,
        plan.value.len(),
        plan.acks,
        plan.batch_records,
        plan.in_flight,
        plan.rate.map(|r| format!(", rate {r} msg/s")).unwrap_or_default()
    ))?;
    let what = if plan.acks == 0 { "written (acks=0: not acknowledged)" } else { "acknowledged" };
    out.line(&format!("  messages    {done} {what}, {} failed, in {seconds:.2} s", t.failed))?;
    out.line(&format!(
        "  throughput  {:.0} msgs/s, {:.2} MB/s",
        per_second(done, seconds),
        per_second(bytes, seconds) / 1e6
    ))?;
    match latencies {
        Some(l) if plan.acks != 0 => {
            out.line(&format!("  latency     {} ({} requests, send to acknowledgement)", l.summary(), l.count()))?
        }
        _ => out.line("  latency     none measured (acks=0: no answers)")?,
    }
    out.line(&format!("  errors      {}", t.errors.text()))?;
    if let Some(l) = latencies.filter(|l| l.count() > 0) {
        out.line("")?;
        out.line("  produce latency per request")?;
        for line in l.histogram_lines() {
            out.line(&line)?;
        }
    }
    Ok(())
}

/// The topic's partition leaders (partition → Kafka address), creating the topic first when it
/// does not exist, and waiting for every partition to have a leader.
async fn ensure_topic(
    kafka: &mut Kafka,
    topic: &str,
    partitions: Option<i32>,
) -> anyhow::Result<BTreeMap<i32, String>> {
    let md = kafka.metadata(Some(&[topic.to_string()])).await?;
    let known = md.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic));
    match known.map(|t| t.error_code) {
        Some(0) => {
            if let Some(p) = partitions
                && known.is_some_and(|t| t.partitions.len() != p as usize)
            {
                eprintln!(
                    "keel: topic {topic} exists with {} partitions; --partitions {p} is not applied",
                    known.map_or(0, |t| t.partitions.len())
                );
            }
        }
        Some(3) | None => {
            let request = CreateTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS).with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(topic))
                    .with_num_partitions(partitions.unwrap_or(-1))
                    .with_replication_factor(-1),
            ]);
            let answer = kafka.any(super::topic::CREATE_TOPICS_VERSION, &request).await?;
            let r = answer.topics.first().ok_or_else(|| anyhow::anyhow!("the broker's answer names no topic"))?;
            // TOPIC_ALREADY_EXISTS: created meanwhile by someone else; use it.
            if r.error_code != 36 {
                check(r.error_code, &format!("creating topic '{topic}'"), r.error_message.as_ref())?;
            }
        }
        // LEADER_NOT_AVAILABLE: just created; wait below.
        Some(5) => {}
        Some(code) => check(code, &format!("topic '{topic}'"), None)?,
    }
    let waited = Instant::now();
    loop {
        let md = kafka.metadata(Some(&[topic.to_string()])).await?;
        let t = md.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic));
        let (ids, leaders) = match t {
            Some(t) if t.error_code == 0 => {
                let ids = partition_ids(t);
                let leaders: BTreeMap<i32, String> =
                    ids.iter().filter_map(|&p| leader_of(&md, t, p).map(|(_, _, addr)| (p, addr))).collect();
                (ids, leaders)
            }
            // Still being created (UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE) on the broker asked.
            Some(t) if t.error_code == 3 || t.error_code == 5 => (Vec::new(), BTreeMap::new()),
            Some(t) => {
                check(t.error_code, &format!("topic '{topic}'"), None)?;
                (Vec::new(), BTreeMap::new())
            }
            None => (Vec::new(), BTreeMap::new()),
        };
        if !ids.is_empty() && leaders.len() == ids.len() {
            return Ok(leaders);
        }
        if waited.elapsed() > LEADERS_WAIT {
            bail!(
                "topic '{topic}': {} of {} partitions have a leader after {} s",
                leaders.len(),
                ids.len(),
                LEADERS_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One connection to a leader: writes batches to its partitions with up to `in_flight` requests
/// outstanding; a reader task takes the answers.
async fn lane(
    addr: String,
    routes: Vec<Route>,
    picks: Vec<usize>,
    client_id: String,
    plan: Arc<Plan>,
    budget: Arc<Budget>,
    live: Arc<Live>,
) -> Tally {
    let mut tally = Tally::default();
    let mut client = KafkaClient::new(client_id.clone(), vec![addr.clone()], 0);
    let stream = match client.connect(&addr).await.map(|()| client.take_connection(&addr)) {
        Ok(Some(s)) => s,
        Ok(None) => return tally,
        Err(e) => {
            tally.errors.add(client_error_name(&e), 1);
            return tally;
        }
    };
    let (reader, mut writer) = tokio::io::split(stream);
    let permits = Arc::new(Semaphore::new(plan.in_flight));
    let (pending_tx, pending_rx) = mpsc::unbounded_channel::<Pending>();
    let answers = (plan.acks != 0)
        .then(|| tokio::spawn(read_answers(reader, pending_rx, permits.clone(), plan.topic.clone(), live.clone())));
    let mut cursors = vec![0usize; routes.len()];
    let mut correlation_id = 0i32;
    for pick in picks.iter().cycle() {
        let n = budget.claim(plan.batch_records).await;
        if n == 0 {
            break;
        }
        let route = &routes[*pick];
        let now = keel_node::clock::wall_clock_ms();
        let mut builder = BatchBuilder::new(now);
        let mut bytes = 0u64;
        for _ in 0..n {
            let key = if route.keys.is_empty() {
                None
            } else {
                let k = &route.keys[cursors[*pick] % route.keys.len()];
                cursors[*pick] += 1;
                Some(&k[..])
            };
            bytes += (plan.value.len() + key.map_or(0, <[u8]>::len)) as u64;
            builder.push(now, key, Some(&plan.value));
        }
        if plan.acks != 0 {
            match permits.clone().acquire_owned().await {
                Ok(permit) => permit.forget(),
                Err(_) => {
                    // The reader stopped: the connection is gone.
                    tally.failed += n;
                    break;
                }
            }
        }
        correlation_id = correlation_id.wrapping_add(1);
        let request =
            produce_request(&plan.topic, route.partition, Bytes::from(builder.build()), plan.acks, PRODUCE_TIMEOUT_MS);
        let frame = match encode_request(ApiKey::Produce, PRODUCE_VERSION, correlation_id, &client_id, &request) {
            Ok(f) => f,
            Err(e) => {
                tally.errors.add(client_error_name(&e), 1);
                tally.failed += n;
                break;
            }
        };
        let sent_at = Instant::now();
        if !matches!(tokio::time::timeout(ANSWER_TIMEOUT, writer.write_all(&frame)).await, Ok(Ok(()))) {
            tally.errors.add("CONNECTION", 1);
            tally.failed += n;
            break;
        }
        tally.sent += n;
        if plan.acks == 0 {
            live.messages.fetch_add(n, Ordering::Relaxed);
            live.bytes.fetch_add(bytes, Ordering::Relaxed);
            continue;
        }
        let pending = Pending { correlation_id, sent_at, partition: route.partition, records: n, bytes };
        if pending_tx.send(pending).is_err() {
            tally.failed += n;
            break;
        }
    }
    drop(pending_tx);
    if plan.acks == 0 {
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
    }
    if let Some(task) = answers {
        match task.await {
            Ok(answered) => tally.merge(answered),
            Err(_) => tally.errors.add("READER_FAILED", 1),
        }
    }
    tally
}

/// Reads the answers to `pending`'s requests, in order.
async fn read_answers(
    mut reader: tokio::io::ReadHalf<TcpStream>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    permits: Arc<Semaphore>,
    topic: String,
    live: Arc<Live>,
) -> Tally {
    let mut tally = Tally { latencies: Some(Latencies::new()), ..Tally::default() };
    let mut broken = false;
    while let Some(p) = pending.recv().await {
        if broken {
            tally.failed += p.records;
            continue;
        }
        let frame = match tokio::time::timeout(ANSWER_TIMEOUT, read_frame(&mut reader)).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(_)) | Err(_) => {
                tally.errors.add("CONNECTION", 1);
                tally.failed += p.records;
                broken = true;
                permits.close();
                continue;
            }
        };
        let took = p.sent_at.elapsed();
        let answer = decode_response::<ProduceResponse>(ApiKey::Produce, PRODUCE_VERSION, p.correlation_id, frame);
        let code = match &answer {
            Ok(a) => a
                .responses
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| &t.partition_responses)
                .find(|r| r.index == p.partition)
                .map(|r| r.error_code),
            Err(_) => None,
        };
        match code {
            Some(0) => {
                tally.acked += p.records;
                tally.acked_bytes += p.bytes;
                if let Some(l) = tally.latencies.as_mut() {
                    l.record(took);
                }
                live.messages.fetch_add(p.records, Ordering::Relaxed);
                live.bytes.fetch_add(p.bytes, Ordering::Relaxed);
            }
            Some(code) => {
                tally.errors.add(&code_name(code), 1);
                tally.failed += p.records;
            }
            None => {
                // Answers no longer line up with requests: stop using the connection.
                tally.errors.add("BAD_ANSWER", 1);
                tally.failed += p.records;
                broken = true;
                permits.close();
                continue;
            }
        }
        permits.add_permits(1);
    }
    tally
}

/// One response frame (without its size prefix).
async fn read_frame(reader: &mut tokio::io::ReadHalf<TcpStream>) -> std::io::Result<Bytes> {
    let size = reader.read_i32().await?;
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= RESPONSE_BYTES_MAX)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("response size {size}")))?;
    let mut frame = vec![0u8; size];
    reader.read_exact(&mut frame).await?;
    Ok(Bytes::from(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BenchProduceArgs {
        BenchProduceArgs {
            topic: "t".into(),
            messages: None,
            duration_s: None,
            message_bytes: 100,
            keys: 0,
            acks: "all".into(),
            in_flight: 5,
            batch_records: 100,
            partitions: None,
            rate: None,
        }
    }

    #[test]
    fn flags_out_of_range_are_refused_with_the_flag_named() {
        let bad = [
            BenchProduceArgs { message_bytes: 0, ..args() },
            BenchProduceArgs { message_bytes: 10_000_000_000, ..args() },
            BenchProduceArgs { batch_records: 0, ..args() },
            BenchProduceArgs { message_bytes: 100_000, ..args() },
            BenchProduceArgs { in_flight: 0, ..args() },
            BenchProduceArgs { messages: Some(0), ..args() },
            BenchProduceArgs { duration_s: Some(0), ..args() },
            BenchProduceArgs { rate: Some(f64::NAN), ..args() },
            BenchProduceArgs { acks: "2".into(), ..args() },
            BenchProduceArgs { partitions: Some(0), ..args() },
        ];
        for a in bad {
            let e = plan(a).err().expect("refused").to_string();
            assert!(e.contains("--"), "{e}");
        }
        let p = plan(args()).unwrap();
        assert_eq!((p.messages, p.value.len(), p.acks), (Some(MESSAGES_DEFAULT), 100, -1));
        let timed = plan(BenchProduceArgs { duration_s: Some(5), ..args() }).unwrap();
        assert_eq!((timed.messages, timed.duration), (None, Some(Duration::from_secs(5))));
    }

    #[test]
    fn keyed_routes_follow_the_default_partitioner_and_cover_every_key() {
        let leaders: BTreeMap<i32, String> = (0..6).map(|p| (p, format!("b{}", p % 2))).collect();
        let lanes = routes(&leaders, 50);
        let mut keys = 0;
        for (addr, (routes, picks)) in &lanes {
            for r in routes {
                assert_eq!(&leaders[&r.partition], addr);
                for k in &r.keys {
                    assert_eq!(partition_for_key(k, 6), r.partition);
                }
                keys += r.keys.len();
                // A partition is picked once per key it holds.
                let i = routes.iter().position(|x| x.partition == r.partition).unwrap();
                assert_eq!(picks.iter().filter(|&&x| x == i).count(), r.keys.len());
            }
        }
        assert_eq!(keys, 50);
        let unkeyed = routes(&leaders, 0);
        assert_eq!(unkeyed.len(), 2);
        assert!(unkeyed.values().all(|(r, picks)| r.len() == 3 && picks == &vec![0, 1, 2]));
    }

    #[tokio::test]
    async fn the_budget_hands_out_exactly_the_messages_asked_for() {
        let b = Budget { claimed: AtomicU64::new(0), limit: 250, deadline: None, rate: None, start: Instant::now() };
        let mut got = Vec::new();
        loop {
            let n = b.claim(100).await;
            if n == 0 {
                break;
            }
            got.push(n);
        }
        assert_eq!(got, vec![100, 100, 50]);
    }
}
