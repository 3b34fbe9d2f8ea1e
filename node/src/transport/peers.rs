//! The peer table: address book, the one registered connection per peer, dialing with
//! backoff, accepting, and the duplicate-connection rule.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use futures::future::Shared;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::conn::{self, Conn};
use super::frame::{Hello, PROTOCOL_VERSION};
use super::handshake::{self, Halves};
use super::io::ms;
use super::stats::Counters;
use super::{Inner, NodeId, TransportError, lock};

/// Incoming connections allowed in the handshake at once; more are dropped on arrival.
pub(crate) const HANDSHAKES_IN_PROGRESS_MAX: usize = 64;

/// The outcome of a dial, shared by every call waiting for it.
type DialResult = Result<Arc<Conn>, String>;
type DialInProgress = Shared<oneshot::Receiver<DialResult>>;

pub(crate) struct PeerState {
    /// Where to dial; `None` for a peer known only from a connection it made to us.
    addr: Option<String>,
    /// The registered connection (possibly closed, until it is deregistered).
    conn: Option<Arc<Conn>>,
    /// The dial in progress, if any: callers wait on it instead of dialing again.
    dialing: Option<DialInProgress>,
    backoff: Backoff,
    /// Request bytes in flight to this peer (`in_flight_bytes_max` permits), across
    /// connections: a replaced connection's calls still count until they finish.
    in_flight: Arc<Semaphore>,
}

impl PeerState {
    fn new(in_flight_bytes_max: usize) -> Self {
        PeerState {
            addr: None,
            conn: None,
            dialing: None,
            backoff: Backoff::default(),
            in_flight: Arc::new(Semaphore::new(in_flight_bytes_max)),
        }
    }

    fn live_conn(&self) -> Option<&Arc<Conn>> {
        self.conn.as_ref().filter(|c| !c.is_closed())
    }
}

/// What to do with a connection that just completed its handshake, decided under the lock.
struct Install {
    /// The connection calls should use now.
    winner: Arc<Conn>,
    /// The new connection won and its task must be started.
    start_new: bool,
    /// A connection to close (the loser of a duplicate pair), after unlocking.
    close: Option<Arc<Conn>>,
    /// The old connection survived a duplicate: probe it so that if it is half dead (the
    /// peer dropped it but its EOF is still queued behind a healed partition) it fails now.
    ping_winner: bool,
}

impl Inner {
    fn hello(&self) -> Hello {
        Hello { version: PROTOCOL_VERSION, node_id: self.self_id, cluster_id: self.config.cluster_id.clone() }
    }

    pub(crate) fn set_peer_addr(&self, id: NodeId, addr: String) {
        let mut peers = lock(&self.peers);
        let peer = peers.entry(id).or_insert_with(|| PeerState::new(self.config.in_flight_bytes_max));
        if peer.addr.as_deref() != Some(addr.as_str()) {
            peer.addr = Some(addr);
            peer.backoff.record_success();
        }
    }

