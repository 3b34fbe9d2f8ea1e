//! Kafka's reassignment API (AlterPartitionReassignments, ListPartitionReassignments) on an
//! in-process 3-node cluster (tokio, real files), driven with requests encoded by the
//! `kafka-protocol` crate's client side.
//!
//! What it protects: a reassignment asked for over Kafka moves the partition's replicas (the
//! acknowledged data with them), is listed while it is in flight and no longer once complete,
//! and ends with Metadata showing the new replica set; bad requests are refused per partition
//! with Kafka's error codes and change nothing; a reassignment in flight is neither replaced nor
//! cancelled (Keel cannot roll one back), and says so. Requests go to nodes that do not lead the
//! metadata group, as a client that does not know the controller sends them.
#![cfg(not(madsim))]

mod support;

use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::AlterPartitionReassignmentsRequest;
use kafka_protocol::messages::AlterPartitionReassignmentsResponse;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::ApiVersionsRequest;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::ListPartitionReassignmentsRequest;
use kafka_protocol::messages::ListPartitionReassignmentsResponse;
use kafka_protocol::messages::MetadataResponse;
use kafka_protocol::messages::alter_partition_reassignments_request::ReassignablePartition;
use kafka_protocol::messages::alter_partition_reassignments_request::ReassignableTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::list_partition_reassignments_response::OngoingPartitionReassignment;
use keel_core::batch;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::split_batches;
use keel_node::kafka_client::topic_name;

use support::Cluster;
use support::Options;

const CLUSTER: &str = "keel-kafka-reassign";
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a reassignment of a partition holding a few records may take on a loaded machine.
const MOVE_WAIT_MAX: Duration = Duration::from_secs(60);

// Kafka error codes the test expects.
const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_REQUEST: i16 = 42;
const REASSIGNMENT_IN_PROGRESS: i16 = 60;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// A client of one broker; every call must be answered.
struct Client {
    kafka: KafkaClient,
    addr: String,
}

impl Client {
    fn new(addr: &str) -> Client {
        Client { kafka: KafkaClient::new("reassign-test", vec![addr.to_string()], 0), addr: addr.to_string() }
    }

    async fn call<Q: kafka_protocol::protocol::Request>(&mut self, version: i16, body: &Q) -> Q::Response {
        let addr = self.addr.clone();
        self.kafka.request_to(&addr, version, body, TIMEOUT).await.expect("answered")
    }

    async fn metadata(&mut self, topic: &str) -> MetadataResponse {
        self.kafka.metadata(Some(&[topic.to_string()]), TIMEOUT).await.expect("metadata")
    }

    /// The replicas Metadata lists for `topic`-`partition`, and its leader once one is known.
    async fn replicas(&mut self, topic: &str, partition: i32) -> (Vec<i32>, Option<i32>) {
        let md = self.metadata(topic).await;
        let p = md
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == partition)
            .unwrap_or_else(|| panic!("{topic}-{partition} in metadata: {md:?}"));
        let replicas = p.replica_nodes.iter().map(|b| b.0).collect();
        (replicas, (p.error_code == NONE && p.leader_id.0 > 0).then_some(p.leader_id.0))
    }

    /// Creates `topic`, retried until every node has registered (replication factor `rf` can
    /// be placed) and its partitions have leaders.
    async fn create_topic(&mut self, topic: &str, partitions: i32, rf: i16) {
        let request = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(rf),
        ]);
        let started = Instant::now();
        loop {
            let code = self.call(7, &request).await.topics[0].error_code;
            if code == NONE {
                break;
            }
            assert!(started.elapsed() < TIMEOUT, "creating {topic}: error {code}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for p in 0..partitions {
            while self.replicas(topic, p).await.1.is_none() {
                assert!(started.elapsed() < TIMEOUT, "{topic}-{p} has no leader");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The controller Metadata names (the metadata group's leader).
    async fn controller(&mut self) -> u64 {
        let started = Instant::now();
        loop {
            let md = self.metadata("none").await;
            if md.controller_id.0 > 0 {
                return md.controller_id.0 as u64;
            }
            assert!(started.elapsed() < TIMEOUT, "no controller");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn alter(
        &mut self,
        version: i16,
        allow_rf_change: bool,
        asks: &[(&str, i32, Option<&[i32]>)],
    ) -> AlterPartitionReassignmentsResponse {
        let topics = asks
            .iter()
            .map(|(topic, partition, replicas)| {
                ReassignableTopic::default().with_name(topic_name(topic)).with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(*partition)
                        .with_replicas(replicas.map(|r| r.iter().map(|b| BrokerId(*b)).collect())),
                ])
            })
            .collect();
        let mut request = AlterPartitionReassignmentsRequest::default().with_timeout_ms(30_000).with_topics(topics);
        if version >= 1 {
            request = request.with_allow_replication_factor_change(allow_rf_change);
        }
        let answer = self.call(version, &request).await;
        assert_eq!(answer.error_code, NONE, "top-level error: {answer:?}");
        answer
    }

    /// The reassignments in flight: of every partition (`None`), or of those named.
    async fn list(&mut self, topics: Option<&[(&str, &[i32])]>) -> Vec<(String, OngoingPartitionReassignment)> {
        let topics = topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    ListPartitionReassignmentsTopics::default()
                        .with_name(topic_name(t))
                        .with_partition_indexes(ps.to_vec())
                })
                .collect()
        });
        let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000).with_topics(topics);
        let answer: ListPartitionReassignmentsResponse = self.call(0, &request).await;
        assert_eq!(answer.error_code, NONE, "top-level error: {answer:?}");
        answer
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.as_str().to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect()
    }
}

