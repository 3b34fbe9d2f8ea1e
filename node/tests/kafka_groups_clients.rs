//! Consumer groups with a real client (confluent-kafka 2.x, librdkafka) against real `keel node`
//! processes: a group of three consumers (`tests/clients/group_consume.py`, commit after
//! processing) shares a 6-partition topic.
//!
//! `a_group_survives_a_killed_member_and_a_killed_coordinator`:
//! 1. every produced message is processed; one member is SIGKILLed and its partitions move to the
//!    other two within the session timeout: every message produced afterwards is processed too;
//! 2. the group coordinator's node is SIGKILLed; the consumers are stopped and new ones join the
//!    group: each partition resumes exactly at its last acknowledged commit (committed offsets
//!    survive the coordinator: the first record a new member processes in a partition is the
//!    first acknowledged one at or after the last acknowledged commit), and no message is ever
//!    skipped (at least once).
//!
//! Needs confluent-kafka (`.ci/run` installs it; without it the test fails, never skips).
//! `KEEL_PYTHON` picks the interpreter. On failure the nodes' log tails are printed and the
//! cluster's directory is kept.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs::File;
use std::fs::OpenOptions;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

const CLUSTER: &str = "keel-kafka-groups-clients";
const TOPIC: &str = "orders";
const GROUP: &str = "workers";
const PARTITIONS: i64 = 6;
const PER_PHASE: usize = 600;
const SESSION_TIMEOUT_MS: u64 = 6_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn python() -> String {
    std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn script(name: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("clients").join(name));
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
    cmd
}

