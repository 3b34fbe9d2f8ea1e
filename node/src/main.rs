//! `keel`: run nodes, look at them, move records in and out.
//!
//! Today this speaks Keel's internal client protocol (the Kafka listener arrives with the Kafka
//! protocol work): topics and cluster administration go to the metadata group, records to the
//! partition leaders. Flags are parsed by clap, validated into `NodeConfig`, and nothing below this
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
use keel_core::metadata::Command as MetaCommand;
use keel_core::metadata::MetaError;
use keel_core::metadata::Reply;
use keel_core::storage::fs::FsStorage;
use keel_node::client;
use keel_node::kafka::BrokerConfig;
use keel_node::kafka::KafkaConfig;
use keel_node::meta::ProposeResponse;
use keel_node::node::ControlTiming;
use keel_node::node::Node;
use keel_node::node::NodeConfig;
use keel_node::partition::LogObserver;
use keel_node::partition::ReplicaConfig;
use keel_node::raft::heartbeat::HeartbeatBatchConfig;
use keel_node::raft::network::decode;
use keel_node::raft::network::encode;
use keel_node::transport::ClientOnly;
use keel_node::transport::Transport;
use keel_node::transport::TransportConfig;

/// Huge blocks reserve address space: a Kafka request claiming a huge array must not abort the
/// node (see `keel_node::alloc`).
#[global_allocator]
static ALLOC: keel_node::alloc::ReservingAllocator = keel_node::alloc::ReservingAllocator;

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
    /// The metadata group's voters: `ID=HOST:PORT,...` (node-to-node addresses). Clients use
    /// them to find the cluster.
    #[arg(long, global = true, env = "KEEL_NODES", default_value = DEV_NODES)]
    nodes: String,
    /// Cluster id; connections between different clusters are refused.
    #[arg(long, global = true, env = "KEEL_CLUSTER_ID", default_value = DEV_CLUSTER_ID)]
    cluster_id: String,
}

/// Raft timing of every partition and the metadata group. The defaults suit up to a thousand
/// partitions per node (docs/benchmarks.md): each Raft group ticks every
/// `heartbeat_ms * 13 / 64`, so the heartbeat sets the idle cost; a failed leader is replaced
/// after 3–6 s.
#[derive(clap::Args, Clone, Copy)]
struct RaftArgs {
    #[arg(long, env = "KEEL_RAFT_HEARTBEAT_MS", default_value_t = 1000)]
    raft_heartbeat_ms: u64,
    #[arg(long, env = "KEEL_RAFT_ELECTION_TIMEOUT_MIN_MS", default_value_t = 3000)]
    raft_election_timeout_min_ms: u64,
    #[arg(long, env = "KEEL_RAFT_ELECTION_TIMEOUT_MAX_MS", default_value_t = 6000)]
    raft_election_timeout_max_ms: u64,
}

/// The Kafka listener and the broker settings Kafka clients see (Kafka's names and defaults,
/// except `default.replication.factor`, which is 3: Raft needs three replicas to survive a
/// failure).
#[derive(clap::Args, Clone)]
struct KafkaArgs {
    /// Where the Kafka listener binds.
    #[arg(long, env = "KEEL_KAFKA_LISTEN", default_value = "0.0.0.0:9092")]
    kafka_listen: String,
    /// The address Kafka clients are told to use for this node (default: --kafka-listen, with
    /// an unspecified host replaced by the host of --addr).
    #[arg(long, env = "KEEL_KAFKA_ADVERTISED")]
    kafka_advertised: Option<String>,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(clap::Args, Clone, Copy)]
struct BrokerArgs {
    /// `auto.create.topics.enable`: a Metadata request naming an unknown topic creates it.
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of a topic created without a count.
    #[arg(long, env = "KEEL_NUM_PARTITIONS", default_value_t = 1)]
    num_partitions: u32,
    /// `default.replication.factor`: replicas of a topic created without a factor (capped by
    /// the number of nodes).
    #[arg(long, env = "KEEL_DEFAULT_REPLICATION_FACTOR", default_value_t = 3)]
    default_replication_factor: u16,
    /// `message.max.bytes`: the largest record batch a producer may send.
    #[arg(long, env = "KEEL_MESSAGE_MAX_BYTES", default_value_t = 1_048_588)]
    message_max_bytes: usize,
}

