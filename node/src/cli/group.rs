//! `keel group list|describe|reset-offsets` over Kafka's group requests (ListGroups,
//! FindCoordinator, DescribeGroups, OffsetFetch, OffsetCommit), so they work against Kafka too.
//!
//! `describe` shows the members and, for every partition the group has committed, the committed
//! offset, the partition's end (ListOffsets on its leader) and the lag between them.
//! `reset-offsets` commits new offsets as an admin does (generation -1, no member): brokers
//! accept that only while the group has no active members, as Kafka's `--reset-offsets`.

use std::collections::BTreeMap;

use anyhow::Context;
use anyhow::bail;
use bytes::Buf;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::messages::DescribeGroupsRequest;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::messages::GroupId;
use kafka_protocol::messages::ListGroupsRequest;
use kafka_protocol::messages::OffsetCommitRequest;
use kafka_protocol::messages::OffsetFetchRequest;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::protocol::Decodable;
use keel_node::kafka_client::EARLIEST_TIMESTAMP;
use keel_node::kafka_client::LATEST_TIMESTAMP;
use keel_node::kafka_client::topic_name;
use serde_json::json;

use super::kafka::Kafka;
use super::kafka::REQUEST_TIMEOUT;
use super::kafka::check;
use super::kafka::leader_of;
use super::kafka::partition_ids;
use super::kafka::sb;
use super::output::Output;

/// FindCoordinator v3: flexible, one key.
const FIND_COORDINATOR_VERSION: i16 = 3;
/// ListGroups v4: flexible, with the state filter.
const LIST_GROUPS_VERSION: i16 = 4;
/// DescribeGroups v5: flexible.
const DESCRIBE_GROUPS_VERSION: i16 = 5;
/// OffsetFetch v7: flexible, one group.
const OFFSET_FETCH_VERSION: i16 = 7;
/// OffsetCommit v8: flexible.
const OFFSET_COMMIT_VERSION: i16 = 8;

#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// Lists consumer groups (asking every broker).
    List,
    /// A group's state, members, committed offsets and lag.
    Describe { group: String },
    /// Moves a group's committed offsets (the group must have no active members).
    #[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset"])))]
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only this partition (default: every partition of the topic).
        #[arg(long)]
        partition: Option<i32>,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        #[arg(long)]
        to_offset: Option<i64>,
    },
}

/// One committed partition of a group, with its lag.
pub struct GroupOffset {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub end: Option<i64>,
}

impl GroupOffset {
    pub fn lag(&self) -> Option<i64> {
        self.end.map(|e| (e - self.committed).max(0))
    }
}

pub async fn run(kafka: &mut Kafka, out: &mut Output, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List => list(kafka, out).await,
        GroupCommand::Describe { group } => describe(kafka, out, &group).await,
        GroupCommand::ResetOffsets { group, topic, partition, to_earliest, to_latest: _, to_offset } => {
            let to = match (to_earliest, to_offset) {
                (true, _) => Target::Timestamp(EARLIEST_TIMESTAMP),
                (false, Some(o)) if o < 0 => bail!("--to-offset {o} is negative"),
                (false, Some(o)) => Target::Offset(o),
                (false, None) => Target::Timestamp(LATEST_TIMESTAMP),
            };
            reset(kafka, out, &group, &topic, partition, to).await
        }
    }
}

async fn list(kafka: &mut Kafka, out: &mut Output) -> anyhow::Result<()> {
    let md = kafka.metadata(None).await?;
    let mut groups: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut answered = 0;
    let mut last_error = None;
    for b in &md.brokers {
        let addr = format!("{}:{}", b.host.as_str(), b.port);
        match kafka.client.request_to(&addr, LIST_GROUPS_VERSION, &ListGroupsRequest::default(), REQUEST_TIMEOUT).await
        {
            Ok(answer) => {
                if let Err(e) = check(answer.error_code, &format!("listing groups on {addr}"), None) {
                    last_error = Some(e);
                    continue;
                }
                answered += 1;
                for g in answer.groups {
                    groups.insert(g.group_id.0.to_string(), (g.group_state.to_string(), g.protocol_type.to_string()));
                }
            }
            Err(e) => last_error = Some(anyhow::Error::from(e)),
        }
    }
    if answered == 0 {
        return Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the cluster lists no brokers")))
            .context("no broker listed its groups");
    }
    if out.json {
        let list: Vec<_> =
            groups.iter().map(|(g, (s, p))| json!({"group": g, "state": s, "protocol_type": p})).collect();
        return out.json_value(&json!(list));
    }
    let rows = groups.into_iter().map(|(g, (s, p))| vec![g, s, p]).collect();
    out.table(&["group", "state", "protocol"], rows)
}

