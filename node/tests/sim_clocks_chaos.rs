//! The simulation's own faults on a node, under madsim: a node's clock running fast or slow
//! (`keel_node::rt::drift`: openraft's instants, sleeps and the wall clock follow it), and
//! requests reordered and Raft messages duplicated where frames reach the handler
//! (`keel_node::transport::chaos`). Run:
//! `RUSTFLAGS="--cfg madsim" cargo test -p keel-node --test sim_clocks_chaos`.
#![cfg(madsim)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use keel_node::rt::Runtime;
use keel_node::rt::drift;
use keel_node::transport::chaos;
use keel_node::transport::{Handler, NodeId, Transport, TransportConfig};
use openraft::AsyncRuntime;
use openraft::Instant as _;

const PORT: u16 = 7000;
/// A kind the test treats as a Raft message (duplicable) and one it does not.
const RAFT_KIND: u8 = 1;
const CLIENT_KIND: u8 = 40;

fn run<F: std::future::Future<Output = ()> + 'static>(seed: u64, f: impl FnOnce() -> F + Send + 'static) {
    std::thread::spawn(move || {
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(f())
    })
    .join()
    .unwrap_or_else(|_| panic!("seed {seed} failed"));
}

fn sim_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// A node whose clock runs twice as fast sees two seconds pass in one of madsim's, and an
/// openraft sleep of two seconds ends after one; half as fast, the other way round; back at
/// the normal rate it keeps the offset it gathered and never goes back.
#[test]
fn a_drifting_node_clock_drives_openraft_time_and_the_wall_clock() {
    run(1, || async {
        let handle = madsim::runtime::Handle::current();
        let fast = handle.create_node().name("fast").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))).build();
        let slow = handle.create_node().name("slow").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))).build();
        let plain = handle.create_node().name("plain").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))).build();
        drift::reset();
        drift::set_rate(fast.id(), 1_000_000);
        drift::set_rate(slow.id(), -500_000);

        fast.spawn(async {
            let (t0, s0, w0) =
                (<Runtime as AsyncRuntime>::Instant::now(), sim_now(), keel_node::clock::wall_clock_ms());
            madsim::time::sleep(Duration::from_secs(1)).await;
            let node_elapsed = <Runtime as AsyncRuntime>::Instant::now() - t0;
            assert!((1990..=2010).contains(&node_elapsed.as_millis()), "fast node saw {node_elapsed:?}");
            let wall = keel_node::clock::wall_clock_ms() - w0;
            assert!((1990..=2010).contains(&wall), "fast node's wall clock moved {wall} ms");
            let s1 = sim_now();
            <Runtime as AsyncRuntime>::sleep(Duration::from_secs(2)).await;
            let took = sim_now() - s1;
            assert!((990..=1010).contains(&took.as_millis()), "a 2 s sleep took {took:?} of madsim time");
            let _ = s0;
        })
        .await
        .unwrap();

        slow.spawn(async {
            let t0 = <Runtime as AsyncRuntime>::Instant::now();
            madsim::time::sleep(Duration::from_secs(2)).await;
            let node_elapsed = <Runtime as AsyncRuntime>::Instant::now() - t0;
            assert!((990..=1010).contains(&node_elapsed.as_millis()), "slow node saw {node_elapsed:?}");
            let s1 = sim_now();
            let deadline = <Runtime as AsyncRuntime>::Instant::now() + Duration::from_secs(1);
            <Runtime as AsyncRuntime>::sleep_until(deadline).await;
            let took = sim_now() - s1;
            assert!((1990..=2010).contains(&took.as_millis()), "sleeping until 1 s ahead took {took:?}");
        })
        .await
        .unwrap();

        plain
            .spawn(async {
                let t0 = <Runtime as AsyncRuntime>::Instant::now();
                madsim::time::sleep(Duration::from_secs(1)).await;
                let e = <Runtime as AsyncRuntime>::Instant::now() - t0;
                assert!((999..=1001).contains(&e.as_millis()), "a node without drift saw {e:?}");
            })
            .await
            .unwrap();

        // Back to the normal rate: the fast node keeps its lead and never goes back.
        let fast_id = fast.id();
        fast.spawn(async move {
            let before = <Runtime as AsyncRuntime>::Instant::now();
            let ahead = drift::offset_ms();
            assert!(ahead >= 2900, "the fast node is only {ahead} ms ahead after 3 s at twice the rate");
            drift::set_rate(fast_id, 0);
            let right_after = <Runtime as AsyncRuntime>::Instant::now();
            assert!(right_after >= before, "the clock went back when its rate changed");
            madsim::time::sleep(Duration::from_secs(1)).await;
            let e = <Runtime as AsyncRuntime>::Instant::now() - right_after;
            assert!((999..=1001).contains(&e.as_millis()), "after the drift ended, 1 s took {e:?}");
            assert!((drift::offset_ms() - ahead).abs() <= 2, "the offset changed at the normal rate");
        })
        .await
        .unwrap();
        drift::reset();
    });
}

