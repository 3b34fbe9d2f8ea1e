//! The node-to-node transport over real loopback TCP (tokio): one connection per pair in both
//! directions, multiplexing, errors, timeouts, reconnects, garbage, and the in-flight bound.
#![cfg(not(madsim))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::{BoxFuture, join_all};
use keel_node::transport::frame::{self, Flags, Frame, Hello, PROTOCOL_VERSION};
use keel_node::transport::{Handler, NodeId, Transport, TransportConfig, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const ECHO: u8 = 1; // answers [node id u64][group u64][payload]
const FAIL: u8 = 2; // answers Err
const SLOW: u8 = 3; // sleeps the u64 ms in the payload, then answers empty
const GATED: u8 = 4; // waits for a permit on the node's gate, then answers empty

const TIMEOUT: Duration = Duration::from_secs(5);

/// What a node's handler observed; shared with the test.
struct Observed {
    gate: Semaphore,
    gated_now: AtomicUsize,
    gated_max: AtomicUsize,
    served_from: Mutex<Vec<NodeId>>,
}

struct TestHandler {
    id: NodeId,
    seen: Arc<Observed>,
}

impl Handler for TestHandler {
    fn handle(&self, from: NodeId, group: u64, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        self.seen.served_from.lock().unwrap().push(from);
        let id = self.id;
        match kind {
            ECHO => Box::pin(async move {
                let mut out = BytesMut::new();
                out.put_u64(id);
                out.put_u64(group);
                out.put_slice(&payload);
                Ok(out.freeze())
            }),
            FAIL => Box::pin(async move { Err(format!("boom from {id}")) }),
            SLOW => {
                let ms = (&payload[..]).get_u64();
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(Bytes::new())
                })
            }
            GATED => {
                let seen = self.seen.clone();
                let now = seen.gated_now.fetch_add(1, Ordering::SeqCst) + 1;
                seen.gated_max.fetch_max(now, Ordering::SeqCst);
                Box::pin(async move {
                    seen.gate.acquire().await.unwrap().forget();
                    seen.gated_now.fetch_sub(1, Ordering::SeqCst);
                    Ok(Bytes::new())
                })
            }
            _ => Box::pin(async move { Err(format!("unknown kind {kind}")) }),
        }
    }
}

struct Node {
    transport: Transport,
    addr: SocketAddr,
    seen: Arc<Observed>,
    serve: tokio::task::JoinHandle<()>,
}

fn config(cluster: &str) -> TransportConfig {
    let mut c = TransportConfig::new(cluster);
    c.connect_timeout_ms = 1000;
    c.backoff_min_ms = 20;
    c.backoff_max_ms = 200;
    c.idle_dead_ms = 300;
    c
}

async fn start_at(id: NodeId, config: TransportConfig, bind: &str) -> Node {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Observed {
        gate: Semaphore::new(0),
        gated_now: AtomicUsize::new(0),
        gated_max: AtomicUsize::new(0),
        served_from: Mutex::new(Vec::new()),
    });
    let handler = Arc::new(TestHandler { id, seen: seen.clone() });
    let transport = Transport::new(id, config, handler).unwrap();
    let t = transport.clone();
    let serve = tokio::spawn(async move { t.serve(listener).await });
    Node { transport, addr, seen, serve }
}

async fn start(id: NodeId) -> Node {
    start_at(id, config("test"), "127.0.0.1:0").await
}

fn introduce(nodes: &[&Node]) {
    for a in nodes {
        for b in nodes {
            if a.transport.self_id() != b.transport.self_id() {
                a.transport.set_peer_addr(b.transport.self_id(), b.addr.to_string());
            }
        }
    }
}

fn echo_of(response: &Bytes) -> (NodeId, u64, Bytes) {
    let mut r = response.clone();
    let id = r.get_u64();
    let group = r.get_u64();
    (id, group, r)
}

