//! The `keel` command line: the commands (clap), and what each runs.
//!
//! - [`node_config`]: `keel node` / `keel dev` settings, validated into the node's config.
//! - [`kafka`]: the client commands' Kafka connection (`--bootstrap`), errors as messages.
//! - [`topic`], [`produce`], [`consume`] ([`consume_group`]), [`cluster`], [`group`]: client commands over the Kafka protocol,
//!   so they work against any Kafka broker too.
//! - [`bench`], [`bench_produce`], [`bench_consume`]: `keel bench produce|consume`, load
//!   generators over the Kafka protocol with throughput, latency percentiles and a histogram.
//! - [`internal`]: `keel cluster reassign|decommission`, which only Keel has, over Keel's
//!   internal protocol.
//! - [`output`]: tables for people, `--json` for scripts, quiet on a closed pipe.

pub mod bench;
pub mod bench_consume;
pub mod bench_produce;
pub mod cluster;
pub mod consume;
pub mod consume_group;
pub mod group;
pub mod internal;
pub mod kafka;
pub mod node_config;
pub mod output;
pub mod produce;
pub mod topic;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use clap::Subcommand;

use kafka::BootstrapArgs;
use kafka::Kafka;
use node_config::BrokerArgs;
use node_config::ClusterArgs;
use node_config::KafkaArgs;
use node_config::RaftArgs;
use output::Output;

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
    /// Load generators: throughput and latency of producing and consuming.
    Bench {
        #[command(flatten)]
        bootstrap: BootstrapArgs,
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev { data_dir, kafka_port, broker, cluster, raft } => {
            node_config::run_dev(data_dir, kafka_port, broker, cluster, raft).await
        }
        Command::Node { id, data_dir, addr, listen, rack, kafka, cluster, raft } => {
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
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            node.shutdown().await;
            Ok(())
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
        Command::Bench { bootstrap, command } => {
            bench::run(&mut Kafka::new(&bootstrap)?, &mut Output::new(bootstrap.json), command).await
        }
    }
}