/// A consumer process whose JSON stdout lines arrive on a channel.
struct Consumer {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the consumers reported: processed (partition, offset) → value, acknowledged commits.
#[derive(Default)]
struct Seen {
    processed: BTreeMap<(i64, i64), String>,
    /// Partition → the highest acknowledged committed offset.
    committed: BTreeMap<i64, i64>,
    /// Consumer → its latest assignment.
    assigned: BTreeMap<usize, Vec<i64>>,
    /// Every processed record in the order reported: (consumer, partition, offset).
    log: Vec<(usize, i64, i64)>,
}

impl Seen {
    fn absorb(&mut self, who: usize, v: &Value) {
        match v["event"].as_str() {
            Some("msg") => {
                let (p, o) = (v["p"].as_i64().unwrap(), v["o"].as_i64().unwrap());
                self.processed.insert((p, o), v["v"].as_str().unwrap_or_default().to_string());
                self.log.push((who, p, o));
            }
            Some("committed") => {
                let (p, o) = (v["p"].as_i64().unwrap(), v["o"].as_i64().unwrap());
                let c = self.committed.entry(p).or_insert(o);
                *c = (*c).max(o);
            }
            Some("assigned") => {
                let ps = v["partitions"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
                self.assigned.insert(who, ps);
            }
            _ => {}
        }
    }
}

struct Cluster {
    nodes: BTreeMap<u64, String>,
    kafka: BTreeMap<u64, String>,
    dir: tempfile::TempDir,
    children: BTreeMap<u64, Child>,
    consumers: BTreeMap<usize, Consumer>,
    seen: Seen,
    t0: Instant,
}

impl Cluster {
    fn start() -> Cluster {
        let mut c = Cluster {
            nodes: (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect(),
            kafka: (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect(),
            dir: tempfile::tempdir().unwrap(),
            children: BTreeMap::new(),
            consumers: BTreeMap::new(),
            seen: Seen::default(),
            t0: Instant::now(),
        };
        for id in 1..=3 {
            let nodes = c.nodes.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
            let log =
                OpenOptions::new().create(true).append(true).open(c.dir.path().join(format!("node-{id}.log"))).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_keel"))
                .args(["node", "--id", &id.to_string(), "--data-dir"])
                .arg(c.dir.path().join(format!("node-{id}")))
                .args(["--nodes", &nodes, "--cluster-id", CLUSTER, "--kafka-listen", &c.kafka[&id]])
                .args(["--http-listen", "127.0.0.1:0"])
                .env("RUST_LOG", std::env::var("KEEL_TEST_RUST_LOG").unwrap_or_else(|_| "warn".to_string()))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("keel node starts");
            c.children.insert(id, child);
        }
        c
    }

    fn say(&self, what: impl AsRef<str>) {
        eprintln!("[{:>7.1?}] {}", self.t0.elapsed(), what.as_ref());
    }

    fn bootstrap(&self) -> String {
        self.kafka
            .iter()
            .filter(|(id, _)| self.children.contains_key(id))
            .map(|(_, a)| a.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs a client command to completion (at most `within`); its JSON lines.
    fn run(&self, what: &str, cmd: Command, within: Duration) -> Vec<Value> {
        self.try_run(what, cmd, within).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_run(&self, what: &str, mut cmd: Command, within: Duration) -> Result<Vec<Value>, String> {
        let out = self.dir.path().join(format!("{}.out", what.replace(' ', "-")));
        let err = self.dir.path().join(format!("{}.err", what.replace(' ', "-")));
        cmd.stdin(Stdio::null()).stdout(File::create(&out).unwrap()).stderr(File::create(&err).unwrap());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = std::fs::read_to_string(&out).unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "{what} failed ({status}):\n{stdout}\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            ));
        }
        Ok(stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    fn produce(&self, phase: usize) -> Vec<(i64, i64)> {
        let acked = self.dir.path().join(format!("acked-{phase}.jsonl"));
        let mut cmd = script("produce_confluent.py");
        cmd.args(["--bootstrap", &self.bootstrap(), "--topic", TOPIC, "--count", &PER_PHASE.to_string()]);
        cmd.args(["--client", &format!("phase{phase}"), "--out"]).arg(&acked);
        self.run(&format!("produce {phase}"), cmd, Duration::from_secs(240));
        let acked: Vec<(i64, i64)> = std::fs::read_to_string(&acked)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (v["p"].as_i64().unwrap(), v["o"].as_i64().unwrap())
            })
            .collect();
        assert_eq!(acked.len(), PER_PHASE, "every message acknowledged");
        self.say(format!("phase {phase}: {} messages acknowledged", acked.len()));
        acked
    }

    fn start_consumer(&mut self, n: usize) {
        let mut cmd = script("group_consume.py");
        cmd.args(["consume", "--bootstrap", &self.bootstrap(), "--topic", TOPIC, "--group", GROUP]);
        cmd.args(["--name", &format!("c{n}"), "--session-timeout-ms", &SESSION_TIMEOUT_MS.to_string()]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(self.dir.path().join(format!("consumer-{n}.err"))).unwrap());
        let mut child = cmd.spawn().expect("consumer starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let mut copy = File::create(self.dir.path().join(format!("consumer-{n}.out"))).unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(copy, "{line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        self.consumers.insert(n, Consumer { child, lines });
    }

    fn drain(&mut self) {
        for (who, c) in &self.consumers {
            while let Ok(v) = c.lines.try_recv() {
                self.seen.absorb(*who, &v);
            }
        }
    }

    /// Waits (at most `within`) until `done` holds of what the consumers reported.
    fn wait_until(&mut self, what: &str, within: Duration, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            if done(&self.seen) {
                self.say(format!("{what}: done"));
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not within {within:?}; assigned {:?}", self.seen.assigned);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn coordinator(&self) -> u64 {
        let mut cmd = script("group_consume.py");
        cmd.args(["coordinator", "--bootstrap", &self.bootstrap(), "--group", GROUP]);
        let lines = self.run("coordinator", cmd, Duration::from_secs(90));
        let line = lines.iter().find(|v| v["event"] == "coordinator").expect("coordinator line");
        line["id"].as_u64().expect("coordinator id")
    }

    fn kill_node(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.consumers.clear();
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for id in 1..=3 {
                let log = std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- node {id} log (tail):\n{}", lines[lines.len().saturating_sub(30)..].join("\n"));
            }
            self.dir.disable_cleanup(true);
            eprintln!("--- kept {}", self.dir.path().display());
        }
    }
}

fn all_processed(seen: &Seen, acked: &[(i64, i64)]) -> bool {
    acked.iter().all(|po| seen.processed.contains_key(po))
}

#[test]
fn a_group_survives_a_killed_member_and_a_killed_coordinator() {
    let mut cluster = Cluster::start();
    // CreateTopics, retried until the nodes have registered and elected a metadata leader.
    let mut created = Err(String::new());
    for attempt in 0..20 {
        let mut create = script("admin.py");
        create.args(["create", "--bootstrap", &cluster.bootstrap(), "--topic", TOPIC]);
        create.args(["--partitions", &PARTITIONS.to_string(), "--replication-factor", "3", "--timeout", "60"]);
        created = cluster.try_run(&format!("create {attempt}"), create, Duration::from_secs(120));
        match &created {
            Ok(_) => break,
            Err(e) if e.contains("TOPIC_ALREADY_EXISTS") => break,
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
    if let Err(e) = created
        && !e.contains("TOPIC_ALREADY_EXISTS")
    {
        panic!("{e}");
    }
    // Leaders move to their preferred replicas after a few seconds; let that happen first.
    std::thread::sleep(Duration::from_secs(6));
    let mut acked = cluster.produce(1);

    for n in 0..3 {
        cluster.start_consumer(n);
    }
    cluster.wait_until("three members share the partitions, phase 1 processed", Duration::from_secs(120), |s| {
        let assigned: BTreeSet<i64> = s.assigned.values().flatten().copied().collect();
        s.assigned.len() == 3 && assigned.len() == PARTITIONS as usize && all_processed(s, &acked)
    });

    // A member dies; its partitions move to the other two within the session timeout.
    let killed = 0usize;
    let owned = cluster.seen.assigned[&killed].clone();
    cluster.say(format!("SIGKILL consumer {killed} (partitions {owned:?})"));
    cluster.consumers.remove(&killed);
    cluster.seen.assigned.remove(&killed);
    acked.extend(cluster.produce(2));
    let within = Duration::from_millis(SESSION_TIMEOUT_MS) + Duration::from_secs(60);
    cluster.wait_until("the survivors took over and processed phase 2", within, |s| {
        let assigned: BTreeSet<i64> = s.assigned.values().flatten().copied().collect();
        assigned.len() == PARTITIONS as usize && all_processed(s, &acked)
    });

    // The coordinator's node dies; the committed offsets must survive it.
    let coordinator = cluster.coordinator();
    cluster.say(format!("SIGKILL the coordinator, node {coordinator}"));
    cluster.kill_node(coordinator);
    // Stop the consumers (after their last commits had a chance to land or fail).
    std::thread::sleep(Duration::from_secs(2));
    cluster.drain();
    cluster.consumers.clear();
    let committed = cluster.seen.committed.clone();
    let seen_before = cluster.seen.log.len();
    acked.extend(cluster.produce(3));
    for n in 10..12 {
        cluster.start_consumer(n);
    }
    cluster
        .wait_until("new members resume and process phase 3", Duration::from_secs(180), |s| all_processed(s, &acked));
    // Each partition resumed exactly at its last acknowledged commit: nothing acknowledged was
    // lost, nothing was skipped.
    let mut first_after: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, p, o) in &cluster.seen.log[seen_before..] {
        first_after.entry(*p).or_insert(*o);
    }
    // (The first record at or after the commit: offsets of Raft control entries, such as the
    // new leader's blank entry, hold no record.)
    for (p, first) in &first_after {
        let c = committed.get(p).copied().unwrap_or(0);
        let expected = acked.iter().filter(|(ap, o)| ap == p && *o >= c).map(|(_, o)| *o).min();
        assert_eq!(Some(*first), expected, "partition {p} resumed at {first}; its last acknowledged commit was {c}");
    }
    assert!(!first_after.is_empty(), "the new members processed something");
    assert!(all_processed(&cluster.seen, &acked), "every acknowledged message processed at least once");
}
