//! A full disk answers, and recovers by itself (issue 17): three in-process nodes (tokio), each
//! on its own simulated disk (`SimStorage`) whose disk-full fault makes every growing write fail
//! with ENOSPC while it lasts, spoken to over the Kafka protocol.
//!
//! - `a_full_leader_answers_storage_error_and_writes_resume_without_restart`: with every disk
//!   full, a Produce is answered KAFKA_STORAGE_ERROR (refused before it is proposed, not timed
//!   out); Fetch and ListOffsets still serve what was acknowledged; once the disks have room, the
//!   same partition takes writes again, no node restarted, nothing acknowledged lost.
//! - `a_follower_stopped_by_a_full_disk_reopens_and_catches_up`: a follower whose disk fills
//!   fails closed for space while the other two commit; once its disk has room it reopens its
//!   replica (same Raft id, no restart) and catches up with everything committed meanwhile.
//! - `deleting_a_topic_frees_its_space_at_once`: after DeleteTopics, every node's partition
//!   directory is gone and the disk's used bytes drop by the topic's data: no task keeps a
//!   removed segment open.
#![cfg(not(madsim))]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::DeleteTopicsRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use keel_core::batch::BatchBuilder;
use keel_core::storage::Storage;
use keel_core::storage::sim::SimFaults;
use keel_core::storage::sim::SimStorage;
use keel_core::storage::space::StopCause;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::split_batches;
use support::Cluster;
use support::Options;

const KAFKA_STORAGE_ERROR: i16 = 56;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const CALL: Duration = Duration::from_secs(30);
/// Rounds of waiting (100 ms each) before a test gives up on something that must happen.
const ROUNDS_MAX: usize = 600;

struct Disks {
    cluster: Cluster,
    disks: BTreeMap<u64, Arc<SimStorage>>,
    client: KafkaClient,
}

async fn start(name: &'static str, seed: u64) -> Disks {
    let disks: BTreeMap<u64, Arc<SimStorage>> = (1..=3).map(|id| (id, SimStorage::new(seed + id))).collect();
    let mut options = Options::new(name);
    options.storage = disks.iter().map(|(id, d)| (*id, d.clone() as Arc<dyn Storage>)).collect();
    let cluster = Cluster::start(options).await;
    let client = KafkaClient::new("full-disk-test", cluster.kafka.values().cloned().collect(), 0);
    Disks { cluster, disks, client }
}

fn set_full(disk: &SimStorage, full: bool) {
    disk.set_faults(SimFaults { disk_full: full, ..disk.faults() });
}

fn batch(tag: &str, records: usize) -> Bytes {
    let mut b = BatchBuilder::new(1_000);
    for i in 0..records {
        b.push(1_000, Some(tag.as_bytes()), Some(format!("{tag}-{i}-{}", "v".repeat(200)).as_bytes()));
    }
    Bytes::from(b.build())
}

