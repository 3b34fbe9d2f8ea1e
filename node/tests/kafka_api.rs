//! The Kafka listener of an in-process 3-node cluster (tokio, real files), driven with requests
//! encoded by the `kafka-protocol` crate's client side: every API Keel serves, its errors, the
//! long poll, acks=0/1/-1, and malformed frames — each answered with its Kafka error or a
//! closed connection, while acknowledged data stays intact.
#![cfg(not(madsim))]

mod support;

use std::time::Duration;
use std::time::Instant;

use bytes::Buf;
use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::ApiVersionsRequest;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::CreatePartitionsRequest;
use kafka_protocol::messages::CreatePartitionsResponse;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::CreateTopicsResponse;
use kafka_protocol::messages::DeleteTopicsRequest;
use kafka_protocol::messages::DeleteTopicsResponse;
use kafka_protocol::messages::DescribeClusterRequest;
use kafka_protocol::messages::DescribeClusterResponse;
use kafka_protocol::messages::DescribeConfigsRequest;
use kafka_protocol::messages::DescribeConfigsResponse;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::messages::IncrementalAlterConfigsResponse;
use kafka_protocol::messages::InitProducerIdRequest;
use kafka_protocol::messages::InitProducerIdResponse;
use kafka_protocol::messages::ListOffsetsRequest;
use kafka_protocol::messages::ListOffsetsResponse;
use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::messages::MetadataResponse;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::ProduceResponse;
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::TransactionalId;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_request::ListOffsetsTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::protocol::Decodable;
use kafka_protocol::protocol::Encodable;
use kafka_protocol::protocol::StrBytes;
use keel_core::batch;
use openraft_rt::WatchReceiver;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::Cluster;
use support::Options;

const CLUSTER: &str = "keel-kafka-api";
/// `message.max.bytes` of the test brokers: small, so MESSAGE_TOO_LARGE is cheap to provoke.
const MESSAGE_MAX: usize = 4096;

// Kafka error codes the test expects.
const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC: i16 = 17;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_VERSION: i16 = 35;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const INVALID_RECORD: i16 = 87;

async fn start_cluster() -> Cluster {
    let mut options = Options::new(CLUSTER);
    options.broker.message_max_bytes = MESSAGE_MAX;
    Cluster::start(options).await
}

/// Waits until all three nodes have registered: Metadata lists them, and a topic of
/// replication factor 3 can be placed (Metadata lists the answering node even before its own
/// registration commits, so the listing alone is not enough).
async fn wait_for_brokers(conn: &mut Conn) {
    for _ in 0..200 {
        let md: MetadataResponse =
            conn.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(Vec::new()))).await;
        if md.brokers.len() == 3 && create_topic(conn, "registered-probe", 1, 3, true).await == NONE {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the nodes never all registered");
}

/// One client connection; requests one at a time unless `send` is used directly.
struct Conn {
    stream: TcpStream,
    next_id: i32,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        Conn { stream: TcpStream::connect(addr).await.expect("connect"), next_id: 1 }
    }

    /// Sends one request; returns its correlation id.
    async fn send<R: Encodable>(&mut self, api: ApiKey, version: i16, body: &R) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("kafka-api-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, api.request_header_version(version)).expect("encode header");
        body.encode(&mut buf, version).expect("encode body");
        let n = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&n.to_be_bytes());
        self.stream.write_all(&buf).await.expect("write");
        id
    }

    /// Reads one response frame; None when the connection closed.
    async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.ok()?;
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame).await.ok()?;
        Some(Bytes::from(frame))
    }

    async fn receive<T: Decodable>(&mut self, api: ApiKey, version: i16, id: i32) -> T {
        let mut frame = tokio::time::timeout(Duration::from_secs(30), self.read_frame())
            .await
            .expect("answer within 30 s")
            .expect("connection open");
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).expect("response header");
        assert_eq!(header.correlation_id, id, "answers come in request order");
        T::decode(&mut frame, version).expect("response body")
    }

    async fn call<R: Encodable, T: Decodable>(&mut self, api: ApiKey, version: i16, body: &R) -> T {
        let id = self.send(api, version, body).await;
        self.receive(api, version, id).await
    }

    /// Whether the server closed the connection (no answer within 5 s counts as open).
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn record_batch(values: &[&str], ts: i64) -> Bytes {
    let mut b = batch::BatchBuilder::new(ts);
    for (i, v) in values.iter().enumerate() {
        b.push(ts + i as i64, Some(b"key"), Some(v.as_bytes()));
    }
    Bytes::from(b.build())
}

fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ])
}

fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default().with_max_wait_ms(max_wait_ms).with_min_bytes(1).with_topics(vec![
        FetchTopic::default().with_topic(name(topic)).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ]),
    ])
}

/// Data record values of a fetch answer's `records` bytes (several batches, control skipped).
fn values_of(mut records: Bytes) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    while records.remaining() >= batch::HEADER_BYTES {
        let h = batch::BatchHeader::parse(&records).expect("batch header");
        let one = records.split_to(h.total_bytes);
        if h.is_control() {
            continue;
        }
        for r in batch::records(&one).expect("records") {
            let v = String::from_utf8(r.value.expect("value").to_vec()).expect("utf8");
            out.push((h.base_offset + i64::from(r.offset_delta), v));
        }
    }
    out
}

/// The (leader, a follower) of `topic`/`partition`, once Metadata names a leader.
async fn leader_of(conn: &mut Conn, topic: &str, partition: i32) -> (u64, u64) {
    for _ in 0..200 {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(topic)))]));
        let md: MetadataResponse = conn.call(ApiKey::Metadata, 12, &req).await;
        if let Some(p) = md.topics.first().and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
            && p.error_code == NONE
            && p.leader_id.0 > 0
        {
            let leader = p.leader_id.0 as u64;
            let follower = p.replica_nodes.iter().map(|b| b.0 as u64).find(|n| *n != leader).expect("a follower");
            return (leader, follower);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader for {topic}/{partition}");
}

/// Produces `records` (acks=all) to the leader of `topic`-`partition` as Metadata names it,
/// asking again while leadership is still moving (a new partition's first leader may hand over
/// to its preferred one). Answers the leader, a connection to it and the batch's offset.
async fn produce_at_leader(
    cluster: &Cluster,
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> (u64, Conn, i64) {
    for _ in 0..100 {
        let (leader, _) = leader_of(conn, topic, partition).await;
        let mut p = Conn::open(&cluster.kafka[&leader]).await;
        match produce_one(&mut p, topic, partition, -1, records.clone()).await {
            (NONE, offset) => return (leader, p, offset),
            (NOT_LEADER_OR_FOLLOWER, _) => tokio::time::sleep(Duration::from_millis(100)).await,
            (code, _) => panic!("produce to {topic}-{partition} refused with {code}"),
        }
    }
    panic!("leadership of {topic}-{partition} never settled");
}

async fn create_topic(conn: &mut Conn, topic: &str, partitions: i32, rf: i16, validate_only: bool) -> i16 {
    let req =
        CreateTopicsRequest::default().with_timeout_ms(30_000).with_validate_only(validate_only).with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(rf),
        ]);
    let resp: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &req).await;
    resp.topics[0].error_code
}

