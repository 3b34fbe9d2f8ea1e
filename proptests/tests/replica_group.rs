//! Property test of one partition's Raft group: three real replicas (`keel_node::partition::Replica`,
//! openraft on Keel's log store over the simulated disk) in one process, talking over the node
//! transport on loopback TCP, driven by a random schedule of produces (plain and idempotent,
//! with retries), reads, leader isolations and leader changes.
//!
//! What it protects, each where the bug would live — the replica's append, read and
//! idempotence paths:
//! - **An acknowledgement means a quorum holds the batch.** A batch acknowledged with acks=all is
//!   below the leader's high watermark when the answer arrives, and a leader cut off from both
//!   followers acknowledges nothing (`canary-ack-without-quorum` acknowledges at the leader's
//!   own append).
//! - **Reads stop at the high watermark.** Every read returns only batches below the high
//!   watermark it reports, also on a leader holding uncommitted entries
//!   (`canary-fetch-above-high-watermark` serves to the log end).
//! - **An idempotent producer's retry is stored once**, answered with the first copy's offsets,
//!   also when the retry reaches a new leader (`canary-idempotence-dedupe-disabled` stores every
//!   retry; `canary-dedupe-leader-memory-only` forgets the producers at a leader change).
//! - **No acknowledged batch is lost, offsets are dense**: at the end, after healing, every
//!   acknowledged batch is in the committed log at the offsets its answer gave.
//!
//! Real sockets and timers make a case's interleaving vary from run to run (the deterministic
//! version of this is the simulation, `sim/`); the properties hold for every interleaving, and
//! each case runs the fault that makes the bugs above visible, so a few cases suffice. Timeouts
//! are generous: slowness never fails a case, only a broken property does.
//!
//! Runs on tokio; the madsim build leaves it out.
#![cfg(not(madsim))]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use keel_core::batch::{self, BatchBuilder, BatchHeader};
use keel_core::log::LogConfig;
use keel_core::storage::sim::SimStorage;
use keel_node::partition::{Acks, AppendError, Appended, LogObserver, PendingAppend, Replica, ReplicaConfig};
use keel_node::raft::network;
use keel_node::raft::{NodeId, Raft, RaftTiming};
use keel_node::transport::{Handler, Transport, TransportConfig};
use proptest::prelude::*;
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep, timeout};

const GROUP: u64 = 7;
const NODES: [NodeId; 3] = [1, 2, 3];
/// How long anything may take before the case gives up on it (never a property failure).
const PATIENCE: Duration = Duration::from_secs(20);
/// How long an isolated leader is watched for acknowledgements it must not give.
const ISOLATION: Duration = Duration::from_millis(400);

#[derive(Debug, Clone)]
enum Op {
    /// A plain acks=all produce of `records` records.
    Produce { records: u8 },
    /// The next batch of idempotent producer `producer`, sent `1 + retries` times (the retries
    /// after the first answer, as a producer that lost the answer would).
    Idempotent { producer: u8, retries: u8 },
    /// The last batch of idempotent producer `producer` sent again (a retry that may reach a
    /// new leader).
    RetryLast { producer: u8 },
    /// Cuts the leader off from both followers, produces `produces` batches on it, reads from
    /// it, and heals.
    IsolateLeader { produces: u8 },
    /// Cuts the leader off until another replica leads, then heals.
    ChangeLeader,
    /// Reads the whole log from a replica (the leader when `from_leader`).
    Read { from_leader: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..4).prop_map(|records| Op::Produce { records }),
        3 => (0u8..3, 0u8..3).prop_map(|(producer, retries)| Op::Idempotent { producer, retries }),
        2 => (0u8..3).prop_map(|producer| Op::RetryLast { producer }),
        2 => (1u8..4).prop_map(|produces| Op::IsolateLeader { produces }),
        1 => Just(Op::ChangeLeader),
        1 => any::<bool>().prop_map(|from_leader| Op::Read { from_leader }),
    ]
}

/// Which nodes are cut off from every other node.
#[derive(Default)]
struct Net {
    isolated: Mutex<BTreeSet<NodeId>>,
}

impl Net {
    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        let isolated = self.isolated.lock().unwrap();
        isolated.contains(&a) || isolated.contains(&b)
    }
}

/// Serves the group's Raft RPCs on one node, refusing what crosses a cut.
struct Serve {
    me: NodeId,
    raft: Arc<OnceLock<Raft>>,
    net: Arc<Net>,
}

