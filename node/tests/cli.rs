//! The `keel` command line as a user runs it: the built binary against `keel dev`.
//!
//! `client_commands_against_keel_dev`: one `keel dev` (3 nodes in one process, shared settings
//! from `--config`) serves every client command — topic create/list/describe/alter-config/
//! add-partitions/delete, produce with keys, consume (--from-beginning, --offset, --partition,
//! --max-messages, --json), group list/describe/reset-offsets after a real consumer group
//! (confluent-kafka, tests/clients/group_commit.py) committed, cluster status (three nodes,
//! every partition led, --json), cluster reassign and decommission (Keel's internal protocol) —
//! and each refuses an unknown topic with a clear message and exit 1. Every log line of `keel dev` names its node (`node{id=N}`). Ctrl-C (SIGINT) stops it
//! with exit 0, and a second `keel dev` on the same directory serves the records produced
//! before.
//!
//! `bad_input_fails_with_a_message_and_no_panic`: bad flags (clap, exit 2), an unreachable
//! `--bootstrap` for every client command, and invalid `--config` files (unknown key, wrong
//! type, invalid values) each exit non-zero with a message naming the problem, never a panic.
//!
//! Needs confluent-kafka (`.ci/run` installs it); `KEEL_PYTHON` picks the interpreter.
#![cfg(not(madsim))]

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

/// A hang detector, not a speed requirement: no command here should come near it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port p with p, p+1 and p+2 free (keel dev's Kafka ports).
fn free_port_triple() -> u16 {
    loop {
        let p = free_port();
        let held: Vec<_> = (0..3)
            .filter_map(|i| p.checked_add(i))
            .filter_map(|q| std::net::TcpListener::bind(("127.0.0.1", q)).ok())
            .collect();
        if held.len() == 3 {
            return p;
        }
    }
}

