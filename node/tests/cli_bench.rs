//! The `keel` binary's load generators and group consumer against an in-process 3-node cluster
//! (tokio, real files, Kafka listeners on loopback):
//!
//! - `bench_produce_then_bench_consume_count_exactly_what_the_topic_holds`: `keel bench produce`
//!   reports every message acknowledged (JSON), `keel bench consume` reads back exactly that many
//!   messages and bytes, and `keel consume --from-beginning` finds them in the topic, each key
//!   in one partition.
//! - `group_members_in_turn_resume_at_the_committed_offsets`: `keel consume --group` run by
//!   members one after another — one stopping at `--max-messages`, one stopped by Ctrl-C
//!   (SIGINT) while following, one reading to the end — print every record exactly once: each
//!   resumes where the previous one's commits left off (nothing printed twice, nothing skipped),
//!   and each leaves the group on its way out.
//! - `bad_input_is_a_clear_error_and_a_failing_exit`: an unknown topic for `bench consume`,
//!   `--message-bytes` 0 or absurd, an unreachable `--bootstrap`: a message naming the problem,
//!   exit code 1, no panic.
#![cfg(not(madsim))]

mod support;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use keel_node::raft::RaftTiming;
use serde_json::Value;

use support::Cluster;
use support::Options;

const CLUSTER: &str = "keel-cli-bench";
/// Bound on every `keel` command the tests run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// One cluster at a time: CI has 2 cores.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start_cluster() -> Cluster {
    let timing = RaftTiming { heartbeat_ms: 100, election_timeout_min_ms: 600, election_timeout_max_ms: 1200 };
    let cluster = Cluster::start(Options { timing, ..Options::new(CLUSTER) }).await;
    // Ready once a replication-factor-3 topic can be created and has leaders: every node has
    // registered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = keel(&cluster.bootstrap(), &["topic", "create", "probe", "--partitions", "1"], None).await;
        if probe.code == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster never took a topic: {}", probe.stderr);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster
}

/// What a finished `keel` command left.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }

    fn assert_ok(&self, what: &str) {
        assert_eq!(self.code, Some(0), "{what} failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
    }
}

/// Runs `keel ARGS --bootstrap B` (with `stdin` written to it) to completion, on a blocking
/// thread so that the in-process cluster keeps running.
async fn keel(bootstrap: &str, args: &[&str], stdin: Option<String>) -> Ran {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command.args(args).args(["--bootstrap", bootstrap]).env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keel starts");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        wait(child)
    })
    .await
    .expect("keel runs")
}

/// Waits at most [`COMMAND_TIMEOUT`] (then kills it and fails).
fn wait(mut child: Child) -> Ran {
    let out = child.stdout.take().expect("stdout");
    wait_reading(child, Box::new(out))
}

