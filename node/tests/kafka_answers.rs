//! Kafka's answers where Keel's used to differ, with real clients against real `keel node`
//! processes (issue 17): one 3-node cluster with `replica.lag.time.max.ms` at 3 s, then in turn
//!
//! - a replication factor above the nodes is refused: confluent-kafka's AdminClient asks for
//!   RF 4 on 3 nodes and gets INVALID_REPLICATION_FACTOR, and the topic does not exist;
//! - an illegal topic name gets INVALID_TOPIC_EXCEPTION: in Metadata, and a default producer's
//!   delivery fails with it instead of retrying until its timeout (librdkafka test 0057);
//! - kcat (librdkafka 2.0) produces to an explicit partition of a topic it auto-creates and
//!   reads the records back (kcat's 0002-delim: "Unknown partition" when Metadata sent the new
//!   topic's partitions with LEADER_NOT_AVAILABLE);
//! - killing a follower shrinks its partition's ISR in Metadata, `keel cluster status` calls the
//!   partition under-replicated and the leader's `/metrics` counts it;
//! - killing the leader as well (no quorum left, so no new leader can come) makes Metadata stop
//!   naming it: leader -1, LEADER_NOT_AVAILABLE, where Keel used to name the dead node forever.
//!
//! Needs kcat and confluent-kafka like `kafka_clients.rs` (`.ci/run` installs them; without them
//! the test fails). Every wait has a generous bound; nothing asserts how fast anything is.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

const NODES: u64 = 3;
const LAG_MS: &str = "3000";
/// Kafka's error codes as clients see them.
const LEADER_NOT_AVAILABLE: i64 = 5;
const INVALID_TOPIC_EXCEPTION: i64 = 17;
const INVALID_REPLICATION_FACTOR: i64 = 38;
const WAIT_MAX: Duration = Duration::from_secs(90);

/// `n` distinct free ports (all held until all are picked, so none is handed out twice).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

struct Cluster {
    nodes: BTreeMap<u64, String>,
    kafka: BTreeMap<u64, String>,
    http: BTreeMap<u64, String>,
    dir: tempfile::TempDir,
    children: BTreeMap<u64, Child>,
    runs: u32,
}

impl Cluster {
    fn start() -> Cluster {
        let ports = free_ports(3 * NODES as usize);
        let addrs = |k: usize| -> BTreeMap<u64, String> {
            (1..=NODES).map(|id| (id, format!("127.0.0.1:{}", ports[k * NODES as usize + id as usize - 1]))).collect()
        };
        let mut c = Cluster {
            nodes: addrs(0),
            kafka: addrs(1),
            http: addrs(2),
            dir: tempfile::tempdir().unwrap(),
            children: BTreeMap::new(),
            runs: 0,
        };
        let nodes = c.nodes.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
        for id in 1..=NODES {
            let log = File::create(c.dir.path().join(format!("node-{id}.log"))).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_keel"))
                .args(["node", "--id", &id.to_string(), "--data-dir"])
                .arg(c.dir.path().join(format!("node-{id}")))
                .args(["--nodes", &nodes, "--cluster-id", "keel-answers", "--kafka-listen", &c.kafka[&id]])
                .args(["--http-listen", &c.http[&id], "--replica-lag-time-max-ms", LAG_MS])
                .env("RUST_LOG", std::env::var("KEEL_TEST_RUST_LOG").unwrap_or_else(|_| "warn".to_string()))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("keel node starts");
            c.children.insert(id, child);
        }
        c
    }

    fn bootstrap(&self) -> String {
        self.kafka.values().cloned().collect::<Vec<_>>().join(",")
    }

    fn kill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// Runs `cmd` (killed after 150 s: a client retrying until its own timeout fails here);
    /// (success, stdout, stderr).
    fn run(&mut self, mut cmd: Command) -> (bool, String, String) {
        cmd.stdin(Stdio::null());
        self.run_from(cmd)
    }

    fn run_with_stdin(&mut self, cmd: &mut Command, stdin: &std::path::Path) -> (bool, String, String) {
        cmd.stdin(File::open(stdin).unwrap());
        self.run_from(std::mem::replace(cmd, Command::new("true")))
    }

    fn run_from(&mut self, mut cmd: Command) -> (bool, String, String) {
        self.runs += 1;
        let out = self.dir.path().join(format!("run-{}.out", self.runs));
        let err = self.dir.path().join(format!("run-{}.err", self.runs));
        cmd.stdout(File::create(&out).unwrap()).stderr(File::create(&err).unwrap());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(150) {
                let _ = child.kill();
                panic!("{cmd:?} still runs after 150 s: {}", std::fs::read_to_string(&err).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status.success(), std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&err).unwrap())
    }

    /// `answers.py <command>`: its last JSON line.
    fn answers(&mut self, args: &[&str], bootstrap: &str) -> Value {
        let mut cmd = Command::new(std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".into()));
        cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/answers.py"));
        cmd.args(args).args(["--bootstrap", bootstrap]).env("PYTHONDONTWRITEBYTECODE", "1");
        let (ok, out, err) = self.run(cmd);
        assert!(ok, "answers.py {args:?} failed: {out}\n{err}");
        serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
    }

    fn keel(&mut self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.args(args);
        self.run(cmd)
    }

    fn metrics(&mut self, id: u64) -> String {
        let url = format!("http://{}/metrics", self.http[&id]);
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=10).read().decode())",
        ]);
        cmd.arg(url);
        let (ok, out, err) = self.run(cmd);
        assert!(ok, "GET /metrics of node {id}: {err}");
        out
    }

    fn node_logs(&self) -> String {
        (1..=NODES)
            .map(|id| std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("--- kept the cluster's directory: {}", self.dir.path().display());
        }
    }
}

