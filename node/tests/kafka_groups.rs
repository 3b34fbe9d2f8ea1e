//! Consumer groups over the Kafka API of an in-process 3-node cluster (tokio, real files),
//! driven with requests encoded by the `kafka-protocol` crate's client side: FindCoordinator,
//! the join/sync/heartbeat/leave flows with their fencing errors, offset commit and fetch
//! (single and batched groups), describe/list/delete groups and offset delete; and committed
//! offsets and group membership surviving the coordinator's node going away.
#![cfg(not(madsim))]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::CreateTopicsResponse;
use kafka_protocol::messages::DeleteGroupsRequest;
use kafka_protocol::messages::DeleteGroupsResponse;
use kafka_protocol::messages::DescribeGroupsRequest;
use kafka_protocol::messages::DescribeGroupsResponse;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::messages::FindCoordinatorResponse;
use kafka_protocol::messages::GroupId;
use kafka_protocol::messages::HeartbeatRequest;
use kafka_protocol::messages::HeartbeatResponse;
use kafka_protocol::messages::JoinGroupRequest;
use kafka_protocol::messages::JoinGroupResponse;
use kafka_protocol::messages::LeaveGroupRequest;
use kafka_protocol::messages::LeaveGroupResponse;
use kafka_protocol::messages::ListGroupsRequest;
use kafka_protocol::messages::ListGroupsResponse;
use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::messages::MetadataResponse;
use kafka_protocol::messages::OffsetCommitRequest;
use kafka_protocol::messages::OffsetCommitResponse;
use kafka_protocol::messages::OffsetDeleteRequest;
use kafka_protocol::messages::OffsetDeleteResponse;
use kafka_protocol::messages::OffsetFetchRequest;
use kafka_protocol::messages::OffsetFetchResponse;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::ProduceResponse;
use kafka_protocol::messages::SyncGroupRequest;
use kafka_protocol::messages::SyncGroupResponse;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::messages::offset_delete_request::OffsetDeleteRequestPartition;
use kafka_protocol::messages::offset_delete_request::OffsetDeleteRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::protocol::Encodable;
use kafka_protocol::protocol::StrBytes;
use keel_core::batch;
use keel_node::kafka_client::KafkaClient;

use support::Cluster;
use support::Options;

const CLUSTER: &str = "keel-kafka-groups";
const TIMEOUT: Duration = Duration::from_secs(30);
const SESSION_MS: i32 = 10_000;

// Kafka error codes the test expects.
const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const INVALID_TOPIC: i16 = 17;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const NON_EMPTY_GROUP: i16 = 68;
const MEMBER_ID_REQUIRED: i16 = 79;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

