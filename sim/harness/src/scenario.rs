//! One seed, start to verdict: start the cluster, run producers while the nemesis works through
//! the fault schedule, heal, wait until every replica has applied the same log, read every
//! replica, and run every checker over the recorded history.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use keel_checker::History;
use keel_checker::Verdict;
use madsim::runtime::Handle;

use crate::admin;
use crate::cluster::ClusterConfig;
use crate::cluster::SimCluster;
use crate::cluster::kafka_addr;
use crate::cluster::node_addr;
use crate::failure::Problem;
use crate::failure::ProblemKind;
use crate::faults;
use crate::faults::Fault;
use crate::faults::Scheduled;
use crate::group_consumer;
use crate::idempotent;
use crate::recorder::Recorder;
use crate::workload;

pub use crate::kind::ScenarioKind;

/// What to run for one seed.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// None: from the seed ([`ScenarioKind::for_seed`]).
    pub kind: Option<ScenarioKind>,
    pub workload_ms: u64,
    pub producers: u64,
    /// Idempotent producers besides `producers` (`idempotent_no_duplicates` judges them).
    pub idempotent_producers: u64,
    /// Members of the consumer group on the workload partition (`group_at_least_once`).
    pub group_members: u64,
    /// None: generate from the seed.
    pub schedule: Option<Vec<Scheduled>>,
    /// How long the healed cluster gets to converge before the run counts as stuck.
    pub converge_ms_max: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            kind: None,
            workload_ms: 20_000,
            producers: 3,
            idempotent_producers: 2,
            group_members: 2,
            schedule: None,
            converge_ms_max: 60_000,
        }
    }
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    pub seed: u64,
    pub passed: bool,
    /// Hash of the whole recorded history: equal for equal runs.
    pub trace_hash: u64,
    pub verdicts: Vec<Verdict>,
    /// Problems outside the checkers (no convergence, a malformed history).
    pub problems: Vec<Problem>,
    pub history_jsonl: String,
    pub schedule: Vec<Scheduled>,
    pub acked: usize,
    /// Client operations by outcome (an operation never completed counts as `info`).
    pub ops: OpCounts,
    pub kind: ScenarioKind,
    pub sim_ms: u64,
    /// Wall-clock time the seed took (outside the simulation: for the speed report only).
    pub wall_ms: u64,
}

/// Client operations of a run by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

impl OpCounts {
    fn of(history: &History) -> OpCounts {
        let mut c = OpCounts::default();
        for op in history.operations() {
            match op.completion.map(|i| history.events()[i].kind) {
                Some(keel_checker::EventType::Ok) => c.ok += 1,
                Some(keel_checker::EventType::Fail) => c.fail += 1,
                _ => c.info += 1,
            }
        }
        c
    }
}

const CONTROL_ID: u64 = 900;
const ADMIN_ID: u64 = 600;
const PRODUCER_BASE: u64 = 10;
/// Idempotent producers are processes `IDEMPOTENT_PRODUCER_BASE + i`.
const IDEMPOTENT_PRODUCER_BASE: u64 = 40;
const READER_BASE: u64 = 800;
const CONSUMER_ID: u64 = 700;
const SAMPLER_ID: u64 = 650;
/// Group member `i`'s sessions are processes `GROUP_MEMBER_BASE + 100 * i + session`.
const GROUP_MEMBER_BASE: u64 = 2_000;
/// How long the group gets to consume everything after the cluster converged.
const GROUP_DRAIN_MS_MAX: u64 = 60_000;

/// Runs `seed` on a fresh OS thread with a fresh madsim runtime (thread-local state of std and
/// tokio is per thread, so runs in one process do not influence each other).
pub fn run_seed(seed: u64, options: RunOptions) -> SeedOutcome {
    let started = std::time::Instant::now();
    let kind = options.kind.unwrap_or_else(|| ScenarioKind::for_seed(seed));
    let result = std::thread::spawn(move || {
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(scenario(seed, options))
    })
    .join();
    let wall_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(outcome) => SeedOutcome { wall_ms, ..outcome },
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            SeedOutcome {
                seed,
                passed: false,
                trace_hash: 0,
                verdicts: Vec::new(),
                problems: vec![Problem::new(ProblemKind::Panic, format!("the simulation panicked: {msg}"))],
                history_jsonl: String::new(),
                schedule: Vec::new(),
                acked: 0,
                ops: OpCounts::default(),
                kind,
                sim_ms: 0,
                wall_ms,
            }
        }
    }
}