/// The group's coordinator's Kafka address.
async fn coordinator(kafka: &mut Kafka, group: &str) -> anyhow::Result<String> {
    let request = FindCoordinatorRequest::default().with_key(sb(group)).with_key_type(0);
    let answer = kafka.any(FIND_COORDINATOR_VERSION, &request).await?;
    check(answer.error_code, &format!("finding the coordinator of group '{group}'"), answer.error_message.as_ref())?;
    Ok(format!("{}:{}", answer.host.as_str(), answer.port))
}

/// The group's committed offsets (every topic), with each partition's end.
pub async fn offsets(kafka: &mut Kafka, coordinator: &str, group: &str) -> anyhow::Result<Vec<GroupOffset>> {
    let request = OffsetFetchRequest::default().with_group_id(GroupId(sb(group))).with_topics(None);
    let answer = kafka.client.request_to(coordinator, OFFSET_FETCH_VERSION, &request, REQUEST_TIMEOUT).await?;
    check(answer.error_code, &format!("committed offsets of group '{group}'"), None)?;
    let mut out = Vec::new();
    let md = kafka.metadata(None).await?;
    for t in &answer.topics {
        let name = t.name.0.to_string();
        let topic = md.topics.iter().find(|m| m.name.as_ref().is_some_and(|n| n.0.as_str() == name));
        for p in &t.partitions {
            if p.error_code != 0 || p.committed_offset < 0 {
                continue;
            }
            let mut end = None;
            if let Some(topic) = topic
                && let Some((_, _, addr)) = leader_of(&md, topic, p.partition_index)
                && let Ok(r) =
                    kafka.client.list_offset(&addr, &name, p.partition_index, LATEST_TIMESTAMP, REQUEST_TIMEOUT).await
                && r.error_code == 0
            {
                end = Some(r.offset);
            }
            out.push(GroupOffset {
                topic: name.clone(),
                partition: p.partition_index,
                committed: p.committed_offset,
                end,
            });
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}

/// A member's assignment (`[version i16][ConsumerProtocolAssignment]`), as `topic/p,p`.
fn assignment_text(mut bytes: bytes::Bytes) -> String {
    if bytes.len() < 2 {
        return String::new();
    }
    let version = bytes.get_i16();
    match ConsumerProtocolAssignment::decode(&mut bytes, version) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .map(|tp| format!("{}/{}", tp.topic.0.as_str(), super::output::join_ids(tp.partitions.iter().copied())))
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "(not a consumer assignment)".to_string(),
    }
}

/// Errors that mean a group's coordinator is moving or still loading the group: Kafka's admin
/// client finds the coordinator again and retries them until its API timeout, and so does keel.
fn coordinator_moving(code: i16) -> bool {
    [ResponseError::CoordinatorLoadInProgress, ResponseError::CoordinatorNotAvailable, ResponseError::NotCoordinator]
        .iter()
        .any(|e| e.code() == code)
}

/// How long `describe` keeps finding a moving coordinator before it reports the error.
const COORDINATOR_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

async fn describe(kafka: &mut Kafka, out: &mut Output, group: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + COORDINATOR_WAIT;
    let (addr, answer) = loop {
        let find = FindCoordinatorRequest::default().with_key(sb(group)).with_key_type(0);
        let found = kafka.any(FIND_COORDINATOR_VERSION, &find).await?;
        let code = if found.error_code != 0 {
            found.error_code
        } else {
            let addr = format!("{}:{}", found.host.as_str(), found.port);
            let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(group))]);
            let answer = kafka.client.request_to(&addr, DESCRIBE_GROUPS_VERSION, &request, REQUEST_TIMEOUT).await?;
            let code = answer.groups.first().map_or(0, |g| g.error_code);
            if !coordinator_moving(code) || tokio::time::Instant::now() >= deadline {
                break (addr, answer);
            }
            code
        };
        if !coordinator_moving(code) || tokio::time::Instant::now() >= deadline {
            check(code, &format!("finding the coordinator of group '{group}'"), found.error_message.as_ref())?;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let g = answer.groups.first().context("the coordinator's answer names no group")?;
    check(g.error_code, &format!("describing group '{group}'"), g.error_message.as_ref())?;
    if g.group_state.as_str() == "Dead" {
        bail!("group '{group}' does not exist");
    }
    let offsets = offsets(kafka, &addr, group).await?;
    let members: Vec<(String, String, String, String)> = g
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.client_id.to_string(),
                m.client_host.to_string(),
                assignment_text(m.member_assignment.clone()),
            )
        })
        .collect();
    if out.json {
        let members: Vec<_> = members
            .iter()
            .map(|(id, client, host, a)| json!({"member_id": id, "client_id": client, "host": host, "assignment": a}))
            .collect();
        let offsets: Vec<_> = offsets
            .iter()
            .map(|o| json!({"topic": o.topic, "partition": o.partition, "committed": o.committed, "end": o.end, "lag": o.lag()}))
            .collect();
        return out.json_value(&json!({
            "group": group, "state": g.group_state.to_string(), "protocol": g.protocol_data.to_string(),
            "coordinator": addr, "members": members, "offsets": offsets,
            "lag": offsets_lag_total(&offsets),
        }));
    }
    out.line(&format!("group {group}: {} ({} members, coordinator {addr})", g.group_state.as_str(), members.len()))?;
    if !members.is_empty() {
        out.line("")?;
        out.table(
            &["member", "client", "host", "assignment"],
            members.into_iter().map(|(a, b, c, d)| vec![a, b, c, d]).collect(),
        )?;
    }
    out.line("")?;
    let rows = offsets
        .iter()
        .map(|o| {
            vec![
                o.topic.clone(),
                o.partition.to_string(),
                o.committed.to_string(),
                o.end.map_or("-".into(), |e| e.to_string()),
                o.lag().map_or("-".into(), |l| l.to_string()),
            ]
        })
        .collect();
    out.table(&["topic", "partition", "committed", "end", "lag"], rows)
}

