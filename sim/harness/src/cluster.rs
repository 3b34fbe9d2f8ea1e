//! A simulated Keel cluster: real `keel_node::Node`s on madsim nodes, each with a simulated disk
//! that outlives the node (a kill is a power loss: the disk then drops its unsynced bytes).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keel_checker::Commit;
use keel_checker::EventType;
use keel_checker::Fault as FaultEvent;
use keel_checker::Leader;
use keel_checker::Op;
use keel_core::log::LogConfig;
use keel_core::storage::Storage;
use keel_core::storage::sim::SimFaults;
use keel_core::storage::sim::SimStorage;
use keel_node::kafka::KafkaConfig;
use keel_node::node::ControlTiming;
use keel_node::node::Node;
use keel_node::node::NodeConfig;
use keel_node::partition::Observer;
use keel_node::partition::ReplicaConfig;
use keel_node::transport::TransportConfig;
use madsim::net::NetSim;
use madsim::runtime::Handle;

use crate::recorder::Recorder;

pub const RAFT_PORT: u16 = 7000;
/// Where each node serves Kafka clients.
pub const KAFKA_PORT: u16 = 9092;
/// Metadata entries between two metadata snapshots in the simulation.
const METADATA_SNAPSHOT_EVERY_ENTRIES: u64 = 8;
/// The nemesis's process id in the history.
pub const NEMESIS: u64 = 0;

pub fn node_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8))
}

pub fn node_addr(id: u64) -> String {
    format!("{}:{RAFT_PORT}", node_ip(id))
}

/// Node `id`'s Kafka address, as it advertises it in Metadata.
pub fn kafka_addr(id: u64) -> String {
    format!("{}:{KAFKA_PORT}", node_ip(id))
}

pub fn partition_name(group: u64) -> String {
    format!("p{group}")
}

/// Records leader and applied events of one incarnation of one node.
struct SimObserver {
    recorder: Recorder,
    incarnation: u64,
    /// Replicas opened per group in this incarnation: a replica removed and re-created (moved
    /// away and back) applies from the start again, so it reports as a new incarnation.
    opened: Mutex<BTreeMap<u64, u64>>,
}

/// Replica instances one node incarnation may open of one group, for incarnation numbering.
const INSTANCES_PER_INCARNATION: u64 = 1_000_000;

impl Observer for SimObserver {
    fn opened(&self, group: u64, _node: u64) -> u64 {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let n = opened.entry(group).or_insert(0);
        *n += 1;
        self.incarnation * INSTANCES_PER_INCARNATION + *n
    }

    fn leader(&self, group: u64, node: u64, term: u64) {
        let op = Op::Leader(Leader { node, term, partition: partition_name(group) });
        self.recorder.record(node, EventType::Info, op);
    }

    fn applied(&self, group: u64, node: u64, instance: u64, index: u64, term: u64) {
        let op = Op::Commit(Commit { node, incarnation: instance, partition: partition_name(group), index, term });
        self.recorder.record(node, EventType::Info, op);
    }
}

struct Slot {
    madsim_id: madsim::task::NodeId,
    storage: Arc<SimStorage>,
    up: bool,
}

/// Bytes of recent entries each simulated partition log keeps in memory.
const SIM_TAIL_CACHE_BYTES_MAX: usize = 256 << 10;

/// Cluster-wide settings of a simulated run.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub nodes: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    pub segment_bytes_max: u64,
    /// How long each simulated fsync takes.
    pub fsync_latency: std::ops::Range<Duration>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: 3,
            heartbeat_ms: 100,
            election_timeout_ms: (500, 1000),
            segment_bytes_max: 64 * 1024,
            fsync_latency: Duration::from_millis(1)..Duration::from_millis(8),
        }
    }
}

pub struct SimCluster {
    handle: Handle,
    /// The disks' usual fsync latency, restored after a slow-disk fault.
    fsync_latency: std::ops::Range<Duration>,
    slots: Mutex<BTreeMap<u64, Slot>>,
    recorder: Recorder,
}

/// The Kafka front end's settings in the simulation: two offsets partitions (each is a Raft
/// group to simulate), and group timeouts short enough for a 20 s workload.
fn kafka_config() -> KafkaConfig {
    let mut c = KafkaConfig::default();
    c.broker.offsets_topic_num_partitions = 2;
    c.broker.group_initial_rebalance_delay_ms = 300;
    c.broker.group_min_session_timeout_ms = 1_000;
    c
}