impl BrokerArgs {
    fn config(self) -> anyhow::Result<KafkaConfig> {
        if self.num_partitions == 0 {
            bail!("--num-partitions must be at least 1");
        }
        if self.default_replication_factor == 0 {
            bail!("--default-replication-factor must be at least 1");
        }
        if self.message_max_bytes > LogConfig::default().batch_bytes_max {
            bail!(
                "--message-max-bytes {} is above the log's batch limit of {} bytes",
                self.message_max_bytes,
                LogConfig::default().batch_bytes_max
            );
        }
        Ok(KafkaConfig {
            broker: BrokerConfig {
                auto_create_topics_enable: self.auto_create_topics_enable,
                num_partitions: self.num_partitions,
                default_replication_factor: self.default_replication_factor,
                message_max_bytes: self.message_max_bytes,
                ..BrokerConfig::default()
            },
            ..KafkaConfig::default()
        })
    }
}

/// The advertised Kafka address: `advertised`, else `listen` with an unspecified host
/// (`0.0.0.0`, `::`) replaced by the host of the node-to-node address.
fn advertised_kafka_addr(listen: &str, advertised: Option<&str>, node_addr: &str) -> String {
    if let Some(a) = advertised {
        return a.to_string();
    }
    match listen.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]" | "::" | "", port)) => {
            let node_host = node_addr.rsplit_once(':').map_or(node_addr, |(h, _)| h);
            format!("{node_host}:{port}")
        }
        _ => listen.to_string(),
    }
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Creates a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Default: 3, capped by the number of nodes.
        #[arg(long)]
        replication_factor: Option<u16>,
        /// `KEY=VALUE` topic settings (Kafka names), repeatable.
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    /// Lists topics.
    List,
    /// Shows a topic's partitions, replicas and leaders.
    Describe { name: String },
    /// Deletes a topic and its data.
    Delete { name: String },
    /// Grows a topic to `--total` partitions.
    AddPartitions {
        name: String,
        #[arg(long)]
        total: u32,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Nodes, partitions and their leaders.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Moves a partition to another replica set (the first is the preferred leader).
    Reassign {
        topic: String,
        #[arg(long)]
        partition: u32,
        /// Comma-separated node ids.
        #[arg(long)]
        replicas: String,
    },
    /// Drains a node: its replicas move to the other nodes, then it leaves the cluster.
    Decommission { node: u64 },
}

