//! The simulated operator: topic administration and reassignments over the Kafka protocol
//! (`kafka_admin`), metadata proposals (decommissioning, which Kafka has no request for) and
//! reads over the internal protocol, the admin workload that creates, grows and deletes topics
//! and reassigns replicas while the nemesis works, and the sampler that records `replicas`
//! samples for the `quorum_durable` checker.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_checker::Admin;
use keel_checker::EventType;
use keel_checker::Op;
use keel_checker::Replicas;
use keel_core::metadata::Command;
use keel_core::metadata::MetaError;
use keel_core::metadata::Reply;
use keel_node::client;
use keel_node::client::ClusterView;
use keel_node::kafka_client::KafkaClient;
use keel_node::meta::ProposeResponse;
use keel_node::raft::network::decode;
use keel_node::raft::network::encode;
use keel_node::transport::Transport;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use serde_json::Value;

use crate::cluster::partition_name;
use crate::kafka_admin;
use crate::kafka_admin::AdminOutcome;
use crate::recorder::Recorder;
use crate::workload;

const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the operator follows an accepted reassignment with ListPartitionReassignments
/// before it goes on with other work (the reassignment goes on regardless).
const REASSIGN_WATCH_MAX: Duration = Duration::from_secs(3);
/// Pause between two ListPartitionReassignments requests.
const REASSIGN_POLL: Duration = Duration::from_millis(250);

/// The outcome of a proposal as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposed {
    Applied(Result<Reply, MetaError>),
    /// No leader answered within the budget; the command may or may not apply.
    Unknown(String),
}

