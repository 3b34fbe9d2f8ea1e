//! Heartbeat batching (`raft::heartbeat`) end to end over the transport, on tokio and under madsim:
//! several groups' heartbeats to one peer leave in one frame and each caller gets its own group's
//! answer; a group the peer does not host gets an error while the others succeed; a dead peer
//! fails every caller within that caller's own timeout.
//!
//! Run: `cargo test -p keel-node --test heartbeat_batch`, and under madsim
//! `RUSTFLAGS="--cfg madsim" cargo test -p keel-node --test heartbeat_batch` (one seed:
//! `MADSIM_TEST_SEED=<seed>`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, join_all};
use keel_core::log::LogConfig;
use keel_core::storage::sim::SimStorage;
use keel_node::partition::{LogObserver, Replica, ReplicaConfig};
use keel_node::raft::heartbeat::{self, HeartbeatBatchConfig, KIND_HEARTBEAT_BATCH, NODE_GROUP};
use keel_node::raft::network::{self, NetFactory};
use keel_node::raft::{NodeId, Raft, RaftTiming, TypeConfig, Vote};
use keel_node::transport::{ClientOnly, Handler, Transport, TransportConfig};
use openraft::errors::RPCError;
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{BasicNode, RaftNetworkFactory, RaftNetworkV2};
use tokio::net::TcpListener;
use tokio::time::Instant;

const LEADER: NodeId = 1;
const FOLLOWER: NodeId = 2;
/// Accepts connections and never answers.
const BLACK_HOLE: NodeId = 3;
/// Groups the follower hosts.
const GROUPS: [u64; 3] = [1, 2, 3];
const TIMEOUT: Duration = Duration::from_millis(500);

/// Hosts Raft groups; routes heartbeat batches to `serve_heartbeat_batch` and other Raft RPCs to
/// `network::serve` — the wiring a node's dispatcher needs.
struct Serve {
    rafts: Arc<Mutex<BTreeMap<u64, Raft>>>,
}

impl Handler for Serve {
    fn handle(&self, _from: NodeId, group: u64, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let rafts = self.rafts.clone();
        Box::pin(async move {
            if group == NODE_GROUP && kind == KIND_HEARTBEAT_BATCH {
                let lookup = |g: u64| rafts.lock().unwrap().get(&g).cloned().map(|r| (r, FOLLOWER));
                return heartbeat::serve_heartbeat_batch(lookup, &payload).await;
            }
            let raft = rafts.lock().unwrap().get(&group).cloned().ok_or(format!("no group {group}"))?;
            network::serve(&raft, FOLLOWER, kind, &payload).await
        })
    }
}

fn transport_config() -> TransportConfig {
    let mut c = TransportConfig::new("heartbeat-test");
    // Longer than every caller's timeout, so the black hole's stalled handshake is what they hit.
    c.connect_timeout_ms = 2000;
    c
}

#[cfg(madsim)]
fn listen_addr(id: NodeId) -> String {
    format!("10.0.0.{id}:7000")
}

#[cfg(not(madsim))]
fn listen_addr(_id: NodeId) -> String {
    "127.0.0.1:0".to_string()
}

/// Runs `f` on simulated node `id` (madsim), or right here (tokio).
#[cfg(madsim)]
async fn on_node<T: Send + 'static>(id: NodeId, f: impl Future<Output = T> + Send + 'static) -> T {
    let ip = format!("10.0.0.{id}").parse().expect("ip");
    let node = madsim::runtime::Handle::current().create_node().name(format!("node-{id}")).ip(ip).build();
    node.spawn(f).await.expect("node task")
}

#[cfg(not(madsim))]
async fn on_node<T: Send + 'static>(_id: NodeId, f: impl Future<Output = T> + Send + 'static) -> T {
    f.await
}

/// Starts the follower hosting `GROUPS` (uninitialized Raft groups: they accept any leader's
/// heartbeat and never start an election). Returns its address.
async fn start_follower() -> String {
    on_node(FOLLOWER, async {
        let rafts = Arc::new(Mutex::new(BTreeMap::new()));
        let transport = Transport::new(FOLLOWER, transport_config(), Arc::new(Serve { rafts: rafts.clone() }))
            .expect("transport config");
        let listener = TcpListener::bind(listen_addr(FOLLOWER)).await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let t = transport.clone();
        tokio::spawn(async move { t.serve(listener).await });
        let timing = RaftTiming { heartbeat_ms: 100, election_timeout_min_ms: 500, election_timeout_max_ms: 1000 };
        let config =
            ReplicaConfig::new(LogConfig::default(), keel_node::raft::config("heartbeat-test", timing).expect("raft"));
        let storage = SimStorage::new(7);
        for group in GROUPS {
            let dir = format!("/data/{group}").into();
            let replica = Replica::open(
                FOLLOWER,
                FOLLOWER,
                group,
                storage.clone(),
                dir,
                &config,
                transport.clone(),
                Arc::new(LogObserver),
            )
            .await
            .expect("open replica");
            rafts.lock().unwrap().insert(group, replica.raft().clone());
            // The replica's tasks hold what they need; the Raft handle above keeps the group.
        }
        addr
    })
    .await
}

