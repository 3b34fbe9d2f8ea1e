//! Raft heartbeats batched per peer node.
//!
//! Every partition's leader sends each follower a heartbeat — an AppendEntries with no entries —
//! every `heartbeat_interval`. Sent one by one, a thousand partitions make thousands of frames a
//! second per node pair, each with its own request, response and wake-ups on both sides. A
//! [`Batcher`] attached to a transport ([`enable`]) queues the heartbeats bound for one peer and
//! sends them as one [`KIND_HEARTBEAT_BATCH`] call on the reserved group [`NODE_GROUP`]:
//!
//! - a batch leaves `window_ms` after its first heartbeat, or at once when it holds
//!   `batch_len_max`;
//! - the request body is `Vec<(group, member, AppendEntriesRequest)>` (member: the Raft id of
//!   the replica it is for, see `network`); the answer is
//!   `Vec<(group, Result<AppendEntriesResponse, String>)>` in the same order
//!   ([`serve_heartbeat_batch`] on the peer hands each request to its group's `Raft`, all at once);
//! - every caller gets its own group's answer, or the batch call's transport error;
//! - every caller's own timeout (`RPCOption::hard_ttl`) still bounds it, window included; a
//!   heartbeat whose caller gave up before its batch left is not sent. The batch call's timeout is
//!   the latest of its callers' deadlines.
//!
//! Batching is off until [`enable`]: every peer's dispatcher must route
//! `(NODE_GROUP, KIND_HEARTBEAT_BATCH)` to [`serve_heartbeat_batch`] first, or every heartbeat
//! fails. Entries-carrying AppendEntries never wait here.
//!
//! Deterministic under madsim: a `BTreeMap` of open batches under a std mutex (never held across
//! an await), `tokio::time` sleeps, oneshot replies; nothing iterates a hash map or reads a clock
//! other than the runtime's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::NodeId;
use super::Raft;
use super::TypeConfig;
use super::network::decode;
use super::network::encode;
use crate::transport::Transport;
use crate::transport::TransportError;
use crate::transport::lock;

/// The group id of frames that concern a node pair rather than one partition. Never a
/// partition's id.
pub const NODE_GROUP: u64 = u64::MAX;
/// The frame kind of a heartbeat batch (on [`NODE_GROUP`]). Distinct from every
/// `network::KIND_*`.
pub const KIND_HEARTBEAT_BATCH: u8 = 5;
/// Most heartbeats in one batch, on either side: a larger `batch_len_max` is refused, and so is a
/// received batch holding more. An empty heartbeat encodes to about 100 bytes, so a full batch
/// stays far below any sane `frame_bytes_max`.
pub const BATCH_LEN_LIMIT: usize = 4096;

/// What one caller waits for.
type Answer = Result<AppendEntriesResponse<TypeConfig>, TransportError>;
/// What the peer answers for one group.
type GroupAnswer = Result<AppendEntriesResponse<TypeConfig>, String>;

/// Heartbeat batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatBatchConfig {
    /// How long a batch waits for more heartbeats after its first one (default 5 ms). Every
    /// heartbeat is delayed by up to this much, so keep it well below the heartbeat interval and
    /// the election timeout; 1..=1000.
    pub window_ms: u64,
    /// A batch holding this many heartbeats leaves at once (default 1024; 1..=[`BATCH_LEN_LIMIT`]).
    pub batch_len_max: usize,
}

impl Default for HeartbeatBatchConfig {
    fn default() -> Self {
        HeartbeatBatchConfig { window_ms: 5, batch_len_max: 1024 }
    }
}

