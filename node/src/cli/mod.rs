//! The `keel` command line: the commands (clap), and what each runs.
//!
//! - [`node_config`]: `keel node` / `keel dev` settings (flags, `KEEL_*` variables, the file),
//!   validated into one struct; [`config_file`]: the TOML file; [`start`]: starting nodes from
//!   them.
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
pub mod config_file;
pub mod consume;
pub mod consume_group;
pub mod group;
pub mod internal;
pub mod kafka;
pub mod node_config;
pub mod output;
pub mod produce;
pub mod shutdown;
pub mod start;
pub mod topic;

use std::path::PathBuf;

use clap::Parser;
use clap::Subcommand;

use internal::ClusterArgs;
use kafka::BootstrapArgs;
use kafka::Kafka;
use node_config::DevFlags;
use node_config::RawSettings;
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
        /// TOML file for the settings the nodes share (`nodes`, `cluster_id`, `[broker]`,
        /// `[raft]`; docs/config.md); flags and KEEL_* variables override it.
        #[arg(long, env = "KEEL_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        flags: DevFlags,
        #[command(flatten)]
        shutdown: ShutdownArgs,
    },
    /// Runs one node of a cluster (every setting: docs/config.md). SIGTERM or SIGINT stops it
    /// gracefully: it hands off the leadership of every group it leads first; a second signal
    /// stops it at once.
    Node {
        /// TOML file with this node's settings (docs/config.md, docs/keel.example.toml); flags
        /// and KEEL_* variables override it.
        #[arg(long, env = "KEEL_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: RawSettings,
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
        Command::Dev { config, flags, shutdown } => start::run_dev(config.as_deref(), &flags, shutdown).await,
        Command::Node { config, settings, shutdown } => start::run_node(config.as_deref(), settings, shutdown).await,
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