fn node_config(config: &ClusterConfig, id: u64) -> NodeConfig {
    let timing = keel_node::raft::RaftTiming {
        heartbeat_ms: config.heartbeat_ms,
        election_timeout_min_ms: config.election_timeout_ms.0,
        election_timeout_max_ms: config.election_timeout_ms.1,
    };
    let raft = keel_node::raft::config("keel-sim", timing).unwrap_or_else(|e| panic!("invalid raft config: {e}"));
    // Snapshots every few metadata entries (the default is 1,024), so that every seed builds
    // metadata snapshots, purges the metadata log below them and sends them to lagging or new
    // members.
    let metadata_raft = {
        let mut c = (*keel_node::raft::metadata_config("keel-sim", timing)
            .unwrap_or_else(|e| panic!("invalid raft config: {e}")))
        .clone();
        c.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(METADATA_SNAPSHOT_EVERY_ENTRIES);
        c.max_in_snapshot_log_to_keep = 2;
        Arc::new(c.validate().unwrap_or_else(|e| panic!("invalid raft config: {e}")))
    };
    NodeConfig {
        id,
        data_dir: PathBuf::from("/keel"),
        addr: node_addr(id),
        kafka_addr: kafka_addr(id),
        rack: None,
        // The first three nodes vote in the metadata group; the others follow as learners.
        voters: (1..=config.nodes.min(3)).map(|n| (n, node_addr(n))).collect(),
        default_replication_factor: 3,
        replica: ReplicaConfig {
            // A small tail cache: reads reach the segments more often (more of the read path
            // under faults), and a run that outlives its seed holds little.
            log: LogConfig {
                segment_bytes_max: config.segment_bytes_max,
                tail_cache_bytes_max: SIM_TAIL_CACHE_BYTES_MAX,
                ..LogConfig::default()
            },
            raft,
            // Small, so that every seed restarts nodes from a checkpoint, not only from the log.
            sm_checkpoint_every_entries: 64,
            disk_reserve_bytes: keel_node::partition::disk_reserve_bytes_for(&LogConfig::default()),
        },
        metadata_raft,
        transport: TransportConfig::new("keel-sim"),
        heartbeat_batch: Default::default(),
        timing: ControlTiming::default(),
    }
}