/// Proposes `cmd` through whichever node leads the metadata group, for at most `budget`.
pub async fn propose(transport: &Transport, nodes: &[u64], cmd: &Command, budget: Duration) -> Proposed {
    let Ok(body) = encode(cmd) else { return Proposed::Unknown("encode".into()) };
    let deadline = madsim::time::Instant::now() + budget;
    let mut target = nodes[0];
    let mut last = String::from("no answer");
    let mut i = 0usize;
    while madsim::time::Instant::now() < deadline {
        let answer =
            transport.call(target, client::METADATA_GROUP, client::KIND_META_PROPOSE, body.clone(), CALL_TIMEOUT).await;
        match answer.map_err(|e| e.to_string()).and_then(|b| decode::<ProposeResponse>(&b)) {
            Ok(ProposeResponse::Applied(r)) => return Proposed::Applied(r),
            Ok(ProposeResponse::NotLeader { leader: Some(l) }) if l != target && nodes.contains(&l) => {
                target = l;
                continue;
            }
            Ok(other) => last = format!("{other:?}"),
            Err(e) => last = e,
        }
        i += 1;
        target = nodes[i % nodes.len()];
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    Proposed::Unknown(last)
}

/// `node`'s view of the cluster, or None if it does not answer.
pub async fn view(transport: &Transport, node: u64) -> Option<ClusterView> {
    let answer =
        transport.call(node, client::METADATA_GROUP, client::KIND_META_READ, bytes::Bytes::new(), CALL_TIMEOUT).await;
    decode(&answer.ok()?).ok()
}

/// The first view any node gives.
pub async fn any_view(transport: &Transport, nodes: &[u64]) -> Option<ClusterView> {
    for &n in nodes {
        if let Some(v) = view(transport, n).await {
            return Some(v);
        }
    }
    None
}

fn detail(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn record_outcome(recorder: &Recorder, process: u64, admin: Admin, outcome: &Proposed) {
    let (kind, result) = match outcome {
        Proposed::Applied(Ok(r)) => (EventType::Ok, format!("{r:?}")),
        Proposed::Applied(Err(e)) => (EventType::Fail, e.to_string()),
        Proposed::Unknown(e) => (EventType::Info, e.clone()),
    };
    let mut done = admin;
    done.detail.insert("result".into(), Value::String(result));
    recorder.record(process, kind, Op::Admin(done));
}

/// Proposes and records one admin operation.
pub async fn admin_op(
    transport: &Transport,
    nodes: &[u64],
    recorder: &Recorder,
    process: u64,
    action: &str,
    details: &[(&str, Value)],
    cmd: &Command,
) -> Proposed {
    let admin = Admin { action: action.to_string(), detail: detail(details) };
    recorder.record(process, EventType::Invoke, Op::Admin(admin.clone()));
    let outcome = propose(transport, nodes, cmd, Duration::from_secs(10)).await;
    record_outcome(recorder, process, admin, &outcome);
    outcome
}

/// Records one Kafka admin request: its invocation, then its outcome.
async fn kafka_admin_op(
    recorder: &Recorder,
    process: u64,
    action: &str,
    details: &[(&str, Value)],
    request: impl std::future::Future<Output = AdminOutcome>,
) -> AdminOutcome {
    let mut pairs = details.to_vec();
    pairs.push(("via", Value::from("kafka")));
    let admin = Admin { action: action.to_string(), detail: detail(&pairs) };
    recorder.record(process, EventType::Invoke, Op::Admin(admin.clone()));
    let outcome = request.await;
    let (kind, result) = match &outcome {
        AdminOutcome::Ok(r) => (EventType::Ok, r.clone()),
        AdminOutcome::Refused(e) => (EventType::Fail, e.clone()),
        AdminOutcome::Unknown(e) => (EventType::Info, e.clone()),
    };
    let mut done = admin;
    done.detail.insert("result".into(), Value::String(result));
    recorder.record(process, kind, Op::Admin(done));
    outcome
}

/// Creates the topic under load (`t`, one partition, RF 3) with a Kafka CreateTopics request and
/// waits until its partition has a leader. Returns the partition's group.
pub async fn create_workload_topic(
    transport: &Transport,
    nodes: &[u64],
    bootstrap: Vec<String>,
    recorder: &Recorder,
    process: u64,
) -> Result<u64, String> {
    let mut client = KafkaClient::new(format!("admin-{process}"), bootstrap, 0);
    for _ in 0..20 {
        let d = [("topic", Value::from("t")), ("partitions", Value::from(1))];
        let outcome =
            kafka_admin_op(recorder, process, "create-topic", &d, kafka_admin::create_topic(&mut client, "t", 1, 3))
                .await;
        match outcome {
            AdminOutcome::Ok(_) => {}
            // Created by an earlier try whose answer was lost.
            o if o.is_topic_exists() => {}
            // Not enough nodes registered yet, or no metadata leader, or the outcome of this
            // try is unknown: ask again.
            AdminOutcome::Refused(_) | AdminOutcome::Unknown(_) => {
                madsim::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        for _ in 0..100 {
            if let Some(v) = any_view(transport, nodes).await
                && let Some(t) = v.metadata.topics.get("t")
                && let Some(p) = t.partitions.first()
                && v.leaders.contains_key(&p.group)
            {
                return Ok(p.group);
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        return Err("the partition of topic t never got a leader".into());
    }
    Err("topic t could not be created".into())
}

/// Topic churn and reassignments until `deadline_ns`, all over the Kafka protocol but
/// decommissioning: creates, grows and deletes topics (CreateTopics, CreatePartitions,
/// DeleteTopics), moves the workload partition (`group`, `t`-0) and other partitions to random
/// replica sets (AlterPartitionReassignments, then ListPartitionReassignments until the move is
/// no longer listed, for at most [`REASSIGN_WATCH_MAX`]), and now and then decommissions a node
/// (through the metadata group: Kafka has no request for it).
#[allow(clippy::too_many_arguments)]
pub async fn admin_workload(
    seed: u64,
    process: u64,
    group: u64,
    nodes: Vec<u64>,
    bootstrap: Vec<String>,
    transport: Transport,
    recorder: Recorder,
    deadline_ns: u64,
) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6164_6d69_6e5f_6f70);
    let mut client = KafkaClient::new(format!("admin-{process}"), bootstrap, seed as usize);
    let mut created = 0u64;
    while recorder.elapsed_ns() < deadline_ns {
        madsim::time::sleep(Duration::from_millis(rng.gen_range(300..2000))).await;
        let roll = rng.gen_range(0..12);
        let extra: Vec<(String, usize)> = match any_view(&transport, &nodes).await {
            Some(v) => v
                .metadata
                .topics
                .iter()
                .filter(|(t, _)| *t != "t" && !t.starts_with("__"))
                .map(|(t, topic)| (t.clone(), topic.partitions.len()))
                .collect(),
            None => continue,
        };
        match roll {
            0..=2 => {
                created += 1;
                let name = format!("x{created}");
                let partitions = rng.gen_range(1..=3);
                let rf = rng.gen_range(2..=3);
                let d = [("topic", Value::from(name.clone())), ("partitions", Value::from(partitions))];
                let request = kafka_admin::create_topic(&mut client, &name, partitions, rf);
                kafka_admin_op(&recorder, process, "create-topic", &d, request).await;
            }
            3 | 4 if !extra.is_empty() => {
                let name = extra[rng.gen_range(0..extra.len())].0.clone();
                let request = kafka_admin::delete_topic(&mut client, &name);
                kafka_admin_op(&recorder, process, "delete-topic", &[("topic", Value::from(name.clone()))], request)
                    .await;
            }
            11 if !extra.is_empty() => {
                let (name, now) = extra[rng.gen_range(0..extra.len())].clone();
                let total = now as u32 + 1;
                let d = [("topic", Value::from(name.clone())), ("partitions", Value::from(total))];
                let request = kafka_admin::create_partitions(&mut client, &name, total);
                kafka_admin_op(&recorder, process, "create-partitions", &d, request).await;
            }
            10 => {
                // Drain a node: its replicas move away, then it leaves the registry (and, still
                // running, registers again as a new, empty node).
                let node = nodes[rng.gen_range(0..nodes.len())];
                let cmd = Command::Decommission { node };
                admin_op(&transport, &nodes, &recorder, process, "decommission", &[("node", Value::from(node))], &cmd)
                    .await;
            }
            _ => {
                let (target_group, topic, partition) = if roll == 9 {
                    let Some(v) = any_view(&transport, &nodes).await else { continue };
                    let others: Vec<(u64, &(String, u32))> =
                        v.metadata.groups.iter().filter(|(g, _)| **g != group).map(|(g, tp)| (*g, tp)).collect();
                    if others.is_empty() {
                        continue;
                    }
                    let (g, (topic, partition)) = others[rng.gen_range(0..others.len())];
                    (g, topic.clone(), *partition)
                } else {
                    (group, "t".to_string(), 0)
                };
                let mut replicas = nodes.clone();
                replicas.shuffle(&mut rng);
                replicas.truncate(3);
                let d = [
                    ("group", Value::from(target_group)),
                    ("topic", Value::from(topic.clone())),
                    ("partition", Value::from(partition)),
                    ("replicas", Value::from(replicas.clone())),
                ];
                let request = kafka_admin::alter_reassignment(&mut client, &topic, partition, &replicas);
                if let AdminOutcome::Ok(_) = kafka_admin_op(&recorder, process, "reassign", &d, request).await {
                    watch_reassignment(&mut client, &recorder, process, &topic, partition, deadline_ns).await;
                }
            }
        }
    }
}

/// Follows an accepted reassignment as an operator verifying it would: ListPartitionReassignments
/// until the partition is no longer listed (`ok`), or [`REASSIGN_WATCH_MAX`] or the workload's
/// end passed (`info`, with what was listed last). Recorded as one `list-reassignments`
/// operation.
async fn watch_reassignment(
    client: &mut KafkaClient,
    recorder: &Recorder,
    process: u64,
    topic: &str,
    partition: u32,
    deadline_ns: u64,
) {
    let d = [("topic", Value::from(topic)), ("partition", Value::from(partition))];
    let started = madsim::time::Instant::now();
    let watch = async {
        loop {
            let last = match kafka_admin::list_reassignment(client, topic, partition).await {
                Ok(None) => return AdminOutcome::Ok(format!("complete within {} ms", started.elapsed().as_millis())),
                Ok(Some(moving)) => moving,
                Err(e) => e,
            };
            if started.elapsed() >= REASSIGN_WATCH_MAX || recorder.elapsed_ns() >= deadline_ns {
                return AdminOutcome::Unknown(format!(
                    "not seen complete within {} ms; last answer: {last}",
                    started.elapsed().as_millis()
                ));
            }
            madsim::time::sleep(REASSIGN_POLL).await;
        }
    };
    kafka_admin_op(recorder, process, "list-reassignments", &d, watch).await;
}

/// Records a `replicas` sample of `group` every `every` until `deadline_ns` (see
/// `keel_checker::checkers::quorum_durable`).
pub async fn sampler(group: u64, nodes: Vec<u64>, transport: Transport, recorder: Recorder, deadline_ns: u64) {
    while recorder.elapsed_ns() < deadline_ns {
        madsim::time::sleep(Duration::from_millis(300)).await;
        if let Some(sample) = sample(&transport, &nodes, group).await {
            recorder.record(crate::cluster::NEMESIS, EventType::Info, Op::Replicas(sample));
        }
    }
}

/// One sample: the leader's commit index and membership first, then every voter's durable log
/// end, then the leader again — a sample whose leader, term or membership moved meanwhile is
/// dropped (a voter removed meanwhile may rightly have deleted its copy).
pub async fn sample(transport: &Transport, nodes: &[u64], group: u64) -> Option<Replicas> {
    let mut leader = None;
    let mut term_max = 0;
    for &n in nodes {
        if let Some(s) = workload::status(transport, n, group).await {
            term_max = term_max.max(s.term);
            if s.state == "Leader" && leader.as_ref().is_none_or(|l: &client::Status| s.term > l.term) {
                leader = Some(s);
            }
        }
    }
    // A leader cut off from a newer term may hold an outdated membership whose removed voters
    // rightly deleted their copies.
    let first = leader.filter(|l| l.term == term_max)?;
    let committed = first.committed_index?;
    let mut durable = BTreeMap::new();
    for v in first.voters.iter().flatten() {
        if *v == first.node {
            durable.insert(*v, first.durable_index);
        } else if let Some(s) = workload::status(transport, *v, group).await {
            durable.insert(*v, if s.state == "Absent" { None } else { s.durable_index });
        }
    }
    let again = workload::status(transport, first.node, group).await?;
    if again.term != first.term
        || again.voters != first.voters
        || again.membership_committed != first.membership_committed
    {
        return None;
    }
    // A voter without a copy that the newest metadata no longer places there was removed by a
    // completed reassignment: the leader's membership is outdated (it has not heard yet).
    let mut newest: Option<ClusterView> = None;
    for &n in nodes {
        if let Some(v) = view(transport, n).await
            && newest.as_ref().is_none_or(|b| v.metadata.applied_index > b.metadata.applied_index)
        {
            newest = Some(v);
        }
    }
    let hosts = newest?.metadata.assignment(group).map(|a| a.hosts()).unwrap_or_default();
    if durable.iter().any(|(v, d)| d.is_none() && !hosts.contains(v)) {
        return None;
    }
    Some(Replicas {
        partition: partition_name(group),
        leader: first.node,
        term: first.term,
        committed,
        voters: first.voters,
        membership_committed: first.membership_committed,
        durable,
    })
}
