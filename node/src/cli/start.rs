//! Starting nodes from their settings: `keel node` (one node) and `keel dev` (a node per voter
//! in this process). The I/O side of `node_config`: reading the file, binding listeners, waiting
//! for a stop signal (then stopping gracefully: `super::shutdown`).
//!
//! Every task of a node runs in a `node{id=N}` tracing span (entered here, carried into every
//! task the node spawns by `keel_node::rt::spawn`), so each log line says which node wrote it
//! — in `keel dev` the three nodes share one process and one log.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use keel_core::storage::fs::FsStorage;
use keel_node::node::Node;
use keel_node::partition::LogObserver;
use tracing::Instrument;

use super::config_file;
use super::node_config::DevFlags;
use super::node_config::NodeSettings;
use super::node_config::RawSettings;
use super::node_config::validate_dev;
use super::node_config::validate_node;
use super::shutdown;
use super::shutdown::ShutdownArgs;

/// The file's settings, or none without `--config`.
fn file_settings(config: Option<&Path>) -> anyhow::Result<RawSettings> {
    Ok(match config {
        Some(path) => config_file::read(path)?,
        None => RawSettings::default(),
    })
}

/// `keel node`: flags and environment over the file, checked, then the node until SIGTERM or
/// SIGINT, which stop it gracefully.
pub async fn run_node(config: Option<&Path>, flags: RawSettings, stop: ShutdownArgs) -> anyhow::Result<()> {
    let settings = validate_node(flags.over(file_settings(config)?))?;
    let node = start_node(&settings).await?;
    shutdown::run_until_signalled(&[node], stop).await
}

/// `keel dev`: the nodes of `nodes` in this process, Kafka and HTTP ports from `--kafka-port`
/// and `--http-port` up.
pub async fn run_dev(config: Option<&Path>, flags: &DevFlags, stop: ShutdownArgs) -> anyhow::Result<()> {
    let ports = (flags.kafka_port, flags.http_port);
    let nodes = validate_dev(flags.raw().over(file_settings(config)?), flags.data_dir.clone(), ports)?;
    let mut running = Vec::new();
    for settings in &nodes {
        running.push((settings.id, start_node(settings).await?));
    }
    wait_registered(&running).await;
    let kafka: Vec<&str> = nodes.iter().map(|n| n.kafka_advertised.as_str()).collect();
    println!("keel dev: Kafka clients connect to {}", kafka.join(","));
    let http: Vec<String> = nodes.iter().map(|n| format!("http://{}/", n.http_listen)).collect();
    println!("keel dev: metrics and status pages at {}", http.join(", "));
    println!("keel dev: {} nodes up, data in {}; Ctrl-C stops", running.len(), flags.data_dir.display());
    let nodes: Vec<Arc<Node>> = running.into_iter().map(|(_, node)| node).collect();
    shutdown::run_until_signalled(&nodes, stop).await?;
    println!("keel dev: stopped");
    Ok(())
}

/// How often `keel dev` says which nodes it still waits for.
const REGISTER_NOTICE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until every node of `running` sees every one of them registered in the metadata, so
/// that "N nodes up" means a topic with replication factor N can be created (a factor above
/// the registered nodes is refused).
async fn wait_registered(running: &[(u64, Arc<Node>)]) {
    let ids: Vec<u64> = running.iter().map(|(id, _)| *id).collect();
    let mut last_notice = tokio::time::Instant::now();
    loop {
        let missing = unregistered(running.iter().map(|(_, n)| n.view().metadata), &ids);
        if missing.is_empty() {
            return;
        }
        if last_notice.elapsed() >= REGISTER_NOTICE_EVERY {
            let missing: Vec<String> = missing.iter().map(u64::to_string).collect();
            println!("keel dev: waiting for node(s) {} to register", missing.join(","));
            last_notice = tokio::time::Instant::now();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The ids among `ids` that some node's metadata (`states`) does not list yet, sorted.
fn unregistered(
    states: impl IntoIterator<Item = keel_core::metadata::MetadataState>,
    ids: &[u64],
) -> std::collections::BTreeSet<u64> {
    let mut missing = std::collections::BTreeSet::new();
    for s in states {
        missing.extend(ids.iter().filter(|id| !s.nodes.contains_key(id)).copied());
    }
    missing
}

/// The span every task and log line of node `id` runs in.
pub fn node_span(id: u64) -> tracing::Span {
    tracing::info_span!("node", id)
}

/// Binds the node's listeners and starts it, its Kafka listener and its HTTP listener, in the
/// node's span.
pub async fn start_node(settings: &NodeSettings) -> anyhow::Result<Arc<Node>> {
    start(settings).instrument(node_span(settings.id)).await
}

async fn start(settings: &NodeSettings) -> anyhow::Result<Arc<Node>> {
    let id = settings.id;
    let mut config = settings.node_config();
    let listen = &settings.listen;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("node {id} cannot listen on {listen}"))?;
    let kafka_listen = &settings.kafka_listen;
    let kafka_listener = tokio::net::TcpListener::bind(kafka_listen)
        .await
        .with_context(|| format!("node {id} cannot listen for Kafka clients on {kafka_listen}"))?;
    let http_listen = &settings.http_listen;
    let http_listener = tokio::net::TcpListener::bind(http_listen)
        .await
        .with_context(|| format!("node {id} cannot listen for HTTP on {http_listen}"))?;
    // Port 0 picks a free port; advertise the one picked.
    if let Some(host) = config.kafka_addr.strip_suffix(":0")
        && let Ok(bound) = kafka_listener.local_addr()
    {
        config.kafka_addr = format!("{host}:{}", bound.port());
    }
    let advertised = config.kafka_addr.clone();
    let node = Node::start(config, Arc::new(FsStorage), listener, Arc::new(LogObserver))
        .await
        .with_context(|| format!("node {id} failed to start"))?;
    keel_node::rt::spawn(keel_node::kafka::serve(node.clone(), kafka_listener, settings.kafka.clone()));
    keel_node::rt::spawn(keel_node::http::serve(node.clone(), http_listener, Default::default()));
    tracing::info!(%listen, kafka = %kafka_listen, %advertised, http = %http_listen, "node started");
    Ok(node)
}

#[cfg(test)]
mod tests {
    use keel_core::metadata::Command;
    use keel_core::metadata::MetadataState;

    use super::unregistered;

    fn registered(ids: &[u64]) -> MetadataState {
        let mut s = MetadataState::new(3);
        for (i, id) in ids.iter().enumerate() {
            let cmd = Command::RegisterNode {
                id: *id,
                addr: format!("127.0.0.1:{}", 19201 + i),
                kafka_addr: format!("127.0.0.1:{}", 9092 + i),
                rack: None,
            };
            s.apply(i as u64 + 1, &cmd).expect("registers");
        }
        s
    }

    /// Protects "keel dev: 3 nodes up" (issue 17: a topic created right after it got RF 2):
    /// ready only when every node's metadata lists every node.
    #[test]
    fn ready_only_when_every_node_sees_every_registration() {
        let ids = [1, 2, 3];
        assert_eq!(unregistered([registered(&[1, 2, 3]), registered(&[1, 2])], &ids), [3].into());
        assert_eq!(unregistered([registered(&[2])], &ids), [1, 3].into());
        assert!(unregistered([registered(&[1, 2, 3]), registered(&[3, 2, 1])], &ids).is_empty());
    }
}
