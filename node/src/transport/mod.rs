//! Node-to-node transport: one multiplexed TCP connection per node pair, shared by every Raft
//! group, carrying requests in both directions.
//!
//! Layout:
//! - [`frame`]: the wire format, pure encode/decode over byte buffers (and the hello payload).
//! - `handshake`: the hello exchange that opens every connection (cluster id, node id).
//! - `io`: a cancel-safe frame reader and the batching writer loop.
//! - `conn`: one live connection: request ids, pending calls, and its read/write task.
//! - `peers`: the address book, dialing (one dial at a time per peer, with backoff), and the
//!   rule that leaves one connection per pair.
//! - `backoff`: the redial schedule (pure).
//! - [`chaos`] (madsim only): requests served late, out of order, and Raft's twice, for the
//!   simulation's nemesis.
//! - `stats`: counters behind [`Transport::stats`].
//!
//! Rules the code keeps (see DESIGN.md, "Transport"):
//! - At most one registered connection per peer. Either side dials when it has a request and no
//!   live connection; if two exist, both sides keep the one dialed by the lower node id (a
//!   newer connection from the same dialer replaces the older one: the dialer gave it up).
//! - Every call has a timeout. A connection on which a call timed out and then nothing arrived
//!   for `idle_dead_ms` is closed, and calls pending on a closed connection fail at once with
//!   `Unreachable` (a partition in madsim is a stall, not an error).
//! - Bounded: frame size (`frame_bytes_max`), request bytes in flight per peer and per
//!   connection being served (`in_flight_bytes_max`), writer queue frames, handshakes.
//! - Deterministic under madsim: `BTreeMap`s, FIFO wake-ups (semaphores, mpsc, oneshot), biased
//!   `select!`, no jitter, no `tokio::sync::watch`, no wall clock.

mod backoff;
#[cfg(madsim)]
pub mod chaos;
mod conn;
pub mod frame;
mod handshake;
mod io;
mod peers;
mod stats;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use self::conn::CloseSignal;
use self::frame::Flags;
use self::peers::PeerState;
use self::stats::Counters;
pub use self::stats::TransportStats;

pub type NodeId = u64;

/// Transport settings. Build with [`TransportConfig::new`], adjust fields, and let
/// [`Transport::new`] validate.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Connections between nodes of different clusters are refused at the handshake.
    pub cluster_id: String,
    /// Largest frame on the wire, header included (default 16 MiB; at most `u32::MAX`).
    pub frame_bytes_max: usize,
    /// Request bytes in flight to one peer, and request bytes being served for one connection
    /// (default 64 MiB). A call waits (within its timeout) for room. At least `frame_bytes_max`.
    pub in_flight_bytes_max: usize,
    /// Limit for a TCP connect plus the handshake, either side (default 1000 ms).
    pub connect_timeout_ms: u64,
    /// First redial delay after a failed dial; doubles per failure (default 50 ms).
    pub backoff_min_ms: u64,
    /// Longest redial delay (default 1000 ms).
    pub backoff_max_ms: u64,
    /// A connection on which a call timed out is closed after this long with nothing received
    /// (default 2000 ms).
    pub idle_dead_ms: u64,
}