/// Calls, retrying `Unreachable` (what Raft does): a duplicate connection closed by the
/// one-per-pair rule fails the calls pending on it.
async fn call_retry(from: &Node, to: NodeId, group: u64, payload: &'static [u8]) -> Bytes {
    for _ in 0..50 {
        match from.transport.call(to, group, ECHO, Bytes::from_static(payload), TIMEOUT).await {
            Ok(b) => return b,
            Err(TransportError::Unreachable { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("call failed: {e}"),
        }
    }
    panic!("call kept failing");
}

/// Guarantee: one connection per node pair, used in both directions (DESIGN.md, Transport).
#[tokio::test]
async fn the_accepted_connection_carries_calls_back_to_the_dialer() {
    let (a, b) = (start(1).await, start(2).await);
    introduce(&[&a, &b]);
    let r = a.transport.call(2, 7, ECHO, Bytes::from_static(b"hi"), TIMEOUT).await.unwrap();
    assert_eq!(echo_of(&r), (2, 7, Bytes::from_static(b"hi")));
    let r = b.transport.call(1, 8, ECHO, Bytes::from_static(b"yo"), TIMEOUT).await.unwrap();
    assert_eq!(echo_of(&r), (1, 8, Bytes::from_static(b"yo")));
    assert_eq!(a.transport.stats().dials, 1);
    assert_eq!(b.transport.stats().dials, 0, "b reuses the connection a dialed");
    assert_eq!(a.transport.stats().connections_open, 1);
    assert_eq!(b.transport.stats().connections_open, 1);
    assert_eq!(a.seen.served_from.lock().unwrap().as_slice(), &[2]);
}

/// Guarantee: with every node calling every other at once (so both sides of a pair may dial
/// together), each pair ends with exactly one connection and every call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_calling_each_other_concurrently_share_one_connection_per_pair() {
    let nodes = [start(1).await, start(2).await, start(3).await];
    introduce(&[&nodes[0], &nodes[1], &nodes[2]]);
    let mut calls = Vec::new();
    for from in &nodes {
        for to in 1..=3u64 {
            if to == from.transport.self_id() {
                continue;
            }
            for group in 0..50u64 {
                calls.push(async move {
                    let r = call_retry(from, to, group, b"x").await;
                    assert_eq!(echo_of(&r), (to, group, Bytes::from_static(b"x")));
                });
            }
        }
    }
    join_all(calls).await;
    // Later calls go over the surviving connections without dialing again.
    let dials_before: Vec<u64> = nodes.iter().map(|n| n.transport.stats().dials).collect();
    for from in &nodes {
        for to in 1..=3u64 {
            if to != from.transport.self_id() {
                call_retry(from, to, 99, b"y").await;
            }
        }
    }
    for (n, before) in nodes.iter().zip(dials_before) {
        let s = n.transport.stats();
        assert_eq!(s.connections_open, 2, "node {} stats {s:?}", n.transport.self_id());
        assert_eq!(s.dials, before, "node {} redialed", n.transport.self_id());
    }
}

/// Guarantee: when both sides of a pair dial at once, both keep the connection dialed by the
/// lower node id; calls that were on the other one fail with `Unreachable` and succeed on retry.
#[tokio::test]
async fn simultaneous_dials_leave_the_connection_dialed_by_the_lower_id() {
    let (a, b) = (start(1).await, start(2).await);
    introduce(&[&a, &b]);
    // On one thread, both calls start dialing before either dial completes.
    let (ra, rb) = tokio::join!(
        a.transport.call(2, 0, ECHO, Bytes::new(), TIMEOUT),
        b.transport.call(1, 0, ECHO, Bytes::new(), TIMEOUT)
    );
    for r in [ra, rb] {
        assert!(matches!(r, Ok(_) | Err(TransportError::Unreachable { .. })), "{r:?}");
    }
    assert_eq!((a.transport.stats().dials, b.transport.stats().dials), (1, 1));
    call_retry(&a, 2, 0, b"").await;
    call_retry(&b, 1, 0, b"").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (sa, sb) = (a.transport.stats(), b.transport.stats());
    assert_eq!((sa.connections_open, sb.connections_open), (1, 1), "{sa:?} {sb:?}");
    // Node 2's own connection lost on both sides; nobody dialed again.
    assert_eq!((sa.dials, sb.dials), (1, 1), "{sa:?} {sb:?}");
    assert!(sa.connections_closed >= 1 && sb.connections_closed >= 1, "{sa:?} {sb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_on_many_groups_are_matched_to_their_responses() {
    let (a, b) = (start(1).await, start(2).await);
    introduce(&[&a, &b]);
    let calls = (0..2000u64).map(|i| {
        let t = a.transport.clone();
        async move {
            let payload = Bytes::from(i.to_be_bytes().to_vec());
            let r = t.call(2, i % 97, ECHO, payload.clone(), TIMEOUT).await.unwrap();
            assert_eq!(echo_of(&r), (2, i % 97, payload));
        }
    });
    join_all(calls).await;
    let s = a.transport.stats();
    assert_eq!((s.dials, s.connections_open), (1, 1));
    assert!(s.frames_out >= 2000 && s.frames_in >= 2000, "{s:?}");
}

#[tokio::test]
async fn a_handler_error_reaches_the_caller_as_remote() {
    let (a, b) = (start(1).await, start(2).await);
    introduce(&[&a, &b]);
    let err = a.transport.call(2, 0, FAIL, Bytes::new(), TIMEOUT).await.unwrap_err();
    assert_eq!(err, TransportError::Remote("boom from 2".into()));
    // The connection stays usable.
    a.transport.call(2, 0, ECHO, Bytes::new(), TIMEOUT).await.unwrap();
    assert_eq!(a.transport.stats().connections_open, 1);
}

#[tokio::test]
async fn a_call_times_out_and_its_late_response_is_dropped() {
    let (a, b) = (start(1).await, start(2).await);
    introduce(&[&a, &b]);
    let slow = Bytes::from(200u64.to_be_bytes().to_vec());
    let err = a.transport.call(2, 0, SLOW, slow, Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(err, TransportError::Timeout { peer: 2, ms: 50 });
    // The late response arrives while this call is pending; it must not be taken for it.
    let r = a.transport.call(2, 5, ECHO, Bytes::from_static(b"after"), TIMEOUT).await.unwrap();
    assert_eq!(echo_of(&r), (2, 5, Bytes::from_static(b"after")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = a.transport.stats();
    assert_eq!((s.timeouts, s.dials, s.connections_open), (1, 1, 1), "{s:?}");
}

#[tokio::test]
async fn a_restarted_peer_is_redialed_and_pending_calls_fail_promptly() {
    let a = start(1).await;
    let b = start(2).await;
    introduce(&[&a, &b]);
    a.transport.call(2, 0, ECHO, Bytes::new(), TIMEOUT).await.unwrap();
    assert!(a.transport.peers_down().is_empty());

    // A call pending on b when b goes away fails with Unreachable, well before its timeout.
    let slow = Bytes::from(10_000u64.to_be_bytes().to_vec());
    let pending = {
        let t = a.transport.clone();
        tokio::spawn(async move { t.call(2, 0, SLOW, slow, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    b.transport.shutdown();
    b.serve.await.unwrap();
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { peer: 2, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // While b is down calls fail (and back off) instead of hanging.
    let err = a.transport.call(2, 0, ECHO, Bytes::new(), TIMEOUT).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { peer: 2, .. }), "{err:?}");
    // ... and a knows b is down (what keeps Metadata from naming leaders on b).
    assert_eq!(a.transport.peers_down(), [2].into());

    // b comes back on the same address; a reconnects.
    let b2 = start_at(2, config("test"), &b.addr.to_string()).await;
    b2.transport.set_peer_addr(1, a.addr.to_string());
    let r = call_until_ok(&a, 2).await;
    assert_eq!(echo_of(&r).0, 2);
    assert!(a.transport.peers_down().is_empty(), "up again once a connection is");
    let r = b2.transport.call(1, 3, ECHO, Bytes::new(), TIMEOUT).await.unwrap();
    assert_eq!(echo_of(&r).0, 1);
    assert_eq!(a.transport.stats().connections_open, 1);
}

async fn call_until_ok(from: &Node, to: NodeId) -> Bytes {
    for _ in 0..200 {
        match from.transport.call(to, 0, ECHO, Bytes::new(), TIMEOUT).await {
            Ok(b) => return b,
            Err(TransportError::Unreachable { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("never reconnected");
}

async fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .ok();
    out
}

/// Guarantee: bytes from the network never crash the node (STYLE rule 7); a peer sending
/// garbage loses its connection and everyone else keeps being served.
#[tokio::test]
async fn garbage_closes_that_connection_and_the_server_keeps_serving() {
    let (a, b) = (start(1).await, start(2).await);
    introduce(&[&a, &b]);

    // Garbage instead of a hello: an impossible length.
    let mut raw = TcpStream::connect(b.addr).await.unwrap();
    raw.write_all(&[0xff; 64]).await.unwrap();
    let _ = read_to_eof(&mut raw).await;

    // A valid hello, then a frame with a bad checksum.
    let mut raw = TcpStream::connect(b.addr).await.unwrap();
    let hello = Hello { version: PROTOCOL_VERSION, node_id: 9, cluster_id: "test".into() };
    let mut bytes = BytesMut::new();
    frame::encode(&hello.to_frame().unwrap(), &mut bytes).unwrap();
    let request =
        Frame { kind: ECHO, flags: Flags::REQUEST, group: 1, request_id: 1, payload: Bytes::from_static(b"payload") };
    let start = bytes.len();
    frame::encode(&request, &mut bytes).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    assert!(bytes.len() > start);
    raw.write_all(&bytes).await.unwrap();
    let answer = read_to_eof(&mut raw).await;
    let mut answer = BytesMut::from(&answer[..]);
    let reply = frame::decode(&mut answer, 1 << 20).unwrap().expect("hello reply");
    assert_eq!(Hello::from_frame(&reply).unwrap().node_id, 2);
    assert!(answer.is_empty(), "the corrupt request must not be answered");

    let s = b.transport.stats();
    assert!(s.accept_failures >= 1 && s.decode_errors >= 1, "{s:?}");
    a.transport.call(2, 0, ECHO, Bytes::new(), TIMEOUT).await.unwrap();
}

#[tokio::test]
async fn a_different_cluster_is_refused_and_redials_back_off() {
    let a = start(1).await;
    let b = start_at(2, config("other"), "127.0.0.1:0").await;
    introduce(&[&a, &b]);
    let err = a.transport.call(2, 0, ECHO, Bytes::new(), TIMEOUT).await.unwrap_err();
    match &err {
        TransportError::Unreachable { peer: 2, reason } => assert!(reason.contains("cluster id mismatch"), "{reason}"),
        e => panic!("{e:?}"),
    }
    // Within the backoff window calls fail fast without dialing.
    let err = a.transport.call(2, 0, ECHO, Bytes::new(), TIMEOUT).await.unwrap_err();
    match &err {
        TransportError::Unreachable { reason, .. } => assert!(reason.contains("backing off"), "{reason}"),
        e => panic!("{e:?}"),
    }
    assert_eq!(a.transport.stats().dials, 1);
    assert_eq!(b.transport.stats().connections_open, 0);
}

/// Guarantee: request bytes in flight to one peer stay under `in_flight_bytes_max`; a call
/// waits for room within its timeout.
#[tokio::test]
async fn in_flight_bytes_per_peer_are_bounded() {
    let mut c = config("test");
    c.frame_bytes_max = 32 * 1024;
    c.in_flight_bytes_max = 64 * 1024;
    let a = start_at(1, c.clone(), "127.0.0.1:0").await;
    let b = start_at(2, c, "127.0.0.1:0").await;
    introduce(&[&a, &b]);
    // Each request is 20 KiB plus the header: three fit in 64 KiB, four do not.
    let payload = Bytes::from(vec![7u8; 20 * 1024]);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (t, p) = (a.transport.clone(), payload.clone());
            tokio::spawn(async move { t.call(2, 0, GATED, p, Duration::from_secs(10)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.seen.gated_now.load(Ordering::SeqCst), 3);
    // A call that cannot get room within its timeout times out.
    let err = a.transport.call(2, 0, GATED, payload.clone(), Duration::from_millis(50)).await.unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    // Small calls are held back too (FIFO), but run once room frees up.
    b.seen.gate.add_permits(8);
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(b.seen.gated_max.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn oversized_requests_unknown_peers_and_shutdown_are_typed_errors() {
    let (a, b) = (start(1).await, start(2).await);
    introduce(&[&a, &b]);
    let big = Bytes::from(vec![0u8; 16 << 20]);
    assert!(matches!(
        a.transport.call(2, 0, ECHO, big, TIMEOUT).await,
        Err(TransportError::TooLarge(n)) if n == frame::wire_bytes(16 << 20)
    ));
    assert_eq!(a.transport.call(42, 0, ECHO, Bytes::new(), TIMEOUT).await, Err(TransportError::UnknownPeer(42)));
    assert_eq!(a.transport.call(1, 0, ECHO, Bytes::new(), TIMEOUT).await, Err(TransportError::UnknownPeer(1)));

    let slow = Bytes::from(10_000u64.to_be_bytes().to_vec());
    let pending = {
        let t = a.transport.clone();
        tokio::spawn(async move { t.call(2, 0, SLOW, slow, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.transport.shutdown();
    assert_eq!(pending.await.unwrap(), Err(TransportError::Closed));
    assert_eq!(a.transport.call(2, 0, ECHO, Bytes::new(), TIMEOUT).await, Err(TransportError::Closed));
    a.serve.await.unwrap();
    assert_eq!(a.transport.stats().connections_open, 0);
}
