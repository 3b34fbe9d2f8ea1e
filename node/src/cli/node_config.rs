//! Settings of a node (`keel node`, `keel dev`), in two stages:
//!
//! 1. [`RawSettings`]: every setting as an `Option`, one struct for all three sources. Clap fills
//!    it from flags and `KEEL_*` environment variables (a flag wins over its variable); serde
//!    fills it from the TOML file (`--config`, see `config_file`). [`RawSettings::over`] lays
//!    the first over the second, so the precedence is flag > environment > file > default.
//! 2. [`validate_node`] / [`validate_dev`]: pure functions from raw settings to [`NodeSettings`],
//!    which holds only checked values (defaults filled in, addresses parsed, Raft timings in
//!    order, limits in range). Every refusal is a [`ConfigError`] naming the setting's file key
//!    and flag.
//!
//! Adding a setting: a field in [`RawSettings`] or one of its sections (doc comment, `#[arg]`
//! with flag and variable), a line in its `over`, its default and checks in the validation,
//! a row in docs/config.md (a test checks that every flag and key is documented there) and the
//! field in `every_setting` in node_config/tests.rs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use keel_core::log::LogConfig;
use keel_node::kafka::BrokerConfig;
use keel_node::kafka::KafkaConfig;
use keel_node::node::ControlTiming;
use keel_node::node::NodeConfig;
use keel_node::partition::ReplicaConfig;
use keel_node::raft::RaftTiming;
use keel_node::raft::heartbeat::HeartbeatBatchConfig;
use keel_node::transport::TransportConfig;
use serde::Deserialize;
use serde::Serialize;

pub const DEV_CLUSTER_ID: &str = "keel-dev";
pub const DEV_NODES: &str = "1=127.0.0.1:19201,2=127.0.0.1:19202,3=127.0.0.1:19203";
/// `data_dir` of `keel dev` (each node in `node-<id>` below it).
pub const DEV_DATA_DIR: &str = "./keel-data";
/// `--kafka-port` of `keel dev`: the first node's Kafka port; the others follow.
pub const DEV_KAFKA_PORT: u16 = 9092;
pub const KAFKA_LISTEN_DEFAULT: &str = "0.0.0.0:9092";
pub const DEV_HTTP_PORT: u16 = 9644;
pub const HTTP_LISTEN_DEFAULT: &str = "0.0.0.0:9644";
/// Raft timing of every partition and the metadata group. The defaults suit up to a thousand
/// partitions per node (docs/benchmarks.md): each Raft group ticks every
/// `heartbeat_ms * 13 / 64`, so the heartbeat sets the idle cost; a failed leader is replaced
/// after 3–6 s.
pub const RAFT_TIMING_DEFAULT: RaftTiming =
    RaftTiming { heartbeat_ms: 1000, election_timeout_min_ms: 3000, election_timeout_max_ms: 6000 };
/// The smallest `message.max.bytes`: room for a record batch header and a small record.
pub const MESSAGE_MAX_BYTES_MIN: usize = 1024;
/// Kafka broker ids are `int32`.
pub const NODE_ID_MAX: u64 = i32::MAX as u64;

/// The metadata group's voters: node id → node-to-node address. `ID=HOST:PORT,...` as a flag or
/// variable; in the file that string or a table (`[nodes]` with `1 = "HOST:PORT"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Voters(pub BTreeMap<u64, String>);

impl FromStr for Voters {
    type Err = String;

    fn from_str(s: &str) -> Result<Voters, String> {
        let mut out = Voters::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (id, addr) = part.split_once('=').ok_or_else(|| format!("entry {part:?} is not ID=HOST:PORT"))?;
            out.insert(id, addr)?;
        }
        Ok(out)
    }
}

impl Voters {
    fn insert(&mut self, id: &str, addr: &str) -> Result<(), String> {
        let id: u64 = id.trim().parse().map_err(|_| format!("node id {:?} is not a number", id.trim()))?;
        if self.0.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node {id} appears twice"));
        }
        Ok(())
    }
}

