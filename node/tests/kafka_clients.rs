//! Real Kafka clients against real `keel node` processes: a 3-node cluster on loopback, each node
//! with its Kafka listener, driven by kcat (librdkafka 2.0), confluent-kafka (librdkafka 2.16) and
//! kafka-python 3 — the clients people will point at Keel.
//!
//! - `three_clients_produce_and_consume_exactly_once`: the Kafka listener is done when this passes.
//!   Each client produces 100,000 keyed messages with acks=all into one topic of 6 partitions
//!   (replication factor 3, created through CreateTopics); consumed back (confluent-kafka,
//!   kafka-python and kcat), every acknowledged message appears exactly once, per producer and key
//!   in send order, at the offset it was acknowledged at; `kcat -L` shows the 3 brokers and a
//!   leader for every partition.
//! - `acknowledged_messages_survive_a_killed_leader`: confluent-kafka produces while the node
//!   leading partition 0 is SIGKILLed; the producer recovers through metadata and gets every
//!   message acknowledged; the node restarts; no acknowledged message is lost or reordered (the
//!   at-least-once rule in `tests/clients/consume_check.py`: idempotence is off, so a retried
//!   batch may be stored twice).
//! - `idempotent_producer_stores_every_message_once_through_two_leader_kills`: an idempotent
//!   confluent-kafka producer (`enable.idempotence=true`, five requests in flight) sends 50,000
//!   keyed messages while the leader of partition 0 is SIGKILLed twice (restarted after each);
//!   every message is stored exactly once, per key in send order, at its acknowledged offset.
//! - `librdkafka_default_producer_with_megabyte_batches_never_wedges_replication` (issue 17): a
//!   confluent-kafka producer at librdkafka's defaults except acks=all (linger.ms 5, batch.size
//!   1 MB, a million requests in flight) sends 30,000 messages of 1 KiB, then 24 messages of
//!   about 1 MB (near the client's message.max.bytes), to a 1-partition topic with 3 replicas:
//!   every message is acknowledged and read back exactly once, in order. Before replication was
//!   bounded by bytes, 64 such batches made one AppendEntries over the 16 MiB frame limit and
//!   the partition wedged for good.
//! - `malformed_requests_are_rejected_and_the_broker_keeps_serving`: truncated, oversized,
//!   negative and garbage frames, an unknown API key and a Produce with a bad CRC, on raw sockets
//!   (`tests/clients/malformed.py`); the broker drops the connection or answers CORRUPT_MESSAGE,
//!   keeps serving, and the data acknowledged before is intact.
//! - `kafka_python_reassigns_a_partition`: kafka-python's admin client moves a partition to
//!   another replica set (AlterPartitionReassignments), follows the move
//!   (ListPartitionReassignments) until Metadata shows the new set, and gets Kafka's errors for
//!   an unknown broker, partition and topic and for cancelling when nothing moves
//!   (`tests/clients/reassign_kafkapython.py`).
//! - `admin_clients_describe_log_dirs_and_elect_leaders`: kafka-python's `describe_log_dirs` gets
//!   one log directory per broker listing the partition with at least the bytes produced;
//!   kafka-python's and confluent-kafka's `elect_leaders` get ELECTION_NOT_NEEDED once the preferred
//!   replica leads and UNKNOWN_TOPIC_OR_PARTITION for a partition that does not exist
//!   (`tests/clients/leader_apis.py`).
//! - `a_librdkafka_consumer_keeps_consuming_across_a_leader_change`: a confluent-kafka consumer
//!   reads half of 20,000 messages, the partition's leader is SIGKILLed, and once a survivor leads
//!   the consumer validates its position with OffsetForLeaderEpoch (it must have sent one) and
//!   reads the rest: every message once, in order (`tests/clients/consume_failover.py`).
//!
//! The client programs are Python scripts in `tests/clients/`; their docstrings say what each
//! checks, and they run by hand against any broker. These tests need kcat, confluent-kafka and
//! kafka-python: `.ci/run` installs them, and without them the tests fail (they do not skip).
//! `KEEL_PYTHON` picks the interpreter (default `python3`), `KEEL_TEST_RUST_LOG` the nodes' log
//! filter (default `warn`). Every command runs with a timeout; on failure the tail of every node's
//! log is printed and the cluster's directory (node logs, data, every command's output) is kept,
//! as it is always with `KEEL_TEST_KEEP=1`.
#![cfg(not(madsim))]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs::File;
use std::fs::OpenOptions;
use std::io::BufRead;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::ExitStatus;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

const CLUSTER: &str = "keel-kafka-clients";
const NODES: u64 = 3;
const PARTITIONS: usize = 6;
const REPLICATION_FACTOR: usize = 3;
/// Distinct message keys per producer (common.message in tests/clients/common.py).
const KEYS: usize = 100;
const MESSAGES_PER_CLIENT: usize = 100_000;
const LOG_TAIL_LINES: usize = 40;
/// How long a new topic's leaders must stay put before producing (see `Cluster::create_topic`).
const LEADERS_SETTLE: Duration = Duration::from_secs(5);
const INSTALL_HINT: &str = "run .ci/run (it installs kcat, confluent-kafka and kafka-python)";

