//! The Kafka listener's request decoding (`keel_node::kafka::decode_request`) against requests
//! encoded the way clients encode them (the `kafka-protocol` crate's client-side encoders).
//!
//! What it protects: STYLE rule 7 (decoding bytes from the network never panics) and the
//! listener's contract with clients: every version it announces in ApiVersions is decoded (with
//! random strings, arrays, null values and unknown tagged fields where the version has them);
//! a cut-off frame is refused with the right error; an unknown API or a version outside the
//! served range is refused before the body is read, except ApiVersions, which answers any
//! version so that a client can learn the ranges.

use std::collections::BTreeMap;
use std::fmt::Debug;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, DescribeClusterRequest, RequestHeader, TopicName, TransactionalId,
    alter_configs_request as alter, alter_partition_reassignments_request as reassign,
    create_partitions_request as cpart, create_topics_request as ctopic, delete_topics_request as dtopic,
    describe_configs_request as dconf, fetch_request as fetch, incremental_alter_configs_request as ialter,
    list_offsets_request as loff, list_partition_reassignments_request as lreassign, metadata_request as meta,
    produce_request as produce,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, ProducerId, SyncGroupRequest,
    offset_fetch_request::OffsetFetchRequestGroup,
};
use kafka_protocol::messages::{
    describe_log_dirs_request as dirs, elect_leaders_request as elect, offset_for_leader_epoch_request as epoch,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes, decode_request_header_from_buffer};
use keel_node::kafka::{FrameError, decode_request, served_versions};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, TestError, TestRunner};
use uuid::Uuid;

/// Cases per (API, version): 166 versions are served, so about 5,300 requests in all.
const CASES_PER_VERSION: u32 = 32;
/// Random cut points per request (besides the last byte and the header's end).
const CUTS_PER_REQUEST: usize = 6;
/// Tags of the unknown tagged fields we add: far above every tag the schemas define (0..=3).
const UNKNOWN_TAGS: std::ops::Range<i32> = 1000..1064;
/// Request header fields of fixed size: API key, API version, correlation id.
const FIXED_HEADER_BYTES: usize = 8;

// ---- Field generators -------------------------------------------------------------------------

/// Any Unicode text (multi-byte characters included), as the protocol's strings carry UTF-8.
fn text() -> BoxedStrategy<StrBytes> {
    prop_oneof![
        3 => "[a-z0-9._-]{0,12}",
        1 => "\\PC{0,8}",
    ]
    .prop_map(StrBytes::from_string)
    .boxed()
}

fn topic() -> BoxedStrategy<TopicName> {
    text().prop_map(TopicName).boxed()
}

fn bytes(len_max: usize) -> BoxedStrategy<Bytes> {
    vec(any::<u8>(), 0..=len_max).prop_map(Bytes::from).boxed()
}

fn uuid() -> BoxedStrategy<Uuid> {
    prop_oneof![1 => Just(Uuid::nil()), 3 => any::<u128>().prop_map(Uuid::from_u128)].boxed()
}

/// Unknown tagged fields, which a receiver must keep and skip; only flexible versions have any.
fn tags(flexible: bool) -> BoxedStrategy<BTreeMap<i32, Bytes>> {
    if flexible { btree_map(UNKNOWN_TAGS, bytes(6), 0..3).boxed() } else { Just(BTreeMap::new()).boxed() }
}

fn list<T: Debug + 'static>(element: BoxedStrategy<T>, len_max: usize) -> BoxedStrategy<Vec<T>> {
    vec(element, 0..=len_max).boxed()
}

// ---- One generator per served API: a field is set only in the versions that have it ---------

