//! Idle CPU of a real Keel cluster: three `keel node` processes, one topic of `--partitions`
//! partitions (RF 3, so every node hosts every partition's Raft group), no traffic.
//!
//!     cargo build --release -p keel-node --bin keel --example idle_cluster
//!     target/release/examples/idle_cluster --partitions 1000 --heartbeats 1000,2000 --rounds 2
//!
//! For every round and every heartbeat interval (interleaved, so a noisy machine affects them
//! alike): start the cluster in a temporary directory, create the topic, wait until every
//! partition has a leader, let it settle, then read each process's CPU time (user + system,
//! `/proc/<pid>/stat`) over `--window-s` seconds. Prints CPU as % of one core per node.

use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::bail;
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The `keel` binary (default: next to this example's directory, `../keel`).
    #[arg(long)]
    keel: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 1000)]
    partitions: u32,
    /// Raft heartbeat intervals to compare, ms (election timeouts are 3x and 6x).
    #[arg(long, default_value = "1000,2000", value_delimiter = ',')]
    heartbeats: Vec<u64>,
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Seconds between every partition having a leader and the measurement.
    #[arg(long, default_value_t = 20)]
    settle_s: u64,
    #[arg(long, default_value_t = 30)]
    window_s: u64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Clock ticks of user + system time of `pid`.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; fields after its closing parenthesis are fixed.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// `/proc` reports CPU time in clock ticks: USER_HZ, 100 on every Linux this runs on.
fn ticks_per_second() -> u64 {
    100
}

struct Cluster {
    keel: std::path::PathBuf,
    nodes: String,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    fn start(keel: &std::path::Path, heartbeat_ms: u64) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let ports = [free_port()?, free_port()?, free_port()?];
        let nodes =
            ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
        let mut children = Vec::new();
        for id in 1..=3 {
            let child = Command::new(keel)
                .args(["node", "--id", &id.to_string(), "--data-dir"])
                .arg(dir.path().join(format!("node-{id}")))
                .args(["--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
                .args(["--nodes", &nodes, "--cluster-id", "idle-cluster"])
                .args(["--raft-heartbeat-ms", &heartbeat_ms.to_string()])
                .args(["--raft-election-timeout-min-ms", &(heartbeat_ms * 3).to_string()])
                .args(["--raft-election-timeout-max-ms", &(heartbeat_ms * 6).to_string()])
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", keel.display()))?;
            children.push(child);
        }
        Ok(Cluster { keel: keel.to_path_buf(), nodes, children, _dir: dir })
    }

    fn keel(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.keel)
            .args(args)
            .args(["--nodes", &self.nodes, "--cluster-id", "idle-cluster"])
            .env("RUST_LOG", "error")
            .output()?;
        if !out.status.success() {
            bail!("keel {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn leaders(&self) -> anyhow::Result<usize> {
        let json: serde_json::Value = serde_json::from_str(&self.keel(&["cluster", "status", "--json"])?)?;
        let partitions = json["partitions"].as_array().context("partitions")?;
        Ok(partitions.iter().filter(|p| !p["leader"].is_null()).count())
    }
}

/// CPU % of one core per node, for one cluster with `heartbeat_ms`.
fn measure(args: &Args, keel: &std::path::Path, heartbeat_ms: u64) -> anyhow::Result<Vec<f64>> {
    let cluster = Cluster::start(keel, heartbeat_ms)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let created = cluster.keel(&["topic", "create", "idle", "--partitions", &args.partitions.to_string()]);
        if created.is_ok() || Instant::now() > deadline {
            created?;
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while cluster.leaders().unwrap_or(0) < args.partitions as usize {
        if Instant::now() > deadline {
            bail!("not every partition got a leader within 180 s");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(args.settle_s));
    let pids: Vec<u32> = cluster.children.iter().map(Child::id).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.window_s));
    let after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<anyhow::Result<_>>()?;
    let seconds = t0.elapsed().as_secs_f64();
    let leaders = cluster.leaders()?;
    if leaders < args.partitions as usize {
        bail!("{leaders} of {} partitions had a leader after the window", args.partitions);
    }
    Ok(before.iter().zip(&after).map(|(b, a)| (a - b) as f64 / ticks_per_second() as f64 / seconds * 100.0).collect())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let keel = match &args.keel {
        Some(k) => k.clone(),
        None => std::env::current_exe()?.parent().and_then(|d| d.parent()).context("exe dir")?.join("keel"),
    };
    println!("{} partitions, RF 3, 3 nodes; CPU % of one core per node over {} s", args.partitions, args.window_s);
    for round in 1..=args.rounds {
        for &hb in &args.heartbeats {
            let cpu = measure(&args, &keel, hb)?;
            let mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
            println!(
                "round {round} heartbeat {hb} ms: nodes {} — mean {mean:.1}%",
                cpu.iter().map(|c| format!("{c:.1}%")).collect::<Vec<_>>().join(" ")
            );
        }
    }
    Ok(())
}