impl Handler for Serve {
    fn handle(&self, from: NodeId, group: u64, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let (me, raft, cut) = (self.me, self.raft.get().cloned(), self.net.cut(from, self.me));
        Box::pin(async move {
            if cut {
                return Err("partitioned".into());
            }
            let raft = raft.filter(|_| group == GROUP).ok_or(format!("no group {group}"))?;
            network::serve(&raft, me, kind, &payload).await
        })
    }
}

struct Cluster {
    replicas: BTreeMap<NodeId, Arc<Replica>>,
    transports: Vec<Transport>,
    net: Arc<Net>,
}

impl Cluster {
    async fn start(seed: u64) -> Cluster {
        let net = Arc::new(Net::default());
        let timing = RaftTiming { heartbeat_ms: 50, election_timeout_min_ms: 300, election_timeout_max_ms: 600 };
        let config = ReplicaConfig::new(
            LogConfig { segment_bytes_max: 4096, ..LogConfig::default() },
            keel_node::raft::config("replica-test", timing).expect("raft config"),
        );
        let mut transports = Vec::new();
        let mut addrs = Vec::new();
        let mut rafts = Vec::new();
        for id in NODES {
            let raft = Arc::new(OnceLock::new());
            let handler = Arc::new(Serve { me: id, raft: raft.clone(), net: net.clone() });
            let transport =
                Transport::new(id, TransportConfig::new("replica-test"), handler).expect("transport config");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.push(listener.local_addr().expect("addr").to_string());
            let t = transport.clone();
            tokio::spawn(async move { t.serve(listener).await });
            transports.push(transport);
            rafts.push(raft);
        }
        for t in &transports {
            for (id, addr) in NODES.iter().zip(&addrs) {
                if *id != t.self_id() {
                    t.set_peer_addr(*id, addr.clone());
                }
            }
        }
        let mut replicas = BTreeMap::new();
        for ((id, t), raft) in NODES.iter().zip(&transports).zip(&rafts) {
            let storage = SimStorage::new(seed ^ id);
            let replica = Replica::open(
                *id,
                *id,
                GROUP,
                storage,
                format!("/n{id}/p{GROUP}").into(),
                &config,
                t.clone(),
                Arc::new(LogObserver),
            )
            .await
            .expect("open replica");
            let _ = raft.set(replica.raft().clone());
            replicas.insert(*id, replica);
        }
        let members = NODES.iter().map(|&n| (n, openraft::BasicNode::default())).collect();
        replicas[&1].initialize(members).await.expect("initialize");
        Cluster { replicas, transports, net }
    }

    /// The replica that leads (and is not cut off), once there is one.
    async fn leader(&self) -> Result<Arc<Replica>, TestCaseError> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let isolated = self.net.isolated.lock().unwrap().clone();
            if let Some(r) = self.replicas.values().find(|r| r.is_leader() && !isolated.contains(&r.node_id)) {
                return Ok(r.clone());
            }
            if Instant::now() > deadline {
                return Err(TestCaseError::fail(format!("no leader within {PATIENCE:?}")));
            }
            sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        for r in self.replicas.values() {
            r.shutdown().await;
        }
        for t in &self.transports {
            t.shutdown();
        }
    }
}

/// A plain batch whose one record's key names the produce (`tag`).
fn plain_batch(tag: u64, records: u8) -> Bytes {
    let mut b = BatchBuilder::new(tag as i64);
    for r in 0..records {
        b.push(tag as i64, Some(&tag.to_be_bytes()), Some(&[r]));
    }
    Bytes::from(b.build())
}

fn idempotent_batch(producer: i64, sequence: i32) -> Bytes {
    let mut b = BatchBuilder::new(0).producer(producer, 0, sequence);
    b.push(0, Some(&producer.to_be_bytes()), Some(&sequence.to_be_bytes()));
    Bytes::from(b.build())
}

/// Proposes on the current leader, retrying what a client retries (not the leader, not ready)
/// until `PATIENCE`. `None` when the outcome stays unknown.
async fn produce(cluster: &Cluster, bytes: &Bytes) -> Result<Option<Appended>, TestCaseError> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let leader = cluster.leader().await?;
        let answer = match timeout(PATIENCE, async { leader.propose(bytes.clone(), Acks::Quorum).await?.await }).await {
            Ok(answer) => answer,
            Err(_) => return Ok(None),
        };
        match answer {
            Ok(appended) => {
                // Committed and applied before the answer: below the leader's high watermark.
                let end = appended.base_offset + appended.offset_count;
                prop_assert!(
                    leader.high_watermark() >= end,
                    "acknowledged offsets {}..{} above the leader's high watermark {}",
                    appended.base_offset,
                    end,
                    leader.high_watermark()
                );
                return Ok(Some(appended));
            }
            Err(AppendError::NotLeader { .. } | AppendError::NotReady | AppendError::Unknown(_)) => {
                sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(TestCaseError::fail(format!("produce refused: {e}"))),
        }
    }
    Ok(None)
}