impl Disks {
    /// Creates `topic` (1 partition, 3 replicas), retrying while nodes register.
    async fn create(&mut self, topic: &str) {
        let req = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            CreatableTopic::default()
                .with_name(keel_node::kafka_client::topic_name(topic))
                .with_num_partitions(1)
                .with_replication_factor(3),
        ]);
        for _ in 0..ROUNDS_MAX {
            if let Ok((_, resp)) = self.client.request_any(7, &req, CALL).await
                && resp.topics[0].error_code == 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{topic} was never created");
    }

    /// The partition's Raft group.
    fn group(&self, topic: &str) -> u64 {
        self.cluster.nodes[&1].meta().sm().with_state(|s| s.topics[topic].partitions[0].group)
    }

    /// Produces (acks=all) at the leader until an answer other than NOT_LEADER_OR_FOLLOWER
    /// comes; answers (leader node, error code, base offset).
    async fn produce(&mut self, topic: &str, records: Bytes) -> (u64, i16, i64) {
        for _ in 0..ROUNDS_MAX {
            if let Ok(Some(leader)) = self.client.leader(topic, 0, CALL).await
                && self.client.connect(&leader.addr).await.is_ok()
                && let Ok(p) = self.client.produce(&leader.addr, topic, 0, records.clone(), 30_000, CALL).await
                && p.error_code != NOT_LEADER_OR_FOLLOWER
            {
                return (leader.id as u64, p.error_code, p.base_offset);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader of {topic} answered");
    }

    /// Produces until it succeeds; answers the base offset.
    async fn produce_ok(&mut self, topic: &str, records: Bytes) -> i64 {
        for _ in 0..ROUNDS_MAX {
            let (_, code, offset) = self.produce(topic, records.clone()).await;
            if code == 0 {
                return offset;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{topic} never took a write again");
    }

    /// Every record value of `topic` from `offset` up to the high watermark, read at the leader.
    async fn read_all(&mut self, topic: &str, offset: i64) -> (i16, Vec<String>) {
        let leader = self.client.leader(topic, 0, CALL).await.expect("metadata").expect("a leader");
        self.client.connect(&leader.addr).await.expect("connect");
        let mut values = Vec::new();
        let mut at = offset;
        loop {
            let p = self.client.fetch(&leader.addr, topic, 0, at, -1, 1 << 20, 0, CALL).await.expect("fetch");
            if p.error_code != 0 {
                return (p.error_code, values);
            }
            let records = p.records.unwrap_or_default();
            if records.is_empty() {
                return (0, values);
            }
            for b in split_batches(&records).expect("batches") {
                for r in keel_core::batch::records(&b).expect("records") {
                    values.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
                }
                let h = keel_core::batch::BatchHeader::parse(&b).expect("header");
                at = h.base_offset + i64::from(h.last_offset_delta) + 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_leader_answers_storage_error_and_writes_resume_without_restart() {
    let mut t = start("keel-full-disk-leader", 100).await;
    t.create("full").await;
    let first = t.produce_ok("full", batch("before", 5)).await;
    t.produce_ok("full", batch("before2", 5)).await;
    for d in t.disks.values() {
        set_full(d, true);
    }
    let (_, code, _) = t.produce("full", batch("during", 5)).await;
    assert_eq!(code, KAFKA_STORAGE_ERROR, "a full leader refuses at once with KAFKA_STORAGE_ERROR");
    let (code, values) = t.read_all("full", first).await;
    assert_eq!(code, 0, "Fetch keeps working on a full disk");
    assert_eq!(values.len(), 10, "every acknowledged record is readable: {values:?}");
    for d in t.disks.values() {
        set_full(d, false);
    }
    t.produce_ok("full", batch("after", 5)).await;
    let (code, values) = t.read_all("full", first).await;
    assert_eq!(code, 0);
    let tags: Vec<&str> = values.iter().map(|v| v.split('-').next().unwrap_or("")).collect();
    assert_eq!(tags.iter().filter(|t| **t == "before" || **t == "before2").count(), 10, "{tags:?}");
    assert_eq!(tags.iter().filter(|t| **t == "after").count(), 5, "{tags:?}");
    assert!(!tags.contains(&"during"), "a refused batch is never stored: {tags:?}");
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_stopped_by_a_full_disk_reopens_and_catches_up() {
    let mut t = start("keel-full-disk-follower", 200).await;
    t.create("follow").await;
    let group = t.group("follow");
    let first = t.produce_ok("follow", batch("a", 3)).await;
    let (leader, _, _) = t.produce("follow", batch("b", 3)).await;
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let before = t.cluster.nodes[&follower].replica(group).expect("follower replica");
    set_full(&t.disks[&follower], true);
    // The leader's disk has room: it admits, the other follower and it commit, and this
    // follower's append hits the full disk.
    let mut stopped = false;
    for i in 0..ROUNDS_MAX {
        let (_, code, _) = t.produce("follow", batch(&format!("c{i}"), 3)).await;
        assert!(code == 0 || code == KAFKA_STORAGE_ERROR, "unexpected answer {code}");
        if before.stop_cause() == Some(StopCause::NoSpace) {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stopped, "the follower's replica never failed closed for space");
    set_full(&t.disks[&follower], false);
    let last = t.produce_ok("follow", batch("d", 3)).await;
    let mut caught_up = false;
    for _ in 0..ROUNDS_MAX {
        if let Some(r) = t.cluster.nodes[&follower].replica(group)
            && !Arc::ptr_eq(&r, &before)
            && r.failed().is_none()
            && r.high_watermark() > u64::try_from(last).expect("offset")
        {
            assert_eq!(r.raft_id, before.raft_id, "the same replica rejoined, not a new one");
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "the follower never reopened and caught up");
    let (code, values) = t.read_all("follow", first).await;
    assert_eq!(code, 0);
    assert!(values.iter().any(|v| v.starts_with("d-")), "{values:?}");
    t.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_frees_its_space_at_once() {
    let mut t = start("keel-full-disk-delete", 300).await;
    t.create("big").await;
    for i in 0..40 {
        t.produce_ok("big", batch(&format!("x{i}"), 50)).await;
    }
    let group = t.group("big");
    let dirs: BTreeMap<u64, std::path::PathBuf> =
        t.cluster.nodes.iter().map(|(id, n)| (*id, n.replica(group).expect("replica").dir().to_path_buf())).collect();
    // Wait until every replica holds the data (followers may still be catching up).
    let end = t.produce_ok("big", batch("end", 1)).await;
    for _ in 0..ROUNDS_MAX {
        let hw = |n: &Arc<keel_node::node::Node>| n.replica(group).map_or(0, |r| r.high_watermark());
        if t.cluster.nodes.values().all(|n| hw(n) > u64::try_from(end).expect("offset")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let used_before: BTreeMap<u64, u64> = t.disks.iter().map(|(id, d)| (*id, d.used_bytes())).collect();
    let data_bytes = 40 * 50 * 200;
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topic_names(vec![keel_node::kafka_client::topic_name("big")]);
    let (_, resp) = t.client.request_any(4, &req, CALL).await.expect("DeleteTopics");
    assert_eq!(resp.responses[0].error_code, 0);
    for (id, disk) in &t.disks {
        let mut freed = false;
        for _ in 0..ROUNDS_MAX {
            if !disk.exists(&dirs[id]).expect("exists") && disk.used_bytes() + data_bytes <= used_before[id] {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            freed,
            "node {id}: directory still there or space not freed ({} bytes used, {} before)",
            disk.used_bytes(),
            used_before[id]
        );
    }
    t.cluster.shutdown().await;
}
