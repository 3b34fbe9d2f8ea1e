//! One replica of one partition: its Raft group, its log, its flusher, its observers.
//!
//! [`Replica::append`] is the acks=all produce path: the batch is checked (CRC, size, not a
//! control batch), proposed through openraft, and answered with its base offset only once the
//! entry is committed — fsynced by a quorum — and applied. [`Replica::read`] serves committed data
//! only: never a byte at or above the high watermark.
//!
//! Idempotent batches ([`Replica::propose`] of a batch with a producer id) are checked against the partition's
//! producer state before they are proposed: the leader keeps a [`Sequencer`], the replicated
//! producer state (derived from the log by the state machine on every replica) advanced by each
//! batch it proposes in its term. It is built only once the leader has applied an entry of its
//! own term — so every entry of earlier terms is applied and in the state — and is valid for that
//! term only. A proposal of the term that fails (typically: leadership lost, and whether that
//! batch commits is unknown) makes the sequencer stale: idempotent batches are refused as
//! retriable until every proposal of the term has its Raft answer, and then the sequencer is
//! rebuilt from the applied state. A retry of a stored batch is answered with the stored batch's
//! offsets once it is committed; it is never stored twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use keel_core::batch;
use keel_core::log::LogConfig;
use keel_core::log::LogEntry;
use keel_core::metadata::node_of;
use keel_core::producer::Decision;
use keel_core::producer::ProducerBatch;
use keel_core::producer::ProducerStates;
use keel_core::producer::SequenceError;
use keel_core::storage::Storage;
use keel_core::storage::space;
use openraft::BasicNode;
use openraft::ServerState;
use openraft::errors::ClientWriteError;
use openraft::errors::InitializeError;
use openraft::errors::RaftError;
use openraft::impls::ProgressResponder;
use openraft_rt::WatchReceiver;
use thiserror::Error;

use crate::raft::Batch;
use crate::raft::NodeId;
use crate::raft::Raft;
use crate::raft::Response;
use crate::raft::log_store::LogShared;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetFactory;
use crate::raft::state_machine::StateMachine;
use crate::raft::term_of;
use crate::transport::Transport;

/// Things a replica reports as they happen (the simulator records them in its history; a real
/// node logs them).
pub trait Observer: Send + Sync + 'static {
    /// `node` opened a replica of `group`; the answer names this replica instance in the
    /// `applied` reports that follow (a replica removed and later re-created starts over).
    fn opened(&self, _group: u64, _node: NodeId) -> u64 {
        0
    }
    /// `node` became the leader of `group` in `term`.
    fn leader(&self, group: u64, node: NodeId, term: u64);
    /// Replica `instance` of `group` on `node` applied (so knows committed) the log up to
    /// `index`, whose term is `term`.
    fn applied(&self, group: u64, node: NodeId, instance: u64, index: u64, term: u64);
}

/// An observer that writes log lines.
pub struct LogObserver;

impl Observer for LogObserver {
    fn leader(&self, group: u64, node: NodeId, term: u64) {
        tracing::info!(group, node, term, "became leader");
    }
    fn applied(&self, _group: u64, _node: NodeId, _instance: u64, _index: u64, _term: u64) {}
}

#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error("opening the log of partition {group} failed: {source}")]
    Open { group: u64, source: std::io::Error },
    #[error("starting raft for partition {group} failed: {reason}")]
    Raft { group: u64, reason: String },
}

/// Why an append was not acknowledged.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AppendError {
    /// Not the leader; nothing was proposed. `leader` is the last known leader, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The batch is malformed (bad CRC, bad header); nothing was proposed.
    #[error("corrupt batch: {0}")]
    Corrupt(String),
    /// The batch is over `message.max.bytes`; nothing was proposed.
    #[error("batch of {0} bytes is too large")]
    TooLarge(usize),
    /// The outcome is unknown: the entry may or may not commit later.
    #[error("append outcome unknown: {0}")]
    Unknown(String),
    /// An idempotent batch that does not fit its producer's state; nothing was proposed.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// The leader has not yet applied the log of earlier terms, so it cannot check an
    /// idempotent batch yet; nothing was proposed. Retriable.
    #[error("the leader is still applying earlier terms' entries; retry")]
    NotReady,
    /// This replica cannot write: its disk is full (less than the batch plus the reserve free)
    /// or its log stopped on a storage error; nothing was proposed. Kafka's KAFKA_STORAGE_ERROR.
    #[error("storage: {0}")]
    Storage(String),
}

