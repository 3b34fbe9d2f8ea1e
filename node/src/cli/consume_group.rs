//! `keel consume TOPIC --group G`: consumes as a member of consumer group G over Kafka's
//! classic group protocol ([`keel_node::group_member`]), so it shares a group with any Kafka
//! consumer subscribed with the `range` or `roundrobin` assignor.
//!
//! The member finds the coordinator and joins; the member the coordinator names leader runs the
//! assignor (`--assignor`, `range` unless asked) over every member's subscription and hands the
//! assignments out in SyncGroup. For its own partitions it asks the group's committed offsets
//! (OffsetFetch) and starts there; a partition without one starts at the log start with
//! `--from-beginning`, else at its end; a committed offset below the log start (removed by
//! retention) starts at the log start. After each round of fetches the offsets after the records
//! printed are committed (OffsetCommit): a record is committed only once printed, so a member
//! that dies between the two leaves it to be printed again by the next (at least once), and
//! nothing committed is ever skipped.
//!
//! It heartbeats every [`HEARTBEAT_EVERY`]; when the coordinator answers that the group
//! rebalances (or that this member was fenced) it joins again and takes what the new assignment
//! gives it. Without `--follow` it stops when its partitions reach the ends they had when they
//! were assigned; `--max-messages` stops it after that many; Ctrl-C stops it after the current
//! round. Whenever it stops it commits what it printed and leaves the group (LeaveGroup), so its
//! partitions move to the other members at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use keel_node::group_member::MemberTiming;
use keel_node::group_member::Membership;
use keel_node::group_member::Next;
use keel_node::group_member::assignor;
use keel_node::group_member::next_for;
use keel_node::kafka_client::EARLIEST_TIMESTAMP;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::LATEST_TIMESTAMP;
use tokio::time::Instant;

use super::consume::ConsumeArgs;
use super::consume::Cursor;
use super::consume::FOLLOW_WAIT_MS;
use super::consume::Leaders;
use super::consume::list_offset;
use super::consume::poll;
use super::kafka::Kafka;
use super::kafka::REQUEST_TIMEOUT;
use super::kafka::check;
use super::kafka::error_text;
use super::kafka::leader_of;
use super::kafka::sb;
use super::output::Output;

const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// A third of the session timeout, as Kafka's consumers default to.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(3_000);
const JOIN_TIMEOUT: Duration = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64 + 5_000);
/// Failed joins (or offset lookups) in a row before giving up.
const JOIN_FAILURES_MAX: u32 = 40;
/// Attempts at the last commit before stopping.
const FINAL_COMMIT_ATTEMPTS: u32 = 10;
const RETRY_PAUSE: Duration = Duration::from_millis(250);

pub async fn run(kafka: &mut Kafka, out: &mut Output, args: &ConsumeArgs, group: &str) -> anyhow::Result<()> {
    if group.is_empty() {
        bail!("--group must not be empty");
    }
    if args.assignor != assignor::RANGE && args.assignor != assignor::ROUND_ROBIN {
        bail!("--assignor {:?}: expected range or roundrobin", args.assignor);
    }
    // The topic must exist (and this says so clearly before any group request).
    kafka.topic(&args.topic).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Release);
            }
        })
    };
    let timing = MemberTiming {
        session_timeout_ms: SESSION_TIMEOUT_MS,
        rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        call_timeout: REQUEST_TIMEOUT,
        join_timeout: JOIN_TIMEOUT,
    };
    let client = KafkaClient::new(format!("keel-consume-{}", std::process::id()), kafka.addrs().to_vec(), 0);
    let mut member = Membership::new(client, group, timing);
    let result = consume(kafka, out, args, &mut member, &stop).await;
    if !member.member_id.is_empty() {
        // Best effort: without it the coordinator drops the member after the session timeout.
        if let Err(e) = member.leave_group().await {
            eprintln!("keel: leaving group {group}: {e}");
        }
    }
    watcher.abort();
    result
}

