//! Graceful shutdown and the rolling restart of docs/operations.md, on real `keel node`
//! processes (loopback, three nodes, one topic of six partitions with three replicas each).
//!
//! - `sigterm_hands_off_leadership_before_exit`: the node leading the most groups gets SIGTERM;
//!   it exits 0, and right after it exited the survivors name a survivor as the leader of every
//!   group it led, in a newer term — within a bound well under the election timeout, so no
//!   group waited for an election. The same node SIGKILLed later leaves its groups leaderless
//!   for that bound: the check tells a hand-off from an election.
//! - `rolling_restart_loses_nothing`: while an idempotent confluent-kafka producer writes keyed
//!   acks=all messages, each node in turn is stopped with SIGTERM, restarted, and waited for as
//!   docs/operations.md says (`keel cluster status`: every partition led, each by its preferred
//!   leader again); then every acknowledged message is consumed exactly once, per key in send
//!   order (`tests/clients/consume_check.py --mode exact`).
//!
//! Like `kafka_clients.rs`, the second test needs confluent-kafka (`.ci/run` installs it) and
//! fails without it. On failure the tail of every node's log is printed and the cluster's
//! directory is kept (always with `KEEL_TEST_KEEP=1`).
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::fs::File;
use std::fs::OpenOptions;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command as Process;
use std::process::ExitStatus;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use keel_core::metadata::Command;
use keel_core::metadata::MetaError;
use keel_core::metadata::Reply;
use keel_node::client;
use keel_node::client::ClusterView;
use keel_node::meta::ProposeResponse;
use keel_node::raft::network::decode;
use keel_node::raft::network::encode;
use keel_node::transport::ClientOnly;
use keel_node::transport::Transport;
use keel_node::transport::TransportConfig;
use serde_json::Value;

const CLUSTER: &str = "keel-rolling-restart";
const PARTITIONS: u32 = 6;
/// `--shutdown-timeout-ms` of every node.
const SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
const LOG_TAIL_LINES: usize = 40;

/// One cluster at a time: CI has 2 cores.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn python() -> String {
    std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("clients")
}

/// Waits for `child` until `within`; `None` if it still runs then (it is left running).
fn wait_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if started.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Cluster {
    /// Node-to-node addresses and Kafka listener addresses, by node id.
    nodes: BTreeMap<u64, String>,
    kafka: BTreeMap<u64, String>,
    /// Flags every node gets on top of the cluster's.
    extra: Vec<String>,
    dir: tempfile::TempDir,
    children: BTreeMap<u64, Child>,
    client: Client,
    t0: Instant,
}

impl Cluster {
    fn start(extra: &[&str]) -> Cluster {
        let nodes: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
        let transport = Transport::new(1 << 40, TransportConfig::new(CLUSTER), Arc::new(ClientOnly)).unwrap();
        for (id, addr) in &nodes {
            transport.set_peer_addr(*id, addr.clone());
        }
        let mut cluster = Cluster {
            client: Client { transport, nodes: nodes.keys().copied().collect() },
            kafka: (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect(),
            nodes,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().unwrap(),
            children: BTreeMap::new(),
            t0: Instant::now(),
        };
        for id in 1..=3 {
            cluster.spawn(id);
        }
        cluster
    }

    fn say(&self, what: impl AsRef<str>) {
        eprintln!("[{:>7.1?}] {}", self.t0.elapsed(), what.as_ref());
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    fn spawn(&mut self, id: u64) {
        let nodes = self.nodes.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
        // Appends: a restarted node's log follows its earlier lives'.
        let log = OpenOptions::new().create(true).append(true).open(self.log_path(id)).expect("log file");
        let child = Process::new(env!("CARGO_BIN_EXE_keel"))
            .args(["node", "--id", &id.to_string(), "--data-dir"])
            .arg(self.dir.path().join(format!("node-{id}")))
            .args(["--nodes", &nodes, "--cluster-id", CLUSTER, "--kafka-listen", &self.kafka[&id]])
            // Several nodes on one host: each its own HTTP port.
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--shutdown-timeout-ms", &SHUTDOWN_TIMEOUT_MS.to_string()])
            .args(&self.extra)
            // The hand-off is logged at info level.
            .env("RUST_LOG", "warn,keel_node::drain=info,keel=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel node starts");
        self.children.insert(id, child);
    }

    /// SIGTERM, then waits for the exit (at most the shutdown timeout and a margin): its status.
    fn sigterm(&mut self, id: u64) -> ExitStatus {
        let mut child = self.children.remove(&id).expect("running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM to node {id}");
        let within = Duration::from_millis(SHUTDOWN_TIMEOUT_MS) + Duration::from_secs(20);
        let status = wait_within(&mut child, within);
        status.unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node {id} still ran {within:?} after SIGTERM\n{}", tail(&self.log(id), LOG_TAIL_LINES))
        })
    }