async fn produce_one(conn: &mut Conn, topic: &str, partition: i32, acks: i16, records: Bytes) -> (i16, i64) {
    let resp: ProduceResponse = conn.call(ApiKey::Produce, 9, &produce_request(topic, partition, acks, records)).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_answers_with_kafka_semantics() {
    let cluster = start_cluster().await;
    let any = cluster.kafka[&1].clone();
    let mut c = Conn::open(&any).await;
    wait_for_brokers(&mut c).await;

    // ApiVersions: the table; an unknown version gets a v0 answer with UNSUPPORTED_VERSION.
    let av: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    assert_eq!(av.error_code, NONE);
    let produce = av.api_keys.iter().find(|k| k.api_key == ApiKey::Produce as i16).expect("Produce listed");
    assert_eq!((produce.min_version, produce.max_version), (3, 12));
    let join = av.api_keys.iter().find(|k| k.api_key == ApiKey::JoinGroup as i16).expect("JoinGroup listed");
    assert_eq!((join.min_version, join.max_version), (0, 9));
    // (Written by hand: the codec cannot encode a version it does not know.)
    let mut unknown = Vec::new();
    unknown.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    unknown.extend_from_slice(&99i16.to_be_bytes());
    unknown.extend_from_slice(&4242i32.to_be_bytes());
    unknown.extend_from_slice(&(-1i16).to_be_bytes());
    unknown.extend_from_slice(&[0, 0, 0]);
    c.stream.write_all(&[&(unknown.len() as i32).to_be_bytes()[..], &unknown].concat()).await.expect("write");
    let mut frame = c.read_frame().await.expect("answered");
    assert_eq!(ResponseHeader::decode(&mut frame, 0).expect("header v0").correlation_id, 4242);
    let v0 = ApiVersionsResponse::decode(&mut frame, 0).expect("v0 body");
    assert_eq!(v0.error_code, UNSUPPORTED_VERSION);
    assert!(v0.api_keys.iter().any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 4));

    // CreateTopics and its refusals; validate_only creates nothing.
    assert_eq!(create_topic(&mut c, "orders", 2, 3, false).await, NONE);
    assert_eq!(create_topic(&mut c, "orders", 2, 3, false).await, TOPIC_ALREADY_EXISTS);
    assert_eq!(create_topic(&mut c, "dry", 2, 3, true).await, NONE);
    assert_eq!(create_topic(&mut c, "wide", 2, 5, false).await, INVALID_REPLICATION_FACTOR);
    assert_eq!(create_topic(&mut c, "bad/name", 1, 3, false).await, INVALID_TOPIC);
    assert_eq!(create_topic(&mut c, "none", 0, 3, false).await, INVALID_PARTITIONS);
    let md: MetadataResponse = c.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None)).await;
    let names: Vec<&str> = md.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.as_str())).collect();
    assert_eq!(names, vec!["orders"], "validate_only and refused creations left nothing");
    assert_eq!(md.brokers.len(), 3);
    assert_eq!(md.cluster_id.as_ref().map(|s| s.as_str()), Some(CLUSTER));
    let port_of =
        |n: u64| cluster.kafka[&n].rsplit_once(':').map(|(_, p)| p.parse::<i32>().expect("port")).expect("port");
    for b in &md.brokers {
        assert_eq!(b.port, port_of(b.node_id.0 as u64), "brokers advertise their Kafka addresses");
    }

    let (leader, follower) = leader_of(&mut c, "orders", 0).await;
    let mut to_leader = Conn::open(&cluster.kafka[&leader]).await;
    let mut to_follower = Conn::open(&cluster.kafka[&follower]).await;

    // Produce: acks=-1 and acks=1 answer with offsets; acks=0 answers nothing.
    let (code, first) = produce_one(&mut to_leader, "orders", 0, -1, record_batch(&["a", "b"], 1_000)).await;
    assert_eq!(code, NONE);
    let (code, second) = produce_one(&mut to_leader, "orders", 0, 1, record_batch(&["c"], 2_000)).await;
    assert_eq!((code, second), (NONE, first + 2), "offsets are dense per record");
    let silent =
        to_leader.send(ApiKey::Produce, 9, &produce_request("orders", 0, 0, record_batch(&["d"], 3_000))).await;
    let md_id = to_leader.send(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(Vec::new()))).await;
    assert_eq!(md_id, silent + 1);
    let _: MetadataResponse = to_leader.receive(ApiKey::Metadata, 12, md_id).await;

    // Pipelined requests on one connection are stored in the order they were sent (clients rely
    // on it for per-key order, idempotence or not).
    let (leader_1, _) = leader_of(&mut c, "orders", 1).await;
    let mut pipelined = Conn::open(&cluster.kafka[&leader_1]).await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let id = pipelined
            .send(ApiKey::Produce, 9, &produce_request("orders", 1, -1, record_batch(&[&format!("p{i}")], 3_500)))
            .await;
        sent.push(id);
    }
    let mut offsets = Vec::new();
    for id in sent {
        let resp: ProduceResponse = pipelined.receive(ApiKey::Produce, 9, id).await;
        let p = &resp.responses[0].partition_responses[0];
        offsets.push((p.error_code, p.base_offset));
    }
    assert!(offsets.iter().all(|(code, _)| *code == NONE), "{offsets:?}");
    let stored: Vec<i64> = offsets.iter().map(|(_, o)| *o).collect();
    assert!(stored.windows(2).all(|w| w[0] < w[1]), "pipelined batches stored out of order: {stored:?}");

    // Produce refusals: nothing is appended by any of them.
    let mut bad_crc = record_batch(&["x"], 4_000).to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(produce_one(&mut to_leader, "orders", 0, -1, Bytes::from(bad_crc)).await.0, CORRUPT_MESSAGE);
    let truncated = record_batch(&["x"], 4_000).slice(..40);
    assert_eq!(produce_one(&mut to_leader, "orders", 0, -1, truncated).await.0, CORRUPT_MESSAGE);
    let mut two = record_batch(&["x"], 4_000).to_vec();
    two.extend_from_slice(&record_batch(&["y"], 4_000));
    assert_eq!(produce_one(&mut to_leader, "orders", 0, -1, Bytes::from(two)).await.0, INVALID_RECORD);
    let big = "z".repeat(MESSAGE_MAX);
    assert_eq!(produce_one(&mut to_leader, "orders", 0, -1, record_batch(&[&big], 4_000)).await.0, MESSAGE_TOO_LARGE);
    assert_eq!(produce_one(&mut to_leader, "orders", 0, 7, record_batch(&["x"], 4_000)).await.0, INVALID_REQUIRED_ACKS);
    assert_eq!(
        produce_one(&mut to_leader, "nope", 0, -1, record_batch(&["x"], 4_000)).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        produce_one(&mut to_leader, "orders", 9, -1, record_batch(&["x"], 4_000)).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    // A follower refuses and names the leader (Produce v10+). A follower that has not heard
    // from the leader lately (a loaded machine: its election timer may have fired) names none
    // (-1), as Kafka's does; it is asked again until it names one, which must be the leader.
    let mut resp: ProduceResponse;
    let mut asked = 0;
    loop {
        resp =
            to_follower.call(ApiKey::Produce, 10, &produce_request("orders", 0, -1, record_batch(&["x"], 4_000))).await;
        asked += 1;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
        if p.current_leader.leader_id.0 >= 0 || asked == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.current_leader.leader_id, BrokerId(leader as i32), "asked {asked} times");
    assert!(resp.node_endpoints.iter().any(|e| e.node_id == BrokerId(leader as i32) && e.port == port_of(leader)));

    // Fetch: committed data only, exactly what was acknowledged (acks=0's record included once
    // committed), and the refusals.
    let mut fetched = Vec::new();
    let mut high_watermark = 0;
    for _ in 0..100 {
        let resp: FetchResponse = to_leader.call(ApiKey::Fetch, 12, &fetch_request("orders", 0, 0, 100)).await;
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, NONE);
        high_watermark = p.high_watermark;
        fetched = values_of(p.records.clone().unwrap_or_default());
        if fetched.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let values: Vec<&str> = fetched.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, vec!["a", "b", "c", "d"], "every acknowledged record once, nothing refused");
    assert_eq!(fetched[0].0, first);
    assert_eq!(high_watermark, fetched[3].0 + 1);
    let resp: FetchResponse =
        to_leader.call(ApiKey::Fetch, 12, &fetch_request("orders", 0, high_watermark + 100, 0)).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, OFFSET_OUT_OF_RANGE);
    let resp: FetchResponse = to_follower.call(ApiKey::Fetch, 12, &fetch_request("orders", 0, 0, 0)).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(resp.responses[0].partitions[0].current_leader.leader_id, BrokerId(leader as i32));

    // Long poll: an empty fetch waits max_wait_ms; a produce wakes a waiting fetch.
    let t0 = Instant::now();
    let resp: FetchResponse = to_leader.call(ApiKey::Fetch, 12, &fetch_request("orders", 0, high_watermark, 400)).await;
    assert!(t0.elapsed() >= Duration::from_millis(380), "waited {:?}", t0.elapsed());
    assert!(values_of(resp.responses[0].partitions[0].records.clone().unwrap_or_default()).is_empty());
    let waiting = to_leader.send(ApiKey::Fetch, 12, &fetch_request("orders", 0, high_watermark, 20_000)).await;
    let t0 = Instant::now();
    let mut producer = Conn::open(&cluster.kafka[&leader]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(produce_one(&mut producer, "orders", 0, -1, record_batch(&["late"], 5_000)).await.0, NONE);
    let resp: FetchResponse = to_leader.receive(ApiKey::Fetch, 12, waiting).await;
    assert!(t0.elapsed() < Duration::from_secs(15), "the produce woke the fetch ({:?})", t0.elapsed());
    let woke = values_of(resp.responses[0].partitions[0].records.clone().unwrap_or_default());
    assert_eq!(woke.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(), vec!["late"]);

    // ListOffsets: earliest, latest, by timestamp (record-exact in an uncompressed batch).
    let list = |ts: i64| {
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(ts)]),
        ])
    };
    let offset_at = |r: &ListOffsetsResponse| {
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, NONE);
        p.offset
    };
    let r: ListOffsetsResponse = to_leader.call(ApiKey::ListOffsets, 7, &list(-2)).await;
    assert_eq!(offset_at(&r), 0);
    let r: ListOffsetsResponse = to_leader.call(ApiKey::ListOffsets, 7, &list(-1)).await;
    assert_eq!(offset_at(&r), woke[0].0 + 1);
    let r: ListOffsetsResponse = to_leader.call(ApiKey::ListOffsets, 7, &list(1_001)).await;
    assert_eq!(offset_at(&r), first + 1, "record b has timestamp 1001");
    let r: ListOffsetsResponse = to_leader.call(ApiKey::ListOffsets, 7, &list(-3)).await;
    assert_eq!(offset_at(&r), woke[0].0, "the latest record has the largest timestamp");
    let r: ListOffsetsResponse = to_leader.call(ApiKey::ListOffsets, 7, &list(9_999_999)).await;
    assert_eq!(offset_at(&r), -1);

    // Configs: topic defaults and overrides, the broker's settings, refusals.
    let describe = |kind: i8, what: &str| {
        DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(StrBytes::from_string(what.into())),
        ])
    };
    let alter = |topic: &str, key: &str, value: &str| {
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.into()))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(key.into()))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_string(value.into()))),
                ]),
        ])
    };
    let r: IncrementalAlterConfigsResponse =
        c.call(ApiKey::IncrementalAlterConfigs, 1, &alter("orders", "retention.ms", "60000")).await;
    assert_eq!(r.responses[0].error_code, NONE);
    let r: IncrementalAlterConfigsResponse =
        c.call(ApiKey::IncrementalAlterConfigs, 1, &alter("orders", "no.such.setting", "1")).await;
    assert_eq!(r.responses[0].error_code, INVALID_CONFIG);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &describe(2, "orders")).await;
    let setting = |r: &DescribeConfigsResponse, key: &str| {
        r.results[0]
            .configs
            .iter()
            .find(|e| e.name.as_str() == key)
            .map(|e| (e.value.as_ref().map(|v| v.to_string()), e.config_source))
    };
    assert_eq!(setting(&r, "retention.ms"), Some((Some("60000".to_string()), 1)), "an override, DYNAMIC_TOPIC_CONFIG");
    assert_eq!(setting(&r, "cleanup.policy"), Some((Some("delete".to_string()), 5)), "a default, DEFAULT_CONFIG");
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &describe(4, "1")).await;
    assert_eq!(setting(&r, "message.max.bytes"), Some((Some(MESSAGE_MAX.to_string()), 4)));
    assert_eq!(setting(&r, "auto.create.topics.enable"), Some((Some("false".to_string()), 4)));
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &describe(2, "nope")).await;
    assert_eq!(r.results[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let mut broker_alter = alter("1", "num.partitions", "4");
    broker_alter.resources[0].resource_type = 4;
    let r: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, 1, &broker_alter).await;
    assert_eq!(r.responses[0].error_code, INVALID_REQUEST);

    // DescribeCluster, CreatePartitions, DeleteTopics.
    let r: DescribeClusterResponse = c.call(ApiKey::DescribeCluster, 0, &DescribeClusterRequest::default()).await;
    assert_eq!((r.brokers.len(), r.cluster_id.as_str()), (3, CLUSTER));
    assert!(r.controller_id.0 >= 1);
    let grow = CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatePartitionsTopic::default().with_name(name("orders")).with_count(3)]);
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &grow).await;
    assert_eq!(r.results[0].error_code, NONE);
    leader_of(&mut c, "orders", 2).await;
    let delete = DeleteTopicsRequest::default().with_timeout_ms(30_000).with_topic_names(vec![name("orders")]);
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 4, &delete).await;
    assert_eq!(r.responses[0].error_code, NONE);
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 4, &delete).await;
    assert_eq!(r.responses[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);

    for node in cluster.nodes.values() {
        node.shutdown().await;
    }
}