/// Reads everything `replica` serves and checks it stays below the high watermark it reports.
fn read_all(replica: &Replica) -> Result<Vec<keel_core::log::LogEntry>, TestCaseError> {
    let result = replica.read(0, usize::MAX).map_err(TestCaseError::fail)?;
    for b in &result.batches {
        prop_assert!(
            b.meta.next_offset() <= result.high_watermark,
            "node {} served offsets {}..{} at or above its high watermark {}",
            replica.node_id,
            b.meta.base_offset,
            b.meta.next_offset(),
            result.high_watermark
        );
    }
    Ok(result.batches)
}

#[derive(Default)]
struct Model {
    /// Acknowledged plain produces: tag → (base offset, count).
    plain: BTreeMap<u64, Appended>,
    /// Acknowledged idempotent batches: (producer, sequence) → the first answer.
    idempotent: BTreeMap<(i64, i32), Appended>,
    /// Each producer's next sequence number.
    next_sequence: BTreeMap<i64, i32>,
    next_tag: u64,
    /// Producers that stopped after an unknown outcome.
    stopped: BTreeSet<i64>,
}

impl Model {
    /// Records an idempotent answer; every answer for one batch must give the same offsets.
    fn idempotent_answer(&mut self, key: (i64, i32), a: Appended) -> Result<(), TestCaseError> {
        let first = *self.idempotent.entry(key).or_insert(a);
        prop_assert_eq!(
            (first.base_offset, first.offset_count),
            (a.base_offset, a.offset_count),
            "producer {} sequence {} answered at two offsets (stored twice)",
            key.0,
            key.1
        );
        Ok(())
    }
}