/// Join, read, commit; again after every rebalance, until done.
async fn consume(
    kafka: &mut Kafka,
    out: &mut Output,
    args: &ConsumeArgs,
    member: &mut Membership,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut printed = 0u64;
    let mut failures = 0u32;
    let mut last_failure = String::new();
    'join: loop {
        if stop.load(Ordering::Acquire) || args.max_messages.is_some_and(|m| printed >= m) {
            return Ok(());
        }
        if failures >= JOIN_FAILURES_MAX {
            bail!("cannot join group {} ({failures} attempts); last: {last_failure}", member.group_id());
        }
        let assigned = match join(kafka, args, member).await? {
            Ok(a) => a,
            Err(why) => {
                failures += 1;
                last_failure = why;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue 'join;
            }
        };
        let mut cursors = match start(kafka, args, member, &assigned).await? {
            Ok(c) => c,
            Err(why) => {
                failures += 1;
                last_failure = why;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue 'join;
            }
        };
        failures = 0;
        eprintln!(
            "keel: group {}, member {} (generation {}): partitions {:?} of {}",
            member.group_id(),
            member.member_id,
            member.generation,
            assigned,
            args.topic
        );
        let mut leaders = Leaders::new();
        let mut uncommitted: BTreeMap<i32, i64> = BTreeMap::new();
        let mut last_heartbeat = Instant::now();
        loop {
            let done = stop.load(Ordering::Acquire)
                || args.max_messages.is_some_and(|m| printed >= m)
                || (!args.follow && cursors.values().all(|c| !c.open()));
            if done {
                return final_commit(member, &args.topic, &mut uncommitted).await;
            }
            if last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
                last_heartbeat = Instant::now();
                let next = match member.heartbeat().await {
                    Ok(answer) => next_for(answer.error_code),
                    Err(_) => Next::Rediscover,
                };
                if member.follow(next) != Next::Continue {
                    // What was printed and not committed is printed again by its next owner.
                    continue 'join;
                }
            }
            let open: Vec<i32> = cursors.iter().filter(|(_, c)| c.open()).map(|(p, _)| *p).collect();
            let wait_ms = if args.follow && open.len() == 1 { FOLLOW_WAIT_MS } else { 0 };
            let mut got_any = false;
            for p in open {
                let cursor = cursors.get_mut(&p).expect("open partitions have cursors");
                let before = cursor.next;
                got_any |= poll(kafka, out, args, &mut leaders, p, cursor, wait_ms, &mut printed).await? > 0;
                if cursor.next > before {
                    uncommitted.insert(p, cursor.next);
                }
            }
            if !uncommitted.is_empty() {
                match commit(member, &args.topic, &mut uncommitted).await {
                    Next::Rejoin | Next::Reset => continue 'join,
                    // A commit lost with its coordinator: the next round's commit covers it.
                    Next::Continue | Next::Rediscover => {}
                }
            }
            if !got_any && args.follow && wait_ms == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Whether a group error code is worth joining again for; any other is reported.
fn retriable(code: i16) -> bool {
    [
        ResponseError::CoordinatorNotAvailable,
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorLoadInProgress,
        ResponseError::RebalanceInProgress,
        ResponseError::UnknownMemberId,
        ResponseError::IllegalGeneration,
        ResponseError::MemberIdRequired,
    ]
    .iter()
    .any(|e| e.code() == code)
}

/// Joins and syncs (running the assignor when this member leads): `Ok(Ok(partitions))` of the
/// topic assigned to this member, `Ok(Err(why))` to try again, `Err` for an error to report.
async fn join(
    kafka: &mut Kafka,
    args: &ConsumeArgs,
    member: &mut Membership,
) -> anyhow::Result<Result<Vec<i32>, String>> {
    let subscription = assignor::subscription(std::slice::from_ref(&args.topic))?;
    let other = if args.assignor == assignor::RANGE { assignor::ROUND_ROBIN } else { assignor::RANGE };
    let protocols = [args.assignor.as_str(), other]
        .into_iter()
        .map(|name| JoinGroupRequestProtocol::default().with_name(sb(name)).with_metadata(subscription.clone()))
        .collect();
    let answer = match member.join_group(assignor::CONSUMER_PROTOCOL_TYPE, protocols).await {
        Ok(a) => a,
        Err(e) => return Ok(Err(format!("JoinGroup: {e}"))),
    };
    if answer.error_code != 0 {
        if !retriable(answer.error_code) {
            check(answer.error_code, &format!("joining group {}", member.group_id()), None)?;
        }
        member.follow(next_for(answer.error_code));
        return Ok(Err(format!("JoinGroup: {}", error_text(answer.error_code, None))));
    }
    let assignments = if answer.leader == answer.member_id {
        let subscriptions: BTreeMap<String, Vec<String>> = answer
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), assignor::parse_subscription(&m.metadata).unwrap_or_default()))
            .collect();
        let mut topics: Vec<String> = subscriptions.values().flatten().cloned().collect();
        topics.sort();
        topics.dedup();
        let md = kafka.metadata(Some(&topics)).await?;
        let counts: BTreeMap<String, i32> = md
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), t.partitions.len() as i32)))
            .collect();
        let protocol = answer.protocol_name.as_ref().map_or(args.assignor.clone(), |p| p.to_string());
        let mut assignments = Vec::new();
        for (id, assigned) in assignor::assign(&protocol, &subscriptions, &counts)? {
            assignments.push((sb(&id), assignor::assignment(&assigned)?));
        }
        assignments
    } else {
        Vec::new()
    };
    let answer = match member.sync_group(assignments).await {
        Ok(a) => a,
        Err(e) => return Ok(Err(format!("SyncGroup: {e}"))),
    };
    if answer.error_code != 0 {
        if !retriable(answer.error_code) {
            check(answer.error_code, &format!("syncing group {}", member.group_id()), None)?;
        }
        member.follow(next_for(answer.error_code));
        return Ok(Err(format!("SyncGroup: {}", error_text(answer.error_code, None))));
    }
    let mut assigned = assignor::parse_assignment(&answer.assignment)?;
    Ok(Ok(assigned.remove(&args.topic).unwrap_or_default()))
}