/// Sends `bytes` on a new connection; whether the server then closed it.
async fn raw(addr: &str, bytes: Vec<u8>) -> bool {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&bytes).await.expect("write");
    let mut c = Conn { stream: s, next_id: 1 };
    c.closed().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_connection_and_lose_nothing() {
    let cluster = start_cluster().await;
    let addr = cluster.kafka[&1].clone();
    let mut c = Conn::open(&addr).await;
    wait_for_brokers(&mut c).await;
    assert_eq!(create_topic(&mut c, "safe", 1, 3, false).await, NONE);
    let (leader, mut p, acked) = produce_at_leader(&cluster, &mut c, "safe", 0, record_batch(&["kept"], 1)).await;
    let leader_addr = cluster.kafka[&leader].clone();

    // A length past the 100 MiB limit, a negative length, a frame too short for a header, an
    // unknown API key, an API Keel does not serve, garbage after a valid header.
    assert!(raw(&leader_addr, 0x7fff_ffffi32.to_be_bytes().to_vec()).await, "oversized length closes");
    assert!(raw(&leader_addr, (-5i32).to_be_bytes().to_vec()).await, "negative length closes");
    assert!(raw(&leader_addr, [&3i32.to_be_bytes()[..], &[0, 1, 2]].concat()).await, "short frame closes");
    let header = |api: i16, version: i16| {
        let mut b = Vec::new();
        b.extend_from_slice(&api.to_be_bytes());
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b
    };
    let framed = |body: Vec<u8>| [&(body.len() as i32).to_be_bytes()[..], &body].concat();
    assert!(raw(&leader_addr, framed(header(9999, 0))).await, "unknown API key closes");
    assert!(
        raw(&leader_addr, framed(header(ApiKey::ConsumerGroupHeartbeat as i16, 0))).await,
        "an API not served closes"
    );
    assert!(
        raw(&leader_addr, framed([header(ApiKey::Metadata as i16, 1), vec![0x80, 0, 0, 0]].concat())).await,
        "bad body closes"
    );
    assert!(
        raw(&leader_addr, framed([header(ApiKey::Produce as i16, 3), vec![0xff; 64]].concat())).await,
        "garbage produce closes"
    );
    // A frame cut short by the client: the connection ends, the node does not notice more.
    let mut s = TcpStream::connect(&cluster.kafka[&leader]).await.expect("connect");
    s.write_all(&[&100i32.to_be_bytes()[..], &[1, 2, 3]].concat()).await.expect("write");
    drop(s);

    // The connection that did nothing wrong still works, and the acknowledged record is intact.
    let resp: FetchResponse = p.call(ApiKey::Fetch, 12, &fetch_request("safe", 0, 0, 0)).await;
    let values = values_of(resp.responses[0].partitions[0].records.clone().unwrap_or_default());
    assert_eq!(values, vec![(acked, "kept".to_string())]);
    let (code, next) = produce_one(&mut p, "safe", 0, -1, record_batch(&["after"], 2)).await;
    assert_eq!((code, next), (NONE, acked + 1));

    for node in cluster.nodes.values() {
        node.shutdown().await;
    }
}

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