/// One cluster at a time: each test runs three nodes and up to three clients, and CI has 2 cores.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn python() -> String {
    std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("clients")
}

/// Waits for `child` until `within`; kills it and answers `None` if it is still running then.
fn wait_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails (never skips) when a client is missing.
fn require_clients() {
    let within = Duration::from_secs(30);
    let kcat = Command::new("kcat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let kcat = kcat.ok().and_then(|mut c| wait_within(&mut c, within));
    assert!(kcat.is_some_and(|s| s.success()), "kcat is not installed (or `kcat -V` fails); {INSTALL_HINT}");
    let mut modules = Command::new(python())
        .args(["-c", "import confluent_kafka, kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", python()));
    let imported = wait_within(&mut modules, within);
    assert!(
        imported.is_some_and(|s| s.success()),
        "{} cannot import confluent_kafka and kafka; {INSTALL_HINT}",
        python()
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What a finished command printed.
struct Output {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "{} exited with {} after {:.1?}\n--- stdout (tail):\n{}\n--- stderr (tail):\n{}",
            self.what,
            self.status,
            self.took,
            tail(&self.stdout, 30),
            tail(&self.stderr, 30)
        )
    }

    fn success(self) -> Self {
        assert!(self.status.success(), "{}", self.describe());
        self
    }

    /// The last JSON line of stdout whose "event" is `event`.
    fn event(&self, event: &str) -> Value {
        self.stdout
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == event)
            .unwrap_or_else(|| panic!("no {event:?} line in the output of {}", self.describe()))
    }
}

/// A command left running (a producer during a failover): its stdout lines arrive on a channel.
struct Background {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: PathBuf,
    started: Instant,
}

