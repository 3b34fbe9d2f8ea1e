//! The HTTP port of an in-process 3-node cluster (tokio, real files): after records are produced
//! and fetched through Kafka, `GET /metrics` of every node parses as Prometheus text format 0.0.4
//! (with the `prometheus-parse` crate) and its families carry sane values — request counts grew,
//! every partition's term is at least 1, exactly one node claims each partition's leadership, the
//! fsync histogram counted fsyncs, the leader's high watermark is what was acknowledged, a
//! group's lag is its coordinator's high watermark minus its committed offset;
//! once a node stops, the partitions it replicated count as under-replicated on their leaders;
//! `/status.json` describes the same cluster; other paths, methods and garbage get 404, 405 and
//! 400 without hurting the node (docs/observability.md).
#![cfg(not(madsim))]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::messages::GroupId;
use kafka_protocol::messages::OffsetCommitRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::protocol::StrBytes;
use keel_core::batch;
use keel_node::kafka::BrokerConfig;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::topic_name;
use prometheus_parse::Scrape;
use prometheus_parse::Value;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

use support::Cluster;
use support::Options;

const CLUSTER: &str = "keel-metrics";
const TOPIC: &str = "metered";
const PARTITIONS: i32 = 2;
const BATCHES_PER_PARTITION: u64 = 5;
const RECORDS_PER_BATCH: u64 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);
/// A group that commits offset [`GROUP_COMMITTED`] of partition 0 (a simple, memberless commit).
const GROUP: &str = "metered-readers";
const GROUP_COMMITTED: i64 = 5;

async fn start_cluster() -> Cluster {
    // Kafka's defaults, topics created on first use included.
    Cluster::start(Options { broker: BrokerConfig::default(), ..Options::new(CLUSTER) }).await
}

/// One raw HTTP exchange: (status code, headers, body).
async fn http(addr: &str, request: &[u8]) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect http");
    stream.write_all(request).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw)).await.expect("answer in time").expect("read");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|l| l.parse().ok())
        .expect("Content-Length");
    assert_eq!(length, body.len(), "Content-Length names the body's length");
    (status, head.to_string(), body.to_string())
}

async fn get(addr: &str, path: &str) -> (u16, String, String) {
    http(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await
}

/// `GET /metrics` of one node, parsed.
async fn scrape(addr: &str) -> Scrape {
    let (status, head, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The value of the sample `metric` with `labels` (all of them, none missing) in `s`.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples.iter().find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))).map(|x| {
        match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => f64::NAN,
        }
    })
}

fn counter(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let v = value(s, metric, labels).unwrap_or(0.0);
    if let Some(sample) = s.samples.iter().find(|x| x.metric == metric) {
        assert!(matches!(sample.value, Value::Counter(_)), "{metric} is typed counter: {sample:?}");
    }
    v
}

/// Creates the topic through any broker once all three nodes registered.
async fn create_topic(client: &mut KafkaClient) {
    for _ in 0..200 {
        let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name(TOPIC))
                .with_num_partitions(PARTITIONS)
                .with_replication_factor(3),
        ]);
        if let Ok((_, answer)) = client.request_any(5, &request, TIMEOUT).await
            && answer.topics.iter().all(|t| t.error_code == 0 || t.error_code == 36)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {TOPIC} never created");
}

/// Commits [`GROUP_COMMITTED`] for partition 0 in [`GROUP`] at its coordinator.
async fn commit_group_offset(client: &mut KafkaClient) {
    for _ in 0..200 {
        let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str(GROUP));
        let coordinator = match client.request_any(3, &find, TIMEOUT).await {
            Ok((_, r)) if r.error_code == 0 => format!("{}:{}", r.host, r.port),
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic_name(TOPIC)).with_partitions(vec![
                OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(GROUP_COMMITTED),
            ])]);
        if let Ok(r) = client.request_to(&coordinator, 8, &commit, TIMEOUT).await
            && r.topics.iter().flat_map(|t| &t.partitions).all(|p| p.error_code == 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the offset commit of {GROUP} never succeeded");
}

