//! Settings of a node (`keel node`, `keel dev`): flags and `KEEL_*` environment variables,
//! validated into [`NodeConfig`] and [`KafkaConfig`]; and starting a node from them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use anyhow::bail;
use keel_core::log::LogConfig;
use keel_core::storage::fs::FsStorage;
use keel_node::kafka::BrokerConfig;
use keel_node::kafka::KafkaConfig;
use keel_node::node::ControlTiming;
use keel_node::node::Node;
use keel_node::node::NodeConfig;
use keel_node::partition::LogObserver;
use keel_node::partition::ReplicaConfig;
use keel_node::raft::heartbeat::HeartbeatBatchConfig;
use keel_node::transport::TransportConfig;

pub const DEV_CLUSTER_ID: &str = "keel-dev";
pub const DEV_NODES: &str = "1=127.0.0.1:19201,2=127.0.0.1:19202,3=127.0.0.1:19203";

#[derive(clap::Args, Clone)]
pub struct ClusterArgs {
    /// The metadata group's voters: `ID=HOST:PORT,...` (node-to-node addresses). Clients use
    /// them to find the cluster.
    #[arg(long, global = true, env = "KEEL_NODES", default_value = DEV_NODES)]
    pub nodes: String,
    /// Cluster id; connections between different clusters are refused.
    #[arg(long, global = true, env = "KEEL_CLUSTER_ID", default_value = DEV_CLUSTER_ID)]
    pub cluster_id: String,
}

/// Raft timing of every partition and the metadata group. The defaults suit up to a thousand
/// partitions per node (docs/benchmarks.md): each Raft group ticks every
/// `heartbeat_ms * 13 / 64`, so the heartbeat sets the idle cost; a failed leader is replaced
/// after 3–6 s.
#[derive(clap::Args, Clone, Copy)]
pub struct RaftArgs {
    #[arg(long, env = "KEEL_RAFT_HEARTBEAT_MS", default_value_t = 1000)]
    pub raft_heartbeat_ms: u64,
    #[arg(long, env = "KEEL_RAFT_ELECTION_TIMEOUT_MIN_MS", default_value_t = 3000)]
    pub raft_election_timeout_min_ms: u64,
    #[arg(long, env = "KEEL_RAFT_ELECTION_TIMEOUT_MAX_MS", default_value_t = 6000)]
    pub raft_election_timeout_max_ms: u64,
}

/// The Kafka listener and the broker settings Kafka clients see (Kafka's names and defaults,
/// except `default.replication.factor`, which is 3: Raft needs three replicas to survive a
/// failure).
#[derive(clap::Args, Clone)]
pub struct KafkaArgs {
    /// Where the Kafka listener binds.
    #[arg(long, env = "KEEL_KAFKA_LISTEN", default_value = "0.0.0.0:9092")]
    pub kafka_listen: String,
    /// The address Kafka clients are told to use for this node (default: --kafka-listen, with
    /// an unspecified host replaced by the host of --addr).
    #[arg(long, env = "KEEL_KAFKA_ADVERTISED")]
    pub kafka_advertised: Option<String>,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

#[derive(clap::Args, Clone, Copy)]
pub struct BrokerArgs {
    /// `auto.create.topics.enable`: a Metadata request naming an unknown topic creates it.
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of a topic created without a count.
    #[arg(long, env = "KEEL_NUM_PARTITIONS", default_value_t = 1)]
    pub num_partitions: u32,
    /// `default.replication.factor`: replicas of a topic created without a factor (capped by
    /// the number of nodes).
    #[arg(long, env = "KEEL_DEFAULT_REPLICATION_FACTOR", default_value_t = 3)]
    pub default_replication_factor: u16,
    /// `message.max.bytes`: the largest record batch a producer may send.
    #[arg(long, env = "KEEL_MESSAGE_MAX_BYTES", default_value_t = 1_048_588)]
    pub message_max_bytes: usize,
}

impl BrokerArgs {
    pub fn config(self) -> anyhow::Result<KafkaConfig> {
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
pub fn advertised_kafka_addr(listen: &str, advertised: Option<&str>, node_addr: &str) -> String {
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

pub fn parse_nodes(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
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
pub fn node_config(
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

pub async fn start_node(
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

/// `keel dev`: starts the nodes of --nodes in this process, Kafka ports from `kafka_port` up.
pub async fn run_dev(
    data_dir: PathBuf,
    kafka_port: u16,
    broker: BrokerArgs,
    cluster: ClusterArgs,
    raft: RaftArgs,
) -> anyhow::Result<Vec<Arc<Node>>> {
    let peers = parse_nodes(&cluster.nodes)?;
    let mut nodes = Vec::new();
    let mut kafka_addrs = Vec::new();
    for (i, &id) in peers.keys().enumerate() {
        let port = u16::try_from(i)
            .ok()
            .and_then(|i| kafka_port.checked_add(i))
            .context("--kafka-port leaves no room for every node")?;
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
    println!("keel dev: {} nodes up ({}), data in {}; Ctrl-C stops", nodes.len(), cluster.nodes, data_dir.display());
    Ok(nodes)
}
