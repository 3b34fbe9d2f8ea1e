//! ElectLeaders: move a partition's leadership to its preferred replica (the first in its
//! replica list), as `kafka-leader-election.sh --election-type PREFERRED` and the admin
//! clients' `elect_leaders` ask.
//!
//! Any node answers. For each partition it finds the leader it knows of; if the preferred
//! replica leads already the answer is ELECTION_NOT_NEEDED; otherwise it asks the leader
//! (`client::KIND_ELECT_PREFERRED`) to hand leadership over with Raft's leadership transfer — the
//! mechanism the nodes' own preferred-leader duty and graceful shutdown use — and waits, within
//! the request's timeout, until the preferred replica is known to lead. Errors, per partition:
//! - PREFERRED_LEADER_NOT_AVAILABLE: no leader is known, or the preferred replica cannot take over
//!   (down, draining, not a voter, or not caught up within 2 s); the message says which;
//! - REQUEST_TIMED_OUT: the transfer was asked for but had not shown by the timeout;
//! - UNKNOWN_TOPIC_OR_PARTITION.
//!
//! A null topic list means every partition; like Kafka, its answer leaves out the partitions
//! whose preferred replica leads already. UNCLEAN elections: Keel never elects a replica that
//! may lack committed data (a Raft leader always holds every committed entry), so there is no
//! unclean election to run: a partition with a leader gets ELECTION_NOT_NEEDED, one without
//! ELIGIBLE_LEADERS_NOT_AVAILABLE, as Kafka answers when no eligible replica is left.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ElectLeadersRequest;
use kafka_protocol::messages::ElectLeadersResponse;
use kafka_protocol::messages::elect_leaders_response::PartitionResult;
use kafka_protocol::messages::elect_leaders_response::ReplicaElectionResult;
use keel_core::metadata::MetadataState;
use keel_core::metadata::NodeId;
use keel_core::metadata::node_of;
use openraft_rt::WatchReceiver;

use super::Answer;
use super::Request;
use super::admin::timeout_of;
use super::codes::str_bytes;
use super::codes::topic_name;
use super::respond;
use crate::client;
use crate::client::ElectAnswer;
use crate::leaders::LeaderInfo;
use crate::node::Node;
use crate::raft::network;

/// Kafka's election types.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// How often a waiting election looks whether the preferred replica leads yet.
const POLL: Duration = Duration::from_millis(50);

/// What one partition of a request comes to, from the metadata and the leaders known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Ask `leader` to hand `group` to `preferred`.
    Elect { group: u64, leader: NodeId, preferred: NodeId },
    /// The preferred replica leads now (answer NONE).
    Elected,
    /// Answer this error (ELECTION_NOT_NEEDED included).
    Answer(ResponseError, Option<String>),
}

/// The partitions a request names: `None` = every partition.
pub(crate) type Named = Option<Vec<(String, Vec<i32>)>>;

/// Decides each partition of an election of `election_type` (no I/O). A null list expands to
/// every partition and leaves out those that need no election.
pub(crate) fn plan(
    state: &MetadataState,
    leader_of: impl Fn(u64) -> Option<LeaderInfo>,
    named: &Named,
    election_type: i8,
) -> Vec<(String, i32, Step)> {
    let all = named.is_none();
    let wanted: Vec<(String, Vec<i32>)> = match named {
        Some(n) => n.clone(),
        None => state
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.partitions.len()).filter_map(|i| i32::try_from(i).ok()).collect()))
            .collect(),
    };
    let mut out = Vec::new();
    for (topic, partitions) in wanted {
        for partition in partitions {
            let a = state
                .topics
                .get(&topic)
                .and_then(|t| usize::try_from(partition).ok().and_then(|i| t.partitions.get(i)));
            let step = match a {
                None => Step::Answer(ResponseError::UnknownTopicOrPartition, None),
                Some(a) => {
                    let leader = leader_of(a.group);
                    match (election_type, leader, a.replicas.first()) {
                        (UNCLEAN, Some(_), _) => Step::Answer(ResponseError::ElectionNotNeeded, None),
                        (UNCLEAN, None, _) => Step::Answer(
                            ResponseError::EligibleLeadersNotAvailable,
                            Some("Keel elects only replicas that hold every committed record".into()),
                        ),
                        (_, _, None) => Step::Answer(ResponseError::PreferredLeaderNotAvailable, None),
                        (_, Some(l), Some(p)) if l.leader == *p => Step::Answer(ResponseError::ElectionNotNeeded, None),
                        (_, None, Some(_)) => Step::Answer(
                            ResponseError::PreferredLeaderNotAvailable,
                            Some("the partition has no known leader".into()),
                        ),
                        (_, Some(l), Some(p)) => Step::Elect { group: a.group, leader: l.leader, preferred: *p },
                    }
                }
            };
            if all && step == Step::Answer(ResponseError::ElectionNotNeeded, None) {
                continue;
            }
            out.push((topic.clone(), partition, step));
        }
    }
    out
}