impl SimCluster {
    /// Creates and starts every node. Call inside the madsim runtime.
    pub fn start(seed: u64, config: &ClusterConfig, recorder: Recorder) -> Arc<SimCluster> {
        let handle = Handle::current();
        // Clocks and message chaos are process-wide tables keyed by node: a new seed starts
        // with none.
        keel_node::rt::drift::reset();
        keel_node::transport::chaos::reset();
        let mut slots = BTreeMap::new();
        for id in 1..=config.nodes {
            let storage = SimStorage::new(seed.wrapping_mul(1000).wrapping_add(id));
            // A real disk takes milliseconds to fsync: acknowledged-but-unsynced data exists for
            // that long, and a crash inside the window is what catches a premature ack.
            storage.set_faults(SimFaults { sync_latency: config.fsync_latency.clone(), ..SimFaults::default() });
            let incarnations = Arc::new(AtomicU64::new(0));
            let node_config = node_config(config, id);
            let (st, rec) = (storage.clone(), recorder.clone());
            let node = handle
                .create_node()
                .name(format!("keel-{id}"))
                .ip(node_ip(id))
                .init(move || {
                    let storage: Arc<dyn Storage> = st.clone();
                    let recorder = rec.clone();
                    let config = node_config.clone();
                    let incarnation = incarnations.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        let observer =
                            Arc::new(SimObserver { recorder: recorder.clone(), incarnation, opened: Mutex::default() });
                        let raft = tokio::net::TcpListener::bind(("0.0.0.0", RAFT_PORT)).await;
                        let kafka = tokio::net::TcpListener::bind(("0.0.0.0", KAFKA_PORT)).await;
                        match (raft, kafka) {
                            (Ok(listener), Ok(kafka)) => match Node::start(config, storage, listener, observer).await {
                                Ok(node) => {
                                    tokio::spawn(keel_node::kafka::serve(node, kafka, kafka_config()));
                                }
                                Err(e) => {
                                    let mut detail = BTreeMap::new();
                                    detail.insert("error".to_string(), serde_json::Value::String(e.to_string()));
                                    let op =
                                        Op::Fault(FaultEvent { fault: "start-failed".into(), node: Some(id), detail });
                                    recorder.record(NEMESIS, EventType::Info, op);
                                }
                            },
                            (Err(e), _) | (_, Err(e)) => tracing::error!(id, error = %e, "bind failed"),
                        }
                        std::future::pending::<()>().await;
                    }
                })
                .build();
            slots.insert(id, Slot { madsim_id: node.id(), storage, up: true });
        }
        Arc::new(SimCluster { handle, fsync_latency: config.fsync_latency.clone(), slots: Mutex::new(slots), recorder })
    }

    /// Drops every node's disk contents (the run is over; see [`SimStorage::wipe`]).
    pub fn wipe_disks(&self) {
        for slot in self.slots().values() {
            slot.storage.wipe();
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node_ids(&self) -> Vec<u64> {
        self.slots().keys().copied().collect()
    }

    fn note(&self, fault: &str, node: Option<u64>, detail: BTreeMap<String, serde_json::Value>) {
        let op = Op::Fault(FaultEvent { fault: fault.to_string(), node, detail });
        self.recorder.record(NEMESIS, EventType::Info, op);
    }

    /// Power loss: the node dies and its disk keeps only what was synced (plus maybe a torn
    /// prefix of what was not).
    pub fn crash(&self, id: u64) {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(&id) else { return };
        if !slot.up {
            return;
        }
        self.handle.kill(slot.madsim_id);
        slot.storage.crash();
        slot.up = false;
        drop(slots);
        self.note("crash", Some(id), BTreeMap::new());
    }

    pub fn restart(&self, id: u64) {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(&id) else { return };
        if slot.up {
            return;
        }
        self.handle.restart(slot.madsim_id);
        slot.up = true;
        drop(slots);
        self.note("restart", Some(id), BTreeMap::new());
    }

    pub fn isolate(&self, id: u64) {
        let Some(mid) = self.slots().get(&id).map(|s| s.madsim_id) else { return };
        NetSim::current().clog_node(mid);
        self.note("isolate", Some(id), BTreeMap::new());
    }

    pub fn one_way(&self, from: u64, to: u64) {
        let slots = self.slots();
        let (Some(a), Some(b)) = (slots.get(&from), slots.get(&to)) else { return };
        NetSim::current().clog_link(a.madsim_id, b.madsim_id);
        drop(slots);
        let mut detail = BTreeMap::new();
        detail.insert("to".to_string(), serde_json::Value::from(to));
        self.note("one-way", Some(from), detail);
    }

    pub fn packet_loss(&self, rate: f64) {
        NetSim::current().update_config(|c| c.packet_loss_rate = rate);
        let mut detail = BTreeMap::new();
        detail.insert("rate".to_string(), serde_json::Value::from(rate));
        self.note("packet-loss", None, detail);
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways (clients keep
    /// reaching every node).
    pub fn partition(&self, fault: &str, a: &[u64], b: &[u64], detail: BTreeMap<String, serde_json::Value>) {
        let slots = self.slots();
        let net = NetSim::current();
        for x in a {
            for y in b {
                if let (Some(sx), Some(sy)) = (slots.get(x), slots.get(y)) {
                    net.clog_link(sx.madsim_id, sy.madsim_id);
                    net.clog_link(sy.madsim_id, sx.madsim_id);
                }
            }
        }
        drop(slots);
        self.note(fault, None, detail);
    }

    /// Every packet takes `latency` (instead of madsim's default) until healed.
    pub fn delay(&self, latency: std::ops::Range<Duration>) {
        let mut detail = BTreeMap::new();
        detail.insert("min_ms".to_string(), serde_json::Value::from(latency.start.as_millis() as u64));
        detail.insert("max_ms".to_string(), serde_json::Value::from(latency.end.as_millis() as u64));
        NetSim::current().update_config(|c| c.send_latency = latency);
        self.note("delay", None, detail);
    }

    /// The node's fsyncs take `latency` (None: the usual latency again).
    pub fn disk_latency(&self, id: u64, latency: Option<std::ops::Range<Duration>>) {
        let Some(storage) = self.slots().get(&id).map(|s| s.storage.clone()) else { return };
        let slow = latency.is_some();
        let latency = latency.unwrap_or_else(|| self.fsync_latency.clone());
        let mut detail = BTreeMap::new();
        detail.insert("min_ms".to_string(), serde_json::Value::from(latency.start.as_millis() as u64));
        detail.insert("max_ms".to_string(), serde_json::Value::from(latency.end.as_millis() as u64));
        storage.set_faults(SimFaults { sync_latency: latency, ..storage.faults() });
        self.note(if slow { "slow-disk" } else { "slow-disk-end" }, Some(id), detail);
    }

    /// Node `id`'s disk is full (every growing write fails with ENOSPC) or has room again.
    pub fn disk_full(&self, id: u64, full: bool) {
        let Some(storage) = self.slots().get(&id).map(|s| s.storage.clone()) else { return };
        storage.set_faults(SimFaults { disk_full: full, ..storage.faults() });
        self.note(if full { "disk-full" } else { "disk-full-end" }, Some(id), BTreeMap::new());
    }

    /// Restores every link and node: unclogs, stops packet loss and delay, restarts crashed
    /// nodes.
    pub fn heal(&self) {
        let ids: Vec<(u64, madsim::task::NodeId)> = self.slots().iter().map(|(k, s)| (*k, s.madsim_id)).collect();
        let net = NetSim::current();
        net.update_config(|c| {
            c.packet_loss_rate = 0.0;
            c.send_latency = madsim::net::Config::default().send_latency;
        });
        for (_, a) in &ids {
            net.unclog_node(*a);
            for (_, b) in &ids {
                net.unclog_link(*a, *b);
            }
        }
        self.note("heal", None, BTreeMap::new());
        for (id, _) in ids {
            self.restart(id);
        }
    }

    /// Sets node `id`'s clock running `rate_ppm` parts per million fast (negative: slow);
    /// 0 back to madsim's rate, keeping the offset gathered (see `keel_node::rt::drift`).
    pub fn clock_rate(&self, id: u64, rate_ppm: i64) {
        let Some(mid) = self.slots().get(&id).map(|s| s.madsim_id) else { return };
        keel_node::rt::drift::set_rate(mid, rate_ppm);
        let mut detail = BTreeMap::new();
        detail.insert("rate_ppm".to_string(), serde_json::Value::from(rate_ppm));
        self.note(if rate_ppm == 0 { "clock-drift-end" } else { "clock-drift" }, Some(id), detail);
    }

    /// Requests arriving at node `id` are served after 0..=`delay_max_ms` each, and
    /// `duplicate_pct` of its Raft messages twice (None: as they come again; see
    /// `keel_node::transport::chaos`).
    pub fn reorder(&self, id: u64, chaos: Option<(u64, u8)>) {
        let mut detail = BTreeMap::new();
        match chaos {
            Some((delay_max_ms, duplicate_pct)) => {
                let raft_kinds = vec![
                    keel_node::raft::network::KIND_APPEND,
                    keel_node::raft::network::KIND_VOTE,
                    keel_node::raft::network::KIND_PRE_VOTE,
                    keel_node::raft::network::KIND_SNAPSHOT,
                    keel_node::raft::heartbeat::KIND_HEARTBEAT_BATCH,
                    keel_node::raft::network::KIND_TRANSFER_LEADER,
                ];
                let chaos =
                    keel_node::transport::chaos::Chaos { delay_max_ms, duplicate_pct, duplicate_kinds: raft_kinds };
                keel_node::transport::chaos::set(id, chaos);
                detail.insert("delay_max_ms".to_string(), serde_json::Value::from(delay_max_ms));
                detail.insert("duplicate_pct".to_string(), serde_json::Value::from(duplicate_pct));
                self.note("reorder", Some(id), detail);
            }
            None => {
                keel_node::transport::chaos::clear(id);
                self.note("reorder-end", Some(id), detail);
            }
        }
    }

    /// Makes the node's next fsync of a file of partition `group` fail with EIO.
    pub fn fail_next_sync(&self, id: u64, group: u64) {
        let Some(storage) = self.slots().get(&id).map(|s| s.storage.clone()) else { return };
        storage.fail_next_sync(&format!("/partitions/{group}/log/"));
        self.note("fsync-error", Some(id), BTreeMap::new());
    }

    /// Whether an injected disk failure on node `id` has yet to fire; disarms it either way.
    pub fn take_unfired_failure(&self, id: u64) -> bool {
        let Some(storage) = self.slots().get(&id).map(|s| s.storage.clone()) else { return false };
        let unfired = storage.pending_failures() > 0;
        storage.clear_failures();
        unfired
    }

    pub fn is_up(&self, id: u64) -> bool {
        self.slots().get(&id).is_some_and(|s| s.up)
    }

    /// Lets the simulated time pass.
    pub async fn sleep_ms(ms: u64) {
        madsim::time::sleep(Duration::from_millis(ms)).await;
    }
}
