//! Committed offsets and group administration: OffsetCommit, OffsetFetch (v8+: several
//! groups), OffsetDelete, DescribeGroups, ListGroups and DeleteGroups.
//!
//! Every group is served by its coordinator only (NOT_COORDINATOR elsewhere); ListGroups lists
//! the groups this node coordinates, as Kafka's brokers do (admin clients ask every broker).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Buf;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::DeleteGroupsRequest;
use kafka_protocol::messages::DeleteGroupsResponse;
use kafka_protocol::messages::DescribeGroupsRequest;
use kafka_protocol::messages::DescribeGroupsResponse;
use kafka_protocol::messages::GroupId;
use kafka_protocol::messages::ListGroupsRequest;
use kafka_protocol::messages::ListGroupsResponse;
use kafka_protocol::messages::OffsetCommitRequest;
use kafka_protocol::messages::OffsetCommitResponse;
use kafka_protocol::messages::OffsetDeleteRequest;
use kafka_protocol::messages::OffsetDeleteResponse;
use kafka_protocol::messages::OffsetFetchRequest;
use kafka_protocol::messages::OffsetFetchResponse;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::describe_groups_response::DescribedGroupMember;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::OffsetCommitResponsePartition;
use kafka_protocol::messages::offset_commit_response::OffsetCommitResponseTopic;
use kafka_protocol::messages::offset_delete_response::OffsetDeleteResponsePartition;
use kafka_protocol::messages::offset_delete_response::OffsetDeleteResponseTopic;
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponsePartition;
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponsePartitions;
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseTopic;
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseTopics;
use kafka_protocol::protocol::Decodable;
use keel_core::group::GroupState;
use keel_core::group::Groups;
use keel_core::group::OffsetAndMetadata;
use keel_core::group::membership::subscriptions;
use keel_core::group::offsets::Commit;

use super::Answer;
use super::KafkaConfig;
use super::Request;
use super::codes::str_bytes;
use super::codes::topic_name;
use super::group::coord_error;
use super::group::coordinator;
use super::group::group_error;
use super::respond;
use crate::group::OFFSETS_TOPIC;
use crate::node::Node;

fn err_code(r: Result<(), keel_core::group::GroupError>) -> i16 {
    r.err().map_or(0, |e| group_error(e).code())
}

pub(crate) async fn offset_commit(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: OffsetCommitRequest = req.decode()?;
    let coord = coordinator(node, config);
    let group = request.group_id.0.to_string();
    // Partitions of unknown topics are refused (Kafka's UNKNOWN_TOPIC_OR_PARTITION); the rest
    // go to the coordinator together.
    let mut commits = Vec::new();
    let mut refused = BTreeSet::new();
    node.meta().sm().with_state(|s| {
        for t in &request.topics {
            let name = t.name.0.to_string();
            for p in &t.partitions {
                let known = s
                    .topics
                    .get(&name)
                    .is_some_and(|topic| usize::try_from(p.partition_index).is_ok_and(|i| i < topic.partitions.len()));
                if known && name != OFFSETS_TOPIC {
                    commits.push(Commit {
                        topic: name.clone(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    });
                } else {
                    refused.insert((name.clone(), p.partition_index));
                }
            }
        }
    });
    let member = request.member_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = request.generation_id_or_member_epoch;
    let result = coord
        .run_step(node, &group, |g, now, out| {
            g.commit(now, &group, generation, &member, instance.as_deref(), &commits, out)
        })
        .await;
    let answers: Vec<i16> = match result {
        Ok(a) => a.into_iter().map(err_code).collect(),
        Err(e) => vec![coord_error(e).code(); commits.len()],
    };
    let mut answer_of = commits
        .iter()
        .zip(answers)
        .map(|(c, a)| ((c.topic.clone(), c.partition), a))
        .collect::<std::collections::BTreeMap<_, _>>();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let key = (name.clone(), p.partition_index);
                    let code = if refused.contains(&key) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        answer_of.remove(&key).unwrap_or(0)
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    respond(req, &OffsetCommitResponse::default().with_topics(topics))
}

/// The committed offsets of one group: Ok((topic, partition) → offset) or the group's error.
type Fetched = Result<Vec<((String, i32), Option<OffsetAndMetadata>)>, ResponseError>;

async fn fetch_group(
    node: &Arc<Node>,
    config: &KafkaConfig,
    group: &str,
    wanted: Option<Vec<(String, i32)>>,
) -> Fetched {
    let coord = coordinator(node, config);
    coord.run_step(node, group, |g, _, _| g.fetch(group, wanted.as_deref())).await.map_err(coord_error)
}

/// Topics in first-seen order, each with its partitions' committed offsets.
type ByTopic = Vec<(String, Vec<(i32, Option<OffsetAndMetadata>)>)>;

/// Topics in first-seen order with their partitions' answers.
fn by_topic(fetched: Vec<((String, i32), Option<OffsetAndMetadata>)>) -> ByTopic {
    let mut out: ByTopic = Vec::new();
    for ((topic, partition), o) in fetched {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ps)) => ps.push((partition, o)),
            None => out.push((topic, vec![(partition, o)])),
        }
    }
    out
}

