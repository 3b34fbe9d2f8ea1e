//! OffsetForLeaderEpoch, ElectLeaders and DescribeLogDirs on an in-process 3-node cluster
//! (tokio, real files), driven with requests encoded by the `kafka-protocol` crate's client side.
//!
//! What it protects: a consumer that read in one leader epoch learns, after a leader change,
//! where that epoch ends in the new leader's log (KIP-320: the start of the next epoch), and the
//! current epoch ends at the high watermark; stale and future current epochs are fenced; only
//! the leader answers. ElectLeaders moves leadership to the preferred replica and answers once it
//! leads (the nodes' own preferred-leader duty is held off, so only the request can have moved
//! it); asked again, the election is not needed. DescribeLogDirs lists the node's one log
//! directory with the partition's bytes. Offsets are read from answers, never assumed (blank and
//! membership entries may or may not take offsets).
#![cfg(not(madsim))]

mod support;

use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::DescribeLogDirsRequest;
use kafka_protocol::messages::DescribeLogDirsResponse;
use kafka_protocol::messages::ElectLeadersRequest;
use kafka_protocol::messages::ElectLeadersResponse;
use kafka_protocol::messages::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderTopic;
use keel_core::batch;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::topic_name;

use support::Cluster;
use support::Options;

const CLUSTER: &str = "keel-kafka-leader-apis";
const TIMEOUT: Duration = Duration::from_secs(30);

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const INVALID_REQUEST: i16 = 42;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const ELECTION_NOT_NEEDED: i16 = 84;

struct Client {
    kafka: KafkaClient,
}

impl Client {
    fn new(cluster: &Cluster) -> Client {
        Client { kafka: KafkaClient::new("leader-apis-test", cluster.kafka.values().cloned().collect(), 0) }
    }

    async fn call<Q: kafka_protocol::protocol::Request>(&mut self, addr: &str, version: i16, body: &Q) -> Q::Response {
        self.kafka.request_to(addr, version, body, TIMEOUT).await.expect("answered")
    }