impl Serialize for Voters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(id, addr)| (id.to_string(), addr)))
    }
}

impl<'de> Deserialize<'de> for Voters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Voters, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Voters;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of node id = \"HOST:PORT\", or a string \"ID=HOST:PORT,...\"")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Voters, E> {
                s.parse().map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Voters, A::Error> {
                let mut out = Voters::default();
                while let Some((id, addr)) = map.next_entry::<String, String>()? {
                    out.insert(&id, &addr).map_err(serde::de::Error::custom)?;
                }
                Ok(out)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Every setting of a node, each unset unless a source set it. Field names are the file's keys.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// This node's id, 1 to 2147483647 (`id`).
    #[arg(long, env = "KEEL_NODE_ID")]
    pub id: Option<u64>,
    /// Where this node keeps its data (`data_dir`).
    #[arg(long, env = "KEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's node-to-node address as other nodes reach it (`addr`; default: its address
    /// in --nodes; required for a node that is not a metadata voter).
    #[arg(long, env = "KEEL_ADDR")]
    pub addr: Option<String>,
    /// Address the node-to-node listener binds (`listen`; default: --addr).
    #[arg(long, env = "KEEL_LISTEN")]
    pub listen: Option<String>,
    /// Failure domain; replicas spread over racks (`rack`; default: none).
    #[arg(long, env = "KEEL_RACK")]
    pub rack: Option<String>,
    /// The metadata group's voters, `ID=HOST:PORT,...` (node-to-node addresses) (`nodes`;
    /// default: 1=127.0.0.1:19201,2=127.0.0.1:19202,3=127.0.0.1:19203).
    #[arg(long, env = "KEEL_NODES", value_parser = Voters::from_str)]
    pub nodes: Option<Voters>,
    /// Cluster id; connections between different clusters are refused (`cluster_id`; default:
    /// keel-dev).
    #[arg(long, env = "KEEL_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    #[command(flatten)]
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    #[serde(default)]
    pub http: HttpSettings,
    #[command(flatten)]
    #[serde(default)]
    pub broker: BrokerSettings,
    #[command(flatten)]
    #[serde(default)]
    pub raft: RaftSettings,
}

/// `keel dev`'s settings: the cluster-wide ones (the file may set those too) and where its
/// nodes keep data and take Kafka clients.
#[derive(clap::Args, Debug, Clone)]
pub struct DevFlags {
    /// Each node keeps its data in `node-<id>` below this directory.
    #[arg(long, default_value = DEV_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Kafka port of the first node; the others follow (9092, 9093, 9094).
    #[arg(long, default_value_t = DEV_KAFKA_PORT)]
    pub kafka_port: u16,
    /// HTTP port (metrics, status page) of the first node; the others follow (9644, 9645,
    /// 9646).
    #[arg(long, default_value_t = DEV_HTTP_PORT)]
    pub http_port: u16,
    /// The nodes to run, `ID=HOST:PORT,...` (node-to-node addresses) (`nodes`; default:
    /// 1=127.0.0.1:19201,2=127.0.0.1:19202,3=127.0.0.1:19203).
    #[arg(long, env = "KEEL_NODES", value_parser = Voters::from_str)]
    pub nodes: Option<Voters>,
    /// Cluster id (`cluster_id`; default: keel-dev).
    #[arg(long, env = "KEEL_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    #[command(flatten)]
    pub broker: BrokerSettings,
    #[command(flatten)]
    pub raft: RaftSettings,
}

impl DevFlags {
    /// The settings the flags and environment set, to lay over the file's.
    pub fn raw(&self) -> RawSettings {
        RawSettings {
            nodes: self.nodes.clone(),
            cluster_id: self.cluster_id.clone(),
            broker: self.broker.clone(),
            raft: self.raft.clone(),
            ..RawSettings::default()
        }
    }
}

/// `[kafka]`: the Kafka listener.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Where the Kafka listener binds (`kafka.listen`; default: 0.0.0.0:9092).
    #[arg(long = "kafka-listen", id = "kafka_listen", env = "KEEL_KAFKA_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// The address Kafka clients are told to use for this node (`kafka.advertised`; default:
    /// --kafka-listen, with an unspecified host replaced by the host of --addr).
    #[arg(long = "kafka-advertised", id = "kafka_advertised", env = "KEEL_KAFKA_ADVERTISED", value_name = "HOST:PORT")]
    pub advertised: Option<String>,
}