fn api_versions(v: i16, flex: bool) -> BoxedStrategy<ApiVersionsRequest> {
    (text(), text(), tags(flex))
        .prop_map(move |(name, version, tags)| {
            let mut r = ApiVersionsRequest::default();
            if v >= 3 {
                r.client_software_name = name;
                r.client_software_version = version;
            }
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn metadata(v: i16, flex: bool) -> BoxedStrategy<meta::MetadataRequest> {
    let topic = (uuid(), proptest::option::weighted(0.8, topic()), tags(flex)).prop_map(move |(id, name, tags)| {
        let mut t = meta::MetadataRequestTopic::default();
        if v >= 10 {
            t.topic_id = id;
            t.name = name; // nullable from v10
        } else {
            t.name = Some(name.unwrap_or_default());
        }
        t.unknown_tagged_fields = tags;
        t
    });
    let topics = proptest::option::weighted(0.8, list(topic.boxed(), 3));
    (topics, any::<[bool; 3]>(), tags(flex))
        .prop_map(move |(topics, [auto_create, cluster_ops, topic_ops], tags)| {
            let mut r = meta::MetadataRequest::default();
            r.topics = if v >= 1 { topics } else { Some(topics.unwrap_or_default()) }; // null = all, from v1
            if v >= 4 {
                r.allow_auto_topic_creation = auto_create;
            }
            if (8..=10).contains(&v) {
                r.include_cluster_authorized_operations = cluster_ops;
            }
            if v >= 8 {
                r.include_topic_authorized_operations = topic_ops;
            }
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

/// InitProducerId: a transactional id or none, a timeout, and from v3 the producer id and epoch
/// of an epoch bump (KIP-360).
fn init_producer_id(v: i16, flex: bool) -> BoxedStrategy<InitProducerIdRequest> {
    (proptest::option::of(text()), any::<i32>(), any::<i64>(), any::<i16>(), tags(flex))
        .prop_map(move |(transactional_id, timeout_ms, producer_id, epoch, tags)| {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = transactional_id.map(TransactionalId);
            r.transaction_timeout_ms = timeout_ms;
            if v >= 3 {
                r.producer_id = ProducerId(producer_id);
                r.producer_epoch = epoch;
            }
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn describe_cluster(v: i16, flex: bool) -> BoxedStrategy<DescribeClusterRequest> {
    (any::<bool>(), any::<i8>(), any::<bool>(), tags(flex))
        .prop_map(move |(cluster_ops, endpoint_type, fenced, tags)| {
            let mut r = DescribeClusterRequest::default();
            r.include_cluster_authorized_operations = cluster_ops;
            if v >= 1 {
                r.endpoint_type = endpoint_type;
            }
            if v >= 2 {
                r.include_fenced_brokers = fenced;
            }
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn produce(flex: bool) -> BoxedStrategy<produce::ProduceRequest> {
    // The records are opaque bytes here (Keel checks batches when it handles the request).
    let partition =
        (any::<i32>(), proptest::option::weighted(0.9, bytes(48)), tags(flex)).prop_map(|(index, records, tags)| {
            let mut p = produce::PartitionProduceData::default();
            p.index = index;
            p.records = records;
            p.unknown_tagged_fields = tags;
            p
        });
    let topic = (topic(), list(partition.boxed(), 3), tags(flex)).prop_map(|(name, partitions, tags)| {
        let mut t = produce::TopicProduceData::default();
        t.name = name; // v3-12 (v13 names topics by id; Keel serves up to v12)
        t.partition_data = partitions;
        t.unknown_tagged_fields = tags;
        t
    });
    let transactional_id = proptest::option::of(text().prop_map(TransactionalId));
    (transactional_id, any::<i16>(), any::<i32>(), list(topic.boxed(), 3), tags(flex))
        .prop_map(|(transactional_id, acks, timeout_ms, topics, tags)| {
            let mut r = produce::ProduceRequest::default();
            r.transactional_id = transactional_id;
            r.acks = acks;
            r.timeout_ms = timeout_ms;
            r.topic_data = topics;
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn fetch(v: i16, flex: bool) -> BoxedStrategy<fetch::FetchRequest> {
    let partition = (
        (any::<i32>(), any::<i32>(), any::<i64>(), any::<i32>()),
        (any::<i64>(), any::<i32>(), uuid(), any::<i64>()),
        tags(flex),
    )
        .prop_map(move |((partition, leader_epoch, offset, last_epoch), (log_start, max_bytes, dir, hw), tags)| {
            let mut p = fetch::FetchPartition::default();
            p.partition = partition;
            if v >= 9 {
                p.current_leader_epoch = leader_epoch;
            }
            p.fetch_offset = offset;
            if v >= 12 {
                p.last_fetched_epoch = last_epoch;
            }
            if v >= 5 {
                p.log_start_offset = log_start;
            }
            p.partition_max_bytes = max_bytes;
            if v >= 17 {
                p.replica_directory_id = dir; // tagged
            }
            if v >= 18 {
                p.high_watermark = hw; // tagged
            }
            p.unknown_tagged_fields = tags;
            p
        });
    let fetch_topic =
        (topic(), uuid(), list(partition.boxed(), 3), tags(flex)).prop_map(move |(name, id, parts, tags)| {
            let mut t = fetch::FetchTopic::default();
            if v <= 12 {
                t.topic = name;
            } else {
                t.topic_id = id;
            }
            t.partitions = parts;
            t.unknown_tagged_fields = tags;
            t
        });
    let forgotten =
        (topic(), uuid(), list(any::<i32>().boxed(), 3), tags(flex)).prop_map(move |(name, id, parts, tags)| {
            let mut t = fetch::ForgottenTopic::default();
            if v <= 12 {
                t.topic = name;
            } else {
                t.topic_id = id;
            }
            t.partitions = parts;
            t.unknown_tagged_fields = tags;
            t
        });
    let replica_state = (any::<i32>(), any::<i64>(), tags(flex)).prop_map(|(id, epoch, tags)| {
        let mut s = fetch::ReplicaState::default();
        s.replica_id = BrokerId(id);
        s.replica_epoch = epoch;
        s.unknown_tagged_fields = tags;
        s
    });
    (
        (proptest::option::of(text()), any::<i32>(), replica_state, any::<[i32; 3]>(), any::<i8>()),
        (any::<[i32; 2]>(), list(fetch_topic.boxed(), 3), list(forgotten.boxed(), 2), text(), tags(flex)),
    )
        .prop_map(
            move |(
                (cluster_id, replica_id, replica_state, [max_wait_ms, min_bytes, max_bytes], isolation),
                ([session_id, session_epoch], topics, forgotten, rack, tags),
            )| {
                let mut r = fetch::FetchRequest::default();
                if v >= 12 {
                    r.cluster_id = cluster_id; // tagged
                }
                if v <= 14 {
                    r.replica_id = BrokerId(replica_id);
                } else {
                    r.replica_state = replica_state; // tagged
                }
                r.max_wait_ms = max_wait_ms;
                r.min_bytes = min_bytes;
                r.max_bytes = max_bytes;
                r.isolation_level = isolation;
                if v >= 7 {
                    r.session_id = session_id;
                    r.session_epoch = session_epoch;
                    r.forgotten_topics_data = forgotten;
                }
                r.topics = topics;
                if v >= 11 {
                    r.rack_id = rack;
                }
                r.unknown_tagged_fields = tags;
                r
            },
        )
        .boxed()
}

fn list_offsets(v: i16, flex: bool) -> BoxedStrategy<loff::ListOffsetsRequest> {
    let partition = (any::<i32>(), any::<i32>(), any::<i64>(), tags(flex)).prop_map(
        move |(index, leader_epoch, timestamp, tags)| {
            let mut p = loff::ListOffsetsPartition::default();
            p.partition_index = index;
            if v >= 4 {
                p.current_leader_epoch = leader_epoch;
            }
            p.timestamp = timestamp;
            p.unknown_tagged_fields = tags;
            p
        },
    );
    let topic = (topic(), list(partition.boxed(), 3), tags(flex)).prop_map(|(name, parts, tags)| {
        let mut t = loff::ListOffsetsTopic::default();
        t.name = name;
        t.partitions = parts;
        t.unknown_tagged_fields = tags;
        t
    });
    (any::<i32>(), any::<i8>(), list(topic.boxed(), 3), any::<i32>(), tags(flex))
        .prop_map(move |(replica_id, isolation, topics, timeout_ms, tags)| {
            let mut r = loff::ListOffsetsRequest::default();
            r.replica_id = BrokerId(replica_id);
            if v >= 2 {
                r.isolation_level = isolation;
            }
            r.topics = topics;
            if v >= 10 {
                r.timeout_ms = timeout_ms;
            }
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn create_topics(flex: bool) -> BoxedStrategy<ctopic::CreateTopicsRequest> {
    let assignment = (any::<i32>(), list(any::<i32>().prop_map(BrokerId).boxed(), 3), tags(flex)).prop_map(
        |(index, brokers, tags)| {
            let mut a = ctopic::CreatableReplicaAssignment::default();
            a.partition_index = index;
            a.broker_ids = brokers;
            a.unknown_tagged_fields = tags;
            a
        },
    );
    let config = (text(), proptest::option::of(text()), tags(flex)).prop_map(|(name, value, tags)| {
        let mut c = ctopic::CreatableTopicConfig::default();
        c.name = name;
        c.value = value;
        c.unknown_tagged_fields = tags;
        c
    });
    let topic = (topic(), any::<i32>(), any::<i16>(), list(assignment.boxed(), 2), list(config.boxed(), 2), tags(flex))
        .prop_map(|(name, partitions, rf, assignments, configs, tags)| {
            let mut t = ctopic::CreatableTopic::default();
            t.name = name;
            t.num_partitions = partitions;
            t.replication_factor = rf;
            t.assignments = assignments;
            t.configs = configs;
            t.unknown_tagged_fields = tags;
            t
        });
    (list(topic.boxed(), 3), any::<i32>(), any::<bool>(), tags(flex))
        .prop_map(|(topics, timeout_ms, validate_only, tags)| {
            let mut r = ctopic::CreateTopicsRequest::default();
            r.topics = topics;
            r.timeout_ms = timeout_ms;
            r.validate_only = validate_only;
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn delete_topics(v: i16, flex: bool) -> BoxedStrategy<dtopic::DeleteTopicsRequest> {
    let state = (proptest::option::of(topic()), uuid(), tags(flex)).prop_map(|(name, id, tags)| {
        let mut s = dtopic::DeleteTopicState::default();
        s.name = name;
        s.topic_id = id;
        s.unknown_tagged_fields = tags;
        s
    });
    (list(state.boxed(), 3), list(topic(), 3), any::<i32>(), tags(flex))
        .prop_map(move |(states, names, timeout_ms, tags)| {
            let mut r = dtopic::DeleteTopicsRequest::default();
            if v >= 6 {
                r.topics = states;
            } else {
                r.topic_names = names;
            }
            r.timeout_ms = timeout_ms;
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn create_partitions(flex: bool) -> BoxedStrategy<cpart::CreatePartitionsRequest> {
    let assignment = (list(any::<i32>().prop_map(BrokerId).boxed(), 3), tags(flex)).prop_map(|(brokers, tags)| {
        let mut a = cpart::CreatePartitionsAssignment::default();
        a.broker_ids = brokers;
        a.unknown_tagged_fields = tags;
        a
    });
    let topic = (topic(), any::<i32>(), proptest::option::of(list(assignment.boxed(), 2)), tags(flex)).prop_map(
        |(name, count, assignments, tags)| {
            let mut t = cpart::CreatePartitionsTopic::default();
            t.name = name;
            t.count = count;
            t.assignments = assignments;
            t.unknown_tagged_fields = tags;
            t
        },
    );
    (list(topic.boxed(), 3), any::<i32>(), any::<bool>(), tags(flex))
        .prop_map(|(topics, timeout_ms, validate_only, tags)| {
            let mut r = cpart::CreatePartitionsRequest::default();
            r.topics = topics;
            r.timeout_ms = timeout_ms;
            r.validate_only = validate_only;
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

/// Every version is flexible; v1 adds `allow_replication_factor_change`. Null replica lists
/// (cancellations) included.
fn alter_partition_reassignments(v: i16) -> BoxedStrategy<reassign::AlterPartitionReassignmentsRequest> {
    let replicas = proptest::option::of(list(any::<i32>().prop_map(BrokerId).boxed(), 4));
    let partition = (any::<i32>(), replicas, tags(true)).prop_map(|(index, replicas, tags)| {
        let mut p = reassign::ReassignablePartition::default();
        p.partition_index = index;
        p.replicas = replicas;
        p.unknown_tagged_fields = tags;
        p
    });
    let topic = (topic(), list(partition.boxed(), 3), tags(true)).prop_map(|(name, partitions, tags)| {
        let mut t = reassign::ReassignableTopic::default();
        t.name = name;
        t.partitions = partitions;
        t.unknown_tagged_fields = tags;
        t
    });
    (list(topic.boxed(), 3), any::<i32>(), any::<bool>(), tags(true))
        .prop_map(move |(topics, timeout_ms, allow_rf_change, tags)| {
            let mut r = reassign::AlterPartitionReassignmentsRequest::default();
            r.topics = topics;
            r.timeout_ms = timeout_ms;
            if v >= 1 {
                r.allow_replication_factor_change = allow_rf_change;
            }
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

/// v0 only, flexible; a null topic list asks for every partition.
fn list_partition_reassignments() -> BoxedStrategy<lreassign::ListPartitionReassignmentsRequest> {
    let topic = (topic(), list(any::<i32>().boxed(), 4), tags(true)).prop_map(|(name, indexes, tags)| {
        let mut t = lreassign::ListPartitionReassignmentsTopics::default();
        t.name = name;
        t.partition_indexes = indexes;
        t.unknown_tagged_fields = tags;
        t
    });
    (proptest::option::of(list(topic.boxed(), 3)), any::<i32>(), tags(true))
        .prop_map(|(topics, timeout_ms, tags)| {
            let mut r = lreassign::ListPartitionReassignmentsRequest::default();
            r.topics = topics;
            r.timeout_ms = timeout_ms;
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

/// v2 (librdkafka) to v4 (flexible); v3 adds the replica id.
fn offset_for_leader_epoch(v: i16, flex: bool) -> BoxedStrategy<epoch::OffsetForLeaderEpochRequest> {
    let partition = (any::<i32>(), any::<i32>(), any::<i32>(), tags(flex)).prop_map(|(p, current, e, tags)| {
        let mut q = epoch::OffsetForLeaderPartition::default();
        q.partition = p;
        q.current_leader_epoch = current;
        q.leader_epoch = e;
        q.unknown_tagged_fields = tags;
        q
    });
    let topic = (topic(), list(partition.boxed(), 3), tags(flex)).prop_map(|(name, partitions, tags)| {
        let mut t = epoch::OffsetForLeaderTopic::default();
        t.topic = name;
        t.partitions = partitions;
        t.unknown_tagged_fields = tags;
        t
    });
    (list(topic.boxed(), 3), any::<i32>(), tags(flex))
        .prop_map(move |(topics, replica_id, tags)| {
            let mut r = epoch::OffsetForLeaderEpochRequest::default();
            r.topics = topics;
            if v >= 3 {
                r.replica_id = BrokerId(replica_id);
            }
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

/// v0 has no election type; v2 is flexible. A null list means every partition.
fn elect_leaders(v: i16, flex: bool) -> BoxedStrategy<elect::ElectLeadersRequest> {
    let tp = (topic(), list(any::<i32>().boxed(), 4), tags(flex)).prop_map(|(name, partitions, tags)| {
        let mut t = elect::TopicPartitions::default();
        t.topic = name;
        t.partitions = partitions;
        t.unknown_tagged_fields = tags;
        t
    });
    (proptest::option::of(list(tp.boxed(), 3)), any::<i8>(), any::<i32>(), tags(flex))
        .prop_map(move |(tps, kind, timeout_ms, tags)| {
            let mut r = elect::ElectLeadersRequest::default();
            r.topic_partitions = tps;
            if v >= 1 {
                r.election_type = kind;
            }
            r.timeout_ms = timeout_ms;
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

/// v1 to v4 (flexible from v2). A null topic list asks for every partition.
fn describe_log_dirs(flex: bool) -> BoxedStrategy<dirs::DescribeLogDirsRequest> {
    let t = (topic(), list(any::<i32>().boxed(), 4), tags(flex)).prop_map(|(name, partitions, tags)| {
        let mut t = dirs::DescribableLogDirTopic::default();
        t.topic = name;
        t.partitions = partitions;
        t.unknown_tagged_fields = tags;
        t
    });
    (proptest::option::of(list(t.boxed(), 3)), tags(flex))
        .prop_map(|(topics, tags)| {
            let mut r = dirs::DescribeLogDirsRequest::default();
            r.topics = topics;
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn describe_configs(v: i16, flex: bool) -> BoxedStrategy<dconf::DescribeConfigsRequest> {
    let resource = (any::<i8>(), text(), proptest::option::of(list(text(), 3)), tags(flex)).prop_map(
        |(kind, name, keys, tags)| {
            let mut r = dconf::DescribeConfigsResource::default();
            r.resource_type = kind;
            r.resource_name = name;
            r.configuration_keys = keys;
            r.unknown_tagged_fields = tags;
            r
        },
    );
    (list(resource.boxed(), 3), any::<bool>(), any::<bool>(), tags(flex))
        .prop_map(move |(resources, synonyms, documentation, tags)| {
            let mut r = dconf::DescribeConfigsRequest::default();
            r.resources = resources;
            r.include_synonyms = synonyms;
            if v >= 3 {
                r.include_documentation = documentation;
            }
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn alter_configs(flex: bool) -> BoxedStrategy<alter::AlterConfigsRequest> {
    let config = (text(), proptest::option::of(text()), tags(flex)).prop_map(|(name, value, tags)| {
        let mut c = alter::AlterableConfig::default();
        c.name = name;
        c.value = value;
        c.unknown_tagged_fields = tags;
        c
    });
    let resource =
        (any::<i8>(), text(), list(config.boxed(), 3), tags(flex)).prop_map(|(kind, name, configs, tags)| {
            let mut r = alter::AlterConfigsResource::default();
            r.resource_type = kind;
            r.resource_name = name;
            r.configs = configs;
            r.unknown_tagged_fields = tags;
            r
        });
    (list(resource.boxed(), 3), any::<bool>(), tags(flex))
        .prop_map(|(resources, validate_only, tags)| {
            let mut r = alter::AlterConfigsRequest::default();
            r.resources = resources;
            r.validate_only = validate_only;
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

fn incremental_alter_configs(flex: bool) -> BoxedStrategy<ialter::IncrementalAlterConfigsRequest> {
    let config = (text(), any::<i8>(), proptest::option::of(text()), tags(flex)).prop_map(|(name, op, value, tags)| {
        let mut c = ialter::AlterableConfig::default();
        c.name = name;
        c.config_operation = op;
        c.value = value;
        c.unknown_tagged_fields = tags;
        c
    });
    let resource =
        (any::<i8>(), text(), list(config.boxed(), 3), tags(flex)).prop_map(|(kind, name, configs, tags)| {
            let mut r = ialter::AlterConfigsResource::default();
            r.resource_type = kind;
            r.resource_name = name;
            r.configs = configs;
            r.unknown_tagged_fields = tags;
            r
        });
    (list(resource.boxed(), 3), any::<bool>(), tags(flex))
        .prop_map(|(resources, validate_only, tags)| {
            let mut r = ialter::IncrementalAlterConfigsRequest::default();
            r.resources = resources;
            r.validate_only = validate_only;
            r.unknown_tagged_fields = tags;
            r
        })
        .boxed()
}

// ---- A request of any served API ---------------------------------------------------------------

/// One request body of each API Keel serves, with the generic codec operations on it.
macro_rules! bodies {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        #[derive(Debug, Clone)]
        enum Body {
            $($variant($ty),)*
        }

        impl Body {
            fn encode(&self, buf: &mut BytesMut, version: i16) -> anyhow::Result<()> {
                match self {
                    $(Body::$variant(b) => b.encode(buf, version),)*
                }
            }

            /// Decodes `buf` as a body of the same API and checks that it is this body and
            /// that it took every byte.
            fn decodes_back(&self, mut buf: Bytes, version: i16) -> Result<(), TestCaseError> {
                match self {
                    $(Body::$variant(b) => {
                        let back = <$ty>::decode(&mut buf, version)
                            .map_err(|e| TestCaseError::fail(format!("body does not decode: {e:#}")))?;
                        prop_assert_eq!(&back, b);
                    })*
                }
                prop_assert_eq!(buf.remaining(), 0, "the body decoder left bytes over");
                Ok(())
            }
        }
    };
}

bodies! {
    ApiVersions(ApiVersionsRequest),
    Metadata(meta::MetadataRequest),
    DescribeCluster(DescribeClusterRequest),
    Produce(produce::ProduceRequest),
    Fetch(fetch::FetchRequest),
    ListOffsets(loff::ListOffsetsRequest),
    OffsetForLeaderEpoch(epoch::OffsetForLeaderEpochRequest),
    ElectLeaders(elect::ElectLeadersRequest),
    DescribeLogDirs(dirs::DescribeLogDirsRequest),
    CreateTopics(ctopic::CreateTopicsRequest),
    DeleteTopics(dtopic::DeleteTopicsRequest),
    CreatePartitions(cpart::CreatePartitionsRequest),
    AlterPartitionReassignments(reassign::AlterPartitionReassignmentsRequest),
    ListPartitionReassignments(lreassign::ListPartitionReassignmentsRequest),
    DescribeConfigs(dconf::DescribeConfigsRequest),
    AlterConfigs(alter::AlterConfigsRequest),
    IncrementalAlterConfigs(ialter::IncrementalAlterConfigsRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
    OffsetDelete(OffsetDeleteRequest),
    InitProducerId(InitProducerIdRequest),
}

/// A request of a group API: a random group id (or coordinator key) where version `v` has one,
/// random tagged fields where it is flexible, every other field its default.
fn group_request<T: Default + Debug + Clone + 'static>(
    flex: bool,
    set: impl Fn(&mut T, StrBytes, BTreeMap<i32, Bytes>) + Clone + 'static,
) -> BoxedStrategy<T> {
    (text(), tags(flex))
        .prop_map(move |(id, tags)| {
            let mut r = T::default();
            set(&mut r, id, tags);
            r
        })
        .boxed()
}

/// Random requests of `api` version `v`. Panics on an API Keel serves but this test does not
/// know: a new API in `served_versions()` needs a generator here.
fn body(api: ApiKey, v: i16) -> BoxedStrategy<Body> {
    let flex = api.request_header_version(v) >= 2;
    match api {
        ApiKey::ApiVersions => api_versions(v, flex).prop_map(Body::ApiVersions).boxed(),
        ApiKey::Metadata => metadata(v, flex).prop_map(Body::Metadata).boxed(),
        ApiKey::DescribeCluster => describe_cluster(v, flex).prop_map(Body::DescribeCluster).boxed(),
        ApiKey::Produce => produce(flex).prop_map(Body::Produce).boxed(),
        ApiKey::Fetch => fetch(v, flex).prop_map(Body::Fetch).boxed(),
        ApiKey::ListOffsets => list_offsets(v, flex).prop_map(Body::ListOffsets).boxed(),
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch(v, flex).prop_map(Body::OffsetForLeaderEpoch).boxed(),
        ApiKey::ElectLeaders => elect_leaders(v, flex).prop_map(Body::ElectLeaders).boxed(),
        ApiKey::DescribeLogDirs => describe_log_dirs(flex).prop_map(Body::DescribeLogDirs).boxed(),
        ApiKey::CreateTopics => create_topics(flex).prop_map(Body::CreateTopics).boxed(),
        ApiKey::DeleteTopics => delete_topics(v, flex).prop_map(Body::DeleteTopics).boxed(),
        ApiKey::CreatePartitions => create_partitions(flex).prop_map(Body::CreatePartitions).boxed(),
        ApiKey::AlterPartitionReassignments => {
            alter_partition_reassignments(v).prop_map(Body::AlterPartitionReassignments).boxed()
        }
        ApiKey::ListPartitionReassignments => {
            list_partition_reassignments().prop_map(Body::ListPartitionReassignments).boxed()
        }
        ApiKey::DescribeConfigs => describe_configs(v, flex).prop_map(Body::DescribeConfigs).boxed(),
        ApiKey::AlterConfigs => alter_configs(flex).prop_map(Body::AlterConfigs).boxed(),
        ApiKey::IncrementalAlterConfigs => {
            incremental_alter_configs(flex).prop_map(Body::IncrementalAlterConfigs).boxed()
        }
        ApiKey::FindCoordinator => group_request(flex, move |r: &mut FindCoordinatorRequest, id, tags| {
            if v >= 4 {
                r.coordinator_keys = vec![id];
            } else {
                r.key = id;
            }
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::FindCoordinator)
        .boxed(),
        ApiKey::JoinGroup => group_request(flex, |r: &mut JoinGroupRequest, id, tags| {
            r.group_id = GroupId(id);
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::JoinGroup)
        .boxed(),
        ApiKey::SyncGroup => group_request(flex, |r: &mut SyncGroupRequest, id, tags| {
            r.group_id = GroupId(id);
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::SyncGroup)
        .boxed(),
        ApiKey::Heartbeat => group_request(flex, |r: &mut HeartbeatRequest, id, tags| {
            r.group_id = GroupId(id);
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::Heartbeat)
        .boxed(),
        ApiKey::LeaveGroup => group_request(flex, |r: &mut LeaveGroupRequest, id, tags| {
            r.group_id = GroupId(id);
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::LeaveGroup)
        .boxed(),
        ApiKey::OffsetCommit => group_request(flex, |r: &mut OffsetCommitRequest, id, tags| {
            r.group_id = GroupId(id);
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::OffsetCommit)
        .boxed(),
        ApiKey::OffsetFetch => group_request(flex, move |r: &mut OffsetFetchRequest, id, tags| {
            if v >= 8 {
                r.groups = vec![OffsetFetchRequestGroup::default().with_group_id(GroupId(id))];
            } else {
                r.group_id = GroupId(id);
            }
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::OffsetFetch)
        .boxed(),
        ApiKey::DescribeGroups => group_request(flex, |r: &mut DescribeGroupsRequest, id, tags| {
            r.groups = vec![GroupId(id)];
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::DescribeGroups)
        .boxed(),
        ApiKey::ListGroups => group_request(flex, |r: &mut ListGroupsRequest, _, tags| {
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::ListGroups)
        .boxed(),
        ApiKey::DeleteGroups => group_request(flex, |r: &mut DeleteGroupsRequest, id, tags| {
            r.groups_names = vec![GroupId(id)];
            r.unknown_tagged_fields = tags;
        })
        .prop_map(Body::DeleteGroups)
        .boxed(),
        ApiKey::OffsetDelete => group_request(flex, |r: &mut OffsetDeleteRequest, id, _| {
            r.group_id = GroupId(id);
        })
        .prop_map(Body::OffsetDelete)
        .boxed(),
        ApiKey::InitProducerId => init_producer_id(v, flex).prop_map(Body::InitProducerId).boxed(),
        other => panic!("{other:?} is served but kafka_codec has no generator for it"),
    }
}

/// A request header for `api` version `v`, of the header version that API version uses.
fn header(api: ApiKey, v: i16) -> BoxedStrategy<RequestHeader> {
    let flex = api.request_header_version(v) >= 2;
    (any::<i32>(), proptest::option::of(text()), tags(flex))
        .prop_map(move |(correlation_id, client_id, tags)| {
            RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(v)
                .with_correlation_id(correlation_id)
                .with_client_id(client_id)
                .with_unknown_tagged_fields(tags)
        })
        .boxed()
}

/// A header with only the fixed fields, as every header version starts.
fn fixed_header(api_key: i16, version: i16, correlation_id: i32) -> BytesMut {
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame
}

/// The error a strict prefix of a valid frame must get: too short for the fixed header fields,
/// or (API and version readable) a header or body cut off.
fn check_cut(frame: &Bytes, cut: usize) -> Result<(), TestCaseError> {
    let result = decode_request(frame.slice(..cut));
    if cut < FIXED_HEADER_BYTES {
        prop_assert!(matches!(result, Err(FrameError::Short(n)) if n == cut), "cut at {cut}: {result:?}");
    } else {
        prop_assert!(
            matches!(result, Err(FrameError::Malformed { .. })),
            "cut at {cut} of {}: {result:?}",
            frame.len()
        );
    }
    Ok(())
}

/// Frames `body` after `header` the way a client does, checks that Keel decodes it as
/// (`api`, `v`), and that every cut-off version of it is refused.
fn check_request(
    api: ApiKey,
    v: i16,
    header: &RequestHeader,
    body: &Body,
    cuts: &[Index],
) -> Result<(), TestCaseError> {
    let header_version = api.request_header_version(v);
    let mut frame = BytesMut::new();
    header.encode(&mut frame, header_version).map_err(|e| TestCaseError::fail(format!("header encode: {e:#}")))?;
    let header_bytes = frame.len();
    body.encode(&mut frame, v).map_err(|e| TestCaseError::fail(format!("body encode: {e:#}")))?;
    let frame = frame.freeze();

    // The generators are meaningful: the bytes are exactly this header and this body.
    let mut rest = frame.clone();
    let header_back = decode_request_header_from_buffer(&mut rest)
        .map_err(|e| TestCaseError::fail(format!("header does not decode: {e:#}")))?;
    prop_assert_eq!(&header_back, header);
    prop_assert_eq!(frame.len() - rest.len(), header_bytes);
    body.decodes_back(rest, v)?;

    // What the listener does with it.
    let decoded = decode_request(frame.clone());
    prop_assert!(matches!(decoded, Ok(d) if d == (api, v)), "{api:?} v{v} decoded as {decoded:?}");

    // The decoders read front to back and took exactly every byte of the frame (checked
    // above), so no strict prefix holds a whole request: each must be refused.
    let n = frame.len();
    check_cut(&frame, n - 1)?;
    check_cut(&frame, header_bytes.min(n - 1))?;
    check_cut(&frame, header_bytes.saturating_sub(1))?;
    for cut in cuts {
        check_cut(&frame, cut.index(n))?;
    }
    Ok(())
}

/// Every (API, version) Keel serves.
fn served_pairs() -> Vec<(ApiKey, i16)> {
    let pairs: Vec<(ApiKey, i16)> =
        served_versions().into_iter().flat_map(|(api, lo, hi)| (lo..=hi).map(move |v| (api, v))).collect();
    assert!(pairs.len() >= 12, "served_versions() lists too little: {pairs:?}");
    pairs
}

// ---- Properties ---------------------------------------------------------------------------------

/// Every version of every API Keel announces decodes, with random field values, and every
/// cut-off frame of it is refused. Each (API, version) gets its own `CASES_PER_VERSION` cases.
#[test]
fn every_served_version_decodes_and_cut_frames_are_refused() {
    for (api, v) in served_pairs() {
        let config = Config { cases: CASES_PER_VERSION, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new(config);
        let strategy = (header(api, v), body(api, v), vec(any::<Index>(), CUTS_PER_REQUEST));
        let result = runner.run(&strategy, |(header, body, cuts)| check_request(api, v, &header, &body, &cuts));
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, (header, body, cuts))) => panic!(
                "{api:?} v{v}: {reason}\nminimal failing input:\n  header {header:?}\n  body {body:?}\n  cuts {cuts:?}"
            ),
            Err(e) => panic!("{api:?} v{v}: {e}"),
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    /// An API key the crate does not know is refused as such, whatever follows.
    #[test]
    fn unknown_api_is_refused(
        key in any::<i16>().prop_filter("a known API key", |k| ApiKey::try_from(*k).is_err()),
        version in any::<i16>(),
        rest in vec(any::<u8>(), 0..32),
    ) {
        let mut frame = fixed_header(key, version, 7);
        frame.extend_from_slice(&rest);
        let result = decode_request(frame.freeze());
        prop_assert!(matches!(result, Err(FrameError::UnknownApi(k)) if k == key), "{result:?}");
    }

    /// A version outside the served range is refused with that range, before the header's own
    /// version (which follows from the API's version) matters; ApiVersions answers any version
    /// (with a v0 answer listing the ranges), so it is decoded as (ApiVersions, version).
    #[test]
    fn version_outside_the_served_range(
        which in any::<Index>(),
        above in any::<bool>(),
        distance in prop_oneof![3 => 1i16..4, 1 => 1i16..=i16::MAX],
        rest in vec(any::<u8>(), 0..32),
    ) {
        let served = served_versions();
        let (api, min, max) = served[which.index(served.len())];
        let version = if above { max.saturating_add(distance) } else { min.saturating_sub(distance) };
        prop_assume!(version > max || version < min); // saturated onto the range's edge
        let mut frame = fixed_header(api as i16, version, 7);
        frame.extend_from_slice(&rest);
        let result = decode_request(frame.freeze());
        if api == ApiKey::ApiVersions {
            prop_assert!(matches!(result, Ok(d) if d == (api, version)), "{result:?}");
        } else {
            let expected = matches!(
                result,
                Err(FrameError::UnsupportedVersion { api: a, version: got, min: lo, max: hi })
                    if a == api && got == version && lo == min && hi == max
            );
            prop_assert!(expected, "{api:?} v{version} (served {min}..={max}): {result:?}");
        }
    }

    /// Arbitrary bytes: never a panic; a frame shorter than the fixed header fields is `Short`;
    /// whatever decodes is the API and version its first four bytes name, and one Keel serves.
    #[test]
    fn random_bytes(frame in vec(any::<u8>(), 0..96)) {
        let result = decode_request(Bytes::from(frame.clone()));
        if frame.len() < FIXED_HEADER_BYTES {
            prop_assert!(matches!(result, Err(FrameError::Short(n)) if n == frame.len()), "{result:?}");
        }
        if let Ok((api, version)) = result {
            prop_assert_eq!(api as i16, i16::from_be_bytes([frame[0], frame[1]]));
            prop_assert_eq!(version, i16::from_be_bytes([frame[2], frame[3]]));
            prop_assert!(api == ApiKey::ApiVersions || served_pairs().contains(&(api, version)));
        }
    }
}

/// The smallest ApiVersions requests: 8 bytes of an unsupported version (answered with v0), and
/// v0 with a null client id and an empty body, as old clients send it first.
#[test]
fn api_versions_is_always_answerable() {
    let frame = fixed_header(ApiKey::ApiVersions as i16, i16::MAX, 1).freeze();
    assert_eq!(decode_request(frame).unwrap(), (ApiKey::ApiVersions, i16::MAX));
    let mut frame = fixed_header(ApiKey::ApiVersions as i16, 0, 1);
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    assert_eq!(decode_request(frame.freeze()).unwrap(), (ApiKey::ApiVersions, 0));
    let frame = fixed_header(9999, 0, 1).freeze();
    assert!(matches!(decode_request(frame), Err(FrameError::UnknownApi(9999))));
}

#[global_allocator]
static ALLOC: keel_node::alloc::ReservingAllocator = keel_node::alloc::ReservingAllocator;

/// Finding 3 in docs/fuzzing.md: a Metadata v0 request of 14 bytes whose topic array claims
/// i32::MAX elements. The crate's array decoder calls `Vec::with_capacity(count)` before reading
/// one element: 2^31 - 1 × 72 bytes, which the system allocator refuses, and Rust aborts the
/// process. With Keel's allocator (installed in this test binary as in `keel`), the block is
/// reserved address space, the decode fails at the first missing element, and the request is
/// refused. Without it, this test takes the test binary down.
#[test]
fn huge_array_count_is_refused_not_allocated() {
    let mut frame = fixed_header(ApiKey::Metadata as i16, 0, 1);
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // client id: null
    frame.extend_from_slice(&i32::MAX.to_be_bytes()); // topics: 2^31 - 1 of them, none present
    assert!(matches!(decode_request(frame.freeze()), Err(FrameError::Malformed { .. })));
}

/// The valid requests pinned for the fuzzer (`fuzz/regressions/kafka_request/valid-*`: as
/// librdkafka and kafka-python send them, in the target's raw mode — a 0 byte, then the frame)
/// decode as the API and version their header names.
#[test]
fn pinned_valid_requests_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/kafka_request");
    let mut decoded = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the pinned inputs") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.starts_with("valid-") {
            continue;
        }
        let input = std::fs::read(&path).expect("readable");
        assert!(input.len() > FIXED_HEADER_BYTES && input[0] == 0, "{name}: raw mode, a whole header");
        let named = (i16::from_be_bytes([input[1], input[2]]), i16::from_be_bytes([input[3], input[4]]));
        let (api, version) =
            decode_request(Bytes::copy_from_slice(&input[1..])).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((api as i16, version), named, "{name}");
        decoded.push(name);
    }
    assert!(decoded.len() >= 17, "pinned valid requests: {decoded:?}");
}