impl TransportConfig {
    pub fn new(cluster_id: impl Into<String>) -> Self {
        TransportConfig {
            cluster_id: cluster_id.into(),
            frame_bytes_max: 16 << 20,
            in_flight_bytes_max: 64 << 20,
            connect_timeout_ms: 1000,
            backoff_min_ms: 50,
            backoff_max_ms: 1000,
            idle_dead_ms: 2000,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError(why));
        if self.cluster_id.is_empty() || self.cluster_id.len() > frame::CLUSTER_ID_BYTES_MAX {
            return invalid(format!("cluster_id must be 1..={} bytes", frame::CLUSTER_ID_BYTES_MAX));
        }
        if self.frame_bytes_max < frame::HEADER_BYTES + 256 || self.frame_bytes_max > u32::MAX as usize {
            return invalid(format!(
                "frame_bytes_max {} must be in {}..={}",
                self.frame_bytes_max,
                frame::HEADER_BYTES + 256,
                u32::MAX
            ));
        }
        if self.in_flight_bytes_max < self.frame_bytes_max || self.in_flight_bytes_max > Semaphore::MAX_PERMITS {
            return invalid(format!(
                "in_flight_bytes_max {} must be at least frame_bytes_max {}",
                self.in_flight_bytes_max, self.frame_bytes_max
            ));
        }
        if self.connect_timeout_ms == 0 || self.idle_dead_ms == 0 || self.backoff_min_ms == 0 {
            return invalid("connect_timeout_ms, idle_dead_ms and backoff_min_ms must be > 0".into());
        }
        if self.backoff_max_ms < self.backoff_min_ms {
            return invalid("backoff_max_ms must be >= backoff_min_ms".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport config: {0}")]
pub struct ConfigError(pub String);

/// Serves requests arriving from peers. `kind` and `group` are opaque to the transport. Each
/// request runs in its own task; an `Err` reaches the caller as [`TransportError::Remote`].
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, from: NodeId, group: u64, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>>;
}

/// The handler of a transport that only makes calls (a client: the CLI, the simulator's
/// producers): it refuses every request.
pub struct ClientOnly;

impl Handler for ClientOnly {
    fn handle(
        &self,
        _from: NodeId,
        _group: u64,
        _kind: u8,
        _payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        Box::pin(async { Err("this transport only makes calls; it serves nothing".to_string()) })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection: dial failed, backing off, or the connection closed with the call pending
    /// (the request may or may not have been handled).
    #[error("node {peer} unreachable: {reason}")]
    Unreachable { peer: NodeId, reason: String },
    /// No response within the call's timeout (the request may or may not have been handled).
    #[error("call to node {peer} timed out after {ms} ms")]
    Timeout { peer: NodeId, ms: u64 },
    /// The peer's handler returned an error.
    #[error("remote handler failed: {0}")]
    Remote(String),
    /// The request frame would exceed `frame_bytes_max` (value: its size in bytes).
    #[error("request frame of {0} bytes exceeds frame_bytes_max")]
    TooLarge(usize),
    /// The transport was shut down.
    #[error("transport shut down")]
    Closed,
    /// No address known for the node (and no live connection from it), or the node is us.
    #[error("unknown peer node {0}")]
    UnknownPeer(NodeId),
}

/// State shared by the transport handle, its connections' tasks and its dial tasks.
pub(crate) struct Inner {
    pub(crate) self_id: NodeId,
    pub(crate) config: TransportConfig,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) stats: Counters,
    /// Address book, connections, dials and in-flight budgets, by peer.
    pub(crate) peers: Mutex<BTreeMap<NodeId, PeerState>>,
    pub(crate) next_conn_id: AtomicU64,
    /// Bounds connections in the handshake at once (accept side).
    pub(crate) handshakes: Arc<Semaphore>,
    pub(crate) shutdown: CloseSignal,
    /// What the layer above attached to this transport, once: the Raft glue's heartbeat batcher
    /// (`raft::heartbeat`). Typed `Any` so the transport does not depend on that layer.
    attachment: OnceLock<Arc<dyn Any + Send + Sync>>,
}

/// Locks a std mutex, ignoring poisoning (no code panics while holding these locks, and a
/// panic aborts the simulation anyway). Never held across an await.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The node's transport handle; cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl Transport {
    pub fn new(self_id: NodeId, config: TransportConfig, handler: Arc<dyn Handler>) -> Result<Transport, ConfigError> {
        config.validate()?;
        Ok(Transport {
            inner: Arc::new(Inner {
                self_id,
                config,
                handler,
                stats: Counters::default(),
                peers: Mutex::new(BTreeMap::new()),
                next_conn_id: AtomicU64::new(1),
                handshakes: Arc::new(Semaphore::new(peers::HANDSHAKES_IN_PROGRESS_MAX)),
                shutdown: CloseSignal::new(),
                attachment: OnceLock::new(),
            }),
        })
    }

    pub fn self_id(&self) -> NodeId {
        self.inner.self_id
    }

    /// The largest frame this transport sends or accepts, header included.
    pub fn frame_bytes_max(&self) -> usize {
        self.inner.config.frame_bytes_max
    }

    /// Sets where to dial `id`. May change at runtime: the next dial uses the new address (a
    /// live connection is kept until it fails), and a changed address clears the backoff.
    pub fn set_peer_addr(&self, id: NodeId, addr: String) {
        self.inner.set_peer_addr(id, addr);
    }

    /// Peers this node knows to be down: no live connection, and the last dial to them failed
    /// (refused, or no handshake within `connect_timeout_ms`). A peer is no longer down as soon
    /// as a connection to it is up again, either way. Every node dials every peer at least once
    /// a gossip interval, so a dead peer is known within about one.
    pub fn peers_down(&self) -> std::collections::BTreeSet<NodeId> {
        self.inner.peers_down()
    }

    /// Accepts connections until the transport is shut down. Spawned by the caller. Accept
    /// errors are logged and retried after `backoff_min_ms` (they are per-connection or
    /// resource exhaustion, not a dead listener).
    pub async fn serve(&self, listener: tokio::net::TcpListener) {
        let inner = &self.inner;
        loop {
            let accepted = tokio::select! {
                biased;
                _ = inner.shutdown.closed() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, addr)) => {
                    crate::rt::spawn(inner.clone().accept(stream, addr.to_string()));
                }
                Err(e) => {
                    tracing::warn!(self_id = inner.self_id, error = %e, "accept failed");
                    tokio::time::sleep(io::ms(inner.config.backoff_min_ms)).await;
                }
            }
        }
    }