/// `[http]`: the HTTP listener (`/metrics`, the status page, `/status.json`;
/// docs/observability.md).
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Where the HTTP listener binds (`http.listen`; default: 0.0.0.0:9644).
    #[arg(long = "http-listen", id = "http_listen", env = "KEEL_HTTP_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
}

impl HttpSettings {
    pub fn over(self, lower: HttpSettings) -> HttpSettings {
        HttpSettings { listen: self.listen.or(lower.listen) }
    }
}

/// `[broker]`: the broker settings Kafka clients see, Kafka's names in snake_case
/// (`auto.create.topics.enable` is `auto_create_topics_enable`) with Kafka's defaults, except
/// `default_replication_factor`, which is 3: Raft needs three replicas to survive a failure.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// A Metadata request naming an unknown topic creates it (`broker.auto_create_topics_enable`;
    /// default: true).
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS_ENABLE", action = clap::ArgAction::Set)]
    pub auto_create_topics_enable: Option<bool>,
    /// Partitions of a topic created without a count (`broker.num_partitions`; default: 1).
    #[arg(long, env = "KEEL_NUM_PARTITIONS")]
    pub num_partitions: Option<u32>,
    /// Replicas of a topic created without a factor; more than the registered nodes is refused
    /// (`broker.default_replication_factor`; default: 3).
    #[arg(long, env = "KEEL_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<u16>,
    /// The largest record batch a producer may send (`broker.message_max_bytes`; default:
    /// 1048588).
    #[arg(long, env = "KEEL_MESSAGE_MAX_BYTES")]
    pub message_max_bytes: Option<usize>,
    /// Partitions of `__consumer_offsets`, each a Raft group; used when it is created
    /// (`broker.offsets_topic_num_partitions`; default: 8).
    #[arg(long, env = "KEEL_OFFSETS_TOPIC_NUM_PARTITIONS")]
    pub offsets_topic_num_partitions: Option<u32>,
    /// Replicas of `__consumer_offsets`, capped by the number of nodes
    /// (`broker.offsets_topic_replication_factor`; default: 3).
    #[arg(long, env = "KEEL_OFFSETS_TOPIC_REPLICATION_FACTOR")]
    pub offsets_topic_replication_factor: Option<u16>,
    /// Committed offsets of a group empty this long expire (`broker.offsets_retention_minutes`;
    /// default: 10080).
    #[arg(long, env = "KEEL_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<u64>,
    /// How long the first rebalance of an empty group waits for more members
    /// (`broker.group_initial_rebalance_delay_ms`; default: 3000).
    #[arg(long, env = "KEEL_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Shortest session timeout a group member may ask for (`broker.group_min_session_timeout_ms`;
    /// default: 6000).
    #[arg(long, env = "KEEL_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<u64>,
    /// Longest session timeout a group member may ask for (`broker.group_max_session_timeout_ms`;
    /// default: 1800000).
    #[arg(long, env = "KEEL_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<u64>,
    /// A follower not caught up to its leader's log end for this long leaves the in-sync
    /// replicas (`broker.replica_lag_time_max_ms`; default: 30000).
    #[arg(long, env = "KEEL_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
}