async fn isolate_until(cluster: &Cluster, node: NodeId, until: impl Fn(&Cluster) -> bool) -> Result<(), TestCaseError> {
    cluster.net.isolated.lock().unwrap().insert(node);
    let deadline = Instant::now() + PATIENCE;
    while !until(cluster) {
        if Instant::now() > deadline {
            cluster.net.isolated.lock().unwrap().clear();
            return Err(TestCaseError::fail(format!("the cut around node {node} did not take effect in {PATIENCE:?}")));
        }
        sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn run(seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cluster = Cluster::start(seed).await;
    let result = run_ops(&cluster, ops).await;
    cluster.stop().await;
    result
}

async fn run_ops(cluster: &Cluster, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Produce { records } => {
                m.next_tag += 1;
                if let Some(a) = produce(cluster, &plain_batch(m.next_tag, records)).await? {
                    m.plain.insert(m.next_tag, a);
                }
            }
            Op::Idempotent { producer, retries } => {
                let producer = 1000 + i64::from(producer);
                if m.stopped.contains(&producer) {
                    continue;
                }
                let sequence = *m.next_sequence.get(&producer).unwrap_or(&0);
                let bytes = idempotent_batch(producer, sequence);
                for _ in 0..=retries {
                    if let Some(a) = produce(cluster, &bytes).await? {
                        m.idempotent_answer((producer, sequence), a)?;
                    }
                }
                if m.idempotent.contains_key(&(producer, sequence)) {
                    m.next_sequence.insert(producer, sequence + 1);
                } else {
                    // Unknown outcome: the producer stops (its next batches could be out of
                    // order), as a client whose sequence state is in doubt does.
                    m.stopped.insert(producer);
                }
            }
            Op::RetryLast { producer } => {
                let producer = 1000 + i64::from(producer);
                let Some(sequence) = m.next_sequence.get(&producer).map(|s| s - 1) else { continue };
                if let Some(a) = produce(cluster, &idempotent_batch(producer, sequence)).await? {
                    m.idempotent_answer((producer, sequence), a)?;
                }
            }
            Op::IsolateLeader { produces } => {
                let leader = cluster.leader().await?;
                cluster.net.isolated.lock().unwrap().insert(leader.node_id);
                let mut pending: Vec<PendingAppend> = Vec::new();
                for _ in 0..produces {
                    m.next_tag += 1;
                    match leader.propose(plain_batch(m.next_tag, 1), Acks::Quorum).await {
                        Ok(p) => pending.push(p),
                        Err(AppendError::NotLeader { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("step {step}: propose: {e}"))),
                    }
                }
                // The isolated leader appends what it cannot commit: reads must not show it.
                let appended_by = Instant::now() + ISOLATION;
                while leader.log_end_offset() <= leader.high_watermark() && Instant::now() < appended_by {
                    sleep(Duration::from_millis(5)).await;
                }
                read_all(&leader)?;
                let answers = futures::future::join_all(pending.into_iter().map(|p| timeout(ISOLATION, p))).await;
                for answer in answers {
                    if let Ok(Ok(a)) = answer {
                        prop_assert!(
                            false,
                            "step {}: node {}, cut off from both followers, acknowledged offsets {}..{}",
                            step,
                            leader.node_id,
                            a.base_offset,
                            a.base_offset + a.offset_count
                        );
                    }
                }
                read_all(&leader)?;
                cluster.net.isolated.lock().unwrap().clear();
            }
            Op::ChangeLeader => {
                let old = cluster.leader().await?;
                let id = old.node_id;
                isolate_until(cluster, id, |c| c.replicas.values().any(|r| r.node_id != id && r.is_leader())).await?;
                cluster.net.isolated.lock().unwrap().clear();
            }
            Op::Read { from_leader } => {
                let replica = if from_leader { cluster.leader().await? } else { cluster.replicas[&2].clone() };
                read_all(&replica)?;
            }
        }
    }
    // Heal, let one more acks=all produce commit (so every earlier acknowledged batch is below
    // the high watermark), and compare the committed log with what was acknowledged.
    cluster.net.isolated.lock().unwrap().clear();
    m.next_tag += 1;
    let Some(last) = produce(cluster, &plain_batch(m.next_tag, 1)).await? else { return Ok(()) };
    m.plain.insert(m.next_tag, last);
    let leader = cluster.leader().await?;
    let log = read_all(&leader)?;
    let mut next = log.first().map_or(0, |b| b.meta.base_offset);
    let mut plain_at = BTreeMap::new();
    let mut idempotent_at: BTreeMap<(i64, i32), Vec<u64>> = BTreeMap::new();
    for b in &log {
        prop_assert_eq!(b.meta.base_offset, next, "offsets dense");
        next = b.meta.next_offset();
        if b.meta.is_control {
            continue;
        }
        let header = BatchHeader::parse(&b.bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if header.producer_id >= 0 {
            idempotent_at.entry((header.producer_id, header.base_sequence)).or_default().push(b.meta.base_offset);
        } else {
            let records = batch::records(&b.bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let key = records.first().and_then(|r| r.key.clone()).ok_or(TestCaseError::fail("record without key"))?;
            let tag = u64::from_be_bytes(key[..].try_into().map_err(|_| TestCaseError::fail("bad key"))?);
            plain_at.insert(tag, (b.meta.base_offset, b.meta.offset_count));
        }
    }
    for (tag, a) in &m.plain {
        prop_assert_eq!(
            plain_at.get(tag),
            Some(&(a.base_offset, a.offset_count)),
            "acknowledged produce {} at {}..{} missing from the committed log",
            tag,
            a.base_offset,
            a.base_offset + a.offset_count
        );
    }
    for ((producer, sequence), offsets) in &idempotent_at {
        prop_assert_eq!(
            offsets.len(),
            1,
            "producer {} sequence {} stored at offsets {:?}",
            producer,
            sequence,
            offsets
        );
    }
    for ((producer, sequence), a) in &m.idempotent {
        prop_assert_eq!(
            idempotent_at.get(&(*producer, *sequence)).map(Vec::as_slice),
            Some(&[a.base_offset][..]),
            "acknowledged producer {} sequence {} not at offset {}",
            producer,
            sequence,
            a.base_offset
        );
    }
    Ok(())
}

proptest! {
    // A case takes seconds (real elections): 6 by default, each with the faults that matter;
    // `PROPTEST_CASES=100` for a longer hunt. Shrinking a failure re-runs cases, so it is
    // bounded in time.
    #![proptest_config(ProptestConfig {
        cases: keel_proptests::cases(6),
        max_shrink_time: keel_proptests::max_shrink_time_ms(60_000),
        ..ProptestConfig::default()
    })]

    /// Protects a partition group's acknowledgement, read and idempotence guarantees.
    #[test]
    fn replica_group_keeps_its_guarantees(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 4..12),
        // Every case isolates a leader with produces in flight and retries an idempotent batch
        // across a leader change; the random ops come around them.
        faults_at in (0usize..4, 0usize..4),
    ) {
        let mut ops = ops;
        ops.insert(faults_at.0.min(ops.len()), Op::IsolateLeader { produces: 2 });
        let at = faults_at.1.min(ops.len());
        ops.splice(at..at, [
            Op::Idempotent { producer: 0, retries: 1 },
            Op::ChangeLeader,
            Op::RetryLast { producer: 0 },
        ]);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run(seed, ops))?;
    }
}