/// Retries `f` until it gives `Some` (at most `WAIT_MAX`).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {WAIT_MAX:?}: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn ids(v: &Value) -> Vec<i64> {
    let mut out: Vec<i64> = v.as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
    out.sort();
    out
}

#[test]
fn kafka_answers_refusals_auto_creation_isr_and_dead_leaders_as_kafka_does() {
    let mut c = Cluster::start();
    let b = c.bootstrap();
    // Every node registered: RF 3 can be placed.
    eventually("a topic with replication factor 3 is created", || {
        let r = c.answers(&["create", "--topic", "isr", "--partitions", "1", "--replication-factor", "3"], &b);
        (r["code"] == 0).then_some(())
    });

    // RF 4 on 3 nodes: refused with Kafka's error and text, nothing created.
    let r = c.answers(&["create", "--topic", "four", "--replication-factor", "4"], &b);
    assert_eq!(r["code"], INVALID_REPLICATION_FACTOR, "{r}");
    assert!(r["message"].as_str().unwrap_or("").contains("only 3 broker(s) are registered"), "{r}");
    let (ok, out, _) = c.keel(&["topic", "list", "-b", &b, "--json"]);
    assert!(ok && !out.contains("\"four\""), "{out}");

    // An illegal name: INVALID_TOPIC_EXCEPTION in Metadata, and a producer's delivery fails with
    // it (the run is bounded: retrying until message.timeout.ms, 300 s, would be killed).
    let r = c.answers(&["metadata", "--topic", "bad name!"], &b);
    assert_eq!(r["code"], INVALID_TOPIC_EXCEPTION, "{r}");
    let r = c.answers(&["produce", "--topic", "bad name!"], &b);
    assert_eq!(r["code"], INVALID_TOPIC_EXCEPTION, "{r}");

    // kcat auto-creates a topic by producing to its partition 0, and reads the records back.
    let input = c.dir.path().join("lines");
    std::fs::write(&input, "a\nb\nc\n").unwrap();
    let (ok, out, err) = c.run_with_stdin(Command::new("kcat").args(["-b", &b, "-P", "-t", "auto", "-p", "0"]), &input);
    assert!(ok, "kcat -P -p 0: {out}\n{err}");
    let mut kcat = Command::new("kcat");
    kcat.args(["-b", &b, "-C", "-t", "auto", "-p", "0", "-o", "beginning", "-e", "-q"]);
    let (ok, out, err) = c.run(kcat);
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["a", "b", "c"], "{err}");

    // Kill a follower of `isr`: the ISR shrinks to the two live replicas.
    let md = eventually("isr/0 has a leader and 3 in-sync replicas", || {
        let r = c.answers(&["metadata", "--topic", "isr"], &b);
        let p = &r["partitions"]["0"];
        (p["leader"].as_i64().unwrap_or(-1) > 0 && ids(&p["isr"]).len() == 3).then_some(r)
    });
    // Healthy followers stay in sync past the lag time: their acknowledgements keep them in,
    // not the grace a new leader gives every follower.
    std::thread::sleep(Duration::from_millis(3 * LAG_MS.parse::<u64>().unwrap()));
    let again = c.answers(&["metadata", "--topic", "isr"], &b);
    assert_eq!(ids(&again["partitions"]["0"]["isr"]).len(), 3, "{again}");
    let leader = md["partitions"]["0"]["leader"].as_i64().unwrap() as u64;
    let follower = (1..=NODES).find(|n| *n != leader).unwrap();
    let survivor = (1..=NODES).find(|n| *n != leader && *n != follower).unwrap();
    c.kill(follower);
    let leader_addr = c.kafka[&leader].clone();
    eventually("isr/0's ISR drops the killed follower", || {
        let r = c.answers(&["metadata", "--topic", "isr"], &leader_addr);
        let isr = ids(&r["partitions"]["0"]["isr"]);
        (isr.len() == 2 && !isr.contains(&(follower as i64))).then_some(())
    });
    let (ok, out, err) = c.keel(&["cluster", "status", "-b", &leader_addr, "--json"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    let p = status["partitions"].as_array().unwrap().iter().find(|p| p["topic"] == "isr").unwrap().clone();
    assert_eq!(p["state"], "under-replicated", "{status}");
    let metrics = eventually("the leader's /metrics counts an under-replicated partition", || {
        let m = c.metrics(leader);
        let under = m.lines().find(|l| l.starts_with("keel_under_replicated_partitions "))?.to_string();
        (under != "keel_under_replicated_partitions 0").then_some(under)
    });
    eprintln!("{metrics}");

    // Kill the leader too: one node is left, so no new leader can be elected; Metadata from the
    // survivor stops naming the dead leader.
    c.kill(leader);
    let survivor_addr = c.kafka[&survivor].clone();
    let r = eventually("the survivor's Metadata names no leader for isr/0", || {
        let r = c.answers(&["metadata", "--topic", "isr"], &survivor_addr);
        (r["partitions"]["0"]["leader"] == -1).then_some(r)
    });
    assert_eq!(r["partitions"]["0"]["code"], LEADER_NOT_AVAILABLE, "{r}");
    assert!(!ids(&r["partitions"]["0"]["isr"]).contains(&(leader as i64)), "{r}");
    let logs = c.node_logs();
    assert!(!logs.contains("panicked"), "{logs}");
}