/// `[raft]`: Raft timing of every partition and the metadata group (see
/// [`RAFT_TIMING_DEFAULT`]).
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    /// Leader heartbeat interval (`raft.heartbeat_ms`; default: 1000).
    #[arg(long = "raft-heartbeat-ms", id = "raft_heartbeat_ms", env = "KEEL_RAFT_HEARTBEAT_MS", value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// A follower that hears no leader for a random time between the minimum and the maximum
    /// starts an election (`raft.election_timeout_min_ms`; default: 3000).
    #[arg(
        long = "raft-election-timeout-min-ms",
        id = "raft_election_timeout_min_ms",
        env = "KEEL_RAFT_ELECTION_TIMEOUT_MIN_MS",
        value_name = "MS"
    )]
    pub election_timeout_min_ms: Option<u64>,
    /// The longest election timeout (`raft.election_timeout_max_ms`; default: 6000).
    #[arg(
        long = "raft-election-timeout-max-ms",
        id = "raft_election_timeout_max_ms",
        env = "KEEL_RAFT_ELECTION_TIMEOUT_MAX_MS",
        value_name = "MS"
    )]
    pub election_timeout_max_ms: Option<u64>,
}

impl RawSettings {
    /// `self` where set, else `lower` (flags and environment over the file).
    pub fn over(self, lower: RawSettings) -> RawSettings {
        RawSettings {
            id: self.id.or(lower.id),
            data_dir: self.data_dir.or(lower.data_dir),
            addr: self.addr.or(lower.addr),
            listen: self.listen.or(lower.listen),
            rack: self.rack.or(lower.rack),
            nodes: self.nodes.or(lower.nodes),
            cluster_id: self.cluster_id.or(lower.cluster_id),
            kafka: self.kafka.over(lower.kafka),
            http: self.http.over(lower.http),
            broker: self.broker.over(lower.broker),
            raft: self.raft.over(lower.raft),
        }
    }

    /// The file keys set here that only one node can have (`keel dev` refuses them).
    pub fn node_only_keys(&self) -> Vec<&'static str> {
        let set = [
            ("id", self.id.is_some()),
            ("data_dir", self.data_dir.is_some()),
            ("addr", self.addr.is_some()),
            ("listen", self.listen.is_some()),
            ("rack", self.rack.is_some()),
            ("kafka.listen", self.kafka.listen.is_some()),
            ("kafka.advertised", self.kafka.advertised.is_some()),
            ("http.listen", self.http.listen.is_some()),
        ];
        set.into_iter().filter(|(_, s)| *s).map(|(k, _)| k).collect()
    }
}

impl KafkaSettings {
    pub fn over(self, lower: KafkaSettings) -> KafkaSettings {
        KafkaSettings { listen: self.listen.or(lower.listen), advertised: self.advertised.or(lower.advertised) }
    }
}

impl BrokerSettings {
    pub fn over(self, lower: BrokerSettings) -> BrokerSettings {
        BrokerSettings {
            auto_create_topics_enable: self.auto_create_topics_enable.or(lower.auto_create_topics_enable),
            num_partitions: self.num_partitions.or(lower.num_partitions),
            default_replication_factor: self.default_replication_factor.or(lower.default_replication_factor),
            message_max_bytes: self.message_max_bytes.or(lower.message_max_bytes),
            offsets_topic_num_partitions: self.offsets_topic_num_partitions.or(lower.offsets_topic_num_partitions),
            offsets_topic_replication_factor: self
                .offsets_topic_replication_factor
                .or(lower.offsets_topic_replication_factor),
            offsets_retention_minutes: self.offsets_retention_minutes.or(lower.offsets_retention_minutes),
            group_initial_rebalance_delay_ms: self
                .group_initial_rebalance_delay_ms
                .or(lower.group_initial_rebalance_delay_ms),
            group_min_session_timeout_ms: self.group_min_session_timeout_ms.or(lower.group_min_session_timeout_ms),
            group_max_session_timeout_ms: self.group_max_session_timeout_ms.or(lower.group_max_session_timeout_ms),
            replica_lag_time_max_ms: self.replica_lag_time_max_ms.or(lower.replica_lag_time_max_ms),
        }
    }
}