    /// Sends one request to `to` for `group` and waits for its response, up to `timeout`
    /// (which covers dialing, waiting for in-flight room, and the round trip).
    pub async fn call(
        &self,
        to: NodeId,
        group: u64,
        kind: u8,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let inner = &self.inner;
        if inner.shutdown.is_closed() {
            return Err(TransportError::Closed);
        }
        let frame_bytes = frame::wire_bytes(payload.len());
        if frame_bytes > inner.config.frame_bytes_max {
            Counters::bump(&inner.stats.frames_too_large);
            return Err(TransportError::TooLarge(frame_bytes));
        }
        let deadline = Instant::now() + timeout;
        let timed_out = || {
            Counters::bump(&inner.stats.timeouts);
            TransportError::Timeout { peer: to, ms: timeout.as_millis() as u64 }
        };
        let remaining = || deadline.saturating_duration_since(Instant::now());

        let (conn, budget) = tokio::time::timeout(timeout, inner.connection(to)).await.map_err(|_| timed_out())??;
        let permit = tokio::time::timeout(remaining(), budget.acquire_many_owned(frame_bytes as u32))
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| TransportError::Closed)?;

        let mut pending = conn.register_call()?;
        let request = frame::Frame { kind, flags: Flags::REQUEST, group, request_id: pending.request_id, payload };
        let bytes = frame::encode_to_bytes(&request).map_err(|_| TransportError::TooLarge(frame_bytes))?;
        let exchange = async {
            conn.send(bytes).await?;
            match (&mut pending.reply).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::Unreachable { peer: to, reason: "connection closed".into() }),
            }
        };
        let result = tokio::time::timeout(remaining(), exchange).await;
        drop(permit);
        match result {
            Ok(result) => result,
            Err(_) => {
                conn.mark_suspect();
                Err(timed_out())
            }
        }
    }

    /// Stops accepting, closes every connection (pending calls fail with `Closed`), and makes
    /// later calls fail with `Closed`. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown_all();
    }

    pub fn stats(&self) -> TransportStats {
        self.inner.stats.snapshot(self.inner.connections_open())
    }

    /// Attaches `value` to this transport for the layer above; at most once. `false` if
    /// something was attached already (and `value` is dropped).
    pub(crate) fn attach(&self, value: Arc<dyn Any + Send + Sync>) -> bool {
        self.inner.attachment.set(value).is_ok()
    }

    /// The attached value, if there is one and it is a `T`.
    pub(crate) fn attached<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.inner.attachment.get()?.clone().downcast::<T>().ok()
    }
}
