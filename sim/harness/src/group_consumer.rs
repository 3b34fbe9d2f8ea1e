//! Simulated consumer-group members: Kafka's classic group protocol over the real wire
//! (FindCoordinator v3, JoinGroup v5, SyncGroup v3, Heartbeat v3, OffsetFetch v6,
//! OffsetCommit v7, Fetch v12), consuming the workload partition with commit-after-processing.
//! The requests are `keel_node::group_member`'s, which `keel consume --group` sends too; what
//! is recorded around them, the assignment and the crashes are this file's.
//!
//! A member finds the group's coordinator, joins (taking the member id the coordinator hands
//! out), and — when it is the group's leader — assigns the partition to the first member in id
//! order (the assignor runs in the client, as in Kafka; the coordinator passes the bytes
//! through). The member that owns the partition asks for the committed offset (`group_offset`),
//! starts there (or at 0), and then in a loop fetches from the partition's leader, hands the
//! records to its "application" (`group_process`: the event at-least-once is about), and
//! commits the offset after them (`group_commit`). It heartbeats every
//! [`HEARTBEAT_EVERY`] and rejoins when told the group rebalances or it is fenced.
//!
//! Members crash: now and then (drawn from the seed) a member stops dead — after fetching,
//! after processing or after committing — without leaving the group, and starts again after a
//! pause as a new member (a new process id in the history, as a crashed client is in Jepsen).
//! The coordinator notices through the session timeout. Under
//! `canary-commit-before-processing` a member commits the fetched records' end offset before it
//! processes them, so a crash in between skips them for good; `group_at_least_once` catches it.
//!
//! After the workload the members drain: [`Drain::target`] is set to the partition's final high
//! watermark, members stop crashing, and the group is drained once a commit at or above it is
//! acknowledged.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::protocol::StrBytes;
use keel_checker::EventType;
use keel_checker::GroupCommit;
use keel_checker::GroupOffset;
use keel_checker::GroupProcess;
use keel_checker::Op;
use keel_node::group_member::MemberTiming;
use keel_node::group_member::Membership;
use keel_node::group_member::Next;
use keel_node::group_member::next_for;
use keel_node::kafka_client::KafkaClient;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::cluster::partition_name;
use crate::recorder::Recorder;
use crate::workload::PARTITION;
use crate::workload::TOPIC;
use crate::workload::records_of;

/// The simulated consumer group.
pub const GROUP_ID: &str = "sim-group";
const SESSION_TIMEOUT_MS: i32 = 3_000;
const REBALANCE_TIMEOUT_MS: i32 = 4_000;
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// JoinGroup waits up to the rebalance timeout on the coordinator.
const JOIN_TIMEOUT: Duration = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64 + 2_000);
const FETCH_TIMEOUT: Duration = Duration::from_secs(1);
const PAUSE: Duration = Duration::from_millis(100);
const IDLE_PAUSE: Duration = Duration::from_millis(20);
/// `max_bytes` of a member's Fetch (librdkafka's default `fetch.max.bytes` is 50 MiB): several of
/// the workload's ~1 MB batches per fetch, so that draining the log takes few round trips.
const FETCH_BYTES_MAX: i32 = 4 << 20;
/// One member crash in this many processed fetches (before the drain).
const CRASH_ONE_IN: u32 = 25;
const CRASHES_MAX: u32 = 6;
/// What the assignment bytes say when the member owns the partition (opaque to the broker).
const OWNS: &[u8] = b"t-0";
const TIMING: MemberTiming = MemberTiming {
    session_timeout_ms: SESSION_TIMEOUT_MS,
    rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
    call_timeout: CALL_TIMEOUT,
    join_timeout: JOIN_TIMEOUT,
};