impl RaftSettings {
    pub fn over(self, lower: RaftSettings) -> RaftSettings {
        RaftSettings {
            heartbeat_ms: self.heartbeat_ms.or(lower.heartbeat_ms),
            election_timeout_min_ms: self.election_timeout_min_ms.or(lower.election_timeout_min_ms),
            election_timeout_max_ms: self.election_timeout_max_ms.or(lower.election_timeout_max_ms),
        }
    }
}

/// A setting that cannot be used, named by its file key and its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{key} is not set: give {}, {} or `{key}` in the config file", flag_of(key), env_of(key))]
    Missing { key: &'static str },
    #[error("{} {reason}", name(key))]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

/// `raft.heartbeat_ms (--raft-heartbeat-ms)`.
pub fn name(key: &str) -> String {
    format!("{key} ({})", flag_of(key))
}

/// The flag of a file key: `[kafka]` and `[raft]` keys are prefixed by their section,
/// `[broker]` keys are not.
pub fn flag_of(key: &str) -> String {
    let flag = match key.split_once('.') {
        Some(("broker", k)) => k.to_string(),
        Some((section, k)) => format!("{section}_{k}"),
        None => key.to_string(),
    };
    format!("--{}", flag.replace('_', "-"))
}

/// The environment variable of a file key (`id` is `KEEL_NODE_ID`).
pub fn env_of(key: &str) -> String {
    match key {
        "id" => "KEEL_NODE_ID".to_string(),
        _ => format!("KEEL_{}", flag_of(key).trim_start_matches("--").replace('-', "_").to_uppercase()),
    }
}

/// Everything a node runs with, checked.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub id: u64,
    pub data_dir: PathBuf,
    /// The node-to-node address as other nodes reach it.
    pub addr: String,
    /// Where the node-to-node listener binds.
    pub listen: String,
    pub rack: Option<String>,
    pub voters: BTreeMap<u64, String>,
    pub cluster_id: String,
    /// Where the Kafka listener binds.
    pub kafka_listen: String,
    /// The Kafka address clients are told to use (a port 0 is replaced by the bound port).
    pub kafka_advertised: String,
    /// Where the HTTP listener (metrics, status page) binds.
    pub http_listen: String,
    pub kafka: KafkaConfig,
    pub raft: RaftTiming,
    /// The openraft configurations derived from `raft` (validated by openraft too).
    partition_raft: Arc<openraft::Config>,
    metadata_raft: Arc<openraft::Config>,
}

impl NodeSettings {
    /// The node's configuration for [`keel_node::node::Node::start`].
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            id: self.id,
            data_dir: self.data_dir.clone(),
            addr: self.addr.clone(),
            kafka_addr: self.kafka_advertised.clone(),
            rack: self.rack.clone(),
            voters: self.voters.clone(),
            default_replication_factor: self.kafka.broker.default_replication_factor,
            replica: ReplicaConfig::new(LogConfig::default(), self.partition_raft.clone()),
            metadata_raft: self.metadata_raft.clone(),
            transport: TransportConfig::new(self.cluster_id.clone()),
            // A heartbeat waits at most 1/20 of the interval for others to share its frame.
            heartbeat_batch: HeartbeatBatchConfig {
                window_ms: (self.raft.heartbeat_ms / 20).clamp(1, 25),
                ..HeartbeatBatchConfig::default()
            },
            timing: ControlTiming {
                replica_lag_time_max_ms: self.kafka.broker.replica_lag_time_max_ms,
                ..ControlTiming::default()
            },
        }
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

/// Checks that setting `key`'s `value` is `HOST:PORT` (port 0, "any free port", only where
/// `port_zero`).
fn host_port(key: &'static str, value: &str, port_zero: bool) -> Result<(), ConfigError> {
    address(value, port_zero).map_err(|reason| invalid(key, reason))
}

