//! The `keel` command line: the commands (clap), and what each runs.
//!
//! - [`node_config`]: `keel node` / `keel dev` settings, validated into the node's config.
//! - [`kafka`]: the client commands' Kafka connection (`--bootstrap`), errors as messages.
//! - [`topic`], [`produce`], [`consume`], [`cluster`], [`group`]: client commands over the Kafka protocol,
//!   so they work against any Kafka broker too.
//! - [`internal`]: `keel cluster reassign|decommission`, which only Keel has, over Keel's
//!   internal protocol.
//! - [`shutdown`]: `keel node` / `keel dev` stop gracefully on SIGTERM or SIGINT.
//! - [`output`]: tables for people, `--json` for scripts, quiet on a closed pipe.

pub mod cluster;
pub mod consume;
pub mod group;
pub mod internal;
pub mod kafka;
pub mod node_config;
pub mod output;
pub mod produce;
pub mod shutdown;
pub mod topic;

use std::path::PathBuf;

use clap::Parser;
use clap::Subcommand;

use kafka::BootstrapArgs;
use kafka::Kafka;
use node_config::BrokerArgs;
use node_config::ClusterArgs;
use node_config::KafkaArgs;
use node_config::RaftArgs;
use output::Output;
use shutdown::ShutdownArgs;

#[derive(Parser)]
#[command(name = "keel", version, about = "Keel: a replicated message log whose guarantees are tested")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Nodes, partitions, their leaders and replicas (over Kafka's Metadata request).
    Status {
        #[command(flatten)]
        bootstrap: BootstrapArgs,
    },
    /// Moves a partition to another replica set (the first is the preferred leader). Keel
    /// only: speaks Keel's internal protocol to the nodes named by --nodes.
    Reassign {
        #[command(flatten)]
        cluster: ClusterArgs,
        topic: String,
        #[arg(long)]
        partition: u32,
        /// Comma-separated node ids.
        #[arg(long)]
        replicas: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Drains a node: its replicas move to the other nodes, then it leaves the cluster. Keel
    /// only: speaks Keel's internal protocol to the nodes named by --nodes.
    Decommission {
        #[command(flatten)]
        cluster: ClusterArgs,
        node: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum Command {
    /// Runs a local 3-node cluster in this process (data under --data-dir; Ctrl-C stops it
    /// gracefully, a second Ctrl-C at once).
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
        #[command(flatten)]
        shutdown: ShutdownArgs,
    },
    /// Runs one node of a cluster (SIGTERM or SIGINT stops it gracefully: it hands off the
    /// leadership of every group it leads first; a second signal stops it at once).
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
        #[command(flatten)]
        shutdown: ShutdownArgs,
    },
    /// Topic administration (Kafka admin requests).
    Topic {
        #[command(flatten)]
        bootstrap: BootstrapArgs,
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Cluster status and administration.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Consumer groups (Kafka group requests).
    Group {
        #[command(flatten)]
        bootstrap: BootstrapArgs,
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Appends lines from stdin to a topic.
    Produce {
        #[command(flatten)]
        bootstrap: BootstrapArgs,
        #[command(flatten)]
        args: produce::ProduceArgs,
    },
    /// Prints records of a topic.
    Consume {
        #[command(flatten)]
        bootstrap: BootstrapArgs,
        #[command(flatten)]
        args: consume::ConsumeArgs,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev { data_dir, kafka_port, broker, cluster, raft, shutdown } => {
            let nodes = node_config::run_dev(data_dir, kafka_port, broker, cluster, raft).await?;
            shutdown::run_until_signalled(&nodes, shutdown).await
        }
        Command::Node { id, data_dir, addr, listen, rack, kafka, cluster, raft, shutdown } => {
            let config = node_config::node_config(
                id,
                data_dir,
                addr,
                rack,
                (&kafka.kafka_listen, kafka.kafka_advertised.as_deref()),
                kafka.broker.default_replication_factor,
                &cluster,
                raft,
            )?;
            let node = node_config::start_node(config, listen, &kafka.kafka_listen, kafka.broker.config()?).await?;
            shutdown::run_until_signalled(&[node], shutdown).await
        }
        Command::Topic { bootstrap, command } => {
            let mut out = Output::new(bootstrap.json);
            topic::run(&mut Kafka::new(&bootstrap)?, &mut out, command).await
        }
        Command::Cluster { command } => match command {
            ClusterCommand::Status { bootstrap } => {
                cluster::status(&mut Kafka::new(&bootstrap)?, &mut Output::new(bootstrap.json)).await
            }
            ClusterCommand::Reassign { cluster, topic, partition, replicas, json } => {
                internal::reassign(&cluster, &mut Output::new(json), &topic, partition, &replicas).await
            }
            ClusterCommand::Decommission { cluster, node, json } => {
                internal::decommission(&cluster, &mut Output::new(json), node).await
            }
        },
        Command::Group { bootstrap, command } => {
            group::run(&mut Kafka::new(&bootstrap)?, &mut Output::new(bootstrap.json), command).await
        }
        Command::Produce { bootstrap, args } => {
            produce::run(&mut Kafka::new(&bootstrap)?, &mut Output::new(bootstrap.json), args).await
        }
        Command::Consume { bootstrap, args } => {
            consume::run(&mut Kafka::new(&bootstrap)?, &mut Output::new(bootstrap.json), args).await
        }
    }
}