/// Produces every batch of `partition` to its leader (asking again after a leadership change).
async fn produce_all(client: &mut KafkaClient, partition: i32) {
    let mut acknowledged = 0;
    for _ in 0..300 {
        if acknowledged == BATCHES_PER_PARTITION {
            return;
        }
        let Ok(Some(leader)) = client.leader(TOPIC, partition, TIMEOUT).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut b = batch::BatchBuilder::new(1_700_000_000_000);
        for r in 0..RECORDS_PER_BATCH {
            b.push(
                1_700_000_000_000 + r as i64,
                Some(b"k"),
                Some(format!("p{partition}-{acknowledged}-{r}").as_bytes()),
            );
        }
        match client.produce(&leader.addr, TOPIC, partition, Bytes::from(b.build()), 5000, TIMEOUT).await {
            Ok(answer) if answer.error_code == 0 => acknowledged += 1,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("partition {partition}: only {acknowledged} batches acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_parse_as_prometheus_text_and_track_the_cluster() {
    let c = start_cluster().await;
    let mut client = KafkaClient::new("metrics-test", c.kafka.values().cloned().collect(), 0);
    create_topic(&mut client).await;

    let before: BTreeMap<u64, Scrape> = {
        let mut m = BTreeMap::new();
        for (id, addr) in &c.http {
            m.insert(*id, scrape(addr).await);
        }
        m
    };
    let produce_before: f64 =
        before.values().map(|s| counter(s, "keel_kafka_requests_total", &[("api", "Produce")])).sum();

    for p in 0..PARTITIONS {
        produce_all(&mut client, p).await;
    }
    let leader0 = client.leader(TOPIC, 0, TIMEOUT).await.expect("metadata").expect("a leader");
    let fetched = client.fetch(&leader0.addr, TOPIC, 0, 0, -1, 1 << 20, 0, TIMEOUT).await.expect("fetch");
    assert_eq!(fetched.error_code, 0, "fetch: {fetched:?}");
    commit_group_offset(&mut client).await;

    // Leadership may still move (preferred leaders): retry until one scrape round is settled.
    let total_records = (PARTITIONS as u64 * BATCHES_PER_PARTITION * RECORDS_PER_BATCH) as f64;
    let mut last_problem = String::new();
    for _ in 0..100 {
        let mut scrapes = BTreeMap::new();
        for (id, addr) in &c.http {
            scrapes.insert(*id, scrape(addr).await);
        }
        match check_round(&scrapes, produce_before, total_records) {
            Ok(()) => {
                check_status_json_and_errors(&c).await;
                check_under_replicated_after_a_node_stops(&c).await;
                return;
            }
            Err(problem) => last_problem = problem,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the metrics never settled: {last_problem}");
}

/// Checks one scrape of every node; `Err` names what is not (yet) as expected.
fn check_round(scrapes: &BTreeMap<u64, Scrape>, produce_before: f64, total_records: f64) -> Result<(), String> {
    let sum =
        |metric: &str, labels: &[(&str, &str)]| -> f64 { scrapes.values().map(|s| counter(s, metric, labels)).sum() };
    let produce_now = sum("keel_kafka_requests_total", &[("api", "Produce")]);
    let wanted_produces = produce_before + (PARTITIONS as u64 * BATCHES_PER_PARTITION) as f64;
    assert!(produce_now >= wanted_produces, "Produce requests counted: {produce_now} < {wanted_produces}");
    assert!(sum("keel_kafka_requests_total", &[("api", "Metadata")]) >= 1.0, "Metadata requests counted");
    assert!(sum("keel_kafka_request_bytes_total", &[("api", "Produce")]) > 0.0, "request bytes counted");
    assert!(sum("keel_kafka_response_bytes_total", &[("api", "Produce")]) > 0.0, "response bytes counted");
    assert!(sum("keel_produce_records_total", &[]) >= total_records, "every acknowledged record counted");
    assert!(sum("keel_produce_bytes_total", &[]) > 0.0, "produced bytes counted");
    assert!(sum("keel_fetch_bytes_total", &[]) > 0.0, "fetched bytes counted");
    for (id, s) in scrapes {
        let latency = s
            .samples
            .iter()
            .find(|x| x.metric == "keel_kafka_request_duration_seconds" && x.labels.get("api") == Some("Metadata"))
            .ok_or(format!("node {id}: no Metadata latency histogram"))?;
        assert!(matches!(latency.value, Value::Histogram(_)), "latency is a histogram");
        let fsyncs = value(s, "keel_log_fsync_duration_seconds_count", &[]).unwrap_or(0.0);
        assert!(fsyncs > 0.0, "node {id}: the fsync histogram counted no fsync");
        for p in 0..PARTITIONS {
            let partition = p.to_string();
            let labels = [("topic", TOPIC), ("partition", partition.as_str())];
            let term = value(s, "keel_partition_raft_term", &labels).ok_or(format!("node {id}: no term of {p}"))?;
            assert!(term >= 1.0, "node {id} partition {p}: term {term}");
        }
    }
    for p in 0..PARTITIONS {
        let partition = p.to_string();
        let labels = [("topic", TOPIC), ("partition", partition.as_str())];
        let leaders: Vec<u64> = scrapes
            .iter()
            .filter(|(_, s)| value(s, "keel_partition_leader", &labels) == Some(1.0))
            .map(|(id, _)| *id)
            .collect();
        if leaders.len() != 1 {
            return Err(format!("partition {p}: leaders claimed by {leaders:?}"));
        }
        let s = &scrapes[&leaders[0]];
        let hw = value(s, "keel_partition_high_watermark_offset", &labels).unwrap_or(-1.0);
        let end = value(s, "keel_partition_log_end_offset", &labels).unwrap_or(-1.0);
        let start = value(s, "keel_partition_log_start_offset", &labels).unwrap_or(-1.0);
        let wanted = (BATCHES_PER_PARTITION * RECORDS_PER_BATCH) as f64;
        assert!(hw >= wanted, "partition {p}: high watermark {hw} below the {wanted} acknowledged records");
        assert!(start <= hw && hw <= end, "partition {p}: not log start {start} <= hw {hw} <= log end {end}");
        let commit = value(s, "keel_partition_commit_index", &labels).unwrap_or(-1.0);
        let applied = value(s, "keel_partition_applied_index", &labels).unwrap_or(-1.0);
        let last = value(s, "keel_partition_last_log_index", &labels).unwrap_or(-1.0);
        assert!(applied <= commit && commit <= last, "partition {p}: applied {applied} commit {commit} last {last}");
    }
    // The group's lag is reported by its coordinator alone: its high watermark of partition 0
    // minus the committed offset.
    let lags: Vec<(u64, f64)> = scrapes
        .iter()
        .filter_map(|(id, s)| Some((*id, value(s, "keel_consumer_group_lag_records", &[("group", GROUP)])?)))
        .collect();
    let [(coordinator, lag)] = lags[..] else { return Err(format!("group lag reported by {lags:?}")) };
    let hw0 =
        value(&scrapes[&coordinator], "keel_partition_high_watermark_offset", &[("topic", TOPIC), ("partition", "0")]);
    if Some(lag) != hw0.map(|hw| hw - GROUP_COMMITTED as f64) {
        return Err(format!("group lag {lag} on node {coordinator}, its high watermark of partition 0 {hw0:?}"));
    }
    assert!(lag >= (BATCHES_PER_PARTITION * RECORDS_PER_BATCH) as f64 - GROUP_COMMITTED as f64, "group lag {lag}");
    for (id, s) in scrapes {
        let under = value(s, "keel_under_replicated_partitions", &[]).ok_or("no under-replicated gauge")?;
        if under != 0.0 {
            return Err(format!("node {id}: {under} under-replicated partitions with every node up"));
        }
        let live = value(s, "keel_nodes_live", &[]).unwrap_or(0.0);
        if live != 3.0 {
            return Err(format!("node {id}: {live} nodes live"));
        }
    }
    Ok(())
}

/// `/status.json` names the nodes and the topic's partitions; other paths, other methods and
/// garbage are refused without stopping the listener.
async fn check_status_json_and_errors(c: &Cluster) {
    let addr = &c.http[&1];
    let (status, _, body) = get(addr, "/status.json").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("status.json is JSON");
    let nodes: Vec<u64> = json["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["id"].as_u64()).collect();
    assert_eq!(nodes, vec![1, 2, 3]);
    let partitions = json["partitions"].as_array().expect("partitions");
    let ours: Vec<&serde_json::Value> = partitions.iter().filter(|p| p["topic"] == TOPIC).collect();
    assert_eq!(ours.len(), PARTITIONS as usize, "{ours:?}");
    assert!(ours.iter().all(|p| p["leader"].as_u64().is_some() && p["local"]["high_watermark"].as_u64().is_some()));

    let (status, _, page) = get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("/status.json"), "the page polls /status.json");
    assert_eq!(get(addr, "/nope").await.0, 404);
    let (status, head, _) = http(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");
    assert_eq!(http(addr, b"\x16\x03\x01\x00\xff garbage\r\n\r\n").await.0, 400);
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(16 * 1024));
    assert_eq!(http(addr, huge.as_bytes()).await.0, 431);
    // A connection that sends half a head and goes away is dropped quietly.
    let mut half = tokio::net::TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /metr").await.expect("write");
    drop(half);
    assert_eq!(get(addr, "/metrics").await.0, 200, "the listener still serves");
}

/// With node 3 stopped, every partition of the topic (replicated on all three nodes) is
/// under-replicated, counted once, by its leader among the two left; each sees 2 nodes live.
async fn check_under_replicated_after_a_node_stops(c: &Cluster) {
    c.nodes[&3].shutdown().await;
    let mut last = String::new();
    for _ in 0..100 {
        let mut under = 0.0;
        let mut live = Vec::new();
        let mut led = 0.0;
        for id in [1, 2] {
            let s = scrape(&c.http[&id]).await;
            under += value(&s, "keel_under_replicated_partitions", &[]).unwrap_or(0.0);
            live.push(value(&s, "keel_nodes_live", &[]).unwrap_or(0.0));
            for p in 0..PARTITIONS {
                let partition = p.to_string();
                led += value(&s, "keel_partition_leader", &[("topic", TOPIC), ("partition", partition.as_str())])
                    .unwrap_or(0.0);
            }
        }
        // Every hosted partition has node 3 as a voter: all of those led by nodes 1 and 2 count.
        if live == [2.0, 2.0] && led == PARTITIONS as f64 && under >= PARTITIONS as f64 {
            return;
        }
        last = format!("live {live:?}, topic partitions led by nodes 1 and 2: {led}, under-replicated: {under}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("node 3 stopped, but: {last}");
}
