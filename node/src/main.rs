//! `keel`: run nodes, look at them, move records in and out.
//!
//! Today this speaks Keel's internal client protocol (the Kafka listener arrives with the Kafka
//! protocol work). Flags are parsed by clap, validated into `NodeConfig`, and nothing below this
//! file sees a flag.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use bytes::Bytes;
use clap::Parser;
use clap::Subcommand;
use keel_core::batch;
use keel_core::log::LogConfig;
use keel_core::storage::fs::FsStorage;
use keel_node::client;
use keel_node::node::Node;
use keel_node::node::NodeConfig;
use keel_node::partition::LogObserver;
use keel_node::partition::ReplicaConfig;
use keel_node::raft::network::decode;
use keel_node::raft::network::encode;
use keel_node::transport::ClientOnly;
use keel_node::transport::Transport;
use keel_node::transport::TransportConfig;

const DEV_CLUSTER_ID: &str = "keel-dev";
const DEV_NODES: &str = "1=127.0.0.1:19201,2=127.0.0.1:19202,3=127.0.0.1:19203";

#[derive(Parser)]
#[command(name = "keel", version, about = "Keel: a replicated message log whose guarantees are tested")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ClusterArgs {
    /// The cluster's nodes: `ID=HOST:PORT,...` (internal RPC addresses).
    #[arg(long, env = "KEEL_NODES", default_value = DEV_NODES)]
    nodes: String,
    /// Cluster id; connections between different clusters are refused.
    #[arg(long, env = "KEEL_CLUSTER_ID", default_value = DEV_CLUSTER_ID)]
    cluster_id: String,
    /// Partitions (Raft groups) every node replicates.
    #[arg(long, env = "KEEL_PARTITIONS", default_value_t = 1)]
    partitions: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a local 3-node cluster in this process (data under --data-dir; Ctrl-C stops it).
    Dev {
        #[arg(long, default_value = "./keel-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Runs one node of a cluster.
    Node {
        /// This node's id (must appear in --nodes).
        #[arg(long, env = "KEEL_NODE_ID")]
        id: u64,
        #[arg(long, env = "KEEL_DATA_DIR")]
        data_dir: PathBuf,
        /// Address to listen on (default: this node's address from --nodes).
        #[arg(long, env = "KEEL_LISTEN")]
        listen: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Shows every node's view of every partition.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Appends lines from stdin (`key:value` with --key-separator, else the line is the value).
    Produce {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[arg(long, default_value_t = 0)]
        partition: u64,
        #[arg(long)]
        key_separator: Option<char>,
    },
    /// Prints committed records of a partition from an offset.
    Consume {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[arg(long, default_value_t = 0)]
        partition: u64,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Keep waiting for new records.
        #[arg(long)]
        follow: bool,
    },
}

fn parse_nodes(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (id, addr) = part.split_once('=').with_context(|| format!("--nodes entry {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().with_context(|| format!("node id {id:?} is not a number"))?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            bail!("node {id} appears twice in --nodes");
        }
    }
    if out.is_empty() {
        bail!("--nodes names no node");
    }
    Ok(out)
}

fn node_config(id: u64, data_dir: PathBuf, cluster: &ClusterArgs) -> anyhow::Result<NodeConfig> {
    let peers = parse_nodes(&cluster.nodes)?;
    if !peers.contains_key(&id) {
        bail!("node {id} is not in --nodes {}", cluster.nodes);
    }
    let raft = keel_node::raft::config(&cluster.cluster_id, keel_node::raft::RaftTiming::default())
        .map_err(anyhow::Error::msg)
        .context("raft settings")?;
    Ok(NodeConfig {
        id,
        data_dir,
        peers,
        partitions: (0..cluster.partitions).collect(),
        replica: ReplicaConfig::new(LogConfig::default(), raft),
        transport: TransportConfig::new(cluster.cluster_id.clone()),
    })
}

async fn start_node(config: NodeConfig, listen: Option<String>) -> anyhow::Result<Arc<Node>> {
    let addr = listen.unwrap_or_else(|| config.peers[&config.id].clone());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("node {} cannot listen on {addr}", config.id))?;
    let id = config.id;
    let node = Node::start(config, Arc::new(FsStorage), listener, Arc::new(LogObserver))
        .await
        .with_context(|| format!("node {id} failed to start"))?;
    tracing::info!(node = id, %addr, "node started");
    Ok(node)
}