/// The drain after the workload: shared by the control loop and the members.
#[derive(Debug)]
pub struct Drain {
    /// The partition's final high watermark, once known (`u64::MAX` until then).
    target: AtomicU64,
    /// The highest offset a commit was acknowledged for.
    committed_max: AtomicU64,
    /// Set when the run ends: members stop.
    stop: AtomicBool,
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain {
            target: AtomicU64::new(u64::MAX),
            committed_max: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    pub fn set_target(&self, end: u64) {
        self.target.store(end, Ordering::Release);
    }

    /// Whether a commit at or above the target was acknowledged.
    pub fn drained(&self) -> bool {
        self.committed_max.load(Ordering::Acquire) >= self.target.load(Ordering::Acquire)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn draining(&self) -> bool {
        self.target.load(Ordering::Acquire) != u64::MAX
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn committed(&self, offset: u64) {
        self.committed_max.fetch_max(offset, Ordering::AcqRel);
    }
}

/// Why a member session ended.
enum End {
    /// The member crashed (on purpose): a new one starts after a pause.
    Crashed,
    /// The run is over.
    Stopped,
}

/// Member `index` of the group: sessions one after another (a new process id each, from
/// `process_base`), until the drain stops it.
pub async fn member(
    seed: u64,
    index: u64,
    process_base: u64,
    group: u64,
    bootstrap: Vec<String>,
    recorder: Recorder,
    drain: Arc<Drain>,
) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6772_6f75_705f_6d65 ^ index.wrapping_mul(0x9e37_79b9));
    let mut crashes = 0u32;
    for session in 0u64.. {
        let process = process_base + session;
        let client = KafkaClient::new(format!("group-member-{index}-{session}"), bootstrap.clone(), index as usize);
        let mut m = Member {
            group: Membership::new(client, GROUP_ID, TIMING),
            partition: partition_name(group),
            process,
            recorder: recorder.clone(),
            drain: drain.clone(),
            leader: None,
        };
        let may_crash = crashes < CRASHES_MAX;
        tracing::debug!(index, process, "group member session starts");
        match m.run(&mut rng, may_crash).await {
            End::Stopped => return,
            End::Crashed => {
                crashes += 1;
                madsim::time::sleep(Duration::from_millis(rng.gen_range(100..1_500))).await;
            }
        }
    }
}

/// One session of a member.
struct Member {
    /// The client, the coordinator, the member id and generation.
    group: Membership,
    partition: String,
    process: u64,
    recorder: Recorder,
    drain: Arc<Drain>,
    /// The partition's leader, from Metadata (forgotten on any fetch trouble).
    leader: Option<keel_node::kafka_client::Leader>,
}

impl Member {
    fn record(&self, kind: EventType, op: Op) {
        self.recorder.record(self.process, kind, op);
    }

    /// Forgets what `next` says is no longer valid (the member id, the coordinator) and
    /// returns it.
    fn follow(&mut self, next: Next) -> Next {
        self.group.follow(next)
    }