/// [`wait`], with the child's stdout read from `out`.
fn wait_reading(mut child: Child, out: Box<dyn std::io::Read + Send>) -> Ran {
    let err = child.stderr.take().expect("stderr");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(out), read(Box::new(err)));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keel did not finish within {COMMAND_TIMEOUT:?}; stderr: {}", err.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran { code: status.code(), stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_then_bench_consume_count_exactly_what_the_topic_holds() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let c = start_cluster().await;
    let b = &c.bootstrap();
    let produce = keel(
        b,
        &[
            "bench",
            "produce",
            "--topic",
            "bench",
            "--partitions",
            "3",
            "--messages",
            "2000",
            "--message-bytes",
            "64",
            "--keys",
            "10",
            "--batch-records",
            "50",
            "--in-flight",
            "4",
            "--json",
        ],
        None,
    )
    .await;
    produce.assert_ok("bench produce");
    let p = produce.json();
    assert_eq!(u64_of(&p, "messages_acknowledged"), 2000, "{p}");
    assert_eq!(u64_of(&p, "messages_failed"), 0, "{p}");
    assert_eq!(p["errors"], serde_json::json!({}), "{p}");
    assert_eq!(u64_of(&p, "partitions"), 3, "{p}");
    // 64-byte values and keys `key-0`..`key-9` (5 bytes each).
    assert_eq!(u64_of(&p, "bytes"), 2000 * (64 + 5), "{p}");
    let requests = u64_of(&p["latency"], "requests");
    assert!(requests >= 2000 / 50, "every request of at most 50 records is timed: {p}");
    let in_buckets: u64 = p["histogram"].as_array().expect("buckets").iter().map(|b| u64_of(b, "requests")).sum();
    assert_eq!(in_buckets, requests, "{p}");
    assert!(p["latency"]["p50_ms"].as_f64() <= p["latency"]["p99_ms"].as_f64(), "{p}");

    // A second run with acks=1 into the existing topic (its --partitions is not applied).
    let more = keel(
        b,
        &["bench", "produce", "--topic", "bench", "--partitions", "5", "--messages", "500", "--acks", "1", "--json"],
        None,
    )
    .await;
    more.assert_ok("bench produce acks=1");
    let m = more.json();
    assert_eq!((u64_of(&m, "messages_acknowledged"), u64_of(&m, "partitions")), (500, 3), "{m}");

    let consume = keel(b, &["bench", "consume", "--topic", "bench", "--json"], None).await;
    consume.assert_ok("bench consume");
    let r = consume.json();
    assert_eq!(u64_of(&r, "messages"), 2500, "{r}");
    assert_eq!(u64_of(&r, "bytes"), u64_of(&p, "bytes") + u64_of(&m, "bytes"), "{r}");
    assert!(u64_of(&r["latency"], "requests") >= 1, "{r}");
    let bounded = keel(b, &["bench", "consume", "--topic", "bench", "--messages", "700", "--json"], None).await;
    bounded.assert_ok("bench consume --messages 700");
    assert_eq!(u64_of(&bounded.json(), "messages"), 700);

    // The topic holds them: each keyed message once, every key in one partition.
    let all = keel(b, &["consume", "bench", "--from-beginning", "--json"], None).await;
    all.assert_ok("consume --from-beginning");
    let records = all.json_lines();
    assert_eq!(records.len(), 2500);
    let mut partition_of_key: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for r in &records {
        if let Some(k) = r["key"].as_str() {
            partition_of_key.entry(k.to_string()).or_default().insert(r["partition"].as_i64().expect("partition"));
        }
    }
    assert_eq!(partition_of_key.len(), 10, "{partition_of_key:?}");
    assert!(partition_of_key.values().all(|p| p.len() == 1), "a key in two partitions: {partition_of_key:?}");
    assert_eq!(records.iter().filter(|r| r["key"].is_null()).count(), 500, "the acks=1 run has no keys");
}

/// (partition, offset) → value of the JSON records a consumer printed.
fn printed(ran: &Ran) -> BTreeMap<(i64, i64), String> {
    ran.json_lines()
        .iter()
        .map(|r| {
            let at = (r["partition"].as_i64().expect("partition"), r["offset"].as_i64().expect("offset"));
            (at, r["value"].as_str().expect("value").to_string())
        })
        .collect()
}