fn address(value: &str, port_zero: bool) -> Result<(), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("{value:?} is not HOST:PORT"));
    };
    if host.is_empty() {
        return Err(format!("{value:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(0) if !port_zero => Err(format!("{value:?}: port 0 cannot be reached")),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{value:?}: port {port:?} is not a number from 0 to 65535")),
    }
}

/// The cluster-wide settings, checked: (voters, cluster id, Kafka config, Raft timing and its
/// openraft configs).
struct Shared {
    voters: BTreeMap<u64, String>,
    cluster_id: String,
    kafka: KafkaConfig,
    raft: RaftTiming,
    partition_raft: Arc<openraft::Config>,
    metadata_raft: Arc<openraft::Config>,
}

fn validate_shared(raw: &RawSettings) -> Result<Shared, ConfigError> {
    let voters = match &raw.nodes {
        Some(v) => v.0.clone(),
        None => DEV_NODES.parse::<Voters>().map_err(|e| invalid("nodes", e))?.0,
    };
    if voters.is_empty() {
        return Err(invalid("nodes", "names no node"));
    }
    for (id, addr) in &voters {
        check_node_id("nodes", *id)?;
        address(addr, false).map_err(|reason| invalid("nodes", format!("node {id}: {reason}")))?;
    }
    let cluster_id = raw.cluster_id.clone().unwrap_or_else(|| DEV_CLUSTER_ID.to_string());
    TransportConfig::new(cluster_id.clone()).validate().map_err(|e| invalid("cluster_id", e.to_string()))?;
    let raft = validate_raft(&raw.raft)?;
    Ok(Shared {
        voters,
        cluster_id: cluster_id.clone(),
        kafka: KafkaConfig { broker: validate_broker(raw.broker.clone())?, ..KafkaConfig::default() },
        raft,
        partition_raft: keel_node::raft::config(&cluster_id, raft).map_err(openraft_refused)?,
        metadata_raft: keel_node::raft::metadata_config(&cluster_id, raft).map_err(openraft_refused)?,
    })
}

/// openraft's own check of the timings (after ours, which name the settings).
fn openraft_refused(reason: String) -> ConfigError {
    invalid("raft.heartbeat_ms", format!("and the election timeouts are refused by openraft: {reason}"))
}

fn check_node_id(key: &'static str, id: u64) -> Result<(), ConfigError> {
    if id == 0 || id > NODE_ID_MAX {
        return Err(invalid(key, format!("node id {id} is out of range: node ids are 1 to {NODE_ID_MAX}")));
    }
    Ok(())
}

fn validate_raft(raft: &RaftSettings) -> Result<RaftTiming, ConfigError> {
    let d = RAFT_TIMING_DEFAULT;
    let t = RaftTiming {
        heartbeat_ms: raft.heartbeat_ms.unwrap_or(d.heartbeat_ms),
        election_timeout_min_ms: raft.election_timeout_min_ms.unwrap_or(d.election_timeout_min_ms),
        election_timeout_max_ms: raft.election_timeout_max_ms.unwrap_or(d.election_timeout_max_ms),
    };
    if t.heartbeat_ms == 0 {
        return Err(invalid("raft.heartbeat_ms", "must be at least 1 ms"));
    }
    if t.election_timeout_min_ms >= t.election_timeout_max_ms {
        return Err(invalid(
            "raft.election_timeout_min_ms",
            format!(
                "is {} ms: it must be below raft.election_timeout_max_ms, {} ms",
                t.election_timeout_min_ms, t.election_timeout_max_ms
            ),
        ));
    }
    if t.heartbeat_ms >= t.election_timeout_min_ms {
        return Err(invalid(
            "raft.heartbeat_ms",
            format!(
                "is {} ms: it must be below raft.election_timeout_min_ms, {} ms (followers would start elections \
                 between heartbeats)",
                t.heartbeat_ms, t.election_timeout_min_ms
            ),
        ));
    }
    Ok(t)
}

