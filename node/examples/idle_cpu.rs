//! Benchmark: the CPU an idle 3-node cluster spends keeping many partition groups alive
//! (ticks, heartbeats, their answers), with heartbeats batched per node pair and without.
//! Not a test: machines are shared and noisy, so batched and unbatched clusters are measured
//! interleaved in one run and compared there.
//!
//!     cargo run --release -p keel-node --example idle_cpu -- [--partitions 1000] [--window-s 30]
//!         [--heartbeat-ms 2000] [--election-min-ms 6000] [--election-max-ms 12000]
//!         [--batch both|on|off] [--batch-window-ms 25] [--rounds 1] [--spread-leaders]
//!         [--worker-threads N]
//!
//! The Raft timing defaults are for a thousand partitions per node: openraft wakes every group
//! every `heartbeat_ms * 13 / 64` ms (its tick), and at 1,000 groups those wake-ups, not the
//! frames, are most of the idle cost; see docs/benchmarks.md.
//!
//! For each round and each batching mode it starts three nodes as separate OS processes (this
//! program re-executed with `--node N`). Each hosts the same partition groups — a
//! `partition::Replica` on `FsStorage` in a temporary directory — behind its own transport
//! handler: Raft RPCs to `raft::network::serve`, heartbeat batches to
//! `raft::heartbeat::serve_heartbeat_batch`. Node 1 initializes every group with all three as
//! voters (so it leads them all; `--spread-leaders` has group g initialized, hence led, by node
//! `g % 3 + 1`). Once every node sees a leader in every group, the cluster settles, and then each
//! process's CPU time (user + sys, `/proc/<pid>/stat`) and transport counters are read at the
//! start and the end of the window. Reported: CPU % of one core per node, frames sent per second
//! per node, heartbeats and batch calls per second (batched runs).
//!
//! Parent and children talk over the children's stdin/stdout, one line per message.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::path::PathBuf;
use std::process::Child;
use std::process::ChildStdin;
use std::process::ChildStdout;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::bail;
use bytes::Bytes;
use clap::Parser;
use clap::ValueEnum;
use futures::future::BoxFuture;
use keel_core::log::LogConfig;
use keel_core::storage::fs::FsStorage;
use keel_node::partition::LogObserver;
use keel_node::partition::Replica;
use keel_node::partition::ReplicaConfig;
use keel_node::raft::NodeId;
use keel_node::raft::Raft;
use keel_node::raft::RaftTiming;
use keel_node::raft::heartbeat;
use keel_node::raft::heartbeat::HeartbeatBatchConfig;
use keel_node::raft::heartbeat::KIND_HEARTBEAT_BATCH;
use keel_node::raft::heartbeat::NODE_GROUP;
use keel_node::raft::network;
use keel_node::transport::Handler;
use keel_node::transport::Transport;
use keel_node::transport::TransportConfig;
use openraft::BasicNode;
use openraft_rt::WatchReceiver;

const NODES: [NodeId; 3] = [1, 2, 3];
const CLUSTER: &str = "idle-cpu";
/// Longest wait for every group to have a leader.
const STARTUP_S_MAX: u64 = 600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Batch {
    On,
    Off,
    Both,
}

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Partition groups every node hosts.
    #[arg(long, default_value_t = 1000)]
    partitions: u64,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 30)]
    window_s: u64,
    /// Wait after every group has a leader before measuring, seconds.
    #[arg(long, default_value_t = 5)]
    settle_s: u64,
    /// Raft heartbeat interval, ms (openraft ticks every heartbeat_ms * 13 / 64 ms per group).
    #[arg(long, default_value_t = 2000)]
    heartbeat_ms: u64,
    #[arg(long, default_value_t = 6000)]
    election_min_ms: u64,
    #[arg(long, default_value_t = 12000)]
    election_max_ms: u64,
    /// Heartbeat batching: on, off, or both (interleaved, off first in each round).
    #[arg(long, value_enum, default_value_t = Batch::Both)]
    batch: Batch,
    /// Batching window, ms (`HeartbeatBatchConfig::window_ms`).
    #[arg(long, default_value_t = 25)]
    batch_window_ms: u64,
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Group g is initialized (and so first led) by node g % 3 + 1 instead of node 1.
    #[arg(long)]
    spread_leaders: bool,
    /// Tokio worker threads per node (default: one per core, as the `keel` binary).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Where the nodes' data directories go (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,

    // Set by the parent for a child process.
    #[arg(long, hide = true)]
    node: Option<NodeId>,
    #[arg(long, hide = true, value_delimiter = ',')]
    ports: Vec<u16>,
    #[arg(long, hide = true)]
    batch_on: bool,
}