async fn start_cluster() -> Cluster {
    let mut options = Options::new(CLUSTER);
    options.broker.offsets_topic_num_partitions = 2;
    options.broker.group_initial_rebalance_delay_ms = 0;
    options.broker.group_min_session_timeout_ms = 1_000;
    Cluster::start(options).await
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

fn tname(v: &str) -> TopicName {
    TopicName(s(v))
}

/// A client: its connections and, per group, the coordinator it last found (asked again after
/// NOT_COORDINATOR, as Kafka clients do: leadership of an offsets partition may move).
struct Client {
    kafka: KafkaClient,
    bootstrap: String,
    coordinators: BTreeMap<String, (i32, String)>,
}

impl Client {
    fn new(name: &str, bootstrap: &str) -> Client {
        Client {
            kafka: KafkaClient::new(name, Vec::new(), 0),
            bootstrap: bootstrap.to_string(),
            coordinators: BTreeMap::new(),
        }
    }

    async fn call<Q: Encodable, A: kafka_protocol::protocol::Decodable>(
        &mut self,
        addr: &str,
        api: ApiKey,
        version: i16,
        body: &Q,
    ) -> A {
        self.kafka.connect(addr).await.expect("connect");
        self.kafka.call(addr, api, version, body, TIMEOUT).await.expect("answer")
    }

    /// The coordinator of `group` (FindCoordinator v3 through the bootstrap node, retried until
    /// one is known).
    async fn coordinator(&mut self, group: &str) -> (i32, String) {
        if let Some(c) = self.coordinators.get(group) {
            return c.clone();
        }
        let bootstrap = self.bootstrap.clone();
        for _ in 0..300 {
            let r: FindCoordinatorResponse = self
                .call(&bootstrap, ApiKey::FindCoordinator, 3, &FindCoordinatorRequest::default().with_key(s(group)))
                .await;
            if r.error_code == NONE {
                let c = (r.node_id.0, format!("{}:{}", r.host, r.port));
                self.coordinators.insert(group.to_string(), c.clone());
                return c;
            }
            assert_eq!(r.error_code, COORDINATOR_NOT_AVAILABLE, "FindCoordinator: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no coordinator for {group}");
    }

    /// Sends a group request to the group's coordinator until one serves it (not loading, not
    /// moved away).
    async fn group_call<Q: Encodable, A: kafka_protocol::protocol::Decodable>(
        &mut self,
        group: &str,
        api: ApiKey,
        version: i16,
        body: &Q,
        error_of: impl Fn(&A) -> i16,
    ) -> A {
        for _ in 0..300 {
            let (_, addr) = self.coordinator(group).await;
            let a: A = self.call(&addr, api, version, body).await;
            match error_of(&a) {
                COORDINATOR_LOAD_IN_PROGRESS => {}
                NOT_COORDINATOR => {
                    self.coordinators.remove(group);
                }
                _ => return a,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no coordinator of {group} became ready");
    }

    async fn join(&mut self, group: &str, member: &str, instance: Option<&str>) -> JoinGroupResponse {
        let req = join_request(group, member, instance);
        self.group_call(group, ApiKey::JoinGroup, 7, &req, |r: &JoinGroupResponse| r.error_code).await
    }

    async fn sync(
        &mut self,
        group: &str,
        member: &str,
        generation: i32,
        assign: &[(&str, &[u8])],
    ) -> SyncGroupResponse {
        let req = SyncGroupRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(generation)
            .with_member_id(s(member))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(
                assign
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(m))
                            .with_assignment(Bytes::copy_from_slice(a))
                    })
                    .collect(),
            );
        self.group_call(group, ApiKey::SyncGroup, 5, &req, |r: &SyncGroupResponse| r.error_code).await
    }

    async fn heartbeat(&mut self, group: &str, member: &str, generation: i32) -> i16 {
        let req = HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_member_id(s(member))
            .with_generation_id(generation);
        let r: HeartbeatResponse =
            self.group_call(group, ApiKey::Heartbeat, 4, &req, |r: &HeartbeatResponse| r.error_code).await;
        r.error_code
    }

    async fn commit(
        &mut self,
        group: &str,
        member: &str,
        generation: i32,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> i16 {
        let req = OffsetCommitRequest::default()
            .with_group_id(gid(group))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member))
            .with_topics(vec![OffsetCommitRequestTopic::default().with_name(tname(topic)).with_partitions(vec![
                OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_committed_metadata(Some(s("m"))),
            ])]);
        let r: OffsetCommitResponse = self
            .group_call(group, ApiKey::OffsetCommit, 8, &req, |r: &OffsetCommitResponse| {
                r.topics[0].partitions[0].error_code
            })
            .await;
        r.topics[0].partitions[0].error_code
    }

    /// OffsetFetch v5 of one partition: the committed offset (-1: none).
    async fn fetch(&mut self, group: &str, topic: &str, partition: i32) -> i64 {
        let req = OffsetFetchRequest::default().with_group_id(gid(group)).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name(tname(topic)).with_partition_indexes(vec![partition]),
        ]));
        let r: OffsetFetchResponse =
            self.group_call(group, ApiKey::OffsetFetch, 5, &req, |r: &OffsetFetchResponse| r.error_code).await;
        assert_eq!(r.error_code, NONE);
        r.topics[0].partitions[0].committed_offset
    }
}

fn subscription(topics: &[&str]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| s(t)).collect())
        .encode(&mut buf, 1)
        .expect("encode subscription");
    buf.freeze()
}

fn join_request(group: &str, member: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(20_000)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(subscription(&["t"])),
        ])
}