/// How durable a batch must be before its append is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Committed: a quorum holds it fsynced (Kafka's acks=all).
    Quorum,
    /// The leader holds it fsynced (Kafka's acks=1).
    Leader,
}

/// The answer to a submitted append, to be awaited.
pub type PendingAppend = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Appended, AppendError>> + Send>>;

/// A successful acks=all append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub offset_count: u64,
    /// The leader epoch (Raft term) under which the batch was committed.
    pub leader_epoch: u64,
}

/// Committed batches read from a replica.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub batches: Vec<LogEntry>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// Tunables of a replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub log: LogConfig,
    pub raft: Arc<openraft::Config>,
    /// Applied entries between two state machine checkpoints (a restart re-applies at most this
    /// many entries plus the unsynced tail).
    pub sm_checkpoint_every_entries: u64,
    /// Free bytes a leader keeps on its disk beyond a batch: a produce that would leave less is
    /// refused with KAFKA_STORAGE_ERROR before it is proposed, and a replica stopped by a full
    /// disk reopens once this much is free (`keel_core::storage::space`).
    pub disk_reserve_bytes: u64,
}

impl ReplicaConfig {
    pub fn new(log: LogConfig, raft: Arc<openraft::Config>) -> ReplicaConfig {
        let disk_reserve_bytes = disk_reserve_bytes_for(&log);
        ReplicaConfig {
            log,
            raft,
            sm_checkpoint_every_entries: crate::raft::state_machine::CHECKPOINT_EVERY_ENTRIES,
            disk_reserve_bytes,
        }
    }
}

/// The default reserve: room for one more largest batch on every replica (followers write what
/// the leader admitted), plus a mebibyte for index files, `raft-state`, checkpoints and the
/// metadata group's log.
pub fn disk_reserve_bytes_for(log: &LogConfig) -> u64 {
    u64::try_from(log.batch_bytes_max).unwrap_or(u64::MAX).saturating_add(1 << 20)
}

pub struct Replica {
    pub group: u64,
    pub node_id: NodeId,
    /// This replica's id in its Raft group: the node id plus the incarnation (see
    /// `keel_core::metadata::raft_id`).
    pub raft_id: u64,
    raft: Raft,
    log: Arc<LogShared>,
    sm: StateMachine,
    batch_bytes_max: usize,
    /// See [`ReplicaConfig::disk_reserve_bytes`].
    disk_reserve_bytes: u64,
    /// The leader's producer state including the batches it proposed (see the module doc).
    sequencer: tokio::sync::Mutex<Option<Sequencer>>,
    /// The term in which an idempotent proposal failed: the sequencer of that term is stale
    /// (whether the failed batch is in the log is unknown) until it is rebuilt.
    stale_term: Arc<AtomicU64>,
    /// Idempotent proposals whose Raft answer has not arrived yet (each is awaited by a task of
    /// its own, so one whose client gave up is still counted until Raft answers it).
    in_flight: Arc<AtomicUsize>,
}

/// The producer state a leader checks idempotent batches against: the applied state when it
/// was built, plus every idempotent batch proposed since, all in one term.
struct Sequencer {
    term: u64,
    states: ProducerStates,
    /// Stands in for the offset of the next batch proposed (the log assigns the real one).
    next_offset: u64,
}