impl Args {
    fn timing(&self) -> RaftTiming {
        RaftTiming {
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_min_ms,
            election_timeout_max_ms: self.election_max_ms,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.node {
        Some(id) => child(id, args),
        None => parent(args),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: runs the clusters and measures them.

/// One node's counters at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    cpu_s: f64,
    frames_out: u64,
    frames_in: u64,
    heartbeats: u64,
    batches: u64,
}

struct NodeProc {
    id: NodeId,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NodeProc {
    /// Sends one command and reads its one-line answer.
    fn ask(&mut self, command: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("node {} exited", self.id);
        }
        Ok(line.trim().to_string())
    }

    fn numbers(&mut self, command: &str) -> anyhow::Result<Vec<u64>> {
        let line = self.ask(command)?;
        line.split_whitespace().map(|w| w.parse().with_context(|| format!("bad answer {line:?}"))).collect()
    }

    fn sample(&mut self, ticks_per_s: f64) -> anyhow::Result<Sample> {
        let n = self.numbers("stats")?;
        Ok(Sample {
            cpu_s: cpu_ticks(self.child.id())? as f64 / ticks_per_s,
            frames_out: n[0],
            frames_in: n[1],
            heartbeats: n[2],
            batches: n[3],
        })
    }
}

/// User + system CPU time of process `pid`, in clock ticks (fields 14 and 15 of
/// `/proc/<pid>/stat`, counted after the parenthesized command name).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field 14 is index 11.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn clock_ticks_per_s() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_ports() -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> =
        NODES.iter().map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

/// Per node: CPU % of one core, frames out/s, frames in/s, heartbeats/s, batches/s.
type Figures = BTreeMap<NodeId, [f64; 5]>;

fn run_cluster(args: &Args, batch_on: bool, ticks_per_s: f64) -> anyhow::Result<Figures> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.join(format!("run-{}", std::process::id())),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let ports = free_ports()?;
    let ports_arg = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let exe = std::env::current_exe()?;
    let mut nodes = Vec::new();
    for id in NODES {
        let mut cmd = Command::new(&exe);
        cmd.args(["--node", &id.to_string(), "--ports", &ports_arg])
            .args(["--partitions", &args.partitions.to_string()])
            .args(["--heartbeat-ms", &args.heartbeat_ms.to_string()])
            .args(["--election-min-ms", &args.election_min_ms.to_string()])
            .args(["--election-max-ms", &args.election_max_ms.to_string()])
            .args(["--batch-window-ms", &args.batch_window_ms.to_string()])
            .arg("--dir")
            .arg(&dir);
        if batch_on {
            cmd.arg("--batch-on");
        }
        if args.spread_leaders {
            cmd.arg("--spread-leaders");
        }
        if let Some(n) = args.worker_threads {
            cmd.args(["--worker-threads", &n.to_string()]);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        nodes.push(NodeProc { id, child, stdin, stdout });
    }
    let result = measure(args, &mut nodes, ticks_per_s);
    for n in &mut nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
    if args.dir.is_some() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn measure(args: &Args, nodes: &mut [NodeProc], ticks_per_s: f64) -> anyhow::Result<Figures> {
    let started = Instant::now();
    loop {
        let mut ready = true;
        let mut led = 0;
        for n in nodes.iter_mut() {
            // [groups with a leader in this node's view, groups led by this node]
            let s = n.numbers("status")?;
            ready &= s[0] == args.partitions;
            led += s[1];
        }
        if ready && led == args.partitions {
            break;
        }
        if started.elapsed() > Duration::from_secs(STARTUP_S_MAX) {
            bail!("not every group has a leader after {STARTUP_S_MAX} s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let led: Vec<String> = nodes.iter_mut().map(|n| n.ask("status")).collect::<Result<_, _>>()?;
    eprintln!("  every group has a leader after {:.1} s (status per node: {led:?})", started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(args.settle_s));

    let t0 = Instant::now();
    let before: Vec<Sample> = nodes.iter_mut().map(|n| n.sample(ticks_per_s)).collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(args.window_s));
    let after: Vec<Sample> = nodes.iter_mut().map(|n| n.sample(ticks_per_s)).collect::<Result<_, _>>()?;
    let secs = t0.elapsed().as_secs_f64();

    let mut figures = Figures::new();
    for (n, (b, a)) in nodes.iter().zip(before.iter().zip(&after)) {
        let rate = |x: u64, y: u64| (y - x) as f64 / secs;
        figures.insert(
            n.id,
            [
                100.0 * (a.cpu_s - b.cpu_s) / secs,
                rate(b.frames_out, a.frames_out),
                rate(b.frames_in, a.frames_in),
                rate(b.heartbeats, a.heartbeats),
                rate(b.batches, a.batches),
            ],
        );
    }
    Ok(figures)
}

fn parent(args: Args) -> anyhow::Result<()> {
    let ticks_per_s = clock_ticks_per_s();
    let modes: Vec<bool> = match args.batch {
        Batch::On => vec![true],
        Batch::Off => vec![false],
        Batch::Both => vec![false, true],
    };
    println!(
        "idle_cpu: {} partitions x 3 nodes, heartbeat {} ms, election {}..{} ms, batch window {} ms, \
         window {} s, leaders {}, worker threads {}",
        args.partitions,
        args.heartbeat_ms,
        args.election_min_ms,
        args.election_max_ms,
        args.batch_window_ms,
        args.window_s,
        if args.spread_leaders { "spread over the nodes" } else { "all on node 1" },
        args.worker_threads.map_or("one per core".to_string(), |n| n.to_string()),
    );
    println!("| round | batching | node | CPU % of one core | frames out/s | frames in/s | heartbeats/s | batches/s |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    // (batching, node) -> CPU % per round
    let mut cpu: BTreeMap<(bool, NodeId), Vec<f64>> = BTreeMap::new();
    for round in 1..=args.rounds {
        for &batch_on in &modes {
            eprintln!("round {round}, batching {}", if batch_on { "on" } else { "off" });
            let figures = run_cluster(&args, batch_on, ticks_per_s)?;
            for (id, f) in &figures {
                println!(
                    "| {round} | {} | {id} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
                    if batch_on { "on" } else { "off" },
                    f[0],
                    f[1],
                    f[2],
                    f[3],
                    f[4]
                );
                cpu.entry((batch_on, *id)).or_default().push(f[0]);
            }
        }
    }
    if modes.len() == 2 {
        println!();
        println!("| node | CPU % off | CPU % on | on / off |");
        println!("|---:|---:|---:|---:|");
        for id in NODES {
            let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
            let off = mean(&cpu[&(false, id)]);
            let on = mean(&cpu[&(true, id)]);
            println!("| {id} | {off:.1} | {on:.1} | {:.2} |", on / off);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A child: one node.

type Rafts = Arc<Mutex<BTreeMap<u64, Raft>>>;

fn raft_of(rafts: &Rafts, group: u64) -> Option<Raft> {
    rafts.lock().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
}

/// Dispatches Raft RPCs to the group's `Raft` and heartbeat batches to the batch server: what a
/// node's dispatcher does for Raft traffic.
struct Dispatch {
    /// This node's id, which is also every local replica's Raft id (incarnation 0).
    id: NodeId,
    rafts: Rafts,
}

impl Handler for Dispatch {
    fn handle(&self, _from: NodeId, group: u64, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let (rafts, id) = (self.rafts.clone(), self.id);
        Box::pin(async move {
            if group == NODE_GROUP && kind == KIND_HEARTBEAT_BATCH {
                return heartbeat::serve_heartbeat_batch(|g| raft_of(&rafts, g).map(|r| (r, id)), &payload).await;
            }
            let raft = raft_of(&rafts, group).ok_or_else(|| format!("no partition {group}"))?;
            network::serve(&raft, id, kind, &payload).await
        })
    }
}

fn child(id: NodeId, args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    let rafts: Rafts = Arc::default();
    // The replicas live as long as the process.
    let (transport, _replicas) = rt.block_on(start_node(id, &args, rafts.clone()))?;
    let batcher = heartbeat::batcher(&transport);

    // Commands from the parent, one per line on stdin; one answer line each on stdout.
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let answer = match line?.trim() {
            "status" => {
                let rafts: Vec<Raft> = rafts.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
                let leaders: Vec<Option<NodeId>> =
                    rafts.iter().map(|r| r.metrics().borrow_watched().current_leader).collect();
                let known = leaders.iter().filter(|l| l.is_some()).count();
                let led = leaders.iter().filter(|l| **l == Some(id)).count();
                format!("{known} {led}")
            }
            "stats" => {
                let t = transport.stats();
                let h = batcher.as_ref().map(|b| b.stats()).unwrap_or_default();
                format!("{} {} {} {}", t.frames_out, t.frames_in, h.heartbeats, h.batches)
            }
            "quit" => break,
            other => format!("unknown command {other:?}"),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

async fn start_node(id: NodeId, args: &Args, rafts: Rafts) -> anyhow::Result<(Transport, Vec<Arc<Replica>>)> {
    let addr = |n: NodeId| format!("127.0.0.1:{}", args.ports[(n - 1) as usize]);
    let transport = Transport::new(id, TransportConfig::new(CLUSTER), Arc::new(Dispatch { id, rafts: rafts.clone() }))?;
    for peer in NODES {
        if peer != id {
            transport.set_peer_addr(peer, addr(peer));
        }
    }
    if args.batch_on {
        let config = HeartbeatBatchConfig { window_ms: args.batch_window_ms, ..HeartbeatBatchConfig::default() };
        heartbeat::enable(&transport, config)?;
    }
    let listener = tokio::net::TcpListener::bind(addr(id)).await?;
    let t = transport.clone();
    tokio::spawn(async move { t.serve(listener).await });

    let raft_config = keel_node::raft::config(CLUSTER, args.timing()).map_err(anyhow::Error::msg)?;
    let config = ReplicaConfig::new(LogConfig::default(), raft_config);
    let members: BTreeMap<NodeId, BasicNode> = NODES.iter().map(|&n| (n, BasicNode::new(addr(n)))).collect();
    let data = args.dir.clone().context("--dir")?.join(format!("node-{id}"));
    let storage = Arc::new(FsStorage);
    let mut replicas = Vec::new();
    for group in 0..args.partitions {
        let dir = data.join("partitions").join(group.to_string());
        let replica =
            Replica::open(id, id, group, storage.clone(), dir, &config, transport.clone(), Arc::new(LogObserver))
                .await?;
        rafts.lock().unwrap_or_else(|p| p.into_inner()).insert(group, replica.raft().clone());
        replicas.push(replica);
    }
    // A peer that has not opened a group yet answers its first election with an error; Raft
    // retries after an election timeout.
    for replica in &replicas {
        let initializer = if args.spread_leaders { replica.group % 3 + 1 } else { NODES[0] };
        if initializer == id {
            replica.initialize(members.clone()).await?;
        }
    }
    Ok((transport, replicas))
}