pub(crate) async fn offset_fetch(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: OffsetFetchRequest = req.decode()?;
    let v = req.version;
    if v >= 8 {
        let mut groups = Vec::new();
        for g in &request.groups {
            let id = g.group_id.0.to_string();
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.0.to_string(), *p)))
                    .collect::<Vec<_>>()
            });
            let entry = match fetch_group(node, config, &id, wanted).await {
                Err(e) => {
                    OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_error_code(e.code())
                }
                Ok(fetched) => {
                    let topics = by_topic(fetched)
                        .into_iter()
                        .map(|(topic, ps)| {
                            let partitions = ps
                                .into_iter()
                                .map(|(p, o)| {
                                    let (offset, epoch, metadata) = offset_fields(o);
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(Some(str_bytes(metadata)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(topic_name(&topic))
                                .with_partitions(partitions)
                        })
                        .collect();
                    OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_topics(topics)
                }
            };
            groups.push(entry);
        }
        return respond(req, &OffsetFetchResponse::default().with_groups(groups));
    }
    let group = request.group_id.0.to_string();
    let wanted = request.topics.as_ref().map(|ts| {
        ts.iter().flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.0.to_string(), *p))).collect::<Vec<_>>()
    });
    let asked = wanted.clone();
    let body = match fetch_group(node, config, &group, wanted).await {
        Ok(fetched) => OffsetFetchResponse::default().with_topics(v1_topics(by_topic(fetched), 0)),
        Err(e) => {
            // v1 has no group-level error: every asked partition carries it.
            let listed = asked.unwrap_or_default().into_iter().map(|tp| (tp, None)).collect();
            let topics = v1_topics(by_topic(listed), e.code());
            let body = OffsetFetchResponse::default().with_topics(topics);
            if v >= 2 { body.with_error_code(e.code()) } else { body }
        }
    };
    respond(req, &body)
}

fn v1_topics(topics: ByTopic, error: i16) -> Vec<OffsetFetchResponseTopic> {
    topics
        .into_iter()
        .map(|(topic, ps)| {
            let partitions = ps
                .into_iter()
                .map(|(p, o)| {
                    let (offset, epoch, metadata) = offset_fields(o);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(str_bytes(metadata)))
                        .with_error_code(error)
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(topic_name(&topic)).with_partitions(partitions)
        })
        .collect()
}

fn offset_fields(o: Option<OffsetAndMetadata>) -> (i64, i32, String) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, o.metadata),
        None => (-1, -1, String::new()),
    }
}

/// The topics the members of a consumer group subscribe to (their ConsumerProtocol
/// subscriptions; one that does not decode is skipped).
fn subscribed_topics(groups: &Groups, group: &str) -> BTreeSet<String> {
    let Some(g) = groups.group(group) else { return BTreeSet::new() };
    if g.protocol_type.as_deref() != Some("consumer") {
        return BTreeSet::new();
    }
    let mut topics = BTreeSet::new();
    for (member, mut bytes) in subscriptions(g) {
        if bytes.remaining() < 2 {
            continue;
        }
        let version = bytes.get_i16().min(3);
        match ConsumerProtocolSubscription::decode(&mut bytes, version) {
            Ok(s) => topics.extend(s.topics.iter().map(|t| t.to_string())),
            Err(e) => tracing::debug!(group, member, error = %e, "undecodable subscription"),
        }
    }
    topics
}