/// How a seed's fault schedule is drawn for its shape.
pub fn schedule_config(kind: ScenarioKind, workload_ms: u64) -> faults::ScheduleConfig {
    faults::ScheduleConfig { nodes: kind.nodes(), workload_ms, gap_ms: 200..1500 }
}

async fn scenario(seed: u64, options: RunOptions) -> SeedOutcome {
    let handle = Handle::current();
    let recorder = Recorder::new();
    let kind = options.kind.unwrap_or_else(|| ScenarioKind::for_seed(seed));
    let config = ClusterConfig { nodes: kind.nodes(), ..ClusterConfig::default() };
    let cluster = SimCluster::start(seed, &config, recorder.clone());
    let schedule =
        options.schedule.clone().unwrap_or_else(|| faults::generate(seed, &schedule_config(kind, options.workload_ms)));
    let control = handle.create_node().name("control").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1))).build();
    let (rec, cl, sched, opts) = (recorder.clone(), cluster.clone(), schedule.clone(), options.clone());
    let joined =
        control.spawn(async move { control_loop(handle_clone(), seed, kind, cl, rec, sched, opts).await }).await;
    let problems = match joined {
        Ok(p) => p,
        Err(e) => vec![Problem::new(ProblemKind::ControlTask, format!("control task failed: {e}"))],
    };
    cluster.wipe_disks();
    finish(seed, kind, recorder, schedule, problems)
}

fn handle_clone() -> Handle {
    Handle::current()
}