fn offsets_lag_total(offsets: &[serde_json::Value]) -> i64 {
    offsets.iter().filter_map(|o| o["lag"].as_i64()).sum()
}

enum Target {
    Timestamp(i64),
    Offset(i64),
}

async fn reset(
    kafka: &mut Kafka,
    out: &mut Output,
    group: &str,
    topic: &str,
    partition: Option<i32>,
    to: Target,
) -> anyhow::Result<()> {
    let (md, t) = kafka.topic(topic).await?;
    let ids = match partition {
        Some(p) if partition_ids(&t).contains(&p) => vec![p],
        Some(p) => bail!("topic '{topic}' has {} partitions; there is no partition {p}", t.partitions.len()),
        None => partition_ids(&t),
    };
    let mut new_offsets = Vec::new();
    for p in ids {
        let offset = match to {
            Target::Offset(o) => o,
            Target::Timestamp(ts) => {
                let (_, _, addr) = leader_of(&md, &t, p).with_context(|| format!("{topic}/{p} has no leader"))?;
                let r = kafka.client.list_offset(&addr, topic, p, ts, REQUEST_TIMEOUT).await?;
                check(r.error_code, &format!("offsets of {topic}/{p}"), None)?;
                r.offset
            }
        };
        new_offsets.push((p, offset));
    }
    let addr = coordinator(kafka, group).await?;
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(sb(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(sb(""))
        .with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(
                new_offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default().with_partition_index(*p).with_committed_offset(*o)
                    })
                    .collect(),
            ),
        ]);
    let answer = kafka.client.request_to(&addr, OFFSET_COMMIT_VERSION, &request, REQUEST_TIMEOUT).await?;
    for t in &answer.topics {
        for p in &t.partitions {
            check(p.error_code, &format!("committing {topic}/{} for group '{group}'", p.partition_index), None)?;
        }
    }
    if out.json {
        let list: Vec<_> =
            new_offsets.iter().map(|(p, o)| json!({"topic": topic, "partition": p, "offset": o})).collect();
        return out.json_value(&json!({"group": group, "offsets": list}));
    }
    out.table(
        &["topic", "partition", "new offset"],
        new_offsets.iter().map(|(p, o)| vec![topic.to_string(), p.to_string(), o.to_string()]).collect(),
    )
}