    async fn run(&mut self, rng: &mut SmallRng, may_crash: bool) -> End {
        'join: loop {
            if self.drain.stopped() {
                return End::Stopped;
            }
            let Some(owns) = self.join().await else {
                madsim::time::sleep(PAUSE).await;
                continue 'join;
            };
            let mut position = None;
            // The offset this session last had a commit acknowledged at (or fetched as the
            // group's committed offset).
            let mut acked = None;
            let mut last_heartbeat = self.recorder.elapsed_ns();
            loop {
                if self.drain.stopped() {
                    return End::Stopped;
                }
                if self.recorder.elapsed_ns() - last_heartbeat >= HEARTBEAT_EVERY.as_nanos() as u64 {
                    last_heartbeat = self.recorder.elapsed_ns();
                    let next = self.heartbeat().await;
                    if !matches!(self.follow(next), Next::Continue) {
                        continue 'join;
                    }
                }
                if !owns {
                    madsim::time::sleep(PAUSE).await;
                    continue;
                }
                let from = match position {
                    Some(p) => p,
                    None => match self.committed_offset().await {
                        Some(p) => {
                            position = Some(p);
                            acked = Some(p);
                            // The coordinator holds it committed: as good as an acknowledged
                            // commit for the drain. (A commit whose answer was lost but which
                            // applied is not made again once caught up, so without this the
                            // drain would wait for an acknowledgement that never comes: seed
                            // 50 of the cluster shape, once the operator reassigned over Kafka.)
                            self.drain.committed(p);
                            p
                        }
                        None => {
                            self.follow(Next::Rediscover);
                            madsim::time::sleep(PAUSE).await;
                            continue 'join;
                        }
                    },
                };
                // `end`: the offset after the fetched batches (control batches, which carry no
                // records, move it too).
                let (records, end) = match self.fetch(from).await {
                    Some((r, end)) if end > from => (r, end),
                    _ => {
                        // Caught up. A commit whose outcome was unknown (lost with its
                        // coordinator) is made again: no later records may come to cover it.
                        if acked != Some(from) {
                            match self.commit(from).await {
                                None => acked = Some(from),
                                Some(next) => {
                                    if matches!(self.follow(next), Next::Rejoin | Next::Reset) {
                                        continue 'join;
                                    }
                                }
                            }
                        }
                        madsim::time::sleep(IDLE_PAUSE).await;
                        continue;
                    }
                };
                // Where this member dies, if it does: 0 after fetching, 1 after the first step
                // (processing; committing under the canary), 2 after both.
                let crash_at = (may_crash && !self.drain.draining() && rng.gen_ratio(1, CRASH_ONE_IN))
                    .then(|| rng.gen_range(0..3u8));
                if crash_at.is_some() {
                    tracing::debug!(process = self.process, ?crash_at, "group member will crash");
                }
                if crash_at == Some(0) {
                    return End::Crashed;
                }
                let refused = if cfg!(feature = "canary-commit-before-processing") {
                    // CANARY (`canary-commit-before-processing`): the offset is committed
                    // before the records are processed.
                    let refused = self.commit(end).await;
                    if crash_at == Some(1) {
                        return End::Crashed;
                    }
                    self.process(records);
                    refused
                } else {
                    self.process(records);
                    if crash_at == Some(1) {
                        return End::Crashed;
                    }
                    self.commit(end).await
                };
                // A commit lost with its coordinator needs no rejoin: the records are
                // processed, and a later commit covers them.
                if refused.is_none() {
                    acked = Some(end);
                }
                if let Some(next) = refused
                    && matches!(self.follow(next), Next::Rejoin | Next::Reset)
                {
                    continue 'join;
                }
                position = Some(end);
                if crash_at == Some(2) {
                    return End::Crashed;
                }
            }
        }
    }

    /// The records handed to the application.
    fn process(&self, records: Vec<keel_checker::Record>) {
        if records.is_empty() {
            return;
        }
        let invoke = GroupProcess { group: GROUP_ID.into(), partition: self.partition.clone(), records: Vec::new() };
        self.record(EventType::Invoke, Op::GroupProcess(invoke.clone()));
        self.record(EventType::Ok, Op::GroupProcess(GroupProcess { records, ..invoke }));
    }