fn finish(
    seed: u64,
    kind: ScenarioKind,
    recorder: Recorder,
    schedule: Vec<Scheduled>,
    mut problems: Vec<Problem>,
) -> SeedOutcome {
    let sim_ms = recorder.elapsed_ns() / 1_000_000;
    let events = recorder.events();
    let history = History::new(events);
    let (verdicts, jsonl, acked, ops) = match history {
        Ok(h) => {
            let acked = h
                .events()
                .iter()
                .filter(|e| e.kind == keel_checker::EventType::Ok && matches!(e.op, keel_checker::Op::Produce(_)))
                .count();
            (keel_checker::check_all(&h), h.to_jsonl(), acked, OpCounts::of(&h))
        }
        Err(e) => {
            problems.push(Problem::new(ProblemKind::MalformedHistory, format!("malformed history: {e}")));
            (Vec::new(), String::new(), 0, OpCounts::default())
        }
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(jsonl.as_bytes());
    let passed = problems.is_empty() && verdicts.iter().all(|v| v.ok);
    SeedOutcome {
        seed,
        passed,
        trace_hash: hasher.finish(),
        verdicts,
        problems,
        history_jsonl: jsonl,
        schedule,
        acked,
        ops,
        kind,
        sim_ms,
        wall_ms: 0,
    }
}

#[allow(clippy::too_many_arguments)]
async fn control_loop(
    handle: Handle,
    seed: u64,
    kind: ScenarioKind,
    cluster: Arc<SimCluster>,
    recorder: Recorder,
    schedule: Vec<Scheduled>,
    options: RunOptions,
) -> Vec<Problem> {
    let nodes = cluster.node_ids();
    let admin = workload::client_transport(CONTROL_ID, &nodes, node_addr);
    madsim::time::sleep(Duration::from_millis(1500)).await;
    // The Kafka clients bootstrap from every node's Kafka listener.
    let bootstrap: Vec<String> = nodes.iter().map(|n| kafka_addr(*n)).collect();
    let group = match admin::create_workload_topic(&admin, &nodes, bootstrap.clone(), &recorder, ADMIN_ID).await {
        Ok(g) => g,
        Err(e) => return vec![Problem::new(ProblemKind::NoConvergence, format!("setup: {e}"))],
    };

    let mut fault_problems = Vec::new();
    let start_ns = recorder.elapsed_ns();
    let deadline_ns = start_ns + options.workload_ms * 1_000_000;
    let mut producers = Vec::new();
    for i in 0..options.producers {
        let process = PRODUCER_BASE + i;
        let node = handle
            .create_node()
            .name(format!("producer-{i}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i as u8 + 1)))
            .build();
        let rec = recorder.clone();
        producers.push(node.spawn(workload::producer(seed, process, group, bootstrap.clone(), rec, deadline_ns)));
    }
    for i in 0..options.idempotent_producers {
        let process = IDEMPOTENT_PRODUCER_BASE + i;
        let node = handle
            .create_node()
            .name(format!("idempotent-producer-{i}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 6, i as u8 + 1)))
            .build();
        let rec = recorder.clone();
        producers.push(node.spawn(idempotent::producer(process, group, bootstrap.clone(), rec, deadline_ns)));
    }

    let drain = group_consumer::Drain::new();
    let mut members = Vec::new();
    for i in 0..options.group_members {
        let node = handle
            .create_node()
            .name(format!("group-member-{i}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 7, i as u8 + 1)))
            .build();
        let (rec, d) = (recorder.clone(), drain.clone());
        let base = GROUP_MEMBER_BASE + 100 * i;
        members.push(node.spawn(group_consumer::member(seed, i, base, group, bootstrap.clone(), rec, d)));
    }

    let consumer = {
        let node = handle.create_node().name("consumer").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1))).build();
        let rec = recorder.clone();
        node.spawn(workload::consumer(CONSUMER_ID, group, bootstrap.clone(), rec, deadline_ns))
    };
    let sampler = {
        let node = handle.create_node().name("sampler").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 4, 1))).build();
        let t = workload::client_transport(SAMPLER_ID, &nodes, node_addr);
        let (rec, ns) = (recorder.clone(), nodes.clone());
        node.spawn(admin::sampler(group, ns, t, rec, deadline_ns))
    };
    let operator = (kind == ScenarioKind::Cluster).then(|| {
        let node = handle.create_node().name("operator").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 5, 1))).build();
        let t = workload::client_transport(ADMIN_ID, &nodes, node_addr);
        let (rec, ns, bs) = (recorder.clone(), nodes.clone(), bootstrap.clone());
        node.spawn(admin::admin_workload(seed, ADMIN_ID, group, ns, bs, t, rec, deadline_ns))
    });

    for s in &schedule {
        let at_ns = start_ns + s.at_ms * 1_000_000;
        let now = recorder.elapsed_ns();
        if at_ns > now {
            madsim::time::sleep(Duration::from_nanos(at_ns - now)).await;
        }
        if let Some(p) = apply_fault(&cluster, &admin, group, &s.fault).await {
            fault_problems.push(p);
        }
    }
    for p in producers {
        let _ = p.await;
    }
    let _ = consumer.await;
    let _ = sampler.await;
    if let Some(o) = operator {
        let _ = o.await;
    }
    cluster.heal();
    let mut problems = fault_problems;
    let converged = converge(&admin, &nodes, group, &recorder, options.converge_ms_max).await;
    if let Err(last_seen) = &converged {
        problems.push(Problem::new(
            ProblemKind::NoConvergence,
            format!(
                "the healed cluster did not converge within {} ms of simulated time; last seen: {last_seen}",
                options.converge_ms_max
            ),
        ));
    }
    // One last sample of the settled partition.
    if let Some(sample) = admin::sample(&admin, &nodes, group).await {
        recorder.record(crate::cluster::NEMESIS, keel_checker::EventType::Info, keel_checker::Op::Replicas(sample));
    }
    // The group consumes up to the settled partition's end, then stops.
    if !members.is_empty() {
        if let Ok(hosts) = &converged {
            let mut end = 0;
            for &n in hosts {
                if let Some(s) = workload::status(&admin, n, group).await {
                    end = end.max(s.high_watermark);
                }
            }
            drain.set_target(end);
            let until = recorder.elapsed_ns() + GROUP_DRAIN_MS_MAX * 1_000_000;
            while !drain.drained() && recorder.elapsed_ns() < until {
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
            if !drain.drained() {
                problems.push(Problem::new(
                    ProblemKind::NoConvergence,
                    format!(
                        "the consumer group did not commit the partition's end offset {end} within {GROUP_DRAIN_MS_MAX} ms \
                         of simulated time after the cluster converged"
                    ),
                ));
            }
        }
        drain.stop();
        for m in members {
            let _ = m.await;
        }
    }
    let (caught_up, hosts) = match converged {
        Ok(hosts) => (true, hosts),
        Err(_) => (false, nodes.clone()),
    };
    for &n in &hosts {
        if let Err(e) = workload::read_replica(&admin, &recorder, READER_BASE + n, n, group, caught_up).await {
            problems.push(Problem::new(ProblemKind::FinalRead, e));
        }
    }
    problems
}