#[derive(Subcommand)]
enum Command {
    /// Runs a local 3-node cluster in this process (data under --data-dir; Ctrl-C stops it).
    Dev {
        #[arg(long, default_value = "./keel-data")]
        data_dir: PathBuf,
        /// Kafka port of the first node; the others follow (9092, 9093, 9094).
        #[arg(long, default_value_t = 9092)]
        kafka_port: u16,
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        raft: RaftArgs,
    },
    /// Runs one node of a cluster.
    Node {
        /// This node's id.
        #[arg(long, env = "KEEL_NODE_ID")]
        id: u64,
        #[arg(long, env = "KEEL_DATA_DIR")]
        data_dir: PathBuf,
        /// This node's node-to-node address as other nodes reach it (default: its address in
        /// --nodes; required for a node that is not a metadata voter).
        #[arg(long, env = "KEEL_ADDR")]
        addr: Option<String>,
        /// Address to listen on (default: --addr).
        #[arg(long, env = "KEEL_LISTEN")]
        listen: Option<String>,
        /// Failure domain; replicas spread over racks.
        #[arg(long, env = "KEEL_RACK")]
        rack: Option<String>,
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        raft: RaftArgs,
    },
    /// Topic administration.
    Topic {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Cluster status and administration.
    Cluster {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Appends lines from stdin (`key:value` with --key-separator, else the line is the value).
    Produce {
        #[command(flatten)]
        cluster: ClusterArgs,
        topic: String,
        #[arg(long, default_value_t = 0)]
        partition: u32,
        #[arg(long)]
        key_separator: Option<char>,
    },
    /// Prints committed records of a partition from an offset.
    Consume {
        #[command(flatten)]
        cluster: ClusterArgs,
        topic: String,
        #[arg(long, default_value_t = 0)]
        partition: u32,
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

#[allow(clippy::too_many_arguments)]
fn node_config(
    id: u64,
    data_dir: PathBuf,
    addr: Option<String>,
    rack: Option<String>,
    kafka_advertised: (&str, Option<&str>),
    default_replication_factor: u16,
    cluster: &ClusterArgs,
    raft: RaftArgs,
) -> anyhow::Result<NodeConfig> {
    if i32::try_from(id).is_err() {
        bail!("node id {id} is too large: Kafka clients need ids up to {}", i32::MAX);
    }
    let voters = parse_nodes(&cluster.nodes)?;
    let addr = match addr.or_else(|| voters.get(&id).cloned()) {
        Some(a) => a,
        None => bail!("node {id} is not a voter in --nodes {}, so it needs --addr", cluster.nodes),
    };
    let timing = keel_node::raft::RaftTiming {
        heartbeat_ms: raft.raft_heartbeat_ms,
        election_timeout_min_ms: raft.raft_election_timeout_min_ms,
        election_timeout_max_ms: raft.raft_election_timeout_max_ms,
    };
    let raft =
        keel_node::raft::config(&cluster.cluster_id, timing).map_err(anyhow::Error::msg).context("raft settings")?;
    let metadata_raft = keel_node::raft::metadata_config(&cluster.cluster_id, timing)
        .map_err(anyhow::Error::msg)
        .context("raft settings")?;
    let (kafka_listen, kafka_advertised) = kafka_advertised;
    Ok(NodeConfig {
        id,
        data_dir,
        kafka_addr: advertised_kafka_addr(kafka_listen, kafka_advertised, &addr),
        addr,
        rack,
        voters,
        default_replication_factor,
        replica: ReplicaConfig::new(LogConfig::default(), raft),
        metadata_raft,
        transport: TransportConfig::new(cluster.cluster_id.clone()),
        // A heartbeat waits at most 1/20 of the interval for others to share its frame.
        heartbeat_batch: HeartbeatBatchConfig {
            window_ms: (timing.heartbeat_ms / 20).clamp(1, 25),
            ..HeartbeatBatchConfig::default()
        },
        timing: ControlTiming::default(),
    })
}

async fn start_node(
    mut config: NodeConfig,
    listen: Option<String>,
    kafka_listen: &str,
    kafka: KafkaConfig,
) -> anyhow::Result<Arc<Node>> {
    let addr = listen.unwrap_or_else(|| config.addr.clone());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("node {} cannot listen on {addr}", config.id))?;
    let kafka_listener = tokio::net::TcpListener::bind(kafka_listen)
        .await
        .with_context(|| format!("node {} cannot listen for Kafka clients on {kafka_listen}", config.id))?;
    // Port 0 picks a free port; advertise the one picked.
    if let Some(host) = config.kafka_addr.strip_suffix(":0")
        && let Ok(bound) = kafka_listener.local_addr()
    {
        config.kafka_addr = format!("{host}:{}", bound.port());
    }
    let id = config.id;
    let advertised = config.kafka_addr.clone();
    let node = Node::start(config, Arc::new(FsStorage), listener, Arc::new(LogObserver))
        .await
        .with_context(|| format!("node {id} failed to start"))?;
    tokio::spawn(keel_node::kafka::serve(node.clone(), kafka_listener, kafka));
    tracing::info!(node = id, %addr, kafka = %kafka_listen, %advertised, "node started");
    Ok(node)
}

/// A client of the cluster over the internal protocol.
struct Client {
    transport: Transport,
    nodes: Vec<u64>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

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

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        node: u64,
        group: u64,
        kind: u8,
        body: Bytes,
    ) -> anyhow::Result<T> {
        let resp = self.transport.call(node, group, kind, body, CALL_TIMEOUT).await?;
        decode(&resp).map_err(anyhow::Error::msg)
    }

    /// The cluster as the first answering node knows it; learns every node's address.
    async fn view(&self) -> anyhow::Result<client::ClusterView> {
        let mut last = None;
        for &n in &self.nodes {
            match self
                .call::<client::ClusterView>(n, client::METADATA_GROUP, client::KIND_META_READ, Bytes::new())
                .await
            {
                Ok(v) => {
                    for info in v.metadata.nodes.values() {
                        self.transport.set_peer_addr(info.id, info.addr.clone());
                    }
                    return Ok(v);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no node")))
            .context("no node answered (is the cluster running? try `keel dev`)")
    }

    /// Proposes a metadata command through the metadata leader.
    async fn propose(&self, cmd: &MetaCommand) -> anyhow::Result<Result<Reply, MetaError>> {
        let body = encode(cmd).map_err(anyhow::Error::msg)?;
        let mut target = self.view().await?.metadata_leader;
        for attempt in 0..30 {
            let to = target.unwrap_or(self.nodes[attempt % self.nodes.len()]);
            match self
                .call::<ProposeResponse>(to, client::METADATA_GROUP, client::KIND_META_PROPOSE, body.clone())
                .await
            {
                Ok(ProposeResponse::Applied(r)) => return Ok(r),
                Ok(ProposeResponse::NotLeader { leader }) => target = leader,
                Ok(ProposeResponse::Unknown(e)) => bail!("outcome unknown (it may or may not apply): {e}"),
                Err(_) => target = None,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("no metadata leader answered")
    }

    /// The group id of a topic's partition.
    async fn group(&self, topic: &str, partition: u32) -> anyhow::Result<u64> {
        let v = self.view().await?;
        let t = v.metadata.topics.get(topic).with_context(|| format!("unknown topic '{topic}'"))?;
        let p = t.partitions.get(partition as usize).with_context(|| {
            format!("topic '{topic}' has {} partitions; there is no partition {partition}", t.partitions.len())
        })?;
        Ok(p.group)
    }

    async fn leader(&self, group: u64) -> anyhow::Result<u64> {
        for _ in 0..50 {
            if let Ok(v) = self.view().await
                && let Some(l) = v.leaders.get(&group)
            {
                return Ok(l.leader);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("no leader for partition group {group}")
    }

    async fn append(&self, group: u64, batch: Bytes) -> anyhow::Result<u64> {
        let mut target = self.leader(group).await?;
        for _ in 0..20 {
            let resp =
                self.transport.call(target, group, client::KIND_APPEND, batch.clone(), Duration::from_secs(10)).await?;
            match decode::<client::AppendResponse>(&resp).map_err(anyhow::Error::msg)? {
                client::AppendResponse::Ok { base_offset, .. } => return Ok(base_offset),
                client::AppendResponse::NotLeader { leader: Some(l) } => target = l,
                client::AppendResponse::NotLeader { leader: None } => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    target = self.leader(group).await?;
                }
                client::AppendResponse::Rejected(e) => bail!("rejected: {e}"),
                client::AppendResponse::Unknown(e) => {
                    bail!("outcome unknown (the record may or may not be stored): {e}")
                }
            }
        }
        bail!("the leader of partition group {group} kept moving")
    }
}

fn parse_configs(configs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    configs
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("--config {c:?} is not KEY=VALUE"))
        })
        .collect()
}

fn meta_result(r: Result<Reply, MetaError>) -> anyhow::Result<Reply> {
    r.map_err(|e| anyhow::anyhow!("refused: {e}"))
}

fn print_topic(v: &client::ClusterView, t: &keel_core::metadata::Topic) {
    println!(
        "topic {} id {} partitions {} replication-factor {}",
        t.name,
        t.id,
        t.partitions.len(),
        t.replication_factor
    );
    for (k, val) in &t.configs {
        println!("  config {k}={val}");
    }
    println!(
        "  {:<10} {:<8} {:<8} {:<7} {:<16} {:<10}",
        "partition", "group", "leader", "epoch", "replicas", "moving-to"
    );
    for (p, a) in t.partitions.iter().enumerate() {
        let leader = v.leaders.get(&a.group);
        println!(
            "  {:<10} {:<8} {:<8} {:<7} {:<16} {:<10}",
            p,
            a.group,
            leader.map_or("-".into(), |l| l.leader.to_string()),
            leader.map_or("-".into(), |l| l.term.to_string()),
            join(&a.replicas),
            a.target.as_ref().map_or("-".into(), |t| join(t))
        );
    }
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

async fn topic_command(cluster: &ClusterArgs, command: TopicCommand) -> anyhow::Result<()> {
    let c = Client::new(cluster)?;
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs } => {
            let cmd = MetaCommand::CreateTopic {
                name: name.clone(),
                partitions,
                replication_factor,
                configs: parse_configs(&configs)?,
            };
            match meta_result(c.propose(&cmd).await?)? {
                Reply::TopicCreated { id, .. } => println!("created topic {name} ({id}) with {partitions} partitions"),
                other => println!("{other:?}"),
            }
        }
        TopicCommand::List => {
            let v = c.view().await?;
            for t in v.metadata.topics.values() {
                println!("{}\t{} partitions\trf {}", t.name, t.partitions.len(), t.replication_factor);
            }
        }
        TopicCommand::Describe { name } => {
            let v = c.view().await?;
            let t = v.metadata.topics.get(&name).with_context(|| format!("unknown topic '{name}'"))?;
            print_topic(&v, t);
        }
        TopicCommand::Delete { name } => {
            meta_result(c.propose(&MetaCommand::DeleteTopic { name: name.clone() }).await?)?;
            println!("deleted topic {name}");
        }
        TopicCommand::AddPartitions { name, total } => {
            meta_result(c.propose(&MetaCommand::CreatePartitions { name: name.clone(), total }).await?)?;
            println!("topic {name} now has {total} partitions");
        }
    }
    Ok(())
}

async fn cluster_command(cluster: &ClusterArgs, command: ClusterCommand) -> anyhow::Result<()> {
    let c = Client::new(cluster)?;
    match command {
        ClusterCommand::Status { json } => {
            let v = c.view().await?;
            if json {
                let nodes: Vec<_> = v.metadata.nodes.values().map(|n| serde_json::json!({"id": n.id, "addr": n.addr, "rack": n.rack, "decommissioning": n.decommissioning})).collect();
                let partitions: Vec<_> = v
                    .metadata
                    .topics
                    .values()
                    .flat_map(|t| t.partitions.iter().enumerate().map(move |(p, a)| (t, p, a)))
                    .map(|(t, p, a)| {
                        let l = v.leaders.get(&a.group);
                        serde_json::json!({"topic": t.name, "partition": p, "group": a.group, "replicas": a.replicas, "target": a.target, "leader": l.map(|l| l.leader), "epoch": l.map(|l| l.term)})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"metadata_leader": v.metadata_leader, "nodes": nodes, "partitions": partitions})
                    )?
                );
                return Ok(());
            }
            println!("metadata leader: {}", v.metadata_leader.map_or("-".into(), |l| l.to_string()));
            println!("{:<6} {:<24} {:<10} {:<8} {:<8}", "node", "addr", "rack", "replicas", "leading");
            for n in v.metadata.nodes.values() {
                let replicas = v.metadata.hosted_by(n.id).len();
                let leading = v.leaders.values().filter(|l| l.leader == n.id).count();
                println!(
                    "{:<6} {:<24} {:<10} {:<8} {:<8}{}",
                    n.id,
                    n.addr,
                    n.rack.as_deref().unwrap_or("-"),
                    replicas,
                    leading,
                    if n.decommissioning { "  decommissioning" } else { "" }
                );
            }
            for t in v.metadata.topics.values() {
                print_topic(&v, t);
            }
        }
        ClusterCommand::Reassign { topic, partition, replicas } => {
            let group = c.group(&topic, partition).await?;
            let replicas: Vec<u64> = replicas
                .split(',')
                .map(|r| r.trim().parse::<u64>().with_context(|| format!("replica {r:?} is not a node id")))
                .collect::<anyhow::Result<_>>()?;
            meta_result(c.propose(&MetaCommand::Reassign { group, replicas }).await?)?;
            println!("reassignment of {topic}/{partition} started");
        }
        ClusterCommand::Decommission { node } => {
            if let Reply::Reassigning { partitions } =
                meta_result(c.propose(&MetaCommand::Decommission { node }).await?)?
            {
                println!("node {node} is being decommissioned: {partitions} partition(s) moving");
            }
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev { data_dir, kafka_port, broker, cluster, raft } => {
            let peers = parse_nodes(&cluster.nodes)?;
            let mut nodes = Vec::new();
            let mut kafka_addrs = Vec::new();
            for (i, &id) in peers.keys().enumerate() {
                let port = kafka_port.checked_add(i as u16).context("--kafka-port leaves no room for every node")?;
                let kafka_listen = format!("127.0.0.1:{port}");
                let config = node_config(
                    id,
                    data_dir.join(format!("node-{id}")),
                    None,
                    None,
                    (&kafka_listen, None),
                    broker.default_replication_factor,
                    &cluster,
                    raft,
                )?;
                nodes.push(start_node(config, None, &kafka_listen, broker.config()?).await?);
                kafka_addrs.push(kafka_listen);
            }
            println!("keel dev: Kafka clients connect to {}", kafka_addrs.join(","));
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
        Command::Node { id, data_dir, addr, listen, rack, kafka, cluster, raft } => {
            let config = node_config(
                id,
                data_dir,
                addr,
                rack,
                (&kafka.kafka_listen, kafka.kafka_advertised.as_deref()),
                kafka.broker.default_replication_factor,
                &cluster,
                raft,
            )?;
            let node = start_node(config, listen, &kafka.kafka_listen, kafka.broker.config()?).await?;
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            node.shutdown().await;
            Ok(())
        }
        Command::Topic { cluster, command } => topic_command(&cluster, command).await,
        Command::Cluster { cluster, command } => cluster_command(&cluster, command).await,
        Command::Produce { cluster, topic, partition, key_separator } => {
            let c = Client::new(&cluster)?;
            let group = c.group(&topic, partition).await?;
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
                let offset = c.append(group, Bytes::from(b.build())).await?;
                tracing::debug!(offset, "appended");
                count += 1;
            }
            eprintln!("produced {count} records to {topic}/{partition}");
            Ok(())
        }
        Command::Consume { cluster, topic, partition, mut offset, follow } => {
            let c = Client::new(&cluster)?;
            let group = c.group(&topic, partition).await?;
            let mut out = std::io::stdout().lock();
            loop {
                let leader = c.leader(group).await?;
                let req = client::ReadRequest { offset, bytes_max: 1 << 20, leader_only: true };
                let resp = c
                    .transport
                    .call(leader, group, client::KIND_READ, encode(&req).map_err(anyhow::Error::msg)?, CALL_TIMEOUT)
                    .await?;
                let (batches, hw) = match decode::<client::ReadResponse>(&resp).map_err(anyhow::Error::msg)? {
                    client::ReadResponse::Ok { batches, high_watermark, .. } => (batches, high_watermark),
                    client::ReadResponse::NotLeader { .. } => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
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