/// Records the order in which requests (kind, payload) reach it.
struct Recorder(Arc<Mutex<Vec<(u8, u64)>>>);

impl Handler for Recorder {
    fn handle(
        &self,
        _from: NodeId,
        _group: u64,
        kind: u8,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let mut n = [0u8; 8];
        n.copy_from_slice(&payload[..8]);
        self.0.lock().unwrap().push((kind, u64::from_be_bytes(n)));
        Box::pin(async move { Ok(payload) })
    }
}

/// With chaos on, requests are served out of their send order, every duplicable request (Raft
/// kinds) is served twice while every other exactly once, and each call still gets exactly its
/// own answer.
#[test]
fn chaos_reorders_requests_and_duplicates_only_the_named_kinds() {
    run(3, || async {
        let handle = madsim::runtime::Handle::current();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let addr = |id: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id)), PORT);
        let server_seen = seen.clone();
        let server = handle.create_node().name("server").ip(addr(2).ip()).build();
        server.spawn(async move {
            let t = Transport::new(2, TransportConfig::new("sim"), Arc::new(Recorder(server_seen))).unwrap();
            let listener = tokio::net::TcpListener::bind(addr(2)).await.unwrap();
            t.serve(listener).await;
            std::future::pending::<()>().await;
        });
        madsim::time::sleep(Duration::from_millis(10)).await;
        chaos::reset();
        chaos::set(2, chaos::Chaos { delay_max_ms: 50, duplicate_pct: 100, duplicate_kinds: vec![RAFT_KIND] });

        let client = handle.create_node().name("client").ip(addr(1).ip()).build();
        let sent = 20u64;
        client
            .spawn(async move {
                let t =
                    Transport::new(1, TransportConfig::new("sim"), Arc::new(keel_node::transport::ClientOnly)).unwrap();
                t.set_peer_addr(2, addr(2).to_string());
                let mut calls = Vec::new();
                for i in 0..sent {
                    let kind = if i % 2 == 0 { RAFT_KIND } else { CLIENT_KIND };
                    let t = t.clone();
                    calls.push(tokio::spawn(async move {
                        let answer =
                            t.call(2, 7, kind, Bytes::from(i.to_be_bytes().to_vec()), Duration::from_secs(2)).await;
                        (i, answer)
                    }));
                    madsim::time::sleep(Duration::from_millis(1)).await;
                }
                for c in calls {
                    let (i, answer) = c.await.unwrap();
                    assert_eq!(answer.unwrap(), Bytes::from(i.to_be_bytes().to_vec()), "call {i} got another's answer");
                }
                // Let the late copies arrive.
                madsim::time::sleep(Duration::from_millis(200)).await;
            })
            .await
            .unwrap();
        chaos::reset();

        let seen = seen.lock().unwrap().clone();
        for i in 0..sent {
            let times = seen.iter().filter(|(_, n)| *n == i).count();
            let expected = if i % 2 == 0 { 2 } else { 1 };
            assert_eq!(times, expected, "request {i} was served {times} times: {seen:?}");
        }
        let firsts: Vec<u64> = {
            let mut out = Vec::new();
            for (_, n) in &seen {
                if !out.contains(n) {
                    out.push(*n);
                }
            }
            out
        };
        assert!(firsts.windows(2).any(|w| w[0] > w[1]), "no request overtook another: {firsts:?}");
    });
}