    pub(crate) fn peers_down(&self) -> std::collections::BTreeSet<NodeId> {
        lock(&self.peers)
            .iter()
            .filter(|(_, p)| p.live_conn().is_none() && p.backoff.failing())
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn connections_open(&self) -> u64 {
        lock(&self.peers).values().filter(|p| p.live_conn().is_some()).count() as u64
    }

    /// The live connection to `to` (dialing if needed) and the peer's in-flight budget.
    pub(crate) async fn connection(
        self: &Arc<Self>,
        to: NodeId,
    ) -> Result<(Arc<Conn>, Arc<Semaphore>), TransportError> {
        let (dial, budget) = {
            let mut peers = lock(&self.peers);
            let Some(peer) = peers.get_mut(&to).filter(|_| to != self.self_id) else {
                return Err(TransportError::UnknownPeer(to));
            };
            let budget = peer.in_flight.clone();
            if let Some(conn) = peer.live_conn() {
                return Ok((conn.clone(), budget));
            }
            let dial = match &peer.dialing {
                Some(dial) => dial.clone(),
                None => {
                    if let Some(reason) = peer.backoff.blocked(Instant::now()) {
                        return Err(TransportError::Unreachable { peer: to, reason });
                    }
                    let Some(addr) = peer.addr.clone() else {
                        return Err(TransportError::UnknownPeer(to));
                    };
                    let (tx, rx) = oneshot::channel();
                    let dial = rx.shared();
                    peer.dialing = Some(dial.clone());
                    // The dial runs in its own task so that it completes (and records its
                    // outcome) even if every caller waiting for it gives up.
                    crate::rt::spawn(self.clone().dial_task(to, addr, tx));
                    dial
                }
            };
            (dial, budget)
        };
        match dial.await {
            Ok(Ok(conn)) => Ok((conn, budget)),
            Ok(Err(reason)) => Err(TransportError::Unreachable { peer: to, reason }),
            Err(_) => Err(if self.shutdown.is_closed() {
                TransportError::Closed
            } else {
                TransportError::Unreachable { peer: to, reason: "dial abandoned".into() }
            }),
        }
    }

    async fn dial_task(self: Arc<Self>, to: NodeId, addr: String, done: oneshot::Sender<DialResult>) {
        Counters::bump(&self.stats.dials);
        let hello = self.hello();
        let connect_timeout = ms(self.config.connect_timeout_ms);
        let dialed =
            tokio::time::timeout(connect_timeout, handshake::dial(&addr, &hello, to, self.config.frame_bytes_max))
                .await
                .unwrap_or_else(|_| {
                    Err(format!("connect and handshake took over {} ms", self.config.connect_timeout_ms))
                });
        let result = match dialed {
            Ok(halves) => Ok(self.install(to, self.self_id, halves)),
            Err(reason) => {
                Counters::bump(&self.stats.dial_failures);
                tracing::debug!(self_id = self.self_id, peer = to, %addr, %reason, "dial failed");
                Err(reason)
            }
        };
        let result = {
            let mut peers = lock(&self.peers);
            if let Some(peer) = peers.get_mut(&to) {
                peer.dialing = None;
                match &result {
                    Ok(Some(_)) => peer.backoff.record_success(),
                    Ok(None) => {}
                    Err(reason) => peer.backoff.record_failure(
                        Instant::now(),
                        reason.clone(),
                        self.config.backoff_min_ms,
                        self.config.backoff_max_ms,
                    ),
                }
            }
            match result {
                Ok(Some(conn)) => Ok(conn),
                Ok(None) => Err("transport shut down".to_string()),
                Err(reason) => Err(reason),
            }
        };
        let _ = done.send(result);
    }

    pub(crate) async fn accept(self: Arc<Self>, stream: TcpStream, addr: String) {
        let Ok(_permit) = self.handshakes.clone().try_acquire_owned() else {
            Counters::bump(&self.stats.accept_failures);
            tracing::warn!(self_id = self.self_id, %addr, "too many handshakes in progress; dropping connection");
            return;
        };
        let hello = self.hello();
        let accepted = tokio::time::timeout(
            ms(self.config.connect_timeout_ms),
            handshake::accept(stream, &hello, self.config.frame_bytes_max),
        )
        .await
        .unwrap_or_else(|_| Err("handshake timed out".to_string()));
        match accepted {
            Ok((peer, halves)) => {
                Counters::bump(&self.stats.accepts);
                self.install(peer, peer, halves);
            }
            Err(reason) => {
                Counters::bump(&self.stats.accept_failures);
                tracing::warn!(self_id = self.self_id, %addr, %reason, "rejected incoming connection");
            }
        }
    }

    /// Registers a connection that completed its handshake, keeping one per peer: of two live
    /// connections, the one dialed by the lower node id survives on both sides; a newer one
    /// from the same dialer replaces the older. Returns the connection calls should use, or
    /// `None` if the transport is shut down.
    fn install(self: &Arc<Self>, peer: NodeId, dialer: NodeId, halves: Halves) -> Option<Arc<Conn>> {
        let (reader, writer) = halves;
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (new, io) = Conn::new(id, peer, dialer, reader, writer);
        let decision = {
            let mut peers = lock(&self.peers);
            if self.shutdown.is_closed() {
                return None;
            }
            let state = peers.entry(peer).or_insert_with(|| PeerState::new(self.config.in_flight_bytes_max));
            decide(self.self_id, state, new)
        };
        if let Some(loser) = &decision.close {
            let reason = format!("duplicate connection (keeping the one dialed by node {})", decision.winner.dialer);
            self.close_conn(loser, &reason);
        }
        if decision.ping_winner {
            decision.winner.try_ping();
        }
        if decision.start_new {
            crate::rt::spawn(conn::run(self.clone(), decision.winner.clone(), io));
        }
        // A losing new connection's halves (in `io`) drop here, closing its socket.
        Some(decision.winner)
    }

    /// Closes `conn` (idempotent), failing its pending calls, and deregisters it.
    pub(crate) fn close_conn(&self, conn: &Arc<Conn>, reason: &str) {
        let shut_down = self.shutdown.is_closed();
        let first = conn.close(|| {
            if shut_down {
                TransportError::Closed
            } else {
                TransportError::Unreachable { peer: conn.peer, reason: reason.to_string() }
            }
        });
        if !first {
            return;
        }
        Counters::bump(&self.stats.connections_closed);
        tracing::debug!(self_id = self.self_id, peer = conn.peer, conn = conn.id, %reason, "connection closed");
        let mut peers = lock(&self.peers);
        if let Some(state) = peers.get_mut(&conn.peer)
            && state.conn.as_ref().is_some_and(|c| c.id == conn.id)
        {
            state.conn = None;
        }
    }

    pub(crate) fn shutdown_all(&self) {
        self.shutdown.close();
        let conns: Vec<Arc<Conn>> = {
            let peers = lock(&self.peers);
            for state in peers.values() {
                state.in_flight.close();
            }
            peers.values().filter_map(|p| p.conn.clone()).collect()
        };
        for conn in conns {
            self.close_conn(&conn, "transport shut down");
        }
    }
}

/// The duplicate-connection rule (pure apart from the `Arc`s).
fn decide(self_id: NodeId, state: &mut PeerState, new: Arc<Conn>) -> Install {
    let Some(old) = state.live_conn().cloned() else {
        state.conn = Some(new.clone());
        return Install { winner: new, start_new: true, close: None, ping_winner: false };
    };
    let preferred_dialer = self_id.min(new.peer);
    let new_wins = new.dialer == old.dialer || new.dialer == preferred_dialer;
    if new_wins {
        state.conn = Some(new.clone());
        Install { winner: new, start_new: true, close: Some(old), ping_winner: false }
    } else {
        Install { winner: old, start_new: false, close: Some(new), ping_winner: true }
    }
}
