//! Stopping `keel node` and `keel dev`: the first SIGTERM or SIGINT (Ctrl-C) starts a graceful
//! stop — each node hands the leadership of every Raft group it leads to another voter and waits
//! until it leads none, at most `--shutdown-timeout-ms` (see `keel_node::drain`), then stops; a
//! second signal during that wait exits at once (status 1), as a crash would: nothing
//! acknowledged is lost, but the groups still led wait out an election timeout.

use std::sync::Arc;
use std::time::Duration;

use keel_node::node::Node;
use tracing::Instrument;

#[derive(clap::Args, Clone, Copy)]
pub struct ShutdownArgs {
    /// How long a graceful stop (the first SIGTERM or SIGINT) may spend handing off leadership,
    /// per node, before the node stops anyway.
    #[arg(long, env = "KEEL_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,
}

/// The stop signals, registered once so that a second one is caught too.
struct Signals {
    #[cfg(not(madsim))]
    terminate: tokio::signal::unix::Signal,
    #[cfg(not(madsim))]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(not(madsim))]
    fn new() -> anyhow::Result<Signals> {
        use anyhow::Context;
        use tokio::signal::unix::SignalKind;
        Ok(Signals {
            terminate: tokio::signal::unix::signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: tokio::signal::unix::signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    #[cfg(madsim)]
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    /// Waits for the next signal; its name.
    #[cfg(not(madsim))]
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }

    #[cfg(madsim)]
    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Runs until a stop signal, then stops `nodes` gracefully one after the other (see the module
/// docs). Returns once every node stopped; exits the process on a second signal.
pub async fn run_until_signalled(nodes: &[Arc<Node>], args: ShutdownArgs) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let first = signals.next().await;
    let timeout = Duration::from_millis(args.shutdown_timeout_ms);
    tracing::info!(
        signal = first,
        timeout_ms = args.shutdown_timeout_ms,
        "stopping gracefully: handing off leadership (a second signal stops at once)"
    );
    let stop = async {
        for node in nodes {
            let span = super::start::node_span(node.id);
            let report = node.stop_gracefully(timeout).instrument(span.clone()).await;
            let _in_node = span.enter();
            tracing::info!(handed_off = report.handed_off, still_leading = ?report.still_leading, "node stopped");
        }
    };
    tokio::select! {
        () = stop => Ok(()),
        second = signals.next() => {
            tracing::warn!(signal = second, "second signal: stopping at once, without finishing the hand-off");
            std::process::exit(1)
        }
    }
}