/// The codes of an Alter answer, in request order (one partition per topic entry).
fn codes(answer: &AlterPartitionReassignmentsResponse) -> Vec<i16> {
    answer.responses.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect()
}

fn ids(brokers: &[BrokerId]) -> Vec<i32> {
    brokers.iter().map(|b| b.0).collect()
}

/// A node of the cluster that is not `controller`, and another one.
fn two_others(controller: u64) -> (u64, u64) {
    let others: Vec<u64> = (1..=3).filter(|n| *n != controller).collect();
    (others[0], others[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassignment_over_kafka_moves_the_replicas_with_the_data() {
    let cluster = Cluster::start(Options::new(CLUSTER)).await;
    let mut c = Client::new(&cluster.kafka[&1]);
    let versions = c.call(3, &ApiVersionsRequest::default()).await;
    for (api, max) in [(ApiKey::AlterPartitionReassignments, 1), (ApiKey::ListPartitionReassignments, 0)] {
        let listed = versions.api_keys.iter().find(|k| k.api_key == api as i16).expect("listed in ApiVersions");
        assert_eq!((listed.min_version, listed.max_version), (0, max), "{api:?}");
    }
    c.create_topic("moved", 1, 2).await;
    let (before, leader) = c.replicas("moved", 0).await;
    let leader = leader.expect("a leader");
    let leader_addr = cluster.kafka[&(leader as u64)].clone();
    let mut records = batch::BatchBuilder::new(1_000);
    records.push(1_000, Some(b"k"), Some(b"before the move"));
    let records = Bytes::from(records.build());
    c.kafka.connect(&leader_addr).await.expect("connect");
    let produced = c.kafka.produce(&leader_addr, "moved", 0, records, 10_000, TIMEOUT).await.expect("produced");
    assert_eq!(produced.error_code, NONE);

    // Move it: the node that has no replica joins as the preferred leader, one replica leaves.
    let outsider = (1..=3).find(|n| !before.contains(n)).expect("a node without a replica");
    let target = vec![outsider, before[0]];
    let (asked, lister) = two_others(c.controller().await);
    let mut to_asked = Client::new(&cluster.kafka[&asked]);
    let answer = to_asked.alter(0, true, &[("moved", 0, Some(&target))]).await;
    assert_eq!(codes(&answer), vec![NONE], "{answer:?}");

    // Listed until it completes (if it is still in flight when first asked: it may be quick).
    let mut to_lister = Client::new(&cluster.kafka[&lister]);
    let started = Instant::now();
    let mut seen_in_flight = 0;
    loop {
        let listed = to_lister.list(None).await;
        let Some((_, p)) = listed.iter().find(|(t, _)| t == "moved") else { break };
        seen_in_flight += 1;
        assert_eq!(p.partition_index, 0);
        assert_eq!(ids(&p.replicas), vec![outsider, before[0], before[1]], "target, then the leaving replica");
        assert_eq!((ids(&p.adding_replicas), ids(&p.removing_replicas)), (vec![outsider], vec![before[1]]));
        assert!(started.elapsed() < MOVE_WAIT_MAX, "still moving after {MOVE_WAIT_MAX:?}: {p:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("listed in flight {seen_in_flight} time(s); complete after {:?}", started.elapsed());

    // Metadata shows the new replica set (every node, once it has applied the completion), and
    // the record acknowledged before the move is at the partition's leader.
    for node in 1..=3 {
        let mut to_node = Client::new(&cluster.kafka[&node]);
        loop {
            let (now, leader) = to_node.replicas("moved", 0).await;
            if now == target && leader.is_some_and(|l| target.contains(&l)) {
                break;
            }
            assert!(started.elapsed() < MOVE_WAIT_MAX, "node {node}'s metadata shows {now:?}, leader {leader:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let values = loop {
        let (_, leader) = c.replicas("moved", 0).await;
        let addr = cluster.kafka[&(leader.expect("a leader") as u64)].clone();
        let mut to_leader = Client::new(&addr);
        to_leader.kafka.connect(&addr).await.expect("connect");
        let data = to_leader.kafka.fetch(&addr, "moved", 0, 0, -1, 1 << 20, 0, TIMEOUT).await.expect("fetched");
        if data.error_code == NONE {
            let batches = split_batches(&data.records.unwrap_or_default()).expect("batches");
            break batches
                .iter()
                .filter(|b| !batch::BatchHeader::parse(b).expect("header").is_control())
                .flat_map(|b| batch::records(b).expect("records"))
                .map(|r| r.value.map(|v| v.to_vec()).unwrap_or_default())
                .collect::<Vec<_>>();
        }
        assert!(started.elapsed() < MOVE_WAIT_MAX, "fetch from the new leader: error {}", data.error_code);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(values, vec![b"before the move".to_vec()]);
    assert!(to_lister.list(None).await.is_empty(), "nothing in flight any more");

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reassignments_are_refused_and_one_in_flight_is_neither_replaced_nor_cancelled() {
    let cluster = Cluster::start(Options::new(CLUSTER)).await;
    let mut c = Client::new(&cluster.kafka[&1]);
    c.create_topic("fixed", 2, 2).await;
    let (zero, _) = c.replicas("fixed", 0).await;
    let (one, _) = c.replicas("fixed", 1).await;
    let (asked, _) = two_others(c.controller().await);
    let mut to_asked = Client::new(&cluster.kafka[&asked]);

    // Every bad case in one request (v1, replication factor changes not allowed): each
    // partition gets its own answer, with a message; nothing changes.
    let (a, b) = (zero[0], zero[1]);
    let asks: Vec<(&str, i32, Option<Vec<i32>>, i16)> = vec![
        ("nope", 0, Some(vec![1, 2]), UNKNOWN_TOPIC_OR_PARTITION),
        ("fixed", 5, Some(vec![1, 2]), UNKNOWN_TOPIC_OR_PARTITION),
        ("fixed", -1, Some(vec![1, 2]), UNKNOWN_TOPIC_OR_PARTITION),
        ("fixed", 0, Some(vec![]), INVALID_REPLICA_ASSIGNMENT),
        ("fixed", 0, Some(vec![a, a]), INVALID_REPLICA_ASSIGNMENT),
        ("fixed", 0, Some(vec![a, 99]), INVALID_REPLICA_ASSIGNMENT),
        ("fixed", 0, Some(vec![-1, a]), INVALID_REPLICA_ASSIGNMENT),
        ("fixed", 0, Some(vec![1, 2, 3, 1]), INVALID_REPLICA_ASSIGNMENT),
        ("fixed", 1, Some(vec![one[0]]), INVALID_REPLICATION_FACTOR),
        ("fixed", 1, None, NO_REASSIGNMENT_IN_PROGRESS),
    ];
    let request: Vec<(&str, i32, Option<&[i32]>)> = asks.iter().map(|(t, p, r, _)| (*t, *p, r.as_deref())).collect();
    let answer = to_asked.alter(1, false, &request).await;
    assert!(!answer.allow_replication_factor_change, "v1 echoes the flag");
    let expected: Vec<i16> = asks.iter().map(|(.., code)| *code).collect();
    assert_eq!(codes(&answer), expected, "{answer:?}");
    for p in answer.responses.iter().flat_map(|t| &t.partitions) {
        let message = p.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
        assert!(message.len() > 10, "a message that says why: {p:?}");
    }
    assert!(c.list(None).await.is_empty(), "the refusals started nothing");
    assert_eq!((c.replicas("fixed", 0).await.0, c.replicas("fixed", 1).await.0), (zero.clone(), one.clone()));

    // A reassignment that cannot complete: it adds a node that is down, so the new replica never
    // catches up. The asked node stays up (and the metadata group keeps a quorum).
    let down = (1..=3).find(|n| !zero.contains(n)).expect("a node without a replica") as u64;
    let up = if asked != down { asked } else { (1..=3).find(|n| *n != down).expect("another node") };
    cluster.nodes[&down].shutdown().await;
    let mut to_up = Client::new(&cluster.kafka[&up]);
    let target = vec![a, b, down as i32];
    assert_eq!(codes(&to_up.alter(1, true, &[("fixed", 0, Some(&target))]).await), vec![NONE]);
    let listed = to_up.list(Some(&[("fixed", &[0, 1, 0, 9]), ("nope", &[0])])).await;
    assert_eq!(listed.len(), 1, "fixed-0 once, fixed-1 is not moving: {listed:?}");
    let (topic, p) = &listed[0];
    assert_eq!((topic.as_str(), p.partition_index), ("fixed", 0));
    assert_eq!(ids(&p.replicas), target);
    assert_eq!((ids(&p.adding_replicas), ids(&p.removing_replicas)), (vec![down as i32], vec![]));

    // The same target again is accepted; another one is refused, and so is a cancellation.
    assert_eq!(codes(&to_up.alter(0, true, &[("fixed", 0, Some(&target))]).await), vec![NONE]);
    let answer = to_up.alter(0, true, &[("fixed", 0, Some(&[a])), ("fixed", 0, None)]).await;
    assert_eq!(codes(&answer), vec![REASSIGNMENT_IN_PROGRESS, INVALID_REQUEST], "{answer:?}");
    let why = answer.responses[1].partitions[0].error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
    assert!(why.contains("cannot cancel"), "{why}");
    assert_eq!(to_up.list(None).await.len(), 1, "still in flight");
    assert_eq!(to_up.replicas("fixed", 0).await.0, zero, "Metadata lists the current replicas until it completes");

    cluster.shutdown().await;
}