/// How often a retried batch whose original is still on its way rechecks leadership.
const DUPLICATE_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl Replica {
    /// Opens the log under `dir`, starts the Raft group (as member `raft_id`), its flusher and
    /// its observer.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        node_id: NodeId,
        raft_id: u64,
        group: u64,
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        config: &ReplicaConfig,
        transport: Transport,
        observer: Arc<dyn Observer>,
    ) -> Result<Arc<Replica>, ReplicaError> {
        Self::open_inner(node_id, raft_id, group, storage, dir, config, transport, observer, None).await
    }

    /// Reopens a replica that stopped on a full disk (see `crate::recovery`): opens its log from
    /// disk as after a restart, checks that it still holds every entry that was durable before
    /// it stopped (`durable_before`, which it may have acknowledged to its leader), and cuts
    /// what lies above: those entries were never reported durable, and a failed write may have
    /// left them partly on disk, so the group replicates them again.
    #[allow(clippy::too_many_arguments)]
    pub async fn reopen(
        node_id: NodeId,
        raft_id: u64,
        group: u64,
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        config: &ReplicaConfig,
        transport: Transport,
        observer: Arc<dyn Observer>,
        durable_before: Option<u64>,
    ) -> Result<Arc<Replica>, ReplicaError> {
        let recovered = Some(durable_before);
        Self::open_inner(node_id, raft_id, group, storage, dir, config, transport, observer, recovered).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn open_inner(
        node_id: NodeId,
        raft_id: u64,
        group: u64,
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        config: &ReplicaConfig,
        transport: Transport,
        observer: Arc<dyn Observer>,
        recovered: Option<Option<u64>>,
    ) -> Result<Arc<Replica>, ReplicaError> {
        let (store, report) =
            LogStore::open(storage, dir, config.log.clone()).map_err(|source| ReplicaError::Open { group, source })?;
        if report.truncated_bytes > 0 || !report.indexes_rebuilt.is_empty() {
            tracing::warn!(group, ?report, "log recovered");
        }
        if let Some(durable_before) = recovered {
            let mut log = store.shared().log();
            let open_err = |reason: String| ReplicaError::Open { group, source: std::io::Error::other(reason) };
            space::check_nothing_acknowledged_lost(durable_before, log.last_entry().map(|m| m.index))
                .map_err(open_err)?;
            let keep_next = durable_before.map_or(log.first_index(), |d| d + 1);
            log.truncate_from(keep_next).map_err(|e| open_err(e.to_string()))?;
        }
        // Replication reads hold what one frame of this transport carries.
        let store = store.with_frame_bytes_max(transport.frame_bytes_max());
        let log = store.shared().clone();
        let sm = StateMachine::new(Some(log.clone()), config.sm_checkpoint_every_entries);
        let network = NetFactory { transport, group };
        let raft = Raft::new(raft_id, config.raft.clone(), network, store, sm.clone())
            .await
            .map_err(|e| ReplicaError::Raft { group, reason: e.to_string() })?;
        crate::rt::spawn(LogStore::run_flusher(log.clone()));
        let instance = observer.opened(group, node_id);
        crate::rt::spawn(observe(raft.clone(), group, node_id, raft_id, instance, observer));
        Ok(Arc::new(Replica {
            group,
            node_id,
            raft_id,
            raft,
            log,
            sm,
            batch_bytes_max: config.log.batch_bytes_max,
            disk_reserve_bytes: config.disk_reserve_bytes,
            sequencer: tokio::sync::Mutex::new(None),
            stale_term: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }))
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Records the duration of each group-commit fsync of this replica's log in `histogram`.
    pub fn record_fsyncs_in(&self, histogram: prometheus::Histogram) {
        self.log.record_fsyncs_in(histogram);
    }

    /// Whether this replica leads its group right now (as far as it knows).
    pub fn is_leader(&self) -> bool {
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.raft_id)
    }

    /// The Raft term this replica is in: the partition's leader epoch as it knows it.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The node of the leader this replica knows of.
    pub fn leader_node(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader.map(node_of)
    }

    /// Bootstraps a brand-new group with `members` as voters. A group that already has state
    /// (a log or a vote) is left alone, so calling this on every start is safe.
    pub async fn initialize(&self, members: BTreeMap<NodeId, BasicNode>) -> Result<(), ReplicaError> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ReplicaError::Raft { group: self.group, reason: e.to_string() }),
        }
    }

    /// Appends one producer batch with acks=all semantics.
    pub async fn append(self: &Arc<Self>, bytes: Bytes) -> Result<Appended, AppendError> {
        self.propose(bytes, Acks::Quorum).await?.await
    }

    /// Proposes one producer batch, idempotent ([`Replica::submit_idempotent`]) when it carries
    /// a producer id, and returns the wait for its answer.
    pub async fn propose(self: &Arc<Self>, bytes: Bytes, acks: Acks) -> Result<PendingAppend, AppendError> {
        let header = self.check(&bytes)?;
        self.check_storage(bytes.len())?;
        match ProducerBatch::of(&header) {
            Some(producer) => self.submit_idempotent(bytes, header.crc, acks, producer).await,
            None => self.submit_checked(bytes, header.crc, acks).await,
        }
    }

    /// Proposes one producer batch and returns the wait for its answer. Proposals enter the Raft
    /// log in the order `submit` returns, so a caller that submits in order and then waits for
    /// the answers concurrently (a pipelining Kafka connection) keeps its batches in order.
    ///
    /// [`Acks::Quorum`] answers once the batch is committed (a quorum holds it fsynced) and
    /// applied. [`Acks::Leader`] answers once this replica, the leader, holds it fsynced — before
    /// a quorum does, so a leader failure right after may lose it (Kafka's acks=1); the batch
    /// still commits through Raft as usual, and if the local durability is not observed first,
    /// the commit answers.
    pub async fn submit(&self, bytes: Bytes, acks: Acks) -> Result<PendingAppend, AppendError> {
        let header = self.check(&bytes)?;
        self.check_storage(bytes.len())?;
        self.submit_checked(bytes, header.crc, acks).await
    }

    /// [`Replica::submit`] of a batch [`Replica::check`] accepted (`crc` is its CRC).
    async fn submit_checked(&self, bytes: Bytes, crc: u32, acks: Acks) -> Result<PendingAppend, AppendError> {
        if cfg!(feature = "canary-ack-without-quorum") {
            let answer = self.canary_append_without_quorum(bytes, crc).await;
            return Ok(Box::pin(async move { answer }));
        }
        let local = (acks == Acks::Leader).then(|| self.log.watch_local(&bytes));
        let (responder, answer) = ProgressResponder::complete_only();
        self.raft
            .client_write_ff(Batch(bytes), Some(responder))
            .await
            .map_err(|fatal| AppendError::Unknown(format!("raft stopped: {fatal}")))?;
        let committed = async move {
            match answer.await {
                Ok(result) => Self::committed(result.map_err(RaftError::APIError)),
                Err(_) => Err(AppendError::Unknown("raft dropped the write".into())),
            }
        };
        Ok(match local {
            None => Box::pin(committed),
            Some(local) => Box::pin(async move {
                tokio::pin!(committed);
                tokio::select! {
                    biased;
                    result = &mut committed => result,
                    Ok(meta) = local => Ok(Appended {
                        base_offset: meta.base_offset,
                        offset_count: meta.offset_count,
                        leader_epoch: meta.term,
                    }),
                }
            }),
        })
    }

    /// Proposes one idempotent producer batch that [`Replica::check`] accepted (`producer` is its
    /// header's producer fields, `crc` its CRC) after checking it against the producer state,
    /// and returns the wait for its answer. A retry of a batch already proposed or stored is not
    /// proposed again: its wait answers with the stored batch's offsets once that batch is
    /// committed (or fails if leadership is lost first). Order as [`Replica::submit`].
    async fn submit_idempotent(
        self: &Arc<Self>,
        bytes: Bytes,
        crc: u32,
        acks: Acks,
        producer: ProducerBatch,
    ) -> Result<PendingAppend, AppendError> {
        let mut sequencer = self.sequencer.lock().await;
        let term = {
            let rx = self.raft.metrics();
            let m = rx.borrow_watched();
            if m.state != ServerState::Leader || m.current_leader != Some(self.raft_id) {
                return Err(AppendError::NotLeader { leader: m.current_leader.map(node_of) });
            }
            m.current_term
        };
        let stale = self.stale_term.load(Ordering::Acquire) == term;
        if stale || sequencer.as_ref().is_none_or(|s| s.term != term) {
            // Every entry of earlier terms is applied once an entry of this term is: only then
            // does the applied producer state hold every batch this leader did not propose.
            if self.sm.last_applied().map(|l| term_of(&l)) != Some(term) {
                tracing::debug!(group = self.group, term, "idempotent batch refused: earlier terms not applied yet");
                return Err(AppendError::NotReady);
            }
            // A proposal of this term failed: rebuild from the applied state once every earlier
            // proposal of the term has its answer (applied, or failed and never applied in this
            // term), so the applied state holds every batch the old sequencer let through.
            if stale && self.in_flight.load(Ordering::Acquire) > 0 {
                tracing::debug!(group = self.group, term, "idempotent batch refused: sequencer draining");
                return Err(AppendError::NotReady);
            }
            // CANARY (`canary-dedupe-leader-memory-only`): a new leader starts from an empty
            // producer state of its own instead of the one derived from the log.
            let states = if cfg!(feature = "canary-dedupe-leader-memory-only") {
                ProducerStates::default()
            } else {
                self.sm.producers()
            };
            *sequencer = Some(Sequencer { term, states, next_offset: self.sm.high_watermark() });
            if stale {
                tracing::info!(group = self.group, term, "idempotent sequencer rebuilt after a failed proposal");
                self.stale_term.store(0, Ordering::Release);
            }
        }
        let Some(seq) = sequencer.as_mut() else { return Err(AppendError::NotReady) };
        // CANARY (`canary-idempotence-dedupe-disabled`): every idempotent batch is stored, retries
        // included.
        let decision = if cfg!(feature = "canary-idempotence-dedupe-disabled") {
            Decision::Append
        } else {
            seq.states.check(&producer)?
        };
        match decision {
            Decision::Duplicate(_) => {
                drop(sequencer);
                let me = self.clone();
                Ok(Box::pin(async move { me.await_stored(producer, term).await }))
            }
            Decision::Append => {
                // The offsets are not known before the log assigns them; the sequencer needs the
                // sequence range (a retry's answer comes from the applied state) and an order of
                // its batches (which producer to forget first beyond the bound).
                let count = producer.last_offset_delta as u64 + 1;
                seq.states.record(&producer, seq.next_offset, count);
                seq.next_offset += count;
                let stale = self.stale_term.clone();
                let group = self.group;
                let mark_stale = move |e: &AppendError| {
                    tracing::info!(group, term, error = %e, "idempotent proposal failed: sequencer stale until drained");
                    stale.store(term, Ordering::Release);
                };
                let pending = match self.submit_checked(bytes, crc, acks).await {
                    Ok(pending) => pending,
                    Err(e) => {
                        mark_stale(&e);
                        return Err(e);
                    }
                };
                // The answer is awaited by a task of its own, so a failure is seen (and the
                // proposal counted in flight) even when the client stops waiting.
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                drop(sequencer);
                let in_flight = self.in_flight.clone();
                let (tx, rx) = tokio::sync::oneshot::channel();
                crate::rt::spawn(async move {
                    let answer = pending.await;
                    if let Err(e) = &answer {
                        mark_stale(e);
                    }
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    let _ = tx.send(answer);
                });
                Ok(Box::pin(async move {
                    rx.await.unwrap_or_else(|_| Err(AppendError::Unknown("the proposal's task ended".into())))
                }))
            }
        }
    }

    /// Waits until the batch that `producer` retries is applied (so committed), and answers
    /// with its offsets; fails once this replica stops leading in `term`.
    async fn await_stored(&self, producer: ProducerBatch, term: u64) -> Result<Appended, AppendError> {
        loop {
            let advanced = self.sm.advanced().clone();
            let notified = advanced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(stored) = self.sm.stored_batch(&producer) {
                return Ok(Appended {
                    base_offset: stored.base_offset,
                    offset_count: stored.offset_count,
                    leader_epoch: term,
                });
            }
            if !self.is_leader() || self.term() != term || self.stale_term.load(Ordering::Acquire) == term {
                return Err(AppendError::NotLeader { leader: self.leader_node() });
            }
            let _ = tokio::time::timeout(DUPLICATE_RECHECK, notified).await;
        }
    }

    /// Refuses a batch before it is proposed when this replica cannot write it: its log
    /// stopped, or the free-space probe says the disk would keep less than the reserve
    /// (`keel_core::storage::space::admits_append`). A probe that fails admits: the write decides.
    fn check_storage(&self, batch_bytes: usize) -> Result<(), AppendError> {
        if let Some(reason) = self.failed() {
            return Err(AppendError::Storage(format!("partition stopped: {reason}")));
        }
        let available = self.log.storage.available_bytes(&self.log.dir).ok().flatten();
        let batch_bytes = u64::try_from(batch_bytes).unwrap_or(u64::MAX);
        if !space::admits_append(available, batch_bytes, self.disk_reserve_bytes) {
            return Err(AppendError::Storage(format!(
                "disk full: {} bytes free, a batch of {batch_bytes} bytes plus the reserve of {} bytes needed",
                available.unwrap_or(0),
                self.disk_reserve_bytes
            )));
        }
        Ok(())
    }

    /// Checks a producer batch before it is proposed.
    fn check(&self, bytes: &Bytes) -> Result<batch::BatchHeader, AppendError> {
        let header = batch::validate(bytes, self.batch_bytes_max).map_err(|e| match e {
            batch::BatchError::TooLarge(n) => AppendError::TooLarge(n),
            other => AppendError::Corrupt(other.to_string()),
        })?;
        if header.is_control() {
            return Err(AppendError::Corrupt("producers may not write control batches".into()));
        }
        if header.producer_id >= 0 && header.base_sequence < 0 {
            return Err(AppendError::Corrupt(format!(
                "batch of producer {} has no base sequence ({})",
                header.producer_id, header.base_sequence
            )));
        }
        Ok(header)
    }

    /// Maps openraft's answer to a client write.
    fn committed(
        result: Result<
            openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>,
            RaftError<crate::raft::TypeConfig, ClientWriteError<crate::raft::TypeConfig>>,
        >,
    ) -> Result<Appended, AppendError> {
        match result {
            Ok(resp) => match resp.data {
                Response::Partition(a) => Ok(Appended {
                    base_offset: a.base_offset,
                    offset_count: a.offset_count,
                    leader_epoch: term_of(&resp.log_id),
                }),
                other => Err(AppendError::Unknown(format!("unexpected answer {other:?}"))),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(AppendError::NotLeader { leader: f.leader_id.map(node_of) })
            }
            Err(e) => Err(AppendError::Unknown(e.to_string())),
        }
    }

    /// CANARY (`canary-ack-without-quorum`): proposes the batch and acknowledges as soon as the
    /// leader's own log holds it, without waiting for a quorum to commit it.
    async fn canary_append_without_quorum(&self, bytes: Bytes, crc: u32) -> Result<Appended, AppendError> {
        let from = self.log.log().next_index();
        let leader = self.raft.metrics().borrow_watched().current_leader;
        if leader != Some(self.raft_id) {
            return Err(AppendError::NotLeader { leader: leader.map(node_of) });
        }
        self.raft.client_write_ff(Batch(bytes), None).await.map_err(|e| AppendError::Unknown(e.to_string()))?;
        for _ in 0..2000 {
            {
                let log = self.log.log();
                let end = log.next_index();
                if let Ok(entries) = log.read(from..end, usize::MAX) {
                    for e in entries {
                        if !e.meta.is_control && batch::BatchHeader::parse(&e.bytes).is_ok_and(|h| h.crc == crc) {
                            return Ok(Appended {
                                base_offset: e.meta.base_offset,
                                offset_count: e.meta.offset_count,
                                leader_epoch: e.meta.term,
                            });
                        }
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Err(AppendError::Unknown("canary: entry never appeared locally".into()))
    }

    /// Committed batches from `offset` (the batch containing it first), at most `bytes_max`
    /// bytes (but at least one batch when one qualifies), never at or above the high watermark.
    pub fn read(&self, offset: u64, bytes_max: usize) -> Result<ReadResult, String> {
        let high_watermark = self.sm.high_watermark();
        let log = self.log.log();
        // CANARY (`canary-fetch-above-high-watermark`): serves up to the log end, uncommitted
        // entries included.
        let limit =
            if cfg!(feature = "canary-fetch-above-high-watermark") { log.next_offset() } else { high_watermark };
        let batches = if offset >= limit {
            Vec::new()
        } else {
            log.read_from_offset(offset, limit, bytes_max).map_err(|e| e.to_string())?
        };
        Ok(ReadResult { batches, high_watermark, log_start_offset: log.start_offset() })
    }

    /// The first offset the log still holds.
    pub fn log_start_offset(&self) -> u64 {
        self.log.log().start_offset()
    }

    /// The offset the next appended record gets (committed or not).
    pub fn log_end_offset(&self) -> u64 {
        self.log.log().next_offset()
    }

    /// OffsetForLeaderEpoch: (the largest epoch <= `epoch` in the log, the offset where it
    /// ends), the latest epoch ending at the log end; `None` for an empty log or an epoch above
    /// the latest (see `keel_core::log::epochs`).
    pub fn end_offset_for_epoch(&self, epoch: u64) -> Option<(u64, u64)> {
        let log = self.log.log();
        log.end_offset_for_epoch(epoch, log.next_offset())
    }

    /// Whether an entry of `term` (the leader's first of its term) has been applied here: only
    /// then does the high watermark cover everything earlier leaders committed (Raft: a new
    /// leader learns the commit point by committing an entry of its own term).
    pub fn term_entry_applied(&self, term: u64) -> bool {
        let first = self.log.log().epochs().starts().last().filter(|s| s.epoch == term).map(|s| s.index);
        matches!((first, self.applied_index()), (Some(first), Some(applied)) if applied >= first)
    }

    /// Bytes of this replica's segment files.
    pub fn size_bytes(&self) -> u64 {
        self.log.log().size_bytes()
    }

    /// ListOffsets MAX_TIMESTAMP: the first record carrying the log's largest timestamp, as
    /// (offset, timestamp), among committed records.
    pub fn max_timestamp_offset(&self) -> Result<Option<(u64, i64)>, String> {
        let max = self.log.log().max_timestamp().map_err(|e| e.to_string())?;
        match max {
            Some(ts) => self.offset_for_timestamp(ts),
            None => Ok(None),
        }
    }

    /// ListOffsets by time: the first committed record whose timestamp is at least `ts`, as
    /// (offset, timestamp). Uncompressed batches are searched record by record; a compressed
    /// batch answers with its first offset and its max timestamp (no record is skipped).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>, String> {
        let high_watermark = self.sm.high_watermark();
        let log = self.log.log();
        let Some(offset) = log.offset_for_timestamp(ts).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if offset >= high_watermark {
            return Ok(None);
        }
        let entries = log.read_from_offset(offset, high_watermark, 1).map_err(|e| e.to_string())?;
        let Some(entry) = entries.into_iter().next() else { return Ok(None) };
        let header = batch::BatchHeader::parse(&entry.bytes).map_err(|e| e.to_string())?;
        if header.compression() == 0 && !header.log_append_time() {
            let records = batch::records(&entry.bytes).map_err(|e| e.to_string())?;
            for r in records {
                let at = header.base_timestamp.saturating_add(r.timestamp_delta);
                let record_offset = entry.meta.base_offset + u64::try_from(r.offset_delta).unwrap_or(0);
                if at >= ts && record_offset >= offset {
                    return Ok(Some((record_offset, at)));
                }
            }
        }
        Ok(Some((entry.meta.base_offset.max(offset), entry.meta.max_timestamp)))
    }

    pub fn high_watermark(&self) -> u64 {
        self.sm.high_watermark()
    }

    /// Last log index this replica holds durably (fsynced), if any.
    pub fn durable_index(&self) -> Option<u64> {
        self.log.log().durable_index()
    }

    /// Last applied (hence committed) log index, if any.
    pub fn applied_index(&self) -> Option<u64> {
        self.sm.last_applied().map(|l| l.index)
    }

    /// Why this replica stopped, if it failed closed: its log refused a write or an fsync, or
    /// its Raft group stopped on a fatal (storage) error.
    pub fn failed(&self) -> Option<String> {
        if let Some(reason) = self.log.log().is_failed() {
            return Some(reason.to_string());
        }
        match &self.raft.metrics().borrow_watched().running_state {
            Ok(()) => None,
            Err(fatal) => Some(format!("raft stopped: {fatal}")),
        }
    }

    /// Why this replica stopped, if it did: a full disk (which [`crate::recovery`] recovers
    /// from) or anything else.
    pub fn stop_cause(&self) -> Option<space::StopCause> {
        self.failed()?;
        Some(if self.log.stopped_for_space() { space::StopCause::NoSpace } else { space::StopCause::Other })
    }

    /// Closes every file of this replica's log (after [`Replica::shutdown`]), so a removed
    /// replica's space is freed at once, whoever still holds this value.
    pub fn close(&self) {
        self.log.close();
    }

    /// The replica's directory (its log, `raft-state`, checkpoint).
    pub fn dir(&self) -> &std::path::Path {
        &self.log.dir
    }

    /// Wakes when the high watermark moves.
    pub fn advanced(&self) -> &Arc<tokio::sync::Notify> {
        self.sm.advanced()
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Reports leadership and applied progress as openraft's metrics change.
async fn observe(raft: Raft, group: u64, node_id: NodeId, raft_id: u64, instance: u64, observer: Arc<dyn Observer>) {
    let mut rx = raft.metrics();
    let mut last_leader_term = None;
    let mut last_applied = None;
    loop {
        let (leader_term, applied) = {
            let m = rx.borrow_watched();
            let leader_term =
                (m.state == ServerState::Leader && m.current_leader == Some(raft_id)).then_some(m.current_term);
            (leader_term, m.last_applied)
        };
        if let Some(term) = leader_term
            && last_leader_term != Some(term)
        {
            observer.leader(group, node_id, term);
        }
        last_leader_term = leader_term;
        if applied != last_applied {
            if let Some(a) = applied {
                observer.applied(group, node_id, instance, a.index, term_of(&a));
            }
            last_applied = applied;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