impl Background {
    /// Waits for a JSON line on stdout that `until` accepts.
    fn wait_for(&mut self, what: &str, within: Duration, until: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && until(&v)
                    {
                        return v;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let out = self.finish(Duration::from_secs(5));
                    panic!("{} ended before {what}: {}", self.what, out.describe())
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} did not report {what} within {within:?}; last lines:\n{}",
                self.what,
                tail(&self.seen.join("\n"), 5)
            );
        }
    }

    fn finish(&mut self, within: Duration) -> Output {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not finish within {within:?} (killed); last lines:\n{}\nstderr:\n{}",
                    self.what,
                    tail(&self.seen.join("\n"), 5),
                    tail(&std::fs::read_to_string(&self.stderr).unwrap_or_default(), 30)
                );
            }
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread ends at the end of stdout.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        Output {
            what: self.what.clone(),
            status,
            stdout: self.seen.join("\n"),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            took: self.started.elapsed(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Topic metadata as `kcat -L -J` reports it.
#[derive(Debug, Clone, PartialEq)]
struct Metadata {
    /// Broker id -> advertised "host:port".
    brokers: BTreeMap<i64, String>,
    /// Partition -> leader broker id (-1: none).
    leaders: BTreeMap<i64, i64>,
    replicas: BTreeMap<i64, usize>,
    isrs: BTreeMap<i64, usize>,
    /// The topic's error, if kcat reports one (unknown topic, leader not available).
    error: Option<String>,
}

impl Metadata {
    fn parse(json: &Value, topic: &str) -> Metadata {
        let brokers = json["brokers"]
            .as_array()
            .map(|bs| bs.iter().map(|b| (b["id"].as_i64().unwrap(), b["name"].as_str().unwrap().to_string())).collect())
            .unwrap_or_default();
        let mut m = Metadata {
            brokers,
            leaders: BTreeMap::new(),
            replicas: BTreeMap::new(),
            isrs: BTreeMap::new(),
            error: None,
        };
        let Some(t) = json["topics"].as_array().and_then(|ts| ts.iter().find(|t| t["topic"] == topic)) else {
            m.error = Some("topic absent".to_string());
            return m;
        };
        m.error = t.get("error").map(|e| e.to_string());
        for p in t["partitions"].as_array().into_iter().flatten() {
            let id = p["partition"].as_i64().unwrap();
            m.leaders.insert(id, p["leader"].as_i64().unwrap_or(-1));
            m.replicas.insert(id, p["replicas"].as_array().map_or(0, |r| r.len()));
            m.isrs.insert(id, p["isrs"].as_array().map_or(0, |r| r.len()));
        }
        m
    }

    fn every_partition_led(&self, partitions: usize) -> bool {
        self.error.is_none()
            && self.leaders.len() == partitions
            && self.leaders.values().all(|l| self.brokers.contains_key(l))
    }
}

struct Cluster {
    /// Node-to-node (Raft transport) addresses, by node id.
    nodes: BTreeMap<u64, String>,
    /// Kafka listener addresses, also advertised to clients, by node id.
    kafka: BTreeMap<u64, String>,
    /// Node data, node logs (`node-N.log`) and every command's output (`cmd-K-*.out|err`).
    dir: tempfile::TempDir,
    children: BTreeMap<u64, Child>,
    /// Numbers the command output files.
    commands_run: Cell<u32>,
    /// Partitions of the topics `create_topic` creates and `consume_check` reads.
    partitions: usize,
    t0: Instant,
}

impl Cluster {
    /// Three nodes, answering Kafka Metadata with all three brokers.
    fn start() -> Cluster {
        require_clients();
        let mut cluster = Cluster {
            nodes: (1..=NODES).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect(),
            kafka: (1..=NODES).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect(),
            dir: tempfile::tempdir().unwrap(),
            children: BTreeMap::new(),
            commands_run: Cell::new(0),
            partitions: PARTITIONS,
            t0: Instant::now(),
        };
        for id in 1..=NODES {
            cluster.spawn(id);
        }
        cluster.wait_ready(Duration::from_secs(60));
        cluster
    }

    fn say(&self, what: impl AsRef<str>) {
        eprintln!("[{:>7.1?}] {}", self.t0.elapsed(), what.as_ref());
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    fn spawn(&mut self, id: u64) {
        let nodes = self.nodes.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
        // Appends: a restarted node's log follows its first life's.
        let log = OpenOptions::new().create(true).append(true).open(self.log_path(id)).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["node", "--id", &id.to_string(), "--data-dir"])
            .arg(self.dir.path().join(format!("node-{id}")))
            .args(["--nodes", &nodes, "--cluster-id", CLUSTER, "--kafka-listen", &self.kafka[&id]])
            .args(["--http-listen", "127.0.0.1:0"])
            .env("RUST_LOG", std::env::var("KEEL_TEST_RUST_LOG").unwrap_or_else(|_| "warn".to_string()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel node starts");
        self.children.insert(id, child);
    }

    /// SIGKILL.
    fn kill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// Every node still runs (none crashed on what the clients sent).
    fn assert_alive(&mut self) {
        for (id, child) in &mut self.children {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("node {id} exited: {status}");
            }
        }
    }

    fn bootstrap(&self) -> String {
        self.kafka.values().cloned().collect::<Vec<_>>().join(",")
    }

    fn node_of_broker(&self, addr: &str) -> u64 {
        *self.kafka.iter().find(|(_, a)| *a == addr).unwrap_or_else(|| panic!("no node advertises {addr}")).0
    }

    fn wait_kafka_port(&self, id: u64, within: Duration) {
        let deadline = Instant::now() + within;
        let addr = self.kafka[&id].parse().unwrap();
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(Instant::now() < deadline, "node {id}'s Kafka port {addr} does not answer after {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kafka ports answer, and Metadata lists every node as a broker at its advertised address.
    fn wait_ready(&self, within: Duration) {
        for id in 1..=NODES {
            self.wait_kafka_port(id, within);
        }
        let expected: BTreeSet<&String> = self.kafka.values().collect();
        let deadline = Instant::now() + within;
        loop {
            // No topic named: with auto.create.topics.enable, naming one could create it. A short
            // timeout: until a node has registered, its Metadata lists no broker, and librdkafka
            // gives up on that request after two retries and waits out the whole timeout.
            let m = self.metadata_within(None, &self.bootstrap(), 3);
            if m.brokers.values().collect::<BTreeSet<_>>() == expected {
                break;
            }
            assert!(Instant::now() < deadline, "Metadata does not list the 3 brokers {expected:?}: {m:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
        self.say("Kafka listeners up; Metadata lists the 3 brokers");
    }

    /// Runs `cmd` to completion within `within` (killed and failed otherwise).
    fn run(&self, what: &str, mut cmd: Command, stdin: Option<&Path>, within: Duration) -> Output {
        let (out, err) = self.output_files(what);
        cmd.stdin(match stdin {
            Some(path) => Stdio::from(File::open(path).expect("stdin file")),
            None => Stdio::null(),
        });
        cmd.stdout(File::create(&out).unwrap()).stderr(File::create(&err).unwrap());
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
        let Some(status) = wait_within(&mut child, within) else {
            panic!(
                "{what} did not finish within {within:?} (killed)\n--- stdout (tail):\n{}\n--- stderr (tail):\n{}",
                tail(&std::fs::read_to_string(&out).unwrap_or_default(), 30),
                tail(&std::fs::read_to_string(&err).unwrap_or_default(), 30)
            );
        };
        Output {
            what: what.to_string(),
            status,
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
            took: started.elapsed(),
        }
    }

    fn background(&self, what: &str, mut cmd: Command) -> Background {
        let (_, err) = self.output_files(what);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(File::create(&err).unwrap());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background { what: what.to_string(), child, lines, seen: Vec::new(), stderr: err, started: Instant::now() }
    }

    fn output_files(&self, what: &str) -> (PathBuf, PathBuf) {
        let n = self.commands_run.get() + 1;
        self.commands_run.set(n);
        let name: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(40).collect();
        (self.dir.path().join(format!("cmd-{n:02}-{name}.out")), self.dir.path().join(format!("cmd-{n:02}-{name}.err")))
    }

    fn script(&self, name: &str) -> Command {
        let mut cmd = Command::new(python());
        cmd.arg(clients_dir().join(name)).env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
        cmd
    }

    fn kcat(&self, bootstrap: &str) -> Command {
        let mut cmd = Command::new("kcat");
        cmd.args(["-b", bootstrap]);
        cmd
    }

    /// `kcat -L -J` through `bootstrap`; of `topic` if named (else only the brokers are filled).
    fn metadata(&self, topic: Option<&str>, bootstrap: &str) -> Metadata {
        self.metadata_within(topic, bootstrap, 10)
    }

    fn metadata_within(&self, topic: Option<&str>, bootstrap: &str, timeout_s: u32) -> Metadata {
        let mut cmd = self.kcat(bootstrap);
        cmd.args(["-L", "-J", "-m", &timeout_s.to_string()]);
        if let Some(topic) = topic {
            cmd.args(["-t", topic]);
        }
        let out = self.run("kcat -L -J", cmd, None, Duration::from_secs(30));
        match serde_json::from_str::<Value>(out.stdout.trim()) {
            Ok(json) if out.status.success() => Metadata::parse(&json, topic.unwrap_or("")),
            _ => Metadata {
                brokers: BTreeMap::new(),
                leaders: BTreeMap::new(),
                replicas: BTreeMap::new(),
                isrs: BTreeMap::new(),
                error: Some(out.describe()),
            },
        }
    }

    /// CreateTopics (confluent-kafka's AdminClient), then Metadata until every partition has a
    /// leader and the leaders have stayed put for LEADERS_SETTLE: a new partition's first leader
    /// hands over to its preferred leader once it has led for `leader_settle_ms` (3 s, checked
    /// every second), and producing into that move makes clients retry, which without
    /// idempotence may store a batch twice or behind a later one.
    fn create_topic(&self, topic: &str) -> Metadata {
        let settle = LEADERS_SETTLE;
        let mut cmd = self.script("admin.py");
        cmd.args(["create", "--bootstrap", &self.bootstrap(), "--topic", topic]);
        cmd.args([
            "--partitions",
            &self.partitions.to_string(),
            "--replication-factor",
            &REPLICATION_FACTOR.to_string(),
        ]);
        let created = self.run(&format!("create topic {topic}"), cmd, None, Duration::from_secs(120)).success();
        self.say(format!("created {topic}: {}", created.event("metadata")));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stable_since = Instant::now();
        let mut last = self.metadata(Some(topic), &self.bootstrap());
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let m = self.metadata(Some(topic), &self.bootstrap());
            if m != last || !m.every_partition_led(self.partitions) {
                stable_since = Instant::now();
            }
            last = m;
            if stable_since.elapsed() >= settle {
                self.say(format!("{topic}: leaders {:?}", last.leaders));
                return last;
            }
            assert!(Instant::now() < deadline, "the leaders of {topic} did not settle within 60 s: {last:?}");
        }
    }

    fn producer(&self, script: &str, topic: &str, count: usize, out: &Path) -> Command {
        let mut cmd = self.script(script);
        cmd.args(["--bootstrap", &self.bootstrap(), "--topic", topic, "--count", &count.to_string()]);
        cmd.args(["--keys", &KEYS.to_string(), "--out"]).arg(out);
        cmd
    }

    /// consume_check.py, which must pass.
    fn consume_check(
        &self,
        topic: &str,
        client: &str,
        mode: &str,
        acked: &[&Path],
        all_acked: &[String],
        producers: &[Value],
    ) -> Value {
        self.try_consume_check(topic, client, mode, acked, all_acked, producers)
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// consume_check.py: its "check" line, or why it failed; `producers` (their summaries:
    /// retries, errors) go into the failure.
    fn try_consume_check(
        &self,
        topic: &str,
        client: &str,
        mode: &str,
        acked: &[&Path],
        all_acked: &[String],
        producers: &[Value],
    ) -> Result<Value, String> {
        let mut cmd = self.script("consume_check.py");
        cmd.args(["--bootstrap", &self.bootstrap(), "--topic", topic, "--partitions", &self.partitions.to_string()]);
        cmd.args(["--client", client, "--mode", mode, "--timeout", "240"]);
        for path in acked {
            cmd.arg("--acked").arg(path);
        }
        for spec in all_acked {
            cmd.args(["--all-acked", spec]);
        }
        let out = self.run(&format!("consume_check {client} {mode}"), cmd, None, Duration::from_secs(300));
        let check = out.event("check");
        self.say(format!(
            "{client} consumed {} records in {} s: {} acknowledged, {} duplicates, {} unacknowledged present, \
             violations {}",
            check["consumed"],
            check["consume_seconds"],
            check["acked"],
            check["duplicates"],
            check["unacked_present"],
            check["violation_counts_by_client"]
        ));
        if !out.status.success() {
            return Err(format!(
                "{client} consume check ({mode}) failed: {check:#}\nproducers: {producers:#?}\n{}",
                out.describe()
            ));
        }
        Ok(check)
    }

    /// SIGKILLs the node leading `partition` of `topic` (once Metadata names one: leadership
    /// may be moving to the preferred leader); answers it and when.
    fn kill_leader_of(&mut self, topic: &str, partition: i64) -> (u64, Instant) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let victim = loop {
            let m = self.metadata(Some(topic), &self.bootstrap());
            if let Some(addr) = m.leaders.get(&partition).and_then(|l| m.brokers.get(l)) {
                break self.node_of_broker(addr);
            }
            assert!(Instant::now() < deadline, "no leader of partition {partition} for 60 s: {m:?}");
            std::thread::sleep(Duration::from_millis(100));
        };
        self.kill(victim);
        (victim, Instant::now())
    }

    /// Waits until the survivors' Metadata names a survivor as the leader of `partition`,
    /// saying how the leadership looked along the way.
    fn wait_survivor_leads(&self, topic: &str, partition: i64, victim: u64, killed_at: Instant) -> Metadata {
        let survivors: Vec<String> =
            self.kafka.iter().filter(|(id, _)| **id != victim).map(|(_, a)| a.clone()).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = None;
        loop {
            let m = self.metadata(Some(topic), &survivors.join(","));
            let now = (m.brokers.clone(), m.leaders.get(&partition).copied());
            if seen.as_ref() != Some(&now) {
                self.say(format!(
                    "{:.1?} after the kill, the survivors' Metadata: brokers {:?}, partition {partition} led by {:?}",
                    killed_at.elapsed(),
                    now.0,
                    now.1
                ));
                seen = Some(now);
            }
            if m.leaders.get(&partition).is_some_and(|l| m.brokers.get(l).is_some_and(|a| *a != self.kafka[&victim])) {
                self.say(format!(
                    "{:.1?} after the kill: partition {partition} led by broker {}",
                    killed_at.elapsed(),
                    m.leaders[&partition]
                ));
                return m;
            }
            assert!(Instant::now() < deadline, "no survivor leads partition {partition} 60 s after the kill: {m:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn out_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for id in 1..=NODES {
                let log = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
                eprintln!("--- node {id} log (last {LOG_TAIL_LINES} lines):\n{}", tail(&log, LOG_TAIL_LINES));
            }
        }
        if std::thread::panicking() || std::env::var_os("KEEL_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("--- kept the cluster's directory: {}", self.dir.path().display());
        }
    }
}

/// The input kcat produces from: `key:value` lines, the messages of common.message("kcat", i).
fn write_kcat_input(path: &Path, count: usize) {
    let mut w = BufWriter::new(File::create(path).unwrap());
    for i in 0..count {
        let key = format!("k{}", i % KEYS);
        writeln!(w, "{key}:kcat:{key}:{}", i / KEYS).unwrap();
    }
    w.flush().unwrap();
}

/// The longest time between two progress lines of a producer that acknowledged more, and
/// when it began (seconds since the producer started).
fn longest_stall(stdout: &str) -> (f64, f64) {
    let mut longest = (0.0, 0.0);
    let mut last: Option<(f64, u64)> = None;
    for v in stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        let (Some(t), Some(acked)) = (v["t"].as_f64(), v["acked"].as_u64()) else { continue };
        match last {
            Some((t0, a0)) if acked > a0 => {
                if t - t0 > longest.0 {
                    longest = (t - t0, t0);
                }
                last = Some((t, acked));
            }
            Some(_) => {}
            None => last = Some((t, acked)),
        }
    }
    longest
}

/// Per partition, the longest time between two acknowledgements and when it began (seconds since
/// the producer started), from an acknowledged-records file with times ("t").
fn ack_gaps(acked: &Path) -> BTreeMap<u64, (f64, f64)> {
    let mut times: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for line in std::fs::read_to_string(acked).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let (Some(p), Some(t)) = (v["p"].as_u64(), v["t"].as_f64()) {
            times.entry(p).or_default().push(t);
        }
    }
    times
        .into_iter()
        .map(|(p, mut ts)| {
            ts.sort_by(f64::total_cmp);
            let gap = ts.windows(2).map(|w| (w[1] - w[0], w[0])).fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
            (p, gap)
        })
        .collect()
}

fn assert_produced(out: &Output, count: usize) -> Value {
    let summary = out.event("summary");
    assert!(
        out.status.success() && summary["acked"] == count && summary["failed"] == 0,
        "{}: {summary:#}\n{}",
        out.what,
        out.describe()
    );
    summary
}

#[test]
fn three_clients_produce_and_consume_exactly_once() {
    let _one = one_cluster_at_a_time();
    let mut cluster = Cluster::start();
    let topic = "three-clients";
    cluster.create_topic(topic);

    let kcat_input = cluster.out_file("kcat-input.txt");
    write_kcat_input(&kcat_input, MESSAGES_PER_CLIENT);
    let confluent_acked = cluster.out_file("confluent-acked.jsonl");
    let kafkapython_acked = cluster.out_file("kafkapython-acked.jsonl");

    // The three producers run at once, each with its own timeout.
    let t = Instant::now();
    let mut confluent = cluster.background(
        "produce_confluent",
        cluster.producer("produce_confluent.py", topic, MESSAGES_PER_CLIENT, &confluent_acked),
    );
    let mut kafkapython = cluster.background(
        "produce_kafkapython",
        cluster.producer("produce_kafkapython.py", topic, MESSAGES_PER_CLIENT, &kafkapython_acked),
    );
    let mut kcat = cluster.kcat(&cluster.bootstrap());
    kcat.args(["-P", "-t", topic, "-K:", "-X", "acks=all", "-X", "client.id=keel-test-kcat"]);
    let kcat = cluster.run("kcat -P", kcat, Some(&kcat_input), Duration::from_secs(300));
    assert!(kcat.status.success() && !kcat.stderr.contains("failed"), "{}", kcat.describe());
    cluster.say(format!("kcat produced {MESSAGES_PER_CLIENT} in {:.1?}", kcat.took));
    let mut summaries = Vec::new();
    for producer in [&mut confluent, &mut kafkapython] {
        let out = producer.finish(Duration::from_secs(300));
        let summary = assert_produced(&out, MESSAGES_PER_CLIENT);
        cluster.say(format!(
            "{} acknowledged {} in {} s ({} retries)",
            out.what, summary["acked"], summary["seconds"], summary["retries"]
        ));
        summaries.push(summary);
    }
    cluster.say(format!("3 x {MESSAGES_PER_CLIENT} messages produced in {:.1?}", t.elapsed()));

    // kcat -L: 3 brokers at their advertised addresses, the topic with 6 partitions, each led,
    // each with 3 replicas. (Metadata and kcat's reading come first: they do not judge order, so
    // a failing order check below does not hide them.)
    let mut cmd = cluster.kcat(&cluster.bootstrap());
    cmd.args(["-L", "-t", topic]);
    let listing = cluster.run("kcat -L", cmd, None, Duration::from_secs(30)).success();
    assert!(listing.stdout.contains(" 3 brokers:"), "{}", listing.stdout);
    for addr in cluster.kafka.values() {
        assert!(listing.stdout.contains(addr.as_str()), "kcat -L does not list {addr}:\n{}", listing.stdout);
    }
    assert!(listing.stdout.contains(&format!("topic \"{topic}\" with {PARTITIONS} partitions:")), "{}", listing.stdout);
    let m = cluster.metadata(Some(topic), &cluster.bootstrap());
    assert_eq!(m.brokers.len(), NODES as usize, "{m:?}");
    assert!(m.every_partition_led(PARTITIONS), "kcat -L -J: {m:?}");
    assert!(m.replicas.values().all(|r| *r == REPLICATION_FACTOR), "kcat -L -J: {m:?}");
    cluster.say(format!("kcat -L: brokers {:?}, leaders {:?}, ISR sizes {:?}", m.brokers, m.leaders, m.isrs));

    // kcat consumes (no group: -C reads every partition from the beginning, -e stops at the end).
    let mut cmd = cluster.kcat(&cluster.bootstrap());
    cmd.args(["-C", "-t", topic, "-e", "-q", "-f", "%p %o %s\\n"]);
    let consumed = cluster.run("kcat -C", cmd, None, Duration::from_secs(120)).success();
    let mut last: BTreeMap<u32, i64> = BTreeMap::new();
    let mut values = BTreeSet::new();
    for line in consumed.stdout.lines() {
        let mut parts = line.splitn(3, ' ');
        let (p, o, v) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let (p, o): (u32, i64) = (p.parse().unwrap(), o.parse().unwrap());
        assert!(last.get(&p).is_none_or(|prev| *prev < o), "kcat: partition {p} offset {o} after {:?}", last.get(&p));
        last.insert(p, o);
        assert!(values.insert(v.to_string()), "kcat consumed {v} twice");
    }
    assert_eq!(values.len(), 3 * MESSAGES_PER_CLIENT, "kcat -C consumed every message once");
    cluster.say(format!("kcat consumed {} records in {:.1?}", values.len(), consumed.took));

    let all_kcat = [format!("kcat:{MESSAGES_PER_CLIENT}:{KEYS}")];
    let acked: [&Path; 2] = [&confluent_acked, &kafkapython_acked];
    // Both consumers run before either verdict: each reports its own violations.
    let checks: Vec<Result<Value, String>> = ["confluent", "kafkapython"]
        .into_iter()
        .map(|client| cluster.try_consume_check(topic, client, "exact", &acked, &all_kcat, &summaries))
        .collect();
    cluster.assert_alive();
    for check in checks {
        let check = check.unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(check["consumed"], 3 * MESSAGES_PER_CLIENT, "{check:#}");
    }
}

#[test]
fn acknowledged_messages_survive_a_killed_leader() {
    const COUNT: usize = 60_000;
    const RATE_PER_S: usize = 4_000;
    let _one = one_cluster_at_a_time();
    let mut cluster = Cluster::start();
    let topic = "failover";
    cluster.create_topic(topic);

    let acked_path = cluster.out_file("confluent-acked.jsonl");
    let mut cmd = cluster.producer("produce_confluent.py", topic, COUNT, &acked_path);
    // One request in flight per connection: a retried batch cannot overtake the next one.
    cmd.args(["--rate", &RATE_PER_S.to_string(), "--max-in-flight", "1", "--message-timeout-ms", "180000"]);
    cmd.args(["--timeout", "300"]);
    let mut producer = cluster.background("produce_confluent (failover)", cmd);
    let acked_at = |n: usize| move |v: &Value| v["acked"].as_u64().is_some_and(|a| a as usize >= n);
    producer.wait_for("10,000 acknowledgements", Duration::from_secs(120), acked_at(10_000));

    let (victim, killed_at) = cluster.kill_leader_of(topic, 0);
    let progress = producer.wait_for("progress", Duration::from_secs(10), |v| v["event"] == "progress");
    let acked_at_kill = progress["acked"].as_u64().unwrap() as usize;
    cluster.say(format!("SIGKILLed node {victim} (leader of partition 0) at {acked_at_kill} acknowledged"));
    cluster.wait_survivor_leads(topic, 0, victim, killed_at);
    producer.wait_for("10,000 more acknowledgements", Duration::from_secs(120), acked_at(acked_at_kill + 10_000));
    cluster.say(format!("{:.1?} after the kill: the producer acknowledged 10,000 more", killed_at.elapsed()));

    cluster.spawn(victim);
    cluster.wait_kafka_port(victim, Duration::from_secs(60));
    cluster.say(format!("node {victim} restarted"));
    let out = producer.finish(Duration::from_secs(300));
    let summary = assert_produced(&out, COUNT);
    cluster.say(format!("the producer: {summary}"));
    let (stall_s, from_s) = longest_stall(&out.stdout);
    cluster.say(format!("longest time without a new acknowledgement: {stall_s:.1} s, from t={from_s:.1} s"));
    for (p, (gap_s, from_s)) in ack_gaps(&acked_path) {
        cluster
            .say(format!("partition {p}: longest time without an acknowledgement {gap_s:.1} s, from t={from_s:.1} s"));
    }
    cluster.wait_ready(Duration::from_secs(60));

    let check = cluster.consume_check(topic, "confluent", "at-least-once", &[&acked_path], &[], &[summary]);
    assert!(check["consumed"].as_u64().unwrap() as usize >= COUNT, "{check:#}");
    let m = cluster.metadata(Some(topic), &cluster.bootstrap());
    assert!(m.every_partition_led(PARTITIONS), "after the restart: {m:?}");
    cluster.say(format!("after the restart: leaders {:?}, ISR sizes {:?}", m.leaders, m.isrs));
    cluster.assert_alive();
}

#[test]
fn idempotent_producer_stores_every_message_once_through_two_leader_kills() {
    const COUNT: usize = 50_000;
    const RATE_PER_S: usize = 1_500;
    let _one = one_cluster_at_a_time();
    let mut cluster = Cluster::start();
    let topic = "idempotent";
    cluster.create_topic(topic);

    let acked_path = cluster.out_file("confluent-idempotent-acked.jsonl");
    let mut cmd = cluster.producer("produce_confluent.py", topic, COUNT, &acked_path);
    // Five requests in flight per connection, as librdkafka's idempotent producer allows: the
    // broker's sequence checks, not the client's caution, keep retries in order and unique.
    cmd.args(["--idempotent", "--rate", &RATE_PER_S.to_string(), "--max-in-flight", "5"]);
    cmd.args(["--message-timeout-ms", "240000", "--timeout", "300"]);
    // librdkafka's idempotence state changes (drains, epoch bumps, PIDs) end up in the output
    // shown on a failure.
    if std::env::var_os("KEEL_TEST_RDKAFKA_DEBUG").is_none() {
        cmd.env("KEEL_TEST_RDKAFKA_DEBUG", "eos");
    }
    let mut producer = cluster.background("produce_confluent (idempotent, two failovers)", cmd);
    let acked_at = |n: usize| move |v: &Value| v["acked"].as_u64().is_some_and(|a| a as usize >= n);
    producer.wait_for("5,000 acknowledgements", Duration::from_secs(180), acked_at(5_000));
    for kill in 1..=2 {
        let (victim, killed_at) = cluster.kill_leader_of(topic, 0);
        cluster.say(format!("kill {kill}: SIGKILLed node {victim} (leader of partition 0)"));
        cluster.wait_survivor_leads(topic, 0, victim, killed_at);
        cluster.spawn(victim);
        cluster.wait_kafka_port(victim, Duration::from_secs(60));
        cluster.wait_ready(Duration::from_secs(60));
        cluster.say(format!("kill {kill}: node {victim} restarted"));
    }
    let out = producer.finish(Duration::from_secs(300));
    let summary = assert_produced(&out, COUNT);
    cluster.say(format!("the producer: {summary}"));
    cluster.wait_ready(Duration::from_secs(60));

    // Exactly once, in send order per key, at the acknowledged offsets — despite the retries.
    let check = cluster.consume_check(topic, "confluent", "exact", &[&acked_path], &[], &[summary]);
    assert_eq!(check["consumed"].as_u64().unwrap() as usize, COUNT, "{check:#}");
    cluster.assert_alive();
}

#[test]
fn librdkafka_default_producer_with_megabyte_batches_never_wedges_replication() {
    const SMALL: usize = 30_000;
    const LARGE: usize = 24;
    let _one = one_cluster_at_a_time();
    let mut cluster = Cluster::start();
    cluster.partitions = 1;
    let topic = "megabyte-batches";
    cluster.create_topic(topic);
    let mut summaries = Vec::new();
    let mut acked = Vec::new();
    // librdkafka's message.max.bytes (1,000,000) bounds a message with its overhead; ~999,000
    // bytes of value is as near the limit as it takes.
    for (client, count, value_bytes) in [("small", SMALL, 1024), ("large", LARGE, 999_000)] {
        let path = cluster.out_file(&format!("{client}-acked.jsonl"));
        let mut cmd = cluster.producer("produce_confluent.py", topic, count, &path);
        cmd.args(["--client", client, "--value-bytes", &value_bytes.to_string(), "--librdkafka-defaults"]);
        cmd.args(["--timeout", "120"]);
        let out = cluster.run(&format!("produce {client}"), cmd, None, Duration::from_secs(150));
        let summary = assert_produced(&out, count);
        cluster.say(format!("{count} x {value_bytes} bytes acknowledged in {} s", summary["seconds"]));
        summaries.push(summary);
        acked.push(path);
    }
    let acked: Vec<&Path> = acked.iter().map(PathBuf::as_path).collect();
    let check = cluster.consume_check(topic, "confluent", "exact", &acked, &[], &summaries);
    assert_eq!(check["consumed"], SMALL + LARGE, "{check:#}");
    cluster.assert_alive();
}

#[test]
fn malformed_requests_are_rejected_and_the_broker_keeps_serving() {
    let _one = one_cluster_at_a_time();
    let mut cluster = Cluster::start();
    let topic = "malformed";
    cluster.create_topic(topic);

    let before = cluster.out_file("confluent-acked.jsonl");
    let out = cluster.run(
        "produce_confluent (before)",
        cluster.producer("produce_confluent.py", topic, 20_000, &before),
        None,
        Duration::from_secs(180),
    );
    let first = assert_produced(&out, 20_000);

    let raw = cluster.out_file("malformed-acked.jsonl");
    let mut cmd = cluster.script("malformed.py");
    cmd.args(["--bootstrap", &cluster.bootstrap(), "--topic", topic, "--out"]).arg(&raw);
    let out = cluster.run("malformed.py", cmd, None, Duration::from_secs(300));
    let report = out.event("malformed");
    assert!(out.status.success(), "malformed input: {report:#}\n{}", out.describe());
    cluster.say(format!("malformed input handled: {}", report["cases"]));
    cluster.assert_alive();

    let after = cluster.out_file("kafkapython-acked.jsonl");
    let out = cluster.run(
        "produce_kafkapython (after)",
        cluster.producer("produce_kafkapython.py", topic, 5_000, &after),
        None,
        Duration::from_secs(180),
    );
    let last = assert_produced(&out, 5_000);
    cluster.consume_check(topic, "confluent", "exact", &[&before, &raw, &after], &[], &[first, last]);
    cluster.assert_alive();
}

#[test]
fn kafka_python_reassigns_a_partition() {
    let _one = one_cluster_at_a_time();
    let mut cluster = Cluster::start();
    let mut cmd = cluster.script("reassign_kafkapython.py");
    cmd.args(["--bootstrap", &cluster.bootstrap(), "--topic", "moved"]);
    let out = cluster.run("reassign_kafkapython.py", cmd, None, Duration::from_secs(180)).success();
    cluster.say(format!("kafka-python reassigned: {}", out.event("reassigned")));
    cluster.assert_alive();
}

#[test]
fn admin_clients_describe_log_dirs_and_elect_leaders() {
    let _one = one_cluster_at_a_time();
    let mut cluster = Cluster::start();
    let mut cmd = cluster.script("leader_apis.py");
    cmd.args(["--bootstrap", &cluster.bootstrap(), "--topic", "dirs"]);
    let out = cluster.run("leader_apis.py", cmd, None, Duration::from_secs(180)).success();
    cluster.say(format!("kafka-python and confluent-kafka admin: {}", out.event("leader_apis")));
    cluster.assert_alive();
}

#[test]
fn a_librdkafka_consumer_keeps_consuming_across_a_leader_change() {
    const COUNT: usize = 20_000;
    let _one = one_cluster_at_a_time();
    let mut cluster = Cluster::start();
    let topic = "failover-consume";
    cluster.create_topic(topic);
    let go = cluster.out_file("go");
    let mut cmd = cluster.script("consume_failover.py");
    cmd.args(["--bootstrap", &cluster.bootstrap(), "--topic", topic, "--count", &COUNT.to_string(), "--go"]);
    cmd.arg(&go);
    let mut consumer = cluster.background("consume_failover.py", cmd);
    let half = consumer.wait_for("half of the messages", Duration::from_secs(120), |v| v["event"] == "half");
    cluster.say(format!("consumer at {half}"));
    let (victim, killed_at) = cluster.kill_leader_of(topic, 0);
    cluster.wait_survivor_leads(topic, 0, victim, killed_at);
    File::create(&go).expect("go file");
    let out = consumer.finish(Duration::from_secs(180)).success();
    let consumed = out.event("consumed");
    cluster.say(format!("consumed across the leader change: {consumed}"));
    assert_eq!(consumed["count"], COUNT);
    assert!(consumed["epoch_requests"].as_u64().is_some_and(|n| n > 0), "{consumed}");
    assert!(consumed["epoch_validations"].as_u64().is_some_and(|n| n > 0), "{consumed}");
    cluster.spawn(victim);
    cluster.assert_alive();
}