pub(crate) async fn offset_delete(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: OffsetDeleteRequest = req.decode()?;
    let coord = coordinator(node, config);
    let group = request.group_id.0.to_string();
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), p.partition_index)))
        .collect();
    let result = coord
        .run_step(node, &group, |g, _, out| {
            let subscribed = subscribed_topics(g, &group);
            g.delete_offsets(&group, &partitions, &subscribed, out)
        })
        .await;
    let answers = match result {
        Err(e) => return respond(req, &OffsetDeleteResponse::default().with_error_code(coord_error(e).code())),
        Ok(Err(e)) => return respond(req, &OffsetDeleteResponse::default().with_error_code(group_error(e).code())),
        Ok(Ok(a)) => a,
    };
    let mut answers = answers.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = answers.next().map_or(0, err_code);
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(TopicName(t.name.0.clone())).with_partitions(partitions)
        })
        .collect();
    respond(req, &OffsetDeleteResponse::default().with_topics(topics))
}

fn describe(groups: &Groups, id: &GroupId) -> DescribedGroup {
    let name = id.0.to_string();
    let base = DescribedGroup::default().with_group_id(id.clone());
    let Some(g) = groups.group(&name) else {
        return base.with_group_state(str_bytes(GroupState::Dead.name()));
    };
    let stable = g.state == GroupState::Stable;
    let protocol = g.protocol.clone().unwrap_or_default();
    let members = g
        .members
        .values()
        .map(|m| {
            let mut d = DescribedGroupMember::default()
                .with_member_id(str_bytes(m.member_id.clone()))
                .with_group_instance_id(m.instance_id.clone().map(str_bytes))
                .with_client_id(str_bytes(m.client_id.clone()))
                .with_client_host(str_bytes(m.client_host.clone()));
            if stable {
                d = d
                    .with_member_metadata(m.metadata(&protocol).cloned().unwrap_or_default())
                    .with_member_assignment(m.assignment.clone());
            }
            d
        })
        .collect();
    base.with_group_state(str_bytes(g.state.name()))
        .with_protocol_type(str_bytes(g.protocol_type.clone().unwrap_or_default()))
        .with_protocol_data(str_bytes(if stable { protocol } else { String::new() }))
        .with_members(members)
}

pub(crate) async fn describe_groups(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: DescribeGroupsRequest = req.decode()?;
    let coord = coordinator(node, config);
    let mut out = Vec::with_capacity(request.groups.len());
    for id in &request.groups {
        let name = id.0.to_string();
        let described = coord.run_step(node, &name, |g, _, _| describe(g, id)).await;
        out.push(match described {
            Ok(d) => d,
            Err(e) => DescribedGroup::default().with_group_id(id.clone()).with_error_code(coord_error(e).code()),
        });
    }
    respond(req, &DescribeGroupsResponse::default().with_groups(out))
}

pub(crate) async fn list_groups(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: ListGroupsRequest = req.decode()?;
    let v = req.version;
    let coord = coordinator(node, config);
    if coord.loading().await {
        return respond(
            req,
            &ListGroupsResponse::default().with_error_code(ResponseError::CoordinatorLoadInProgress.code()),
        );
    }
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|s| s.to_lowercase()).collect();
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return respond(req, &ListGroupsResponse::default());
    }
    let mut listed: Vec<ListedGroup> = coord
        .with_all(|groups| {
            groups
                .groups
                .values()
                .filter(|g| states.is_empty() || states.contains(&g.state.name().to_lowercase()))
                .map(|g| {
                    let mut l = ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(g.id.clone())))
                        .with_protocol_type(str_bytes(g.protocol_type.clone().unwrap_or_default()));
                    if v >= 4 {
                        l = l.with_group_state(str_bytes(g.state.name()));
                    }
                    if v >= 5 {
                        l = l.with_group_type(str_bytes("classic"));
                    }
                    l
                })
                .collect::<Vec<_>>()
        })
        .await
        .into_iter()
        .flatten()
        .collect();
    listed.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    respond(req, &ListGroupsResponse::default().with_groups(listed))
}

pub(crate) async fn delete_groups(node: &Arc<Node>, config: &KafkaConfig, req: &mut Request) -> Answer {
    let request: DeleteGroupsRequest = req.decode()?;
    let coord = coordinator(node, config);
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in &request.groups_names {
        let name = id.0.to_string();
        let result = coord.run_step(node, &name, |g, now, out| g.delete_group(now, &name, out)).await;
        let code = match result {
            Ok(r) => err_code(r),
            Err(e) => coord_error(e).code(),
        };
        results.push(DeletableGroupResult::default().with_group_id(id.clone()).with_error_code(code));
    }
    respond(req, &DeleteGroupsResponse::default().with_results(results))
}