fn idempotent_batch(pid: i64, epoch: i16, first_seq: i32, values: &[&str]) -> Bytes {
    let mut b = batch::BatchBuilder::new(1_000).producer(pid, epoch, first_seq);
    for v in values {
        b.push(1_000, Some(b"key"), Some(v.as_bytes()));
    }
    Bytes::from(b.build())
}

async fn init_producer_id(conn: &mut Conn, transactional_id: Option<&str>) -> (i16, i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, 4, &req).await;
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

/// Every value of partition 0 of `topic` read from `addr` (the leader), in offset order.
async fn all_values(addr: &str, topic: &str) -> Vec<(i64, String)> {
    let mut conn = Conn::open(addr).await;
    let resp: FetchResponse = conn.call(ApiKey::Fetch, 12, &fetch_request(topic, 0, 0, 0)).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, NONE);
    values_of(p.records.clone().unwrap_or_default())
}

/// Kafka offsets are dense (issue 17): a fresh partition's first record is at offset 0, and
/// every record takes the next offset through a dozen leader changes, each of which appends a
/// Raft blank entry (wave 1 gave each of those an offset: first record at 2, gaps after every
/// failover). Fetch from 0 returns exactly the records, at 0, 1, 2, …, and ListOffsets' latest
/// offset (the high watermark) is the record count: a caught-up consumer has lag 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_dense_through_leader_changes() {
    let cluster = start_cluster().await;
    let mut c = Conn::open(&cluster.kafka[&1]).await;
    wait_for_brokers(&mut c).await;
    assert_eq!(create_topic(&mut c, "dense", 1, 3, false).await, NONE);
    let group = cluster.nodes[&1].meta().sm().with_state(|s| s.topics["dense"].partitions[0].group);
    let mut expected = Vec::new();
    let mut terms = Vec::new();
    for round in 0..12i64 {
        let values = [format!("r{round}a"), format!("r{round}b")];
        let batch = record_batch(&[values[0].as_str(), values[1].as_str()], 1_000 + round);
        let (leader, _, offset) = produce_at_leader(&cluster, &mut c, "dense", 0, batch).await;
        assert_eq!(offset, 2 * round, "round {round}: records take offsets 0, 1, 2, … with no gaps");
        expected.extend(values.iter().enumerate().map(|(i, v)| (offset + i as i64, v.clone())));
        let replica = cluster.nodes[&leader].replica(group).expect("the leader hosts the partition");
        terms.push(replica.raft().metrics().borrow_watched().current_term);
        let to = replica
            .raft()
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .find(|v| keel_core::metadata::node_of(*v) != leader);
        if let Some(to) = to {
            let _ = replica.raft().trigger().transfer_leader(to).await;
        }
        // Wait until someone else leads (a new term), so that a blank entry lies between rounds.
        for _ in 0..100 {
            let (now, _) = leader_of(&mut c, "dense", 0).await;
            if now != leader {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    terms.dedup();
    assert!(terms.len() >= 10, "at least 10 leader changes happened: terms {terms:?}");
    let (leader, _) = leader_of(&mut c, "dense", 0).await;
    assert_eq!(all_values(&cluster.kafka[&leader], "dense").await, expected, "Fetch returns the records only");
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(name("dense"))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)]),
    ]);
    let mut l = Conn::open(&cluster.kafka[&leader]).await;
    let resp: ListOffsetsResponse = l.call(ApiKey::ListOffsets, 5, &req).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (NONE, 24), "the high watermark is the record count");
    cluster.shutdown().await;
}