/// How long (simulated) the replicas a full disk stopped get to reopen by themselves once it
/// has room: a few of the recovery duty's rounds and its first pauses.
const DISK_RECOVERY_MS_MAX: u64 = 15_000;

/// After a full disk has room again: every replica of `group` it stopped on `full` must reopen
/// by itself (no restart). A node whose *metadata* group the full disk stopped is restarted, as
/// an operator would (Keel does not reopen the metadata group by itself; docs/architecture.md).
async fn recovered_from_full_disk(
    cluster: &Arc<SimCluster>,
    admin: &keel_node::transport::Transport,
    group: u64,
    full: &[u64],
) -> Option<Problem> {
    for &n in full {
        if !cluster.is_up(n) {
            continue;
        }
        if workload::status(admin, n, keel_core::metadata::METADATA_GROUP).await.is_some_and(|s| s.failed.is_some()) {
            cluster.crash(n);
            cluster.restart(n);
        }
    }
    let deadline = madsim::time::Instant::now() + Duration::from_millis(DISK_RECOVERY_MS_MAX);
    loop {
        let mut stopped = Vec::new();
        for &n in full {
            if let Some(s) = workload::status(admin, n, group).await
                && let Some(reason) = s.failed
            {
                stopped.push(format!("node {n}: {reason}"));
            }
        }
        if stopped.is_empty() {
            return None;
        }
        if madsim::time::Instant::now() >= deadline {
            return Some(Problem::new(
                ProblemKind::NoConvergence,
                format!(
                    "replicas stopped by a full disk did not reopen within {DISK_RECOVERY_MS_MAX} ms of simulated \
                     time after it had room again: {}",
                    stopped.join("; ")
                ),
            ));
        }
        madsim::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn leader_of(admin: &keel_node::transport::Transport, nodes: &[u64], group: u64) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for &n in nodes {
        if let Some(s) = workload::status(admin, n, group).await
            && s.state == "Leader"
            && best.is_none_or(|(t, _)| s.term > t)
        {
            best = Some((s.term, n));
        }
    }
    best.map(|(_, n)| n)
}

/// Applies one fault and undoes it. Returns a problem when the system misbehaved in a way no
/// history checker sees (a partition that kept running after a failed fsync).
async fn apply_fault(
    cluster: &Arc<SimCluster>,
    admin: &keel_node::transport::Transport,
    group: u64,
    fault: &Fault,
) -> Option<Problem> {
    let nodes = cluster.node_ids();
    let wait = |ms: u64| madsim::time::sleep(Duration::from_millis(ms));
    match fault {
        Fault::Crash { nodes: victims, down_ms } => {
            for &v in victims {
                cluster.crash(v);
            }
            wait(*down_ms).await;
            for &v in victims {
                cluster.restart(v);
            }
        }
        Fault::CrashLeader { down_ms } => {
            if let Some(l) = leader_of(admin, &nodes, group).await {
                cluster.crash(l);
                wait(*down_ms).await;
                cluster.restart(l);
            }
        }
        Fault::Isolate { node, duration_ms } => {
            cluster.isolate(*node);
            wait(*duration_ms).await;
            cluster.heal();
        }
        Fault::IsolateLeader { duration_ms } => {
            if let Some(l) = leader_of(admin, &nodes, group).await {
                cluster.isolate(l);
                wait(*duration_ms).await;
                cluster.heal();
            }
        }
        Fault::OneWay { from, to, duration_ms } => {
            cluster.one_way(*from, *to);
            wait(*duration_ms).await;
            cluster.heal();
        }
        Fault::PacketLoss { rate_pct, duration_ms } => {
            cluster.packet_loss(f64::from(*rate_pct) / 100.0);
            wait(*duration_ms).await;
            cluster.heal();
        }
        Fault::StaleCandidate { node, isolated_ms, down_ms } => {
            cluster.isolate(*node);
            wait(*isolated_ms).await;
            cluster.heal();
            if let Some(l) = leader_of(admin, &nodes, group).await
                && l != *node
            {
                cluster.crash(l);
                wait(*down_ms).await;
                cluster.restart(l);
            }
        }
        Fault::FsyncError { node, down_ms } => {
            if !cluster.is_up(*node) {
                return None;
            }
            let Some(before) = workload::status(admin, *node, group).await.filter(|s| s.state != "Absent") else {
                // The node holds no replica of the partition under load: nothing to fail.
                return None;
            };
            cluster.fail_next_sync(*node, group);
            wait(*down_ms).await;
            // Under steady produce load every replica fsyncs within milliseconds, so by now the
            // failed fsync happened and the partition must have stopped.
            let status = workload::status(admin, *node, group).await;
            // The failure may not have fired: a replica that wrote nothing meanwhile (a lagging
            // learner, one moved away) had nothing to fsync.
            let fired = !cluster.take_unfired_failure(*node);
            let problem = match status {
                // Unless the failed replica was replaced meanwhile (moved away and back: a new,
                // empty replica of a new incarnation).
                Some(s) if fired && s.failed.is_none() && s.raft_id == before.raft_id => Some(Problem::new(
                    ProblemKind::FsyncNotFailClosed,
                    format!(
                        "node {node}: an fsync failed {down_ms} ms ago but its partition is still running ({})",
                        s.state
                    ),
                )),
                _ => None,
            };
            cluster.crash(*node);
            cluster.restart(*node);
            return problem;
        }
        Fault::DiskFull { nodes: full, duration_ms } => {
            for n in full {
                cluster.disk_full(*n, true);
            }
            wait(*duration_ms).await;
            for n in full {
                cluster.disk_full(*n, false);
            }
            return recovered_from_full_disk(cluster, admin, group, full).await;
        }
        Fault::Delay { min_ms, max_ms, duration_ms } => {
            cluster.delay(Duration::from_millis(*min_ms)..Duration::from_millis((*max_ms).max(min_ms + 1)));
            wait(*duration_ms).await;
            cluster.heal();
        }
        Fault::SlowDisk { node, min_ms, max_ms, duration_ms } => {
            cluster.disk_latency(
                *node,
                Some(Duration::from_millis(*min_ms)..Duration::from_millis((*max_ms).max(min_ms + 1))),
            );
            wait(*duration_ms).await;
            cluster.disk_latency(*node, None);
        }
        Fault::CrashInFsync { node, sync_ms, after_ms, down_ms } => {
            let sync = Duration::from_millis(*sync_ms);
            cluster.disk_latency(*node, Some(sync..sync + Duration::from_millis(1)));
            wait(*after_ms).await;
            cluster.crash(*node);
            cluster.disk_latency(*node, None);
            wait(*down_ms).await;
            cluster.restart(*node);
        }
        Fault::Halves { side, duration_ms } => {
            let rest: Vec<u64> = nodes.iter().copied().filter(|n| !side.contains(n)).collect();
            let mut detail = BTreeMap::new();
            detail.insert("side".to_string(), serde_json::json!(side));
            detail.insert("rest".to_string(), serde_json::json!(rest));
            cluster.partition("partition", side, &rest, detail);
            wait(*duration_ms).await;
            cluster.heal();
        }
        Fault::Bridge { left, bridge, right, duration_ms } => {
            let mut detail = BTreeMap::new();
            detail.insert("left".to_string(), serde_json::json!(left));
            detail.insert("bridge".to_string(), serde_json::json!(bridge));
            detail.insert("right".to_string(), serde_json::json!(right));
            cluster.partition("bridge", left, right, detail);
            wait(*duration_ms).await;
            cluster.heal();
        }
        Fault::ClockDrift { node, rate_ppm, duration_ms } => {
            cluster.clock_rate(*node, *rate_ppm);
            wait(*duration_ms).await;
            cluster.clock_rate(*node, 0);
        }
        Fault::Reorder { node, delay_max_ms, duplicate_pct, duration_ms } => {
            cluster.reorder(*node, Some((*delay_max_ms, *duplicate_pct)));
            wait(*duration_ms).await;
            cluster.reorder(*node, None);
        }
    }
    None
}

/// Waits until the healed cluster settles: every node answers with the same metadata and no
/// reassignment in flight, and the workload partition's replicas (per that metadata) have one
/// leader and have all applied the same last index. Returns those replicas, or what was last
/// seen.
async fn converge(
    admin: &keel_node::transport::Transport,
    nodes: &[u64],
    group: u64,
    recorder: &Recorder,
    ms_max: u64,
) -> Result<Vec<u64>, String> {
    let deadline = recorder.elapsed_ns() + ms_max * 1_000_000;
    let mut settled_rounds = 0;
    let mut last_seen = String::new();
    while recorder.elapsed_ns() < deadline {
        let mut views = BTreeMap::new();
        for &n in nodes {
            if let Some(v) = admin::view(admin, n).await {
                views.insert(n, v);
            }
        }
        let digests: BTreeMap<u64, (u64, u32)> =
            views.iter().map(|(n, v)| (*n, (v.metadata.applied_index, v.metadata.digest()))).collect();
        let metadata_agrees =
            views.len() == nodes.len() && digests.values().all(|d| Some(d) == digests.values().next());
        let reference = views.values().next().map(|v| v.metadata.clone());
        let moving = reference.as_ref().is_none_or(|m| m.assignments().any(|a| a.target.is_some()));
        let hosts: Vec<u64> =
            reference.as_ref().and_then(|m| m.assignment(group)).map(|a| a.replicas.clone()).unwrap_or_default();
        let mut statuses = BTreeMap::new();
        for &n in &hosts {
            if let Some(s) = workload::status(admin, n, group).await {
                statuses.insert(n, s);
            }
        }
        let all = !hosts.is_empty() && statuses.len() == hosts.len();
        let leaders = statuses.values().filter(|s| s.state == "Leader").count();
        let last = statuses.values().filter_map(|s| s.last_log_index).max();
        let applied_all = statuses.values().all(|s| s.applied_index.is_some() && s.applied_index == last);
        last_seen = format!(
            "metadata (applied index, digest) per node {digests:?}, reassignment in flight: {moving}; partition {group} on {hosts:?}: {}",
            statuses
                .values()
                .map(|s| {
                    format!(
                        "[node {} {} term {} leader {:?} last_log {:?} applied {:?}{}]",
                        s.node,
                        s.state,
                        s.term,
                        s.leader,
                        s.last_log_index,
                        s.applied_index,
                        s.failed.as_ref().map(|f| format!(" FAILED {f}")).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        );
        if metadata_agrees && !moving && all && leaders == 1 && applied_all {
            settled_rounds += 1;
            if settled_rounds >= 2 {
                return Ok(hosts);
            }
        } else {
            settled_rounds = 0;
        }
        madsim::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last_seen)
}

/// Writes a replayable schedule as JSON.
pub fn schedule_json(schedule: &[Scheduled]) -> String {
    serde_json::to_string_pretty(schedule).unwrap_or_default()
}