/// The group's committed offsets (partition → offset) and how many members it has.
async fn committed(bootstrap: &str, group: &str) -> (BTreeMap<i64, i64>, usize) {
    let d = keel(bootstrap, &["group", "describe", group, "--json"], None).await;
    d.assert_ok("group describe");
    let v = d.json();
    let offsets = v["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| (o["partition"].as_i64().expect("partition"), o["committed"].as_i64().expect("committed")))
        .collect();
    (offsets, v["members"].as_array().map_or(0, Vec::len))
}

/// Every record printed lies below the group's committed offset of its partition, and the
/// next member's records all lie at or above it: nothing is printed twice or skipped.
fn assert_all_below(records: &BTreeMap<(i64, i64), String>, commits: &BTreeMap<i64, i64>, who: &str) {
    for (p, o) in records.keys() {
        let c = commits.get(p).copied().unwrap_or(0);
        assert!(*o < c, "{who} printed {p}/{o} but the group committed only {c}: {commits:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_in_turn_resume_at_the_committed_offsets() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let c = start_cluster().await;
    let b = c.bootstrap();
    keel(&b, &["topic", "create", "orders", "--partitions", "3"], None).await.assert_ok("topic create");
    let lines: String = (0..900).map(|i| format!("k{}:v{i}\n", i % 7)).collect();
    keel(&b, &["produce", "orders", "--key-separator", ":"], Some(lines)).await.assert_ok("produce");

    // Member 1 stops after 400 records, commits them and leaves.
    let first = keel(&b, &["consume", "orders", "--group", "g", "--from-beginning", "-n", "400", "--json"], None).await;
    first.assert_ok("member 1");
    let first = printed(&first);
    assert_eq!(first.len(), 400);
    let (after_first, members) = committed(&b, "g").await;
    assert_eq!(members, 0, "member 1 left the group");
    assert_all_below(&first, &after_first, "member 1");

    // Member 2 follows, and is stopped by Ctrl-C once it printed 200 records.
    let b2 = b.clone();
    let second = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["consume", "orders", "--group", "g", "--follow", "--json", "--bootstrap", &b2])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keel starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut seen = String::new();
        for _ in 0..200 {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).expect("read") > 0, "member 2 ended before 200 records");
            seen.push_str(&line);
        }
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(sent, 0, "SIGINT sent");
        // The reader, not its inner pipe: lines past the 200th may be in its buffer.
        let mut ran = wait_reading(child, Box::new(stdout));
        ran.stdout = seen + &ran.stdout;
        ran
    })
    .await
    .expect("member 2 runs");
    second.assert_ok("member 2 (Ctrl-C)");
    let second = printed(&second);
    assert!(second.len() >= 200 && second.len() <= 500, "{}", second.len());
    let (after_second, members) = committed(&b, "g").await;
    assert_eq!(members, 0, "member 2 left the group on Ctrl-C");
    assert_all_below(&second, &after_second, "member 2");
    for at in second.keys() {
        let c = after_first.get(&at.0).copied().unwrap_or(0);
        assert!(at.1 >= c, "member 2 printed {at:?} below member 1's commit {c}");
    }

    // Member 3 reads the rest.
    let third = keel(&b, &["consume", "orders", "--group", "g", "--from-beginning", "--json"], None).await;
    third.assert_ok("member 3");
    let third = printed(&third);
    for at in third.keys() {
        let c = after_second.get(&at.0).copied().unwrap_or(0);
        assert!(at.1 >= c, "member 3 printed {at:?} below member 2's commit {c}");
    }
    let mut values: Vec<&String> = first.values().chain(second.values()).chain(third.values()).collect();
    let total = values.len();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), total, "a record printed twice");
    assert_eq!(total, 900, "first {} + second {} + third {}", first.len(), second.len(), third.len());
    let (at_end, _) = committed(&b, "g").await;
    let ends = keel(&b, &["group", "describe", "g", "--json"], None).await.json();
    for o in ends["offsets"].as_array().expect("offsets") {
        assert_eq!(o["lag"], 0, "everything committed: {ends} ({at_end:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_and_a_failing_exit() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let c = start_cluster().await;
    let b = c.bootstrap();
    let unreachable = support::free_addr();
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["bench", "consume", "--topic", "no-such-topic"], b.as_str(), "no such topic"),
        (vec!["bench", "produce", "--topic", "t", "--message-bytes", "0"], b.as_str(), "--message-bytes 0"),
        (
            vec!["bench", "produce", "--topic", "t", "--message-bytes", "99999999999"],
            b.as_str(),
            "--message-bytes 99999999999 is out of range",
        ),
        (vec!["bench", "produce", "--topic", "t", "--message-bytes", "100000"], b.as_str(), "lower --batch-records"),
        (vec!["bench", "produce", "--topic", "t"], unreachable.as_str(), "no broker of --bootstrap"),
        (vec!["bench", "consume", "--topic", "t"], unreachable.as_str(), "no broker of --bootstrap"),
        (vec!["consume", "no-such-topic", "--group", "g"], b.as_str(), "no such topic"),
        (vec!["consume", "t", "--group", "g", "--assignor", "sticky"], b.as_str(), "--assignor"),
    ];
    for (args, bootstrap, expected) in cases {
        let ran = keel(bootstrap, &args, None).await;
        assert_eq!(ran.code, Some(1), "{args:?}: exit code; stderr: {}", ran.stderr);
        assert!(ran.stderr.contains(expected), "{args:?}: stderr {:?} does not say {expected:?}", ran.stderr);
        assert!(!ran.stderr.contains("panicked"), "{args:?}: {}", ran.stderr);
    }
}