/// The idempotent producer (issue 5): InitProducerId hands out distinct ids; a retried batch is
/// answered with its original offset and stored once — also when the retry and the original
/// are in flight together, and after the leader that stored it is gone; gaps in the sequence
/// and fenced epochs are refused with Kafka's errors; transactions are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_retries_are_stored_once_across_failover() {
    let cluster = start_cluster().await;
    let mut c = Conn::open(&cluster.kafka[&1]).await;
    wait_for_brokers(&mut c).await;
    assert_eq!(create_topic(&mut c, "idem", 1, 3, false).await, NONE);
    let (leader, _) = leader_of(&mut c, "idem", 0).await;

    let (code, pid, epoch) = init_producer_id(&mut c, None).await;
    assert_eq!((code, epoch), (NONE, 0));
    assert!(pid >= 0);
    let (_, other, _) = init_producer_id(&mut Conn::open(&cluster.kafka[&2]).await, None).await;
    assert!(other >= 0 && other != pid, "producer ids are unique across nodes ({pid}, {other})");
    let (code, _, _) = init_producer_id(&mut c, Some("tx-1")).await;
    assert_eq!(code, INVALID_REQUEST, "no transactions");

    let mut p = Conn::open(&cluster.kafka[&leader]).await;
    let first = idempotent_batch(pid, 0, 0, &["a", "b", "c"]);
    let (code, a_at) = produce_one(&mut p, "idem", 0, -1, first.clone()).await;
    assert_eq!(code, NONE);
    assert_eq!(
        produce_one(&mut p, "idem", 0, -1, first.clone()).await,
        (NONE, a_at),
        "a retry gets the original offset"
    );
    let second = idempotent_batch(pid, 0, 3, &["d", "e"]);
    // The same batch twice in flight at once: both answered with one offset, stored once.
    let x = p.send(ApiKey::Produce, 9, &produce_request("idem", 0, -1, second.clone())).await;
    let y = p.send(ApiKey::Produce, 9, &produce_request("idem", 0, -1, second.clone())).await;
    let mut d_at = Vec::new();
    for id in [x, y] {
        let r: ProduceResponse = p.receive(ApiKey::Produce, 9, id).await;
        let part = &r.responses[0].partition_responses[0];
        assert_eq!(part.error_code, NONE);
        d_at.push(part.base_offset);
    }
    assert_eq!(d_at, vec![a_at + 3, a_at + 3], "both answers name the one stored copy");
    let gap = idempotent_batch(pid, 0, 9, &["x"]);
    assert_eq!(produce_one(&mut p, "idem", 0, -1, gap).await.0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    // A bumped epoch starts at sequence 0; the old epoch is fenced from then on.
    let late_start = idempotent_batch(pid, 1, 4, &["x"]);
    assert_eq!(produce_one(&mut p, "idem", 0, -1, late_start).await.0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    let bumped = idempotent_batch(pid, 1, 0, &["f"]);
    let (code, f_at) = produce_one(&mut p, "idem", 0, -1, bumped.clone()).await;
    assert_eq!((code, f_at), (NONE, a_at + 5));
    let fenced = idempotent_batch(pid, 0, 5, &["x"]);
    assert_eq!(produce_one(&mut p, "idem", 0, -1, fenced).await.0, INVALID_PRODUCER_EPOCH);
    let mut tx = batch::BatchBuilder::new(1_000).producer(pid, 1, 1);
    tx.push(1_000, None, Some(b"t"));
    let mut tx = tx.build();
    tx[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // the transactional attribute
    let crc = batch::compute_crc(&tx);
    tx[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(produce_one(&mut p, "idem", 0, -1, Bytes::from(tx)).await.0, INVALID_RECORD);
    let expected: Vec<(i64, String)> =
        ["a", "b", "c", "d", "e", "f"].iter().enumerate().map(|(i, v)| (a_at + i as i64, v.to_string())).collect();
    assert_eq!(all_values(&cluster.kafka[&leader], "idem").await, expected);

    // The leader goes away; the new leader knows the producer's batches from the replicated log.
    cluster.nodes[&leader].shutdown().await;
    let survivor = cluster.nodes.keys().copied().find(|n| *n != leader).expect("a survivor");
    let mut c = Conn::open(&cluster.kafka[&survivor]).await;
    let new_leader = loop {
        let (l, _) = leader_of(&mut c, "idem", 0).await;
        if l != leader {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut p = Conn::open(&cluster.kafka[&new_leader]).await;
    let retry = loop {
        let answer = produce_one(&mut p, "idem", 0, -1, bumped.clone()).await;
        if answer.0 != NOT_LEADER_OR_FOLLOWER {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(retry, (NONE, f_at), "the retry at the new leader is answered with the original offset");
    assert_eq!(produce_one(&mut p, "idem", 0, -1, first).await.0, INVALID_PRODUCER_EPOCH, "a fenced epoch");
    let (code, g_at) = produce_one(&mut p, "idem", 0, -1, idempotent_batch(pid, 1, 1, &["g"])).await;
    assert_eq!(code, NONE);
    assert!(g_at > f_at, "{g_at} after {f_at} (the new leader's blank entry in between)");
    let mut expected = expected;
    expected.push((g_at, "g".to_string()));
    assert_eq!(all_values(&cluster.kafka[&new_leader], "idem").await, expected);

    for node in cluster.nodes.values() {
        node.shutdown().await;
    }
}