    /// Joins and syncs; answers whether this member owns the partition, None to try again.
    async fn join(&mut self) -> Option<bool> {
        let protocol = JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("sim"))
            .with_metadata(Bytes::from_static(TOPIC.as_bytes()));
        let answer = match self.group.join_group("consumer", vec![protocol]).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(process = self.process, error = %e, "JoinGroup failed");
                return None;
            }
        };
        tracing::debug!(
            process = self.process,
            code = answer.error_code,
            generation = answer.generation_id,
            member = %answer.member_id.as_str(),
            leader = %answer.leader.as_str(),
            members = answer.members.len(),
            "JoinGroup answered"
        );
        if !matches!(self.follow(next_for(answer.error_code)), Next::Continue) {
            return None;
        }
        let assignments = if answer.leader == answer.member_id {
            // The first member in id order owns the partition.
            let mut ids: Vec<StrBytes> = answer.members.iter().map(|m| m.member_id.clone()).collect();
            ids.sort();
            ids.into_iter()
                .enumerate()
                .map(|(i, id)| (id, if i == 0 { Bytes::from_static(OWNS) } else { Bytes::new() }))
                .collect()
        } else {
            Vec::new()
        };
        let answer = match self.group.sync_group(assignments).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(process = self.process, error = %e, "SyncGroup failed");
                return None;
            }
        };
        tracing::debug!(
            process = self.process,
            code = answer.error_code,
            owns = answer.assignment.as_ref() == OWNS,
            "SyncGroup answered"
        );
        matches!(self.follow(next_for(answer.error_code)), Next::Continue).then(|| answer.assignment.as_ref() == OWNS)
    }

    async fn heartbeat(&mut self) -> Next {
        match self.group.heartbeat().await {
            Ok(answer) => {
                if answer.error_code != 0 {
                    tracing::debug!(process = self.process, code = answer.error_code, "Heartbeat refused");
                }
                next_for(answer.error_code)
            }
            Err(e) => {
                tracing::debug!(process = self.process, error = %e, "Heartbeat failed");
                Next::Rediscover
            }
        }
    }

    /// The committed offset to start from (0 when none is committed); None when the
    /// coordinator did not answer it.
    async fn committed_offset(&mut self) -> Option<u64> {
        let invoke = GroupOffset { group: GROUP_ID.into(), partition: self.partition.clone(), offset: None };
        self.record(EventType::Invoke, Op::GroupOffset(invoke.clone()));
        let answer = match self.group.offset_fetch(TOPIC, vec![PARTITION]).await {
            Ok(a) => a,
            Err(_) => {
                self.record(EventType::Info, Op::GroupOffset(invoke));
                return None;
            }
        };
        let partition = answer
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == TOPIC)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == PARTITION);
        match partition {
            Some(p) if answer.error_code == 0 && p.error_code == 0 => {
                let offset = u64::try_from(p.committed_offset).ok();
                self.record(EventType::Ok, Op::GroupOffset(GroupOffset { offset, ..invoke }));
                Some(offset.unwrap_or(0))
            }
            _ => {
                self.record(EventType::Fail, Op::GroupOffset(invoke));
                None
            }
        }
    }

    /// Commits `offset`; None when acknowledged, else what to do next.
    async fn commit(&mut self, offset: u64) -> Option<Next> {
        let op = GroupCommit { group: GROUP_ID.into(), partition: self.partition.clone(), offset };
        self.record(EventType::Invoke, Op::GroupCommit(op.clone()));
        let answer = match self.group.offset_commit(TOPIC, &[(PARTITION, offset as i64)]).await {
            Ok(a) => a,
            Err(_) => {
                self.record(EventType::Info, Op::GroupCommit(op));
                return Some(Next::Rediscover);
            }
        };
        let code = answer
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == PARTITION)
            .map_or(ResponseError::UnknownServerError.code(), |p| p.error_code);
        match next_for(code) {
            Next::Continue => {
                self.record(EventType::Ok, Op::GroupCommit(op));
                self.drain.committed(offset);
                None
            }
            // Fenced: the coordinator refused it for this generation.
            next @ (Next::Rejoin | Next::Reset) => {
                self.record(EventType::Fail, Op::GroupCommit(op));
                Some(next)
            }
            next @ Next::Rediscover => {
                self.record(EventType::Info, Op::GroupCommit(op));
                Some(next)
            }
        }
    }

    /// Records of the partition from `offset` and the offset after them, through its leader;
    /// None on any trouble.
    async fn fetch(&mut self, offset: u64) -> Option<(Vec<keel_checker::Record>, u64)> {
        let leader = match self.leader.clone() {
            Some(l) => l,
            None => {
                let l = self.group.client.leader(TOPIC, PARTITION, CALL_TIMEOUT).await.ok()??;
                self.leader = Some(l.clone());
                l
            }
        };
        let at = i64::try_from(offset).ok()?;
        let answer = match self.group.client.connect(&leader.addr).await {
            Ok(()) => {
                self.group
                    .client
                    .fetch(&leader.addr, TOPIC, PARTITION, at, leader.epoch, FETCH_BYTES_MAX, 0, FETCH_TIMEOUT)
                    .await
            }
            Err(e) => Err(e),
        };
        let answer = match answer {
            Ok(a) if a.error_code == 0 => a,
            _ => {
                self.leader = None;
                return None;
            }
        };
        let batches = match answer.records.as_ref() {
            Some(r) => keel_node::kafka_client::split_batches(r).ok()?,
            None => Vec::new(),
        };
        if batches.is_empty() {
            return Some((Vec::new(), offset));
        }
        let read = records_of(&batches).ok()?;
        Some((read.records.into_iter().filter(|r| r.offset >= offset).collect(), read.next.max(offset)))
    }
}