    /// SIGKILL.
    fn kill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    fn bootstrap(&self) -> String {
        self.kafka.values().cloned().collect::<Vec<_>>().join(",")
    }

    fn script(&self, name: &str) -> Process {
        let mut cmd = Process::new(python());
        cmd.arg(clients_dir().join(name)).env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
        cmd
    }

    /// `keel cluster status --json` through the survivors' (or every node's) Kafka listeners.
    fn cluster_status(&self, nodes: &[u64]) -> Option<Value> {
        let bootstrap = nodes.iter().map(|n| self.kafka[n].clone()).collect::<Vec<_>>().join(",");
        let mut child = Process::new(env!("CARGO_BIN_EXE_keel"))
            .args(["cluster", "status", "--json", "--bootstrap", &bootstrap])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("keel cluster status starts");
        let status = wait_within(&mut child, Duration::from_secs(30));
        if status.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    async fn wait_registered(&self) {
        wait_for("3 registered nodes", Duration::from_secs(90), async || {
            self.client.any_view().await.filter(|v| v.metadata.nodes.len() == 3).map(|_| ())
        })
        .await;
    }

    /// Creates the topic; waits until node 1's view puts every partition on its preferred leader.
    async fn create_topic(&self, name: &str) -> Vec<u64> {
        let cmd = Command::CreateTopic {
            name: name.to_string(),
            partitions: PARTITIONS,
            replication_factor: None,
            configs: BTreeMap::new(),
        };
        match self.client.propose(&cmd).await {
            Ok(Reply::TopicCreated { .. }) | Err(MetaError::TopicExists(_)) => {}
            other => panic!("creating {name}: {other:?}"),
        }
        let view = self.wait_preferred_leaders(&[1, 2, 3], Duration::from_secs(120)).await;
        self.say(format!("topic {name}: leaders on their preferred nodes: {:?}", leaders_of(&view)));
        view.metadata.groups.keys().copied().collect()
    }

    /// Waits until `nodes[0]`'s view has every partition led by its preferred leader.
    async fn wait_preferred_leaders(&self, nodes: &[u64], within: Duration) -> ClusterView {
        wait_for("every partition on its preferred leader", within, async || {
            let v = self.client.view(nodes[0]).await?;
            let all = v.metadata.assignments().count() == PARTITIONS as usize
                && v.metadata.assignments().all(|a| v.leaders.get(&a.group).map(|l| l.leader) == a.preferred_leader());
            all.then_some(v)
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for id in 1..=3 {
                eprintln!("--- node {id} log (last {LOG_TAIL_LINES} lines):\n{}", tail(&self.log(id), LOG_TAIL_LINES));
            }
        }
        if std::thread::panicking() || std::env::var_os("KEEL_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("--- kept the cluster's directory: {}", self.dir.path().display());
        }
    }
}

/// Keel's internal protocol, for what Kafka's Metadata does not say (terms, the metadata group).
struct Client {
    transport: Transport,
    nodes: Vec<u64>,
}

impl Client {
    async fn view(&self, node: u64) -> Option<ClusterView> {
        let r = self
            .transport
            .call(node, client::METADATA_GROUP, client::KIND_META_READ, Bytes::new(), Duration::from_secs(3))
            .await;
        decode(&r.ok()?).ok()
    }

    async fn any_view(&self) -> Option<ClusterView> {
        for &n in &self.nodes {
            if let Some(v) = self.view(n).await {
                return Some(v);
            }
        }
        None
    }

    /// The Raft status of `group` (or the metadata group) on `node`.
    async fn status(&self, node: u64, group: u64) -> Option<client::Status> {
        let r = self.transport.call(node, group, client::KIND_STATUS, Bytes::new(), Duration::from_secs(1)).await;
        decode(&r.ok()?).ok()
    }

    async fn propose(&self, cmd: &Command) -> Result<Reply, MetaError> {
        let body = encode(cmd).unwrap();
        let mut target = self.nodes[0];
        for i in 0..300 {
            let r = self
                .transport
                .call(target, client::METADATA_GROUP, client::KIND_META_PROPOSE, body.clone(), Duration::from_secs(10))
                .await;
            match r.ok().and_then(|b| decode::<ProposeResponse>(&b).ok()) {
                Some(ProposeResponse::Applied(r)) => return r,
                Some(ProposeResponse::NotLeader { leader: Some(l) }) if l != target => target = l,
                _ => {
                    target = self.nodes[i % self.nodes.len()];
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("no metadata leader answered {cmd:?}");
    }
}

async fn wait_for<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn leaders_of(view: &ClusterView) -> BTreeMap<u64, u64> {
    view.leaders.iter().map(|(g, l)| (*g, l.leader)).collect()
}

/// The groups `node` leads as its own replicas report (partitions and the metadata group), with
/// their terms.
async fn led_by(c: &Client, node: u64, groups: &[u64]) -> BTreeMap<u64, u64> {
    let mut led = BTreeMap::new();
    for &g in groups.iter().chain([&client::METADATA_GROUP]) {
        if let Some(s) = c.status(node, g).await
            && s.state == "Leader"
            && s.leader == Some(node)
        {
            led.insert(g, s.term);
        }
    }
    led
}

/// For each of `groups` (group → the term it was led in by `victim`), whether a survivor's own
/// replica names a survivor as its leader in a newer term.
async fn new_leaders(c: &Client, survivors: &[u64], groups: &BTreeMap<u64, u64>) -> BTreeMap<u64, Option<(u64, u64)>> {
    let mut out = BTreeMap::new();
    for (&g, &old_term) in groups {
        let mut found = None;
        for &s in survivors {
            if let Some(st) = c.status(s, g).await
                && let Some(l) = st.leader
                && survivors.contains(&l)
                && st.term > old_term
            {
                found = Some((l, st.term));
                break;
            }
        }
        out.insert(g, found);
    }
    out
}

/// How long after a stop the survivors must name new leaders for it to count as a hand-off:
/// well under the election timeout these tests run with (6–9 s), after which an election would
/// have replaced a crashed leader anyway.
const HANDED_OFF_WITHIN: Duration = Duration::from_secs(2);
const ELECTION_FLAGS: [&str; 4] = ["--raft-election-timeout-min-ms", "6000", "--raft-election-timeout-max-ms", "9000"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn sigterm_hands_off_leadership_before_exit() {
    let _one = one_cluster_at_a_time();
    runtime().block_on(sigterm_hands_off_leadership());
}

async fn sigterm_hands_off_leadership() {
    let mut cluster = Cluster::start(&ELECTION_FLAGS);
    cluster.wait_registered().await;
    let groups = cluster.create_topic("handoff").await;

    // The node leading the most groups (the metadata group counts: its hand-off is tested too).
    let mut most = (0, 0);
    for n in 1..=3 {
        let led = led_by(&cluster.client, n, &groups).await.len();
        if led > most.1 {
            most = (n, led);
        }
    }
    let victim = most.0;
    let led = led_by(&cluster.client, victim, &groups).await;
    assert!(!led.is_empty(), "node {victim} leads something");
    let survivors: Vec<u64> = (1..=3).filter(|n| *n != victim).collect();
    cluster.say(format!("SIGTERM to node {victim}, which leads {led:?} (group → term)"));

    let status = cluster.sigterm(victim);
    let exited = Instant::now();
    assert!(status.success(), "node {victim} exited with {status} after SIGTERM\n{}", tail(&cluster.log(victim), 40));
    let after = wait_for("survivors naming new leaders", HANDED_OFF_WITHIN, async || {
        let found = new_leaders(&cluster.client, &survivors, &led).await;
        found.values().all(Option::is_some).then_some(found)
    })
    .await;
    cluster.say(format!("{:.2?} after the exit, new leaders (leader, term): {after:?}", exited.elapsed()));
    let log = cluster.log(victim);
    assert!(
        log.contains("drained: this node leads no group"),
        "node {victim} did not finish its drain:\n{}",
        tail(&log, 40)
    );
    assert!(log.contains("handing off leadership"), "node {victim} logged no hand-off:\n{}", tail(&log, 40));

    // Partitions keep taking writes: their metadata on the survivors names the new leaders.
    let status = wait_for("cluster status from the survivors", Duration::from_secs(30), async || {
        cluster.cluster_status(&survivors)
    })
    .await;
    assert_eq!(status["offline"], 0, "{status:#}");

    // The same check after a SIGKILL: the survivors do not name new leaders that fast, so the
    // check above could only pass because leadership moved before the exit.
    cluster.spawn(victim);
    let view = cluster.wait_preferred_leaders(&[1, 2, 3], Duration::from_secs(120)).await;
    cluster.say(format!("node {victim} restarted; leaders {:?}", leaders_of(&view)));
    let led = wait_for("node to lead again", Duration::from_secs(60), async || {
        let l = led_by(&cluster.client, victim, &groups).await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    cluster.kill(victim);
    let killed = Instant::now();
    let mut leaderless = BTreeMap::new();
    while killed.elapsed() < HANDED_OFF_WITHIN {
        leaderless = new_leaders(&cluster.client, &survivors, &led).await;
        leaderless.retain(|_, l| l.is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.say(format!(
        "SIGKILL of node {victim} (leading {led:?}): still leaderless {:?} after {:.1?}",
        leaderless.keys(),
        killed.elapsed()
    ));
    assert!(!leaderless.is_empty(), "after a SIGKILL every group had a new leader within {HANDED_OFF_WITHIN:?} too");
}

#[test]
fn rolling_restart_loses_nothing() {
    const COUNT: usize = 50_000;
    const RATE_PER_S: usize = 700;
    let _one = one_cluster_at_a_time();
    let rt = runtime();
    let mut cluster = Cluster::start(&[]);
    rt.block_on(cluster.wait_registered());
    let topic = "rolling";
    rt.block_on(cluster.create_topic(topic));

    let acked = cluster.dir.path().join("acked.jsonl");
    let progress = cluster.dir.path().join("producer.out");
    let mut cmd = cluster.script("produce_confluent.py");
    cmd.args(["--bootstrap", &cluster.bootstrap(), "--topic", topic, "--count", &COUNT.to_string(), "--keys", "100"]);
    cmd.arg("--out").arg(&acked);
    // Idempotent (five requests in flight): the broker's sequence checks keep retries unique and
    // in order, so the check below is exact.
    cmd.args(["--idempotent", "--rate", &RATE_PER_S.to_string(), "--message-timeout-ms", "240000", "--timeout", "400"]);
    cmd.stdout(File::create(&progress).unwrap()).stderr(File::create(cluster.dir.path().join("producer.err")).unwrap());
    let mut producer = cmd.spawn().expect("produce_confluent.py starts");
    let acked_so_far = || -> u64 {
        let text = std::fs::read_to_string(&progress).unwrap_or_default();
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| v["acked"].as_u64())
            .unwrap_or(0)
    };
    rt.block_on(wait_for("3,000 acknowledgements", Duration::from_secs(120), async || {
        (acked_so_far() >= 3_000).then_some(())
    }));

    for node in 1..=3 {
        // docs/operations.md: SIGTERM, wait for the exit, start it again, wait until every
        // partition is led by its preferred leader (the restarted node has caught up).
        let before = acked_so_far();
        let status = cluster.sigterm(node);
        assert!(status.success(), "node {node} exited with {status}");
        cluster.say(format!("node {node} stopped gracefully ({before} acknowledged so far)"));
        cluster.spawn(node);
        let status =
            rt.block_on(wait_for("every partition on its preferred leader", Duration::from_secs(180), async || {
                let s = cluster.cluster_status(&[1, 2, 3])?;
                let parts = s["partitions"].as_array()?;
                let ok = s["offline"] == 0
                    && s["under_replicated"] == 0
                    && parts.len() == PARTITIONS as usize
                    && parts.iter().all(|p| p["leader"] == p["replicas"][0]);
                ok.then_some(s)
            }));
        let leading: Vec<(i64, i64)> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["id"].as_i64().unwrap(), n["leading"].as_i64().unwrap()))
            .collect();
        cluster.say(format!("node {node} restarted and leads again; (node, leading): {leading:?}"));
        assert!(
            producer.try_wait().unwrap().is_none(),
            "the producer finished before the rolling restart did: raise COUNT so that it writes throughout"
        );
    }
    cluster.say(format!("rolling restart done at {} acknowledged", acked_so_far()));

    let status = wait_within(&mut producer, Duration::from_secs(420)).unwrap_or_else(|| {
        let _ = producer.kill();
        panic!("the producer did not finish")
    });
    let out = std::fs::read_to_string(&progress).unwrap();
    let summary = out
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary from the producer:\n{}", tail(&out, 20)));
    assert!(status.success() && summary["acked"] == COUNT && summary["failed"] == 0, "producer: {summary:#}");
    cluster.say(format!("producer: {summary}"));

    let mut cmd = cluster.script("consume_check.py");
    cmd.args(["--bootstrap", &cluster.bootstrap(), "--topic", topic, "--partitions", &PARTITIONS.to_string()]);
    cmd.args(["--client", "confluent", "--mode", "exact", "--timeout", "240", "--acked"]).arg(&acked);
    let check_out = cluster.dir.path().join("check.out");
    cmd.stdout(File::create(&check_out).unwrap()).stderr(File::create(cluster.dir.path().join("check.err")).unwrap());
    let mut check = cmd.spawn().expect("consume_check.py starts");
    let status = wait_within(&mut check, Duration::from_secs(300)).expect("consume_check.py finishes");
    let out = std::fs::read_to_string(&check_out).unwrap();
    let verdict = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "check")
        .unwrap_or_else(|| panic!("no check line:\n{}", tail(&out, 20)));
    cluster.say(format!("consume check: {verdict}"));
    assert!(status.success(), "every acknowledged message, exactly once, per key in order: {verdict:#}");
    assert_eq!(verdict["consumed"].as_u64(), Some(COUNT as u64), "{verdict:#}");
}