/// A client of the cluster, with the leader it last found per partition.
struct Client {
    transport: Transport,
    nodes: Vec<u64>,
}

impl Client {
    fn new(cluster: &ClusterArgs) -> anyhow::Result<Client> {
        let peers = parse_nodes(&cluster.nodes)?;
        // A client id far above node ids, from the process id so concurrent CLIs differ.
        let id = (1u64 << 40) + u64::from(std::process::id());
        let transport = Transport::new(id, TransportConfig::new(cluster.cluster_id.clone()), Arc::new(ClientOnly))?;
        for (n, addr) in &peers {
            transport.set_peer_addr(*n, addr.clone());
        }
        Ok(Client { transport, nodes: peers.keys().copied().collect() })
    }

    async fn status(&self, node: u64, partition: u64) -> anyhow::Result<client::Status> {
        let resp = self
            .transport
            .call(
                node,
                partition,
                client::KIND_STATUS,
                encode(&()).map_err(anyhow::Error::msg)?,
                Duration::from_secs(2),
            )
            .await?;
        decode(&resp).map_err(anyhow::Error::msg)
    }

    async fn leader(&self, partition: u64) -> anyhow::Result<u64> {
        for _ in 0..50 {
            for &n in &self.nodes {
                if let Ok(s) = self.status(n, partition).await
                    && let Some(l) = s.leader
                {
                    return Ok(l);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("no leader for partition {partition} (is the cluster running? try `keel dev`)")
    }

    async fn append(&self, partition: u64, batch: Bytes) -> anyhow::Result<u64> {
        let mut target = self.leader(partition).await?;
        for _ in 0..20 {
            let resp = self
                .transport
                .call(target, partition, client::KIND_APPEND, batch.clone(), Duration::from_secs(10))
                .await?;
            match decode::<client::AppendResponse>(&resp).map_err(anyhow::Error::msg)? {
                client::AppendResponse::Ok { base_offset, .. } => return Ok(base_offset),
                client::AppendResponse::NotLeader { leader: Some(l) } => target = l,
                client::AppendResponse::NotLeader { leader: None } => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    target = self.leader(partition).await?;
                }
                client::AppendResponse::Rejected(e) => bail!("rejected: {e}"),
                client::AppendResponse::Unknown(e) => {
                    bail!("outcome unknown (the record may or may not be stored): {e}")
                }
            }
        }
        bail!("the leader of partition {partition} kept moving")
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev { data_dir, cluster } => {
            let peers = parse_nodes(&cluster.nodes)?;
            let mut nodes = Vec::new();
            for &id in peers.keys() {
                let config = node_config(id, data_dir.join(format!("node-{id}")), &cluster)?;
                nodes.push(start_node(config, None).await?);
            }
            println!(
                "keel dev: {} nodes up ({}), data in {}; Ctrl-C stops",
                nodes.len(),
                cluster.nodes,
                data_dir.display()
            );
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            for n in nodes {
                n.shutdown().await;
            }
            Ok(())
        }
        Command::Node { id, data_dir, listen, cluster } => {
            let node = start_node(node_config(id, data_dir, &cluster)?, listen).await?;
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            node.shutdown().await;
            Ok(())
        }
        Command::Status { cluster, json } => {
            let c = Client::new(&cluster)?;
            let mut rows = Vec::new();
            for p in 0..cluster.partitions {
                for &n in &c.nodes {
                    match c.status(n, p).await {
                        Ok(s) => rows.push(Ok(s)),
                        Err(e) => rows.push(Err((n, p, e.to_string()))),
                    }
                }
            }
            if json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| match r {
                        Ok(s) => serde_json::json!({"node": s.node, "partition": s.group, "state": s.state, "term": s.term, "leader": s.leader, "applied_index": s.applied_index, "high_watermark": s.high_watermark, "failed": s.failed}),
                        Err((n, p, e)) => serde_json::json!({"node": n, "partition": p, "error": e}),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<6} {:<10} {:<10} {:<6} {:<7} {:<9} {:<14}",
                    "node", "partition", "state", "term", "leader", "applied", "high_watermark"
                );
                for r in &rows {
                    match r {
                        Ok(s) => println!(
                            "{:<6} {:<10} {:<10} {:<6} {:<7} {:<9} {:<14}{}",
                            s.node,
                            s.group,
                            s.state,
                            s.term,
                            s.leader.map_or("-".into(), |l| l.to_string()),
                            s.applied_index.map_or("-".into(), |a| a.to_string()),
                            s.high_watermark,
                            s.failed.as_ref().map(|f| format!("  FAILED: {f}")).unwrap_or_default()
                        ),
                        Err((n, p, e)) => println!("{n:<6} {p:<10} unreachable: {e}"),
                    }
                }
            }
            if rows.iter().all(|r| r.is_err()) {
                bail!("no node answered");
            }
            Ok(())
        }
        Command::Produce { cluster, partition, key_separator } => {
            let c = Client::new(&cluster)?;
            let stdin = std::io::stdin();
            let mut count = 0u64;
            for line in stdin.lock().lines() {
                let line = line.context("reading stdin")?;
                let (key, value) = match key_separator.and_then(|sep| line.split_once(sep)) {
                    Some((k, v)) => (Some(k.to_string()), v.to_string()),
                    None => (None, line),
                };
                let now = keel_node::clock::wall_clock_ms();
                let mut b = batch::BatchBuilder::new(now);
                b.push(now, key.as_deref().map(str::as_bytes), Some(value.as_bytes()));
                let offset = c.append(partition, Bytes::from(b.build())).await?;
                tracing::debug!(offset, "appended");
                count += 1;
            }
            eprintln!("produced {count} records to partition {partition}");
            Ok(())
        }
        Command::Consume { cluster, partition, mut offset, follow } => {
            let c = Client::new(&cluster)?;
            let mut out = std::io::stdout().lock();
            loop {
                let leader = c.leader(partition).await?;
                let req = client::ReadRequest { offset, bytes_max: 1 << 20, leader_only: true };
                let resp = c
                    .transport
                    .call(
                        leader,
                        partition,
                        client::KIND_READ,
                        encode(&req).map_err(anyhow::Error::msg)?,
                        Duration::from_secs(5),
                    )
                    .await?;
                let (batches, hw) = match decode::<client::ReadResponse>(&resp).map_err(anyhow::Error::msg)? {
                    client::ReadResponse::Ok { batches, high_watermark, .. } => (batches, high_watermark),
                    client::ReadResponse::NotLeader { .. } => continue,
                    client::ReadResponse::Error(e) => bail!("read failed: {e}"),
                };
                for b in &batches {
                    let h = batch::BatchHeader::parse(b)?;
                    if !h.is_control() {
                        for r in batch::records(b)? {
                            let o = h.base_offset as u64 + r.offset_delta as u64;
                            if o < offset {
                                continue;
                            }
                            let key = r.key.map(|k| String::from_utf8_lossy(&k).into_owned()).unwrap_or_default();
                            let value = r.value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
                            writeln!(out, "{o}\t{key}\t{value}")?;
                        }
                    }
                    offset = h.last_offset() as u64 + 1;
                }
                if batches.is_empty() && offset >= hw {
                    if !follow {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keel: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