impl HeartbeatBatchConfig {
    pub fn validate(&self) -> Result<(), HeartbeatError> {
        if !(1..=1000).contains(&self.window_ms) {
            return Err(HeartbeatError::Config(format!("window_ms {} must be in 1..=1000", self.window_ms)));
        }
        if !(1..=BATCH_LEN_LIMIT).contains(&self.batch_len_max) {
            return Err(HeartbeatError::Config(format!(
                "batch_len_max {} must be in 1..={BATCH_LEN_LIMIT}",
                self.batch_len_max
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("invalid heartbeat batch config: {0}")]
    Config(String),
    /// [`enable`] was called twice on one transport (or something else is attached to it).
    #[error("the transport already has an attachment")]
    AlreadyEnabled,
}

/// Counters of a [`Batcher`], monotonic since it was enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatStats {
    /// Heartbeats queued.
    pub heartbeats: u64,
    /// Batch calls made (each is one request frame and, unless it fails, one response frame).
    pub batches: u64,
    /// Heartbeats dropped before their batch left because their caller had given up.
    pub expired: u64,
}

/// One queued heartbeat.
struct Queued {
    group: u64,
    /// The member (Raft id) the heartbeat is for.
    to: u64,
    request: AppendEntriesRequest<TypeConfig>,
    /// When the caller stops waiting.
    deadline: Instant,
    reply: oneshot::Sender<Answer>,
}

/// The batch being filled for one peer.
struct Open {
    /// Tells the timer of this batch from a later batch's after a size-bound flush.
    id: u64,
    items: Vec<Queued>,
}

#[derive(Default)]
struct Queues {
    next_batch_id: u64,
    open: BTreeMap<NodeId, Open>,
}

/// Queues heartbeats per peer and sends them in batches. One per transport, attached by
/// [`enable`]; found again by [`batcher`].
pub struct Batcher {
    config: HeartbeatBatchConfig,
    queues: Mutex<Queues>,
    heartbeats: AtomicU64,
    batches: AtomicU64,
    expired: AtomicU64,
}

/// Turns heartbeat batching on for every Raft group using `transport`. Every peer must serve
/// [`KIND_HEARTBEAT_BATCH`] on [`NODE_GROUP`] (see [`serve_heartbeat_batch`]).
pub fn enable(transport: &Transport, config: HeartbeatBatchConfig) -> Result<Arc<Batcher>, HeartbeatError> {
    config.validate()?;
    let batcher = Arc::new(Batcher {
        config,
        queues: Mutex::new(Queues::default()),
        heartbeats: AtomicU64::new(0),
        batches: AtomicU64::new(0),
        expired: AtomicU64::new(0),
    });
    if !transport.attach(batcher.clone()) {
        return Err(HeartbeatError::AlreadyEnabled);
    }
    Ok(batcher)
}

/// The batcher enabled on `transport`, if any.
pub fn batcher(transport: &Transport) -> Option<Arc<Batcher>> {
    transport.attached::<Batcher>()
}

impl Batcher {
    pub fn config(&self) -> HeartbeatBatchConfig {
        self.config
    }

    pub fn stats(&self) -> HeartbeatStats {
        HeartbeatStats {
            heartbeats: self.heartbeats.load(Relaxed),
            batches: self.batches.load(Relaxed),
            expired: self.expired.load(Relaxed),
        }
    }

    /// Sends `request` (a heartbeat of `group`) to member `to` (a Raft id) in the next batch for
    /// its node and waits for its answer, at most `timeout` from now.
    pub async fn send(
        self: &Arc<Self>,
        transport: &Transport,
        to: u64,
        group: u64,
        request: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Answer {
        debug_assert!(request.entries.is_empty(), "only entry-less AppendEntries are batched");
        let (reply, answer) = oneshot::channel();
        let target: NodeId = keel_core::metadata::node_of(to);
        let queued = Queued { group, to, request, deadline: Instant::now() + timeout, reply };
        self.heartbeats.fetch_add(1, Relaxed);
        let (new_batch, full) = {
            let mut queues = lock(&self.queues);
            let queues = &mut *queues;
            let new_batch = match queues.open.get_mut(&target) {
                Some(open) => {
                    open.items.push(queued);
                    None
                }
                None => {
                    queues.next_batch_id += 1;
                    let id = queues.next_batch_id;
                    queues.open.insert(target, Open { id, items: vec![queued] });
                    Some(id)
                }
            };
            let full = if queues.open.get(&target).is_some_and(|o| o.items.len() >= self.config.batch_len_max) {
                queues.open.remove(&target).map(|o| o.items)
            } else {
                None
            };
            (new_batch, full)
        };
        match (full, new_batch) {
            (Some(items), _) => {
                crate::rt::spawn(self.clone().flush(transport.clone(), target, items));
            }
            (None, Some(id)) => {
                crate::rt::spawn(self.clone().flush_after_window(transport.clone(), target, id));
            }
            (None, None) => {}
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(TransportError::Unreachable { peer: target, reason: "heartbeat batch dropped".into() }),
            Err(_) => Err(TransportError::Timeout { peer: target, ms: timeout.as_millis() as u64 }),
        }
    }

    /// Sends batch `id` for `target` once its window has passed, unless it already left full.
    async fn flush_after_window(self: Arc<Self>, transport: Transport, target: NodeId, id: u64) {
        tokio::time::sleep(Duration::from_millis(self.config.window_ms)).await;
        let items = {
            let mut queues = lock(&self.queues);
            if queues.open.get(&target).is_none_or(|o| o.id != id) {
                return;
            }
            queues.open.remove(&target).map(|o| o.items)
        };
        if let Some(items) = items {
            self.flush(transport, target, items).await;
        }
    }

    /// Sends one batch and hands every caller its answer.
    async fn flush(self: Arc<Self>, transport: Transport, target: NodeId, items: Vec<Queued>) {
        let now = Instant::now();
        let (items, expired): (Vec<Queued>, Vec<Queued>) =
            items.into_iter().partition(|q| q.deadline > now && !q.reply.is_closed());
        self.expired.fetch_add(expired.len() as u64, Relaxed);
        let Some(deadline) = items.iter().map(|q| q.deadline).max() else {
            return;
        };
        let body: Vec<(u64, u64, &AppendEntriesRequest<TypeConfig>)> =
            items.iter().map(|q| (q.group, q.to, &q.request)).collect();
        let answers = match encode(&body) {
            Ok(body) => {
                self.batches.fetch_add(1, Relaxed);
                let timeout = deadline.saturating_duration_since(now);
                call(&transport, target, body, timeout, items.len()).await
            }
            Err(e) => Err(TransportError::Remote(e)),
        };
        match answers {
            Ok(answers) => {
                for (q, (group, answer)) in items.into_iter().zip(answers) {
                    let answer = if group == q.group {
                        answer.map_err(TransportError::Remote)
                    } else {
                        Err(TransportError::Remote(format!(
                            "heartbeat of group {} answered for group {group}",
                            q.group
                        )))
                    };
                    let _ = q.reply.send(answer);
                }
            }
            Err(e) => {
                for q in items {
                    let _ = q.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One batch call; checks that the answer has one entry per heartbeat.
async fn call(
    transport: &Transport,
    target: NodeId,
    body: Bytes,
    timeout: Duration,
    len: usize,
) -> Result<Vec<(u64, GroupAnswer)>, TransportError> {
    let bytes = transport.call(target, NODE_GROUP, KIND_HEARTBEAT_BATCH, body, timeout).await?;
    let answers: Vec<(u64, GroupAnswer)> = decode(&bytes).map_err(TransportError::Remote)?;
    if answers.len() != len {
        return Err(TransportError::Remote(format!("batch of {len} heartbeats answered with {}", answers.len())));
    }
    Ok(answers)
}

/// Serves one heartbeat batch: hands each heartbeat to its group's `Raft` (found by `lookup`,
/// with the member id of the local replica), all at once, and answers each in order; a group not
/// hosted here, or a heartbeat for another member (an earlier incarnation of the local replica),
/// gets an error entry. `Err` (a body that does not decode, or too many heartbeats) is sent back
/// as a remote error.
pub async fn serve_heartbeat_batch(lookup: impl Fn(u64) -> Option<(Raft, u64)>, body: &[u8]) -> Result<Bytes, String> {
    let batch: Vec<(u64, u64, AppendEntriesRequest<TypeConfig>)> = decode(body)?;
    if batch.len() > BATCH_LEN_LIMIT {
        return Err(format!("heartbeat batch of {} exceeds {BATCH_LEN_LIMIT}", batch.len()));
    }
    let answers = batch.into_iter().map(|(group, to, request)| {
        let raft = lookup(group);
        async move {
            let answer: GroupAnswer = match raft {
                Some((raft, local)) if local == to => raft.append_entries(request).await.map_err(|e| e.to_string()),
                Some((_, local)) => Err(format!("heartbeat for member {to}, but this replica is member {local}")),
                None => Err(format!("no partition {group} on this node")),
            };
            (group, answer)
        }
    });
    encode(&join_all(answers).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guarantee: bytes from the network never panic the server; garbage is an error answer.
    #[test]
    fn a_batch_that_does_not_decode_is_an_error_not_a_panic() {
        let lookup = |_: u64| -> Option<(Raft, u64)> { None };
        for body in [&b""[..], &[0xff; 7], &[0xff; 64], &u64::MAX.to_le_bytes()] {
            let answer = futures::executor::block_on(serve_heartbeat_batch(lookup, body));
            assert!(answer.is_err(), "{body:?} decoded");
        }
    }

    /// Guarantee: a received batch is bounded like a sent one.
    #[test]
    fn a_batch_over_the_limit_is_refused() {
        let request = AppendEntriesRequest::<TypeConfig> {
            vote: super::super::Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: vec![],
        };
        let batch: Vec<(u64, u64, &AppendEntriesRequest<TypeConfig>)> =
            (0..=BATCH_LEN_LIMIT as u64).map(|g| (g, 1, &request)).collect();
        let body = encode(&batch).expect("encode");
        let answer = futures::executor::block_on(serve_heartbeat_batch(|_| None, &body));
        assert!(answer.is_err_and(|e| e.contains("exceeds")));
    }

    #[test]
    fn config_bounds() {
        assert!(HeartbeatBatchConfig::default().validate().is_ok());
        assert!(HeartbeatBatchConfig { window_ms: 0, ..Default::default() }.validate().is_err());
        assert!(HeartbeatBatchConfig { batch_len_max: 0, ..Default::default() }.validate().is_err());
        assert!(HeartbeatBatchConfig { batch_len_max: BATCH_LEN_LIMIT + 1, ..Default::default() }.validate().is_err());
    }
}