fn python() -> String {
    std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// What one `keel` command did.
#[derive(Debug)]
struct Run {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn no_panic(&self) {
        assert!(!self.stderr.contains("panicked"), "{}: panicked:\n{}", self.what, self.stderr);
    }

    /// Exit 0; the outcome.
    #[track_caller]
    fn ok(self) -> Run {
        self.no_panic();
        assert_eq!(self.code, Some(0), "{} failed:\n{}\n{}", self.what, self.stdout, self.stderr);
        self
    }

    /// Exit `code` with `text` in the message on stderr.
    #[track_caller]
    fn fails(self, code: i32, text: &str) -> Run {
        self.no_panic();
        assert_eq!(self.code, Some(code), "{}: wanted exit {code}:\n{}\n{}", self.what, self.stdout, self.stderr);
        assert!(self.stderr.contains(text), "{}: stderr lacks {text:?}:\n{}", self.what, self.stderr);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{}: not JSON ({e}):\n{}", self.what, self.stdout))
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", self.what)))
            .collect()
    }
}

/// Runs commands, their output in files of a directory (kept on failure for a look).
struct Shell {
    dir: PathBuf,
    n: AtomicUsize,
}

impl Shell {
    fn run(&self, mut cmd: Command, what: String, stdin: Option<&str>) -> Run {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let (out, err) = (self.dir.join(format!("{n}.out")), self.dir.join(format!("{n}.err")));
        cmd.stdout(File::create(&out).unwrap()).stderr(File::create(&err).unwrap());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        if let Some(text) = stdin {
            // A command refused at its arguments may exit before it reads its input: a broken
            // pipe is its answer arriving first, not a failure of the harness.
            match child.stdin.take().unwrap().write_all(text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => r.unwrap(),
            }
        }
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > COMMAND_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {COMMAND_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Run { what, code: status.code(), stdout: read(&out), stderr: read(&err) }
    }

    /// `keel ARGS` (stdin: `stdin`, else nothing).
    fn keel(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.args(args).env("RUST_LOG", "warn").env_remove("KEEL_BOOTSTRAP");
        self.run(cmd, format!("keel {}", args.join(" ")), stdin)
    }
}

/// A running `keel dev`.
struct Dev {
    child: Option<Child>,
    log: PathBuf,
    stdout: PathBuf,
}

impl Dev {
    fn start(shell: &Shell, args: &[String], run: usize) -> Dev {
        let log = shell.dir.join(format!("dev-{run}.log"));
        let stdout = shell.dir.join(format!("dev-{run}.out"));
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("dev")
            .args(args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("keel dev starts");
        Dev { child: Some(child), log, stdout }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ctrl-C; the exit code.
    fn interrupt(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
        let started = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            if started.elapsed() > COMMAND_TIMEOUT {
                let _ = child.kill();
                panic!("keel dev did not stop within {COMMAND_TIMEOUT:?} of SIGINT:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Retries `f` until it gives `Some` (at most 90 s).
#[track_caller]
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Three registered nodes, and every partition of `topics` (all when empty) has a leader, as each
/// node sees it (a node lists itself before its registration commits, so one node's answer is
/// not enough); the first node's status.
fn wait_ready(shell: &Shell, kafka_port: u16, topics: &[&str], dev: &Dev) -> Value {
    eventually("three nodes with every partition led", || {
        assert!(!dev.log().contains("panicked"), "keel dev panicked:\n{}", dev.log());
        let mut first = None;
        for port in kafka_port..kafka_port + 3 {
            let b = format!("127.0.0.1:{port}");
            let r = shell.keel(&["cluster", "status", "-b", &b, "--json"], None);
            if r.code != Some(0) {
                return None;
            }
            let s = r.json();
            let nodes = s["nodes"].as_array()?.len();
            let parts = s["partitions"].as_array()?;
            let present = topics.iter().all(|t| parts.iter().any(|p| p["topic"] == *t));
            let led = parts.iter().all(|p| p["leader"].is_i64());
            if nodes != 3 || !present || !led || s["controller"].is_null() {
                return None;
            }
            first.get_or_insert(s);
        }
        first
    })
}

#[test]
fn client_commands_against_keel_dev() {
    let dir = tempfile::tempdir().unwrap();
    let shell = Shell { dir: dir.path().to_path_buf(), n: AtomicUsize::new(0) };
    let kafka_port = free_port_triple();
    let http_port = free_port_triple();
    let nodes = (1..=3).map(|id| format!("{id}={}", format_args!("127.0.0.1:{}", free_port()))).collect::<Vec<_>>();
    let b = format!("127.0.0.1:{kafka_port}");
    // Shared settings from a file; flags override it (the file's 4 partitions become 2).
    let config = dir.path().join("shared.toml");
    std::fs::write(
        &config,
        "[broker]\nauto_create_topics_enable = false\nnum_partitions = 4\n\n\
         [raft]\nheartbeat_ms = 200\nelection_timeout_min_ms = 1000\nelection_timeout_max_ms = 2000\n",
    )
    .unwrap();
    let dev_args: Vec<String> = vec![
        "--data-dir".into(),
        dir.path().join("keel-data").display().to_string(),
        "--kafka-port".into(),
        kafka_port.to_string(),
        "--http-port".into(),
        http_port.to_string(),
        "--nodes".into(),
        nodes.join(","),
        "--cluster-id".into(),
        "keel-cli-test".into(),
        "--config".into(),
        config.display().to_string(),
        "--num-partitions".into(),
        "2".into(),
    ];
    let mut dev = Dev::start(&shell, &dev_args, 1);
    // "N nodes up" means N registered nodes (issue 17: a topic created right after it got
    // replication factor 2): the default RF 3 is met at once, never refused or capped.
    eventually("keel dev says its nodes are up", || {
        std::fs::read_to_string(&dev.stdout).unwrap_or_default().contains("3 nodes up").then_some(())
    });
    let r = shell.keel(&["topic", "create", "first", "--partitions", "1", "-b", &b], None).ok();
    assert_eq!(r.stdout.trim(), "created topic first: 1 partitions, replication factor 3");
    shell.keel(&["topic", "delete", "first", "-b", &b], None).ok();
    let status = wait_ready(&shell, kafka_port, &[], &dev);
    assert_eq!(status["cluster_id"], "keel-cli-test");
    let out = std::fs::read_to_string(&dev.stdout).unwrap();
    assert!(out.contains(&format!("Kafka clients connect to 127.0.0.1:{kafka_port},")), "{out}");

    // Topics.
    let r = shell.keel(&["topic", "create", "orders", "--partitions", "3", "-b", &b], None).ok();
    assert_eq!(r.stdout.trim(), "created topic orders: 3 partitions, replication factor 3");
    let r = shell.keel(&["topic", "create", "defaults", "-b", &b, "--json"], None).ok();
    assert_eq!(r.json()["partitions"], 2, "the flag's num.partitions, over the file's: {}", r.stdout);
    shell.keel(&["topic", "create", "orders", "-b", &b], None).fails(1, "creating topic 'orders'");
    shell.keel(&["topic", "create", "bad", "--config", "retention.ms=soon", "-b", &b], None).fails(1, "retention.ms");
    wait_ready(&shell, kafka_port, &["orders", "defaults"], &dev);
    let r = shell.keel(&["topic", "list", "-b", &b], None).ok();
    assert!(r.stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "3", "3"]), "{}", r.stdout);
    let list = shell.keel(&["topic", "list", "-b", &b, "--json"], None).ok().json();
    assert!(list.as_array().unwrap().iter().any(|t| t["topic"] == "orders" && t["partitions"] == 3), "{list}");
    let d = shell.keel(&["topic", "describe", "orders", "-b", &b, "--json"], None).ok().json();
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3, "{d}");
    assert!(d["partitions"].as_array().unwrap().iter().all(|p| p["replicas"].as_array().unwrap().len() == 3), "{d}");
    assert_eq!(d["configs"]["retention.ms"], "604800000", "{d}");
    let r = shell.keel(&["topic", "describe", "orders", "-b", &b], None).ok();
    assert!(r.stdout.starts_with("topic orders: 3 partitions"), "{}", r.stdout);
    shell.keel(&["topic", "alter-config", "orders", "--set", "retention.ms=3600000", "-b", &b], None).ok();
    let d = shell.keel(&["topic", "describe", "orders", "-b", &b, "--json"], None).ok().json();
    assert_eq!(d["configs"]["retention.ms"], "3600000", "{d}");
    shell.keel(&["topic", "alter-config", "orders", "--delete", "retention.ms", "-b", &b], None).ok();
    let d = shell.keel(&["topic", "describe", "orders", "-b", &b, "--json"], None).ok().json();
    assert_eq!(d["configs"]["retention.ms"], "604800000", "back to the default: {d}");
    shell.keel(&["topic", "alter-config", "orders", "-b", &b], None).fails(1, "nothing to change");
    shell
        .keel(&["topic", "alter-config", "orders", "--set", "no.such.setting=1", "-b", &b], None)
        .fails(1, "no.such.setting");
    shell.keel(&["topic", "add-partitions", "defaults", "--total", "3", "-b", &b], None).ok();
    let d = shell.keel(&["topic", "describe", "defaults", "-b", &b, "--json"], None).ok().json();
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3, "{d}");
    shell.keel(&["topic", "add-partitions", "defaults", "--total", "2", "-b", &b], None).fails(1, "defaults");
    shell.keel(&["topic", "delete", "defaults", "-b", &b], None).ok();
    shell.keel(&["topic", "describe", "defaults", "-b", &b], None).fails(1, "no such topic");

    // Reassignment and decommissioning speak Keel's internal protocol to --nodes.
    let voters = nodes.join(",");
    let internal = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|a| a.to_string())
            .chain(["--nodes".into(), voters.clone()])
            .chain(["--cluster-id".into(), "keel-cli-test".into()])
            .collect()
    };
    let run = |args: Vec<String>| shell.keel(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    let r = run(internal(&["cluster", "reassign", "orders", "--partition", "0", "--replicas", "3,1,2", "--json"])).ok();
    assert_eq!(r.json()["started"], true, "{}", r.stdout);
    eventually("orders/0 on replicas 3,1,2 in that order", || {
        let d = shell.keel(&["topic", "describe", "orders", "-b", &b, "--json"], None).ok().json();
        (d["partitions"][0]["replicas"] == serde_json::json!([3, 1, 2])).then_some(())
    });
    let r = run(internal(&["cluster", "reassign", "orders", "--partition", "1", "--replicas", "2,3,1"])).ok();
    assert_eq!(r.stdout.trim(), "reassignment of orders/1 started");
    run(internal(&["cluster", "reassign", "nope", "--partition", "0", "--replicas", "1,2,3"]))
        .fails(1, "unknown topic 'nope'");
    run(internal(&["cluster", "reassign", "orders", "--partition", "9", "--replicas", "1,2,3"]))
        .fails(1, "topic 'orders' has 3 partitions; there is no partition 9");
    run(internal(&["cluster", "reassign", "orders", "--partition", "0", "--replicas", "1,two"]))
        .fails(1, "replica \"two\" is not a node id");
    run(internal(&["cluster", "reassign", "orders", "--partition", "0", "--replicas", "1,2,7"])).fails(1, "refused");
    // Three nodes and replication factor 3: no node can be drained.
    run(internal(&["cluster", "decommission", "3"])).fails(1, "refused");
    run(internal(&["cluster", "decommission", "9"])).fails(1, "refused");

    // An unknown topic, for every command that names one (auto-creation is off in the file).
    for args in [
        &["topic", "describe", "nope"][..],
        &["topic", "delete", "nope"],
        &["topic", "alter-config", "nope", "--set", "retention.ms=1"],
        &["topic", "add-partitions", "nope", "--total", "2"],
        &["produce", "nope"],
        &["consume", "nope", "--from-beginning"],
        &["group", "reset-offsets", "g", "--topic", "nope", "--to-earliest"],
    ] {
        let args: Vec<&str> = args.iter().copied().chain(["-b", &b]).collect();
        shell.keel(&args, Some("x\n")).fails(1, "nope");
    }

    // Produce with keys and read back.
    wait_ready(&shell, kafka_port, &["orders"], &dev);
    let lines = "k1:one\nk2:two\nk3:three\nk1:four\nk2:five\nk3:six\n";
    let r = shell.keel(&["produce", "orders", "--key-separator", ":", "-b", &b], Some(lines)).ok();
    assert!(r.stderr.contains("produced 6 records to orders"), "{}", r.stderr);
    let r = shell.keel(&["produce", "orders", "-K", ":", "--json", "-b", &b], Some("k1:seven\n")).ok();
    assert_eq!(r.json()["records"], 1);
    let records = shell.keel(&["consume", "orders", "--from-beginning", "--json", "-b", &b], None).ok().json_lines();
    assert_eq!(records.len(), 7, "{records:?}");
    // The same key always lands in the same partition, in the order produced.
    for key in ["k1", "k2", "k3"] {
        let of_key: Vec<&Value> = records.iter().filter(|r| r["key"] == key).collect();
        assert!(of_key.windows(2).all(|w| w[0]["partition"] == w[1]["partition"]), "{key}: {of_key:?}");
    }
    let k1: Vec<&str> = records.iter().filter(|r| r["key"] == "k1").map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(k1, ["one", "four", "seven"]);
    let r = shell.keel(&["consume", "orders", "--from-beginning", "-K", "=", "-b", &b], None).ok();
    assert!(r.stdout.lines().any(|l| l == "k2=five"), "{}", r.stdout);
    let first =
        shell.keel(&["consume", "orders", "--from-beginning", "--max-messages", "1", "--json", "-b", &b], None).ok();
    assert_eq!(first.json_lines().len(), 1);
    // From an offset: the records of k1's partition from its second record on (offsets have
    // gaps where Raft's own entries sit, so they come from what was read).
    let partition = records.iter().find(|r| r["key"] == "k1").unwrap()["partition"].as_i64().unwrap();
    let p = partition.to_string();
    let in_p: Vec<&Value> = records.iter().filter(|r| r["partition"] == partition).collect();
    let second = in_p[1]["offset"].to_string();
    let from =
        shell.keel(&["consume", "orders", "--partition", &p, "--offset", &second, "--json", "-b", &b], None).ok();
    let got: Vec<String> = from.json_lines().iter().map(|r| format!("{}/{}", r["partition"], r["offset"])).collect();
    let want: Vec<String> = in_p[1..].iter().map(|r| format!("{}/{}", r["partition"], r["offset"])).collect();
    assert_eq!(got, want);
    shell.keel(&["consume", "orders", "--partition", "9", "-b", &b], None).fails(1, "there is no partition 9");
    shell.keel(&["consume", "orders", "--offset=-3", "-b", &b], None).fails(1, "--offset -3 is negative");
    shell.keel(&["produce", "orders", "--partition", "9", "-b", &b], Some("x\n")).fails(1, "there is no partition 9");

    // Cluster status: three nodes, every partition led.
    let r = shell.keel(&["cluster", "status", "-b", &b], None).ok();
    assert!(r.stdout.starts_with("cluster keel-cli-test: 3 nodes,"), "{}", r.stdout);
    assert!(r.stdout.contains("0 offline"), "{}", r.stdout);
    let s = shell.keel(&["cluster", "status", "-b", &b, "--json"], None).ok().json();
    let ids: Vec<i64> = s["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    let orders: Vec<&Value> = s["partitions"].as_array().unwrap().iter().filter(|p| p["topic"] == "orders").collect();
    assert_eq!(orders.len(), 3);
    assert!(orders.iter().all(|p| p["leader"].is_i64() && p["state"] == "ok"), "{orders:?}");

    // Groups: a real consumer group commits, then the CLI looks at it and moves its offsets.
    let mut group = Command::new(python());
    group.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/group_commit.py"));
    group.args(["--bootstrap", &b, "--topic", "orders", "--group", "cli-group", "--count", "7"]);
    group.env("PYTHONDONTWRITEBYTECODE", "1");
    let g = shell.run(group, "group_commit.py".into(), None);
    assert_eq!(g.code, Some(0), "the consumer group did not commit:\n{}\n{}", g.stdout, g.stderr);
    let list = eventually("cli-group listed", || {
        let r = shell.keel(&["group", "list", "-b", &b, "--json"], None);
        (r.code == Some(0) && r.stdout.contains("cli-group")).then(|| r.json())
    });
    assert!(list.as_array().unwrap().iter().any(|g| g["group"] == "cli-group" && g["state"] == "Empty"), "{list}");
    let r = shell.keel(&["group", "list", "-b", &b], None).ok();
    assert!(r.stdout.lines().any(|l| l.starts_with("cli-group")), "{}", r.stdout);
    let d = shell.keel(&["group", "describe", "cli-group", "-b", &b, "--json"], None).ok().json();
    let committed = |d: &Value| -> Vec<(i64, i64)> {
        d["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["partition"].as_i64().unwrap(), o["committed"].as_i64().unwrap()))
            .collect()
    };
    assert_eq!(committed(&d).len(), 3, "a commit in every partition: {d}");
    for (partition, offset) in committed(&d) {
        let last = records.iter().filter(|r| r["partition"] == partition).map(|r| r["offset"].as_i64().unwrap()).max();
        assert!(
            last.is_some_and(|l| offset > l),
            "partition {partition}: commit {offset} is past every record read: {d}"
        );
    }
    let r = shell.keel(&["group", "describe", "cli-group", "-b", &b], None).ok();
    assert!(r.stdout.starts_with("group cli-group: Empty"), "{}", r.stdout);
    let r = shell
        .keel(&["group", "reset-offsets", "cli-group", "--topic", "orders", "--to-earliest", "-b", &b, "--json"], None)
        .ok();
    assert!(r.json()["offsets"].as_array().unwrap().iter().all(|o| o["offset"] == 0), "{}", r.stdout);
    let d = shell.keel(&["group", "describe", "cli-group", "-b", &b, "--json"], None).ok().json();
    assert!(d["lag"].as_i64().unwrap() >= 7, "back to the start, every record is lag: {d}");
    assert!(committed(&d).iter().all(|(_, o)| *o == 0), "{d}");
    let r = shell
        .keel(
            &[
                "group",
                "reset-offsets",
                "cli-group",
                "--topic",
                "orders",
                "--partition",
                &p,
                "--to-offset",
                &second,
                "-b",
                &b,
            ],
            None,
        )
        .ok();
    assert!(r.stdout.contains("NEW OFFSET"), "{}", r.stdout);
    let d = shell.keel(&["group", "describe", "cli-group", "-b", &b, "--json"], None).ok().json();
    assert!(committed(&d).iter().any(|(q, o)| *q == partition && o.to_string() == second), "{d}");
    shell.keel(&["group", "reset-offsets", "cli-group", "--topic", "orders", "--to-latest", "-b", &b], None).ok();
    let d = shell.keel(&["group", "describe", "cli-group", "-b", &b, "--json"], None).ok().json();
    assert!(d["offsets"].as_array().unwrap().iter().all(|o| o["committed"] == o["end"]), "{d}");
    let before_restart = committed(&d);
    shell.keel(&["group", "describe", "no-such-group", "-b", &b], None).fails(1, "no-such-group");
    shell
        .keel(&["group", "reset-offsets", "cli-group", "--topic", "orders", "--to-offset=-1", "-b", &b], None)
        .fails(1, "negative");

    // Every log line of keel dev says which node wrote it.
    let log = dev.log();
    for id in 1..=3 {
        assert!(log.contains(&format!("node{{id={id}}}: keel::cli::start: node started")), "{log}");
    }
    let untagged: Vec<&str> = log.lines().filter(|l| !l.contains(" node{id=")).collect();
    assert!(untagged.is_empty(), "log lines without a node:\n{}", untagged.join("\n"));

    // Ctrl-C stops it cleanly; a second start serves the same records.
    assert_eq!(dev.interrupt(), Some(0), "{}", dev.log());
    assert!(std::fs::read_to_string(&dev.stdout).unwrap().contains("keel dev: stopped"));
    let dev2 = Dev::start(&shell, &dev_args, 2);
    wait_ready(&shell, kafka_port, &["orders"], &dev2);
    let again = eventually("the records after a restart", || {
        let r = shell.keel(&["consume", "orders", "--from-beginning", "--json", "-b", &b], None);
        (r.code == Some(0)).then(|| r.json_lines()).filter(|l| l.len() == 7)
    });
    let strip = |v: &[Value]| {
        let mut v: Vec<String> =
            v.iter().map(|r| format!("{}/{} {}={}", r["partition"], r["offset"], r["key"], r["value"])).collect();
        v.sort();
        v
    };
    assert_eq!(strip(&again), strip(&records));
    // The coordinator answers COORDINATOR_LOAD_IN_PROGRESS until it has read its partition.
    let d = eventually("the group's coordinator after the restart", || {
        let r = shell.keel(&["group", "describe", "cli-group", "-b", &b, "--json"], None);
        r.no_panic();
        (r.code == Some(0)).then(|| r.json())
    });
    assert_eq!(committed(&d), before_restart, "committed offsets survive the restart");
    drop(dev2);
}

#[test]
fn bad_input_fails_with_a_message_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let shell = Shell { dir: dir.path().to_path_buf(), n: AtomicUsize::new(0) };

    // Bad flags: clap's message, exit 2.
    shell.keel(&["topic", "create"], None).fails(2, "required arguments were not provided");
    shell.keel(&["topic", "frobnicate"], None).fails(2, "unrecognized subcommand 'frobnicate'");
    shell.keel(&["consume", "t", "--from-beginning", "--offset", "3"], None).fails(2, "cannot be used with");
    shell.keel(&["topic", "create", "t", "--partitions", "many"], None).fails(2, "invalid value 'many'");
    shell.keel(&["group", "reset-offsets", "g", "--topic", "t"], None).fails(2, "required arguments");
    shell.keel(&["node", "--id", "1", "--raft-heartbeat-ms", "soon"], None).fails(2, "invalid value 'soon'");
    shell.keel(&["node", "--nodes", "1=a:1,1=b:2"], None).fails(2, "node 1 appears twice");
    shell.keel(&["produce", "t", "--acks", "7", "-b", "127.0.0.1:1"], Some("x\n")).fails(1, "--acks \"7\"");
    shell.keel(&["topic", "list", "-b", "nowhere"], None).fails(1, "is not HOST:PORT");

    // No broker answers: every client command says so and exits 1.
    let unreachable = "no broker of --bootstrap 127.0.0.1:1 answered";
    for args in [
        &["topic", "list"][..],
        &["topic", "create", "t"],
        &["topic", "describe", "t"],
        &["topic", "delete", "t"],
        &["topic", "alter-config", "t", "--set", "retention.ms=1"],
        &["topic", "add-partitions", "t", "--total", "2"],
        &["produce", "t"],
        &["consume", "t"],
        &["group", "list"],
        &["group", "describe", "g"],
        &["group", "reset-offsets", "g", "--topic", "t", "--to-earliest"],
        &["cluster", "status"],
    ] {
        let args: Vec<&str> = args.iter().copied().chain(["--bootstrap", "127.0.0.1:1"]).collect();
        shell.keel(&args, Some("x\n")).fails(1, unreachable);
    }

    // No node of --nodes answers: the internal commands say so and exit 1.
    for args in [
        &["cluster", "reassign", "t", "--partition", "0", "--replicas", "1,2,3"][..],
        &["cluster", "decommission", "2"],
    ] {
        let args: Vec<&str> = args.iter().copied().chain(["--nodes", "1=127.0.0.1:1", "--cluster-id", "x"]).collect();
        let r = shell.keel(&args, None);
        r.no_panic();
        assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
        assert!(r.stderr.contains("no node answered"), "{args:?}: {}", r.stderr);
    }

    // Node settings: missing, invalid, and bad files — refused before anything starts.
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    shell.keel(&["node", "--data-dir", data], None).fails(1, "id is not set: give --id, KEEL_NODE_ID or `id`");
    let r = shell.keel(&["node", "--id", "1", "--data-dir", data, "--raft-heartbeat-ms", "5000"], None);
    r.fails(
        1,
        "raft.heartbeat_ms (--raft-heartbeat-ms) is 5000 ms: it must be below raft.election_timeout_min_ms, 3000 ms",
    );
    shell.keel(&["node", "--id", "9", "--data-dir", data], None).fails(1, "node 9 is not a voter in `nodes`");
    shell
        .keel(&["node", "--id", "1", "--data-dir", data, "--kafka-listen", "0.0.0.0:123456"], None)
        .fails(1, "kafka.listen (--kafka-listen)");
    shell
        .keel(&["node", "--id", "1", "--data-dir", data, "--default-replication-factor", "0"], None)
        .fails(1, "must be at least 1");
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let unknown = file("unknown.toml", "id = 1\n[raft]\nheartbeat = 100\n");
    shell.keel(&["node", "--config", &unknown, "--data-dir", data], None).fails(
        1,
        &format!("config file {unknown}, line 3, key `raft.heartbeat`: unknown key; expected one of heartbeat_ms,"),
    );
    let typed = file("typed.toml", "id = 1\ndata_dir = \"/tmp/x\"\n\n[broker]\nnum_partitions = \"six\"\n");
    shell.keel(&["node", "--config", &typed], None).fails(
        1,
        &format!(
            "config file {typed}, line 5, key `broker.num_partitions`: invalid type: string \"six\", expected u32"
        ),
    );
    let values = file(
        "values.toml",
        "id = 1\ndata_dir = \"/tmp/x\"\n[raft]\nelection_timeout_min_ms = 5000\nelection_timeout_max_ms = 4000\n",
    );
    shell.keel(&["node", "--config", &values], None).fails(1, "raft.election_timeout_min_ms (--raft-election-timeout-min-ms) is 5000 ms: it must be below raft.election_timeout_max_ms, 4000 ms");
    // The flag fixes what the file got wrong: flags win (the node then starts; stop it at once
    // by giving it a port it cannot bind).
    let r = shell.keel(
        &["node", "--config", &values, "--raft-election-timeout-max-ms", "9000", "--listen", "192.0.2.1:1"],
        None,
    );
    r.fails(1, "node 1 cannot listen on 192.0.2.1:1");
    // A variable wins over the file (the file's 6 partitions would do).
    let fine = file("fine.toml", "id = 1\ndata_dir = \"/tmp/x\"\n[broker]\nnum_partitions = 6\n");
    let env = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.args(["node", "--config", &fine]).env("KEEL_NUM_PARTITIONS", "0");
        shell.run(cmd, "KEEL_NUM_PARTITIONS=0 keel node".into(), None)
    };
    env.fails(1, "broker.num_partitions (--num-partitions) must be at least 1");
    shell
        .keel(&["node", "--config", "/nonexistent/keel.toml"], None)
        .fails(1, "cannot read config file /nonexistent/keel.toml");
    let dev_file = file("dev.toml", "id = 1\n");
    shell.keel(&["dev", "--config", &dev_file], None).fails(1, "id (--id) applies to one node (`keel node`)");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/keel.example.toml");
    // The documented example is valid: the node gets as far as binding its address.
    shell
        .keel(&["node", "--config", example, "--data-dir", data], None)
        .fails(1, "node 1 cannot listen on 10.0.0.1:19201");
}