/// Starts a listener that accepts connections and never says a word. Returns its address.
async fn start_black_hole() -> String {
    on_node(BLACK_HOLE, async {
        let listener = TcpListener::bind(listen_addr(BLACK_HOLE)).await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        addr
    })
    .await
}

/// A heartbeat from node `LEADER` as leader of term 1 (prev log id `None` matches any log).
fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, LEADER),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    }
}

type Sent = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>;

/// Sends one heartbeat of `group` to `target` through openraft's network client, as a leader's
/// heartbeat worker does. Returns the answer and how long it took.
async fn send(transport: Transport, target: NodeId, group: u64, timeout: Duration) -> (Sent, Duration) {
    let mut factory = NetFactory { transport, group };
    let mut client = factory.new_client(target, &BasicNode::default()).await;
    let started = Instant::now();
    let sent = client.append_entries(heartbeat(), RPCOption::new(timeout)).await;
    (sent, started.elapsed())
}

/// The leader side, on its own node: a transport with batching on (`window_ms`), knowing the
/// follower and the black hole. Runs `scenario` there.
async fn with_leader<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
    window_ms: u64,
    scenario: impl FnOnce(Transport) -> F + Send + 'static,
) -> T {
    let follower = start_follower().await;
    let black_hole = start_black_hole().await;
    on_node(LEADER, async move {
        let transport = Transport::new(LEADER, transport_config(), Arc::new(ClientOnly)).expect("transport config");
        transport.set_peer_addr(FOLLOWER, follower);
        transport.set_peer_addr(BLACK_HOLE, black_hole);
        let config = HeartbeatBatchConfig { window_ms, ..HeartbeatBatchConfig::default() };
        heartbeat::enable(&transport, config).expect("enable batching");
        scenario(transport).await
    })
    .await
}

/// Guarantee: heartbeats of several groups to one peer share one request frame, and each caller
/// gets its own group's answer.
#[cfg_attr(madsim, madsim::test)]
#[cfg_attr(not(madsim), tokio::test)]
async fn several_groups_heartbeats_to_one_peer_leave_in_one_frame() {
    with_leader(20, |t| async move {
        // Connect first, so the frames counted below are the batch alone.
        let (warm_up, _) = send(t.clone(), FOLLOWER, GROUPS[0], TIMEOUT).await;
        assert!(matches!(warm_up, Ok(AppendEntriesResponse::Success)), "{warm_up:?}");
        let batcher = heartbeat::batcher(&t).expect("enabled");
        let (frames_before, batches_before) = (t.stats().frames_out, batcher.stats().batches);

        let sent = join_all(GROUPS.map(|g| send(t.clone(), FOLLOWER, g, TIMEOUT))).await;
        for (group, (answer, _)) in GROUPS.iter().zip(&sent) {
            assert!(matches!(answer, Ok(AppendEntriesResponse::Success)), "group {group}: {answer:?}");
        }
        assert_eq!(t.stats().frames_out - frames_before, 1, "three heartbeats, one frame");
        assert_eq!(batcher.stats().batches - batches_before, 1);
        assert_eq!(batcher.stats().heartbeats, 1 + GROUPS.len() as u64);
    })
    .await;
}

/// Guarantee: one group missing on the peer fails only that group's caller.
#[cfg_attr(madsim, madsim::test)]
#[cfg_attr(not(madsim), tokio::test)]
async fn a_group_unknown_to_the_peer_gets_an_error_and_the_others_succeed() {
    with_leader(20, |t| async move {
        let groups = [GROUPS[0], 99, GROUPS[1]];
        let sent = join_all(groups.map(|g| send(t.clone(), FOLLOWER, g, TIMEOUT))).await;
        assert!(matches!(sent[0].0, Ok(AppendEntriesResponse::Success)), "{:?}", sent[0].0);
        assert!(matches!(sent[2].0, Ok(AppendEntriesResponse::Success)), "{:?}", sent[2].0);
        match &sent[1].0 {
            Err(RPCError::Network(e)) => assert!(e.to_string().contains("no partition 99"), "{e}"),
            other => panic!("group 99: {other:?}"),
        }
        assert_eq!(heartbeat::batcher(&t).expect("enabled").stats().batches, 1, "one batch for all three");
    })
    .await;
}

/// Guarantee: a peer that never answers fails every caller, each within its own timeout (the
/// batching window included), not the batch's longest.
#[cfg_attr(madsim, madsim::test)]
#[cfg_attr(not(madsim), tokio::test)]
async fn a_dead_peer_fails_every_caller_within_its_timeout() {
    with_leader(5, |t| async move {
        let timeouts = [100, 250, 400].map(Duration::from_millis);
        let sent =
            join_all(timeouts.iter().enumerate().map(|(i, &ttl)| send(t.clone(), BLACK_HOLE, i as u64, ttl))).await;
        for (ttl, (answer, took)) in timeouts.iter().zip(&sent) {
            assert!(matches!(answer, Err(RPCError::Unreachable(_))), "{answer:?}");
            assert!(*took >= *ttl && *took < *ttl + Duration::from_millis(50), "timeout {ttl:?}, took {took:?}");
        }
    })
    .await;
}