fn validate_broker(b: BrokerSettings) -> Result<BrokerConfig, ConfigError> {
    let d = BrokerConfig::default();
    let c = BrokerConfig {
        auto_create_topics_enable: b.auto_create_topics_enable.unwrap_or(d.auto_create_topics_enable),
        num_partitions: b.num_partitions.unwrap_or(d.num_partitions),
        default_replication_factor: b.default_replication_factor.unwrap_or(d.default_replication_factor),
        message_max_bytes: b.message_max_bytes.unwrap_or(d.message_max_bytes),
        offsets_topic_num_partitions: b.offsets_topic_num_partitions.unwrap_or(d.offsets_topic_num_partitions),
        offsets_topic_replication_factor: b
            .offsets_topic_replication_factor
            .unwrap_or(d.offsets_topic_replication_factor),
        offsets_retention_minutes: b.offsets_retention_minutes.unwrap_or(d.offsets_retention_minutes),
        group_initial_rebalance_delay_ms: b
            .group_initial_rebalance_delay_ms
            .unwrap_or(d.group_initial_rebalance_delay_ms),
        group_min_session_timeout_ms: b.group_min_session_timeout_ms.unwrap_or(d.group_min_session_timeout_ms),
        group_max_session_timeout_ms: b.group_max_session_timeout_ms.unwrap_or(d.group_max_session_timeout_ms),
        replica_lag_time_max_ms: b.replica_lag_time_max_ms.unwrap_or(d.replica_lag_time_max_ms),
    };
    // Kafka carries partition counts as int32 and replication factors as int16.
    let partitions = |key, n: u32| match n {
        0 => Err(invalid(key, "must be at least 1")),
        n if n > i32::MAX as u32 => Err(invalid(key, format!("{n} is above {}", i32::MAX))),
        _ => Ok(()),
    };
    let replicas = |key, n: u16| match n {
        0 => Err(invalid(key, "must be at least 1")),
        n if n > i16::MAX as u16 => Err(invalid(key, format!("{n} is above {}", i16::MAX))),
        _ => Ok(()),
    };
    partitions("broker.num_partitions", c.num_partitions)?;
    partitions("broker.offsets_topic_num_partitions", c.offsets_topic_num_partitions)?;
    replicas("broker.default_replication_factor", c.default_replication_factor)?;
    replicas("broker.offsets_topic_replication_factor", c.offsets_topic_replication_factor)?;
    let batch_bytes_max = LogConfig::default().batch_bytes_max;
    if !(MESSAGE_MAX_BYTES_MIN..=batch_bytes_max).contains(&c.message_max_bytes) {
        return Err(invalid(
            "broker.message_max_bytes",
            format!(
                "is {}: it must be between {MESSAGE_MAX_BYTES_MIN} and the log's batch limit of {batch_bytes_max} bytes",
                c.message_max_bytes
            ),
        ));
    }
    if c.replica_lag_time_max_ms == 0 {
        return Err(invalid("broker.replica_lag_time_max_ms", "must be at least 1 ms"));
    }
    if c.offsets_retention_minutes == 0 {
        return Err(invalid("broker.offsets_retention_minutes", "must be at least 1"));
    }
    if c.group_min_session_timeout_ms == 0 {
        return Err(invalid("broker.group_min_session_timeout_ms", "must be at least 1 ms"));
    }
    if c.group_min_session_timeout_ms > c.group_max_session_timeout_ms {
        return Err(invalid(
            "broker.group_min_session_timeout_ms",
            format!(
                "is {} ms: it must not be above broker.group_max_session_timeout_ms, {} ms",
                c.group_min_session_timeout_ms, c.group_max_session_timeout_ms
            ),
        ));
    }
    Ok(c)
}