/// Where each assigned partition starts (the committed offset, else per `--from-beginning`)
/// and, without `--follow`, where it ends; `Ok(Err(why))` to join again.
async fn start(
    kafka: &mut Kafka,
    args: &ConsumeArgs,
    member: &mut Membership,
    assigned: &[i32],
) -> anyhow::Result<Result<BTreeMap<i32, Cursor>, String>> {
    let mut cursors = BTreeMap::new();
    if assigned.is_empty() {
        return Ok(Ok(cursors));
    }
    let answer = match member.offset_fetch(&args.topic, assigned.to_vec()).await {
        Ok(a) => a,
        Err(e) => return Ok(Err(format!("OffsetFetch: {e}"))),
    };
    let codes = std::iter::once(answer.error_code)
        .chain(answer.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)));
    if let Some(code) = codes.into_iter().find(|c| *c != 0) {
        if !retriable(code) {
            check(code, &format!("committed offsets of group {}", member.group_id()), None)?;
        }
        member.follow(next_for(code));
        return Ok(Err(format!("OffsetFetch: {}", error_text(code, None))));
    }
    let committed: BTreeMap<i32, i64> = answer
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == args.topic)
        .flat_map(|t| &t.partitions)
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    let (md, topic) = kafka.topic(&args.topic).await?;
    for &p in assigned {
        let Some((_, _, addr)) = leader_of(&md, &topic, p) else {
            return Ok(Err(format!("partition {p} of '{}' has no leader", args.topic)));
        };
        let earliest = list_offset(kafka, &addr, &args.topic, p, EARLIEST_TIMESTAMP).await?;
        let latest = list_offset(kafka, &addr, &args.topic, p, LATEST_TIMESTAMP).await?;
        let from = match committed.get(&p).copied().filter(|o| *o >= 0) {
            Some(o) if o < earliest => {
                eprintln!(
                    "keel: committed offset {o} of {}/{p} is below the log start; starting at {earliest}",
                    args.topic
                );
                earliest
            }
            Some(o) => o,
            None if args.from_beginning => earliest,
            None => latest,
        };
        cursors.insert(p, Cursor::new(from, (!args.follow).then_some(latest)));
    }
    Ok(Ok(cursors))
}

/// Commits `uncommitted` (partition → next offset); what was acknowledged leaves the map.
async fn commit(member: &mut Membership, topic: &str, uncommitted: &mut BTreeMap<i32, i64>) -> Next {
    let offsets: Vec<(i32, i64)> = uncommitted.iter().map(|(p, o)| (*p, *o)).collect();
    let answer = match member.offset_commit(topic, &offsets).await {
        Ok(a) => a,
        Err(_) => return member.follow(Next::Rediscover),
    };
    let mut next = Next::Continue;
    for p in answer.topics.iter().filter(|t| t.name.0.as_str() == topic).flat_map(|t| &t.partitions) {
        if p.error_code == 0 {
            uncommitted.remove(&p.partition_index);
        } else if next == Next::Continue {
            next = next_for(p.error_code);
        }
    }
    member.follow(next)
}

/// The commit before stopping, tried a few times: printed records should not be printed again.
async fn final_commit(
    member: &mut Membership,
    topic: &str,
    uncommitted: &mut BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    for _ in 0..FINAL_COMMIT_ATTEMPTS {
        if uncommitted.is_empty() {
            return Ok(());
        }
        match commit(member, topic, uncommitted).await {
            Next::Rejoin | Next::Reset => break,
            Next::Continue | Next::Rediscover => {}
        }
        if !uncommitted.is_empty() {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    if uncommitted.is_empty() {
        return Ok(());
    }
    bail!(
        "the offsets after the printed records of {topic} could not be committed for group {} (partition → offset: \
         {uncommitted:?}); they will be printed again",
        member.group_id()
    )
}