async fn create_topic(c: &mut Client, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        CreatableTopic::default().with_name(tname(name)).with_num_partitions(partitions).with_replication_factor(3),
    ]);
    let bootstrap = c.bootstrap.clone();
    for _ in 0..100 {
        let r: CreateTopicsResponse = c.call(&bootstrap, ApiKey::CreateTopics, 5, &req).await;
        if r.topics[0].error_code == NONE {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {name} not created");
}

/// Creates topic `t` and the offsets topic, and lets partition leadership settle (leaders move
/// to their preferred replicas after `leader_settle_ms`).
async fn prepare(c: &mut Client) {
    create_topic(c, "t", 2).await;
    c.coordinator("g1").await;
    c.coordinator("g2").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    c.coordinators.clear();
}

/// A dynamic member joins alone: MEMBER_ID_REQUIRED, then generation `expected` as leader.
async fn join_alone(c: &mut Client, group: &str, expected: i32) -> String {
    let first = c.join(group, "", None).await;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED, "JoinGroup v4+ hands out the member id first");
    let id = first.member_id.to_string();
    assert!(!id.is_empty());
    let joined = c.join(group, &id, None).await;
    assert_eq!(joined.error_code, NONE);
    assert_eq!(joined.generation_id, expected);
    assert_eq!(joined.leader.as_str(), id, "the only member leads");
    assert_eq!(joined.members.len(), 1, "the leader sees every member's subscription");
    assert_eq!(joined.members[0].metadata, subscription(&["t"]));
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_group_flows_and_their_errors() {
    let cluster = start_cluster().await;
    let any = cluster.kafka[&1].clone();
    let mut a = Client::new("member-a", &any);
    prepare(&mut a).await;

    // FindCoordinator v4 batches keys; transactional ids are refused honestly.
    let batched: FindCoordinatorResponse = a
        .call(
            &any,
            ApiKey::FindCoordinator,
            4,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g1"), s("g2")]),
        )
        .await;
    assert_eq!(batched.coordinators.len(), 2);
    assert!(batched.coordinators.iter().all(|c| c.error_code == NONE), "{batched:?}");
    assert_eq!(batched.coordinators[0].key.as_str(), "g1");
    let txn: FindCoordinatorResponse = a
        .call(&any, ApiKey::FindCoordinator, 3, &FindCoordinatorRequest::default().with_key(s("tx")).with_key_type(1))
        .await;
    assert_eq!(txn.error_code, COORDINATOR_NOT_AVAILABLE);

    // The offsets topic is internal and refuses produce.
    let md: MetadataResponse = a
        .call(
            &any,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(tname("__consumer_offsets")))])),
        )
        .await;
    assert!(md.topics[0].is_internal, "__consumer_offsets is internal");
    let mut b = batch::BatchBuilder::new(0);
    b.push(0, Some(b"k"), Some(b"v"));
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(5_000).with_topic_data(vec![
        TopicProduceData::default().with_name(tname("__consumer_offsets")).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(b.build()))),
        ]),
    ]);
    let pr: ProduceResponse = a.call(&any, ApiKey::Produce, 9, &produce).await;
    assert_eq!(pr.responses[0].partition_responses[0].error_code, INVALID_TOPIC);

    // Member A joins alone and syncs its own assignment.
    let ma = join_alone(&mut a, "g1", 1).await;
    assert_eq!(a.heartbeat("g1", &ma, 1).await, NONE, "heartbeats are fine while completing");
    let sa = a.sync("g1", &ma, 1, &[(ma.as_str(), b"A1")]).await;
    assert_eq!((sa.error_code, sa.assignment.as_ref()), (NONE, b"A1".as_ref()));
    assert_eq!(a.heartbeat("g1", &ma, 0).await, ILLEGAL_GENERATION);
    assert_eq!(a.heartbeat("g1", "nobody", 1).await, UNKNOWN_MEMBER_ID);

    // Member B joins: a rebalance; A learns of it by heartbeat and rejoins.
    let any_b = any.clone();
    let b_task = tokio::spawn(async move {
        let mut b = Client::new("member-b", &any_b);
        let first = b.join("g1", "", None).await;
        assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
        let id = first.member_id.to_string();
        let joined = b.join("g1", &id, None).await;
        (b, id, joined)
    });
    let mut rebalancing = false;
    for _ in 0..100 {
        if a.heartbeat("g1", &ma, 1).await == REBALANCE_IN_PROGRESS {
            rebalancing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rebalancing, "a joining member starts a rebalance");
    let ra = a.join("g1", &ma, None).await;
    let (mut b, mb, rb) = b_task.await.expect("member b");
    assert_eq!((ra.error_code, rb.error_code), (NONE, NONE));
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(ra.leader, rb.leader, "one leader per generation");
    assert_eq!(ra.leader.as_str(), ma, "the leader stays the leader");
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty());
    assert_eq!(a.commit("g1", &ma, 2, "t", 0, 5).await, REBALANCE_IN_PROGRESS, "no commits before the sync");
    assert_eq!(a.commit("g1", &ma, 1, "t", 0, 5).await, ILLEGAL_GENERATION, "a stale generation's commit");

    // B's SyncGroup waits for the leader's.
    let mb2 = mb.clone();
    let b_sync = tokio::spawn(async move {
        let r = b.sync("g1", &mb2, 2, &[]).await;
        (b, r)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sa = a.sync("g1", &ma, 2, &[(ma.as_str(), b"A2"), (mb.as_str(), b"B2")]).await;
    let (mut b, sb) = b_sync.await.expect("b sync");
    assert_eq!((sa.error_code, sa.assignment.as_ref()), (NONE, b"A2".as_ref()));
    assert_eq!(
        (sb.error_code, sb.assignment.as_ref()),
        (NONE, b"B2".as_ref()),
        "the follower gets the leader's assignment"
    );

    // Commits and fetches.
    assert_eq!(a.commit("g1", &ma, 2, "t", 0, 5).await, NONE);
    assert_eq!(b.commit("g1", &mb, 2, "t", 1, 7).await, NONE);
    assert_eq!(a.commit("g1", &ma, 2, "nosuchtopic", 0, 1).await, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(a.commit("g1", "", -1, "t", 0, 9).await, ILLEGAL_GENERATION, "a simple commit into a live group");
    assert_eq!(a.fetch("g1", "t", 0).await, 5);
    assert_eq!(a.fetch("g1", "t", 1).await, 7);
    let batched = OffsetFetchRequest::default()
        .with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(gid("g1")).with_topics(None)]);
    let r: OffsetFetchResponse =
        a.group_call("g1", ApiKey::OffsetFetch, 8, &batched, |r: &OffsetFetchResponse| r.groups[0].error_code).await;
    assert_eq!(r.groups.len(), 1);
    let mut got: Vec<(String, i32, i64)> = r.groups[0]
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index, p.committed_offset)))
        .collect();
    got.sort();
    assert_eq!(got, vec![("t".to_string(), 0, 5), ("t".to_string(), 1, 7)], "OffsetFetch v8, all partitions");

    // Describe, list.
    let describe = DescribeGroupsRequest::default().with_groups(vec![gid("g1")]);
    let d: DescribeGroupsResponse = a
        .group_call("g1", ApiKey::DescribeGroups, 5, &describe, |r: &DescribeGroupsResponse| r.groups[0].error_code)
        .await;
    let g1 = &d.groups[0];
    assert_eq!((g1.error_code, g1.group_state.as_str(), g1.protocol_data.as_str()), (NONE, "Stable", "range"));
    assert_eq!(g1.members.len(), 2);
    assert!(g1.members.iter().any(|m| m.member_assignment.as_ref() == b"B2"));
    let (_, coord) = a.coordinator("g1").await;
    let l: ListGroupsResponse = a
        .call(&coord, ApiKey::ListGroups, 4, &ListGroupsRequest::default().with_states_filter(vec![s("Stable")]))
        .await;
    assert!(l.groups.iter().any(|g| g.group_id.0.as_str() == "g1" && g.group_state.as_str() == "Stable"), "{l:?}");
    let l: ListGroupsResponse =
        a.call(&coord, ApiKey::ListGroups, 4, &ListGroupsRequest::default().with_states_filter(vec![s("Empty")])).await;
    assert!(!l.groups.iter().any(|g| g.group_id.0.as_str() == "g1"));

    // A live group can be neither deleted nor lose the offsets of a topic it subscribes to.
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![gid("g1")]);
    let del: DeleteGroupsResponse =
        a.group_call("g1", ApiKey::DeleteGroups, 2, &delete, |r: &DeleteGroupsResponse| r.results[0].error_code).await;
    assert_eq!(del.results[0].error_code, NON_EMPTY_GROUP);
    let od = OffsetDeleteRequest::default().with_group_id(gid("g1")).with_topics(vec![
        OffsetDeleteRequestTopic::default()
            .with_name(tname("t"))
            .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
    ]);
    let r: OffsetDeleteResponse =
        a.group_call("g1", ApiKey::OffsetDelete, 0, &od, |r: &OffsetDeleteResponse| r.error_code).await;
    assert_eq!(r.topics[0].partitions[0].error_code, GROUP_SUBSCRIBED_TO_TOPIC);

    // Both leave (LeaveGroup v3 batch); the group is Empty.
    let leave = LeaveGroupRequest::default().with_group_id(gid("g1")).with_members(vec![
        MemberIdentity::default().with_member_id(s(&ma)),
        MemberIdentity::default().with_member_id(s(&mb)),
        MemberIdentity::default().with_member_id(s("nobody")),
    ]);
    let r: LeaveGroupResponse =
        a.group_call("g1", ApiKey::LeaveGroup, 3, &leave, |r: &LeaveGroupResponse| r.error_code).await;
    assert_eq!(r.members.iter().map(|m| m.error_code).collect::<Vec<_>>(), vec![NONE, NONE, UNKNOWN_MEMBER_ID]);
    assert_eq!(a.heartbeat("g1", &ma, 2).await, UNKNOWN_MEMBER_ID);
    let r: OffsetDeleteResponse =
        a.group_call("g1", ApiKey::OffsetDelete, 0, &od, |r: &OffsetDeleteResponse| r.error_code).await;
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (NONE, NONE));
    assert_eq!(a.fetch("g1", "t", 0).await, -1, "offset deleted");
    assert_eq!(a.fetch("g1", "t", 1).await, 7);
    assert_eq!(a.commit("g1", "", -1, "t", 0, 11).await, NONE, "a simple commit into an empty group");
    let del: DeleteGroupsResponse =
        a.group_call("g1", ApiKey::DeleteGroups, 2, &delete, |r: &DeleteGroupsResponse| r.results[0].error_code).await;
    assert_eq!(del.results[0].error_code, NONE);
    assert_eq!(a.fetch("g1", "t", 1).await, -1, "a deleted group has no offsets");
    let d: DescribeGroupsResponse = a
        .group_call("g1", ApiKey::DescribeGroups, 5, &describe, |r: &DescribeGroupsResponse| r.groups[0].error_code)
        .await;
    assert_eq!(d.groups[0].group_state.as_str(), "Dead");

    // A node that does not coordinate the group says so.
    let (_, coord) = a.coordinator("g1").await;
    let other = cluster.kafka.values().find(|k| **k != coord).expect("another node").clone();
    let r: HeartbeatResponse = a
        .call(
            &other,
            ApiKey::Heartbeat,
            4,
            &HeartbeatRequest::default().with_group_id(gid("g1")).with_member_id(s("x")).with_generation_id(1),
        )
        .await;
    assert_eq!(r.error_code, NOT_COORDINATOR);
    for n in cluster.nodes.values() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_offsets_and_members_survive_the_coordinator_moving() {
    let cluster = start_cluster().await;
    let any = cluster.kafka[&1].clone();
    let mut a = Client::new("member-a", &any);
    prepare(&mut a).await;
    let ma = join_alone(&mut a, "g", 1).await;
    let sa = a.sync("g", &ma, 1, &[(ma.as_str(), b"A1")]).await;
    assert_eq!(sa.error_code, NONE);
    assert_eq!(a.commit("g", &ma, 1, "t", 0, 41).await, NONE);
    assert_eq!(a.commit("g", &ma, 1, "t", 1, 42).await, NONE);
    assert_eq!(a.commit("simple", "", -1, "t", 0, 7).await, NONE);
    // The coordinator's node goes away; another replica of the offsets partition takes over.
    let (coord_id, _) = a.coordinator("g").await;
    let gone = u64::try_from(coord_id).expect("node id");
    cluster.nodes[&gone].shutdown().await;
    let survivor = cluster.kafka.iter().find(|(id, _)| **id != gone).map(|(_, a)| a.clone()).expect("survivor");
    let mut b = Client::new("after", &survivor);
    let mut moved = false;
    for _ in 0..300 {
        b.coordinators.clear();
        if b.coordinator("g").await.0 != coord_id {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "the coordinator moved to another node");
    assert_eq!(b.fetch("g", "t", 0).await, 41, "committed offsets survive the coordinator");
    assert_eq!(b.fetch("g", "t", 1).await, 42);
    assert_eq!(b.fetch("simple", "t", 0).await, 7);
    // The member keeps its generation: no rebalance after the failover.
    assert_eq!(b.heartbeat("g", &ma, 1).await, NONE, "the restored group is Stable with its members");
    let again = b.sync("g", &ma, 1, &[]).await;
    assert_eq!((again.error_code, again.assignment.as_ref()), (NONE, b"A1".as_ref()), "assignment restored");
    for n in cluster.nodes.values() {
        n.shutdown().await;
    }
}