    /// Creates `topic` (one partition, three replicas), retried until every node has registered.
    async fn create_topic(&mut self, cluster: &Cluster, topic: &str) {
        let request = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            CreatableTopic::default().with_name(topic_name(topic)).with_num_partitions(1).with_replication_factor(3),
        ]);
        let started = Instant::now();
        loop {
            let code = self.call(&cluster.kafka[&1], 7, &request).await.topics[0].error_code;
            if code == NONE {
                return;
            }
            assert!(started.elapsed() < TIMEOUT, "creating {topic}: error {code}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// (leader node, leader epoch, replicas) of `topic`-0 once Metadata names a leader.
    async fn partition0(&mut self, topic: &str) -> (u64, i32, Vec<u64>) {
        let started = Instant::now();
        loop {
            let md = self.kafka.metadata(Some(&[topic.to_string()]), TIMEOUT).await.expect("metadata");
            if let Some(p) = md.topics.iter().flat_map(|t| &t.partitions).find(|p| p.partition_index == 0)
                && p.error_code == NONE
                && p.leader_id.0 > 0
            {
                let replicas = p.replica_nodes.iter().map(|b| b.0 as u64).collect();
                return (p.leader_id.0 as u64, p.leader_epoch, replicas);
            }
            assert!(started.elapsed() < TIMEOUT, "{topic}-0 has no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Produces `n` records (acks=all) at the leader; answers the first offset.
    async fn produce(&mut self, cluster: &Cluster, topic: &str, n: usize) -> i64 {
        let started = Instant::now();
        loop {
            let (leader, _, _) = self.partition0(topic).await;
            let mut b = batch::BatchBuilder::new(1_000);
            for i in 0..n {
                b.push(1_000 + i as i64, None, Some(format!("v{i}").as_bytes()));
            }
            self.kafka.connect(&cluster.kafka[&leader]).await.expect("connect");
            let r = self
                .kafka
                .produce(&cluster.kafka[&leader], topic, 0, Bytes::from(b.build()), 10_000, TIMEOUT)
                .await
                .expect("produce answered");
            if r.error_code == NONE {
                return r.base_offset;
            }
            assert!(started.elapsed() < TIMEOUT, "produce refused with {}", r.error_code);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One partition's (error, epoch, end offset) from OffsetForLeaderEpoch at `addr`.
    async fn epoch_end(&mut self, addr: &str, version: i16, topic: &str, current: i32, epoch: i32) -> (i16, i32, i64) {
        let request = OffsetForLeaderEpochRequest::default().with_replica_id((-1).into()).with_topics(vec![
            OffsetForLeaderTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch),
            ]),
        ]);
        let r = self.call(addr, version, &request).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.partition, 0);
        (p.error_code, p.leader_epoch, p.end_offset)
    }

    async fn elect(
        &mut self,
        addr: &str,
        version: i16,
        kind: i8,
        topics: Option<&[(&str, i32)]>,
    ) -> ElectLeadersResponse {
        let request = ElectLeadersRequest::default()
            .with_election_type(kind)
            .with_timeout_ms(20_000)
            .with_topic_partitions(topics.map(|ts| {
                ts.iter()
                    .map(|(t, p)| TopicPartitions::default().with_topic(topic_name(t)).with_partitions(vec![*p]))
                    .collect()
            }));
        self.call(addr, version, &request).await
    }

    async fn high_watermark(&mut self, addr: &str, topic: &str) -> i64 {
        self.kafka.connect(addr).await.expect("connect");
        self.kafka.list_offset(addr, topic, 0, -1, TIMEOUT).await.expect("list offsets").offset
    }
}

fn codes(r: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
    r.replica_election_results
        .iter()
        .flat_map(|t| t.partition_result.iter().map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_ends_an_epoch_where_the_next_begins_and_elect_leaders_moves_it_back() {
    // The nodes never move leadership to the preferred replica by themselves during the test.
    let cluster = Cluster::start(Options { leader_settle_ms: 3_600_000, ..Options::new(CLUSTER) }).await;
    let mut c = Client::new(&cluster);
    let topic = "epochs";
    c.create_topic(&cluster, topic).await;
    let first = c.produce(&cluster, topic, 5).await;
    let (leader, epoch1, replicas) = c.partition0(topic).await;
    let preferred = replicas[0];
    let end1 = first + 5;

    // Move leadership off the preferred replica (if it has it), by Raft directly.
    let (leader2, epoch2) = if leader == preferred {
        let a = cluster.nodes[&leader].meta().sm().with_state(|s| s.topics[topic].partitions[0].clone());
        let to = a.raft_id_of(replicas[1]).expect("raft id");
        let replica = cluster.nodes[&leader].replica(a.group).expect("leader replica");
        replica.raft().trigger().transfer_leader(to).await.expect("transfer asked");
        let started = Instant::now();
        loop {
            let (l, e, _) = c.partition0(topic).await;
            if l != preferred && e > epoch1 {
                break (l, e);
            }
            assert!(started.elapsed() < TIMEOUT, "leadership never left node {preferred}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        (leader, epoch1)
    };
    let at = cluster.kafka[&leader2].clone();
    let second = c.produce(&cluster, topic, 3).await;
    assert!(second >= end1);
    let hw = c.high_watermark(&at, topic).await;

    // OffsetForLeaderEpoch at the new leader, as librdkafka (v2) and the Java client (v4) ask.
    for v in [2, 3, 4] {
        if epoch2 > epoch1 {
            let (code, epoch, end) = c.epoch_end(&at, v, topic, epoch2, epoch1).await;
            assert_eq!((code, epoch), (NONE, epoch1), "v{v}");
            assert_eq!(end, end1, "v{v}: epoch {epoch1} ends where its records end");
        }
        assert_eq!(c.epoch_end(&at, v, topic, epoch2, epoch2).await, (NONE, epoch2, hw), "v{v}: current epoch");
        assert_eq!(c.epoch_end(&at, v, topic, -1, epoch2).await, (NONE, epoch2, hw), "v{v}: no fencing asked");
        assert_eq!(c.epoch_end(&at, v, topic, epoch2 - 1, epoch2).await.0, FENCED_LEADER_EPOCH, "v{v}");
        assert_eq!(c.epoch_end(&at, v, topic, epoch2 + 1, epoch2).await.0, UNKNOWN_LEADER_EPOCH, "v{v}");
        assert_eq!(c.epoch_end(&at, v, topic, -1, epoch2 + 5).await, (NONE, -1, -1), "v{v}: a future epoch");
        assert_eq!(c.epoch_end(&at, v, "no-such-topic", -1, 1).await.0, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
        let follower = cluster.kafka.iter().find(|(id, _)| **id != leader2).expect("a follower").1.clone();
        assert_eq!(c.epoch_end(&follower, v, topic, -1, epoch2).await.0, NOT_LEADER_OR_FOLLOWER, "v{v}");
    }

    // ElectLeaders from a node that does not lead: moves leadership back to the preferred replica.
    let asked = cluster.kafka.iter().find(|(id, _)| **id != leader2).expect("another node").1.clone();
    let r = c.elect(&asked, 2, 0, Some(&[(topic, 0), (topic, 9), ("no-such-topic", 0)])).await;
    assert_eq!(r.error_code, NONE);
    assert_eq!(
        codes(&r),
        vec![
            (topic.to_string(), 0, NONE),
            (topic.to_string(), 9, UNKNOWN_TOPIC_OR_PARTITION),
            ("no-such-topic".to_string(), 0, UNKNOWN_TOPIC_OR_PARTITION),
        ],
        "{r:?}"
    );
    let started = Instant::now();
    let epoch3 = loop {
        let (l, e, _) = c.partition0(topic).await;
        if l == preferred {
            break e;
        }
        assert!(started.elapsed() < TIMEOUT, "Metadata never showed node {preferred} leading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(epoch3 > epoch2, "a new leader, a new epoch");
    // Asked again, in every version: not needed. A null list leaves out what needs no election.
    for v in [0, 1, 2] {
        let r = c.elect(&asked, v, 0, Some(&[(topic, 0)])).await;
        assert_eq!(codes(&r), vec![(topic.to_string(), 0, ELECTION_NOT_NEEDED)], "v{v}");
    }
    assert!(codes(&c.elect(&asked, 2, 0, None).await).is_empty());
    // Unclean: Keel never runs one; a partition with a leader needs none. Unknown types: refused.
    assert_eq!(
        codes(&c.elect(&asked, 2, 1, Some(&[(topic, 0)])).await),
        vec![(topic.to_string(), 0, ELECTION_NOT_NEEDED)]
    );
    assert_eq!(c.elect(&asked, 2, 7, Some(&[(topic, 0)])).await.error_code, INVALID_REQUEST);

    // The epoch that ended with the election ends where the preferred replica's began.
    let at = cluster.kafka[&preferred].clone();
    let third = c.produce(&cluster, topic, 2).await;
    let (code, epoch, end) = c.epoch_end(&at, 4, topic, epoch3, epoch2).await;
    assert_eq!((code, epoch), (NONE, epoch2));
    assert_eq!(end, second + 3, "epoch {epoch2} ends where its records end");
    assert!(third >= end);

    // DescribeLogDirs: each node's one directory, with the partition and its bytes.
    for (id, addr) in &cluster.kafka {
        for v in [1, 4] {
            let all: DescribeLogDirsResponse =
                c.call(addr, v, &DescribeLogDirsRequest::default().with_topics(None)).await;
            assert_eq!(all.results.len(), 1, "one log dir per node");
            let dir = &all.results[0];
            assert_eq!(dir.error_code, NONE);
            assert!(dir.log_dir.ends_with(&format!("node-{id}")), "node {id}'s dir: {}", dir.log_dir.as_str());
            let t = dir.topics.iter().find(|t| t.name.0.as_str() == topic).expect("the topic is listed");
            assert_eq!(t.partitions.len(), 1);
            assert_eq!(t.partitions[0].partition_index, 0);
            assert!(t.partitions[0].partition_size > 0, "node {id}: {:?}", t.partitions[0]);
            assert_eq!(t.partitions[0].offset_lag, 0);
            if v >= 4 {
                assert!(dir.total_bytes > 0 && dir.usable_bytes >= 0 && dir.usable_bytes <= dir.total_bytes);
            }
            let named = DescribeLogDirsRequest::default().with_topics(Some(vec![
                DescribableLogDirTopic::default().with_topic(topic_name("no-such-topic")).with_partitions(vec![0]),
            ]));
            let none: DescribeLogDirsResponse = c.call(addr, v, &named).await;
            assert!(none.results[0].topics.is_empty(), "an unknown topic is left out");
        }
    }
    cluster.shutdown().await;
}