/// The leader of `group` as this node knows it, its own replica's view first.
fn leader_now(node: &Node, group: u64) -> Option<LeaderInfo> {
    if let Some(r) = node.replica(group) {
        let (leader, term) = {
            let rx = r.raft().metrics();
            let m = rx.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if let Some(l) = leader {
            node.leaders().observe(group, node_of(l), term);
        }
    }
    node.leaders().get(group)
}

/// Carries out one election: asks the leader, then waits until `preferred` leads.
async fn elect(
    node: &Arc<Node>,
    group: u64,
    leader: NodeId,
    preferred: NodeId,
    deadline: tokio::time::Instant,
) -> Step {
    let answer = if leader == node.id {
        match node.replica(group) {
            Some(r) => crate::reconcile::elect_preferred(node, &r).await,
            None => ElectAnswer::NotLeader { leader: None },
        }
    } else {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match node.transport().call(leader, group, client::KIND_ELECT_PREFERRED, bytes::Bytes::new(), left).await {
            Ok(b) => network::decode(&b).unwrap_or_else(ElectAnswer::NotAvailable),
            Err(e) => ElectAnswer::NotAvailable(format!("leader {leader} did not answer: {e}")),
        }
    };
    match answer {
        ElectAnswer::NotNeeded => return Step::Answer(ResponseError::ElectionNotNeeded, None),
        ElectAnswer::NotAvailable(why) => return Step::Answer(ResponseError::PreferredLeaderNotAvailable, Some(why)),
        ElectAnswer::NotLeader { leader } => {
            // Leadership moved meanwhile (perhaps to the preferred replica): judged below.
            tracing::debug!(group, ?leader, "elect leaders: asked a node that no longer leads");
        }
        ElectAnswer::Transferring => {}
    }
    loop {
        match leader_now(node, group) {
            Some(l) if l.leader == preferred => return Step::Elected,
            _ if tokio::time::Instant::now() >= deadline => {
                return Step::Answer(
                    ResponseError::RequestTimedOut,
                    Some(format!("node {preferred} did not take over within the request's timeout")),
                );
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

pub(crate) async fn elect_leaders(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: ElectLeadersRequest = req.decode()?;
    let election_type = if req.version >= 1 { request.election_type } else { PREFERRED };
    let mut body = ElectLeadersResponse::default();
    if election_type != PREFERRED && election_type != UNCLEAN {
        // Kafka refuses an election type it does not know for the whole request.
        body = body.with_error_code(ResponseError::InvalidRequest.code());
        return respond(req, &body);
    }
    let deadline = tokio::time::Instant::now() + timeout_of(request.timeout_ms);
    let named: Named =
        request.topic_partitions.map(|tps| tps.into_iter().map(|tp| (tp.topic.0.to_string(), tp.partitions)).collect());
    // A copy, so that no lock of the metadata is held while the replicas' are taken.
    let state = node.meta().sm().state();
    let steps = plan(&state, |g| leader_now(node, g), &named, election_type);
    let results = futures::future::join_all(steps.into_iter().map(|(topic, partition, step)| async move {
        let step = match step {
            Step::Elect { group, leader, preferred } => elect(node, group, leader, preferred, deadline).await,
            answered => answered,
        };
        (topic, partition, step)
    }))
    .await;
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, step) in results {
        let (code, message) = match step {
            Step::Elected => (0, None),
            Step::Answer(code, message) => (code.code(), message),
            Step::Elect { .. } => continue,
        };
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message.map(str_bytes));
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == topic => t.partition_result.push(result),
            _ => topics.push(
                ReplicaElectionResult::default().with_topic(topic_name(&topic)).with_partition_result(vec![result]),
            ),
        }
    }
    respond(req, &body.with_replica_election_results(topics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::metadata::Command;

    /// Nodes 1..=3 and topic `t` with two partitions of replication factor 3.
    fn state() -> MetadataState {
        let mut s = MetadataState::new(3);
        let mut index = 0;
        let mut apply = |s: &mut MetadataState, cmd: Command| {
            index += 1;
            s.apply(index, &cmd).expect("applied");
        };
        for id in 1..=3 {
            let cmd =
                Command::RegisterNode { id, addr: format!("n{id}:1"), kafka_addr: format!("n{id}:2"), rack: None };
            apply(&mut s, cmd);
        }
        let cmd = Command::CreateTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: Some(3),
            configs: Default::default(),
        };
        apply(&mut s, cmd);
        s
    }

    #[test]
    fn each_partition_is_elected_refused_or_not_needed() {
        let s = state();
        let t = &s.topics["t"];
        let (g0, g1) = (t.partitions[0].group, t.partitions[1].group);
        let (p0, p1) = (t.partitions[0].replicas[0], t.partitions[1].replicas[0]);
        let other = |p: NodeId| if p == 1 { 2 } else { 1 };
        // Partition 0 led by its preferred replica, partition 1 by another.
        let leaders = |g: u64| {
            (g == g0)
                .then_some(LeaderInfo { leader: p0, term: 3 })
                .or((g == g1).then_some(LeaderInfo { leader: other(p1), term: 4 }))
        };
        let named: Named = Some(vec![("t".into(), vec![0, 1, 7]), ("nope".into(), vec![0])]);
        let steps = plan(&s, leaders, &named, PREFERRED);
        assert_eq!(
            steps,
            vec![
                ("t".into(), 0, Step::Answer(ResponseError::ElectionNotNeeded, None)),
                ("t".into(), 1, Step::Elect { group: g1, leader: other(p1), preferred: p1 }),
                ("t".into(), 7, Step::Answer(ResponseError::UnknownTopicOrPartition, None)),
                ("nope".into(), 0, Step::Answer(ResponseError::UnknownTopicOrPartition, None)),
            ]
        );
        // A null list: every partition, those led by their preferred replica left out.
        assert_eq!(
            plan(&s, leaders, &None, PREFERRED),
            vec![("t".into(), 1, Step::Elect { group: g1, leader: other(p1), preferred: p1 })]
        );
        // No leader known: not available.
        let none = plan(&s, |_| None, &Some(vec![("t".into(), vec![0])]), PREFERRED);
        assert!(matches!(none[0].2, Step::Answer(ResponseError::PreferredLeaderNotAvailable, Some(_))));
    }

    #[test]
    fn unclean_elections_are_never_run() {
        let s = state();
        let g0 = s.topics["t"].partitions[0].group;
        let leaders = |g: u64| (g == g0).then_some(LeaderInfo { leader: 2, term: 1 });
        let steps = plan(&s, leaders, &Some(vec![("t".into(), vec![0, 1])]), UNCLEAN);
        assert_eq!(steps[0].2, Step::Answer(ResponseError::ElectionNotNeeded, None));
        assert!(matches!(steps[1].2, Step::Answer(ResponseError::EligibleLeadersNotAvailable, Some(_))));
    }
}