/// `keel node`: flags and environment merged over the file, checked.
pub fn validate_node(raw: RawSettings) -> Result<NodeSettings, ConfigError> {
    let id = raw.id.ok_or(ConfigError::Missing { key: "id" })?;
    check_node_id("id", id)?;
    let data_dir = raw.data_dir.clone().ok_or(ConfigError::Missing { key: "data_dir" })?;
    if data_dir.as_os_str().is_empty() {
        return Err(invalid("data_dir", "is empty"));
    }
    let shared = validate_shared(&raw)?;
    let RawSettings { addr, listen, rack, kafka, http, .. } = raw;
    let addr = match (addr, shared.voters.get(&id)) {
        (Some(a), Some(v)) if a != *v => {
            return Err(invalid(
                "addr",
                format!("is {a}, but node {id} is a voter in `nodes` at {v}; other nodes reach it there"),
            ));
        }
        (Some(a), _) => a,
        (None, Some(v)) => v.clone(),
        (None, None) => {
            let voters: Vec<String> = shared.voters.keys().map(u64::to_string).collect();
            return Err(invalid(
                "addr",
                format!(
                    "is not set, and node {id} is not a voter in `nodes` (voters: {}): give its address",
                    voters.join(", ")
                ),
            ));
        }
    };
    host_port("addr", &addr, false)?;
    let listen = listen.unwrap_or_else(|| addr.clone());
    host_port("listen", &listen, true)?;
    let kafka_listen = kafka.listen.unwrap_or_else(|| KAFKA_LISTEN_DEFAULT.to_string());
    host_port("kafka.listen", &kafka_listen, true)?;
    if let Some(a) = &kafka.advertised {
        host_port("kafka.advertised", a, true)?;
    }
    let http_listen = http.listen.unwrap_or_else(|| HTTP_LISTEN_DEFAULT.to_string());
    host_port("http.listen", &http_listen, true)?;
    if rack.as_deref() == Some("") {
        return Err(invalid("rack", "is empty (leave it out for no rack)"));
    }
    Ok(NodeSettings {
        id,
        data_dir,
        kafka_advertised: advertised_kafka_addr(&kafka_listen, kafka.advertised.as_deref(), &addr),
        addr,
        listen,
        rack,
        voters: shared.voters,
        cluster_id: shared.cluster_id,
        kafka_listen,
        http_listen,
        kafka: shared.kafka,
        raft: shared.raft,
        partition_raft: shared.partition_raft,
        metadata_raft: shared.metadata_raft,
    })
}

/// `keel dev`: one node per voter, data in `data_dir/node-<id>`, Kafka and HTTP on 127.0.0.1
/// from `kafka_port` and `http_port` up in voter order. `raw` may set only the shared settings.
pub fn validate_dev(
    raw: RawSettings,
    data_dir: PathBuf,
    (kafka_port, http_port): (u16, u16),
) -> Result<Vec<NodeSettings>, ConfigError> {
    if let Some(key) = raw.node_only_keys().first() {
        return Err(invalid(key, "applies to one node (`keel node`); `keel dev` sets it for each of its nodes"));
    }
    let shared = validate_shared(&raw)?;
    let mut out = Vec::new();
    for (i, (id, addr)) in shared.voters.iter().enumerate() {
        let port = u16::try_from(i)
            .ok()
            .and_then(|i| kafka_port.checked_add(i))
            .ok_or_else(|| invalid("nodes", format!("--kafka-port {kafka_port} leaves no port for node {id}")))?;
        let kafka_listen = format!("127.0.0.1:{port}");
        let http = u16::try_from(i)
            .ok()
            .and_then(|i| http_port.checked_add(i))
            .ok_or_else(|| invalid("nodes", format!("--http-port {http_port} leaves no port for node {id}")))?;
        out.push(NodeSettings {
            http_listen: format!("127.0.0.1:{http}"),
            id: *id,
            data_dir: data_dir.join(format!("node-{id}")),
            addr: addr.clone(),
            listen: addr.clone(),
            rack: None,
            voters: shared.voters.clone(),
            cluster_id: shared.cluster_id.clone(),
            kafka_advertised: kafka_listen.clone(),
            kafka_listen,
            kafka: shared.kafka.clone(),
            raft: shared.raft,
            partition_raft: shared.partition_raft.clone(),
            metadata_raft: shared.metadata_raft.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
