//! A full disk with real processes and a real client (issue 17): three `keel node` processes,
//! each with its data directory on its own 64 MiB tmpfs, and confluent-kafka
//! (`tests/clients/full_disk.py`, one step per run).
//!
//! `a_full_disk_answers_and_recovers_without_restart`:
//! 1. a default-settings producer fills a ballast topic until no acknowledgement comes for a
//!    while (every disk is nearly full);
//! 2. a produce to another topic is answered KAFKA_STORAGE_ERROR (or NOT_ENOUGH_REPLICAS) —
//!    seen in the delivery report of a producer with `retries=0`, since librdkafka retries the
//!    error by default;
//! 3. a consumer reads back every acknowledged ballast message at its acknowledged offset;
//! 4. deleting the ballast topic frees its space on every node (statvfs, as `df` reports it);
//! 5. a default-settings producer's messages are all acknowledged again, and read back — with
//!    the same three node processes that started (none restarted, none crashed).
//!
//! Needs root (`mount -t tmpfs`): where mounting is not permitted the test says so and returns.
//! The file systems are unmounted at the end, on failure too (a drop guard that first stops
//! the nodes). Needs confluent-kafka (`.ci/run` installs it); `KEEL_PYTHON` picks the
//! interpreter, `KEEL_TEST_RUST_LOG` the nodes' log filter.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpStream;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

const CLUSTER: &str = "keel-full-disk";
const DISK_BYTES: u64 = 64 << 20;
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Bytes free on the file system holding `dir`, as `df` reports them.
fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(dir).output().expect("df runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("df output: {text}"))
}

/// The nodes and their file systems. Dropping it stops the nodes, then unmounts, whatever
/// happened before.
struct Rig {
    dir: tempfile::TempDir,
    mounts: BTreeMap<u64, PathBuf>,
    kafka: BTreeMap<u64, String>,
    children: BTreeMap<u64, Child>,
    steps: u32,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for m in self.mounts.values() {
            let ok = Command::new("umount").arg(m).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        if std::thread::panicking() {
            for id in self.children.keys() {
                let log = std::fs::read_to_string(self.log_path(*id)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- node {id} log (tail):\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
        }
    }
}

impl Rig {
    /// Mounts three file systems; `None` when mounting is not permitted here.
    fn mount() -> Option<Rig> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rig = Rig {
            mounts: BTreeMap::new(),
            kafka: (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect(),
            children: BTreeMap::new(),
            steps: 0,
            dir,
        };
        for id in 1..=3u64 {
            let m = rig.dir.path().join(format!("disk-{id}"));
            std::fs::create_dir_all(&m).expect("mount point");
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"])
                .arg(&m)
                .output()
                .expect("mount runs");
            if !out.status.success() {
                eprintln!(
                    "SKIPPED: mounting a tmpfs is not permitted here ({}); this test needs root",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
            rig.mounts.insert(id, m);
        }
        Some(rig)
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    fn start(&mut self) {
        let raft: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
        let nodes = raft.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
        for id in 1..=3u64 {
            let log = File::create(self.log_path(id)).expect("log file");
            let child = Command::new(env!("CARGO_BIN_EXE_keel"))
                .args(["node", "--id", &id.to_string(), "--data-dir"])
                .arg(self.mounts[&id].join("data"))
                .args(["--nodes", &nodes, "--cluster-id", CLUSTER, "--kafka-listen", &self.kafka[&id]])
                .args(["--http-listen", "127.0.0.1:0"])
                .env("RUST_LOG", std::env::var("KEEL_TEST_RUST_LOG").unwrap_or_else(|_| "warn".to_string()))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("keel node starts");
            self.children.insert(id, child);
        }
        for addr in self.kafka.values() {
            let addr = addr.parse().expect("addr");
            let deadline = Instant::now() + Duration::from_secs(60);
            while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
                assert!(Instant::now() < deadline, "Kafka port {addr} does not answer");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn bootstrap(&self) -> String {
        self.kafka.values().cloned().collect::<Vec<_>>().join(",")
    }

    /// Every node process still runs: none crashed, none was restarted.
    fn assert_alive(&mut self) {
        for (id, child) in &mut self.children {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("node {id} exited: {status}");
            }
        }
    }

    /// Runs one step of `full_disk.py`; answers its last JSON line, which must say `"ok": true`.
    fn step(&mut self, args: &[&str]) -> serde_json::Value {
        self.steps += 1;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/full_disk.py");
        let out_path = self.dir.path().join(format!("step-{}.out", self.steps));
        let err_path = self.dir.path().join(format!("step-{}.err", self.steps));
        let mut child = Command::new(std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(script)
            .args(args)
            .args(["--bootstrap", &self.bootstrap()])
            .stdout(File::create(&out_path).expect("out"))
            .stderr(File::create(&err_path).expect("err"))
            .spawn()
            .expect("python runs");
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break Some(s);
            }
            if started.elapsed() > STEP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let last = out.lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        eprintln!("step {args:?}: {}", last.as_ref().map(|v| v.to_string()).unwrap_or_default());
        match (status, last) {
            (Some(s), Some(v)) if s.success() && v["ok"] == true => v,
            (s, _) => panic!("step {args:?} failed ({s:?})\n--- stdout:\n{out}\n--- stderr:\n{err}"),
        }
    }
}

#[test]
fn a_full_disk_answers_and_recovers_without_restart() {
    let Some(mut rig) = Rig::mount() else { return };
    rig.start();
    let acked = rig.dir.path().join("ballast.jsonl");
    let acked_s = acked.to_str().expect("utf-8 path").to_string();
    rig.step(&["create", "--topic", "ballast"]);
    rig.step(&["create", "--topic", "data"]);
    // A consumer first, so the offsets topic it makes Keel create is there before the disks fill.
    let none = rig.dir.path().join("none.jsonl");
    std::fs::write(&none, "").expect("empty file");
    rig.step(&["consume", "--topic", "data", "--acked", none.to_str().expect("utf-8 path")]);
    let free_empty: BTreeMap<u64, u64> = rig.mounts.iter().map(|(id, m)| (*id, free_bytes(m))).collect();

    let fill =
        rig.step(&["fill", "--topic", "ballast", "--out", &acked_s, "--bytes-max", &(4 * DISK_BYTES).to_string()]);
    assert!(fill["acked"].as_u64().unwrap_or(0) > 0, "nothing was acknowledged before the disks filled: {fill}");
    let free_full: BTreeMap<u64, u64> = rig.mounts.iter().map(|(id, m)| (*id, free_bytes(m))).collect();
    for id in 1..=3 {
        assert!(free_full[&id] < DISK_BYTES / 8, "node {id}'s disk is not nearly full: {} bytes free", free_full[&id]);
    }
    rig.assert_alive();

    let probe_bytes_max = (4 * DISK_BYTES).to_string();
    let probe = rig.step(&["probe", "--topic", "data", "--bytes-max", &probe_bytes_max]);
    eprintln!(
        "a full disk answered {} in {} s (after {} more acknowledged)",
        probe["error"], probe["seconds"], probe["acked_before"]
    );

    let consumed = rig.step(&["consume", "--topic", "ballast", "--acked", &acked_s]);
    assert_eq!(consumed["checked"].as_u64(), fill["acked"].as_u64(), "every acknowledged message read back");

    rig.step(&["delete", "--topic", "ballast"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let freed: Vec<bool> = rig
            .mounts
            .iter()
            .map(|(id, m)| free_bytes(m) >= free_full[id] + (free_empty[id] - free_full[id]) / 2)
            .collect();
        if freed.iter().all(|f| *f) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deleting the ballast topic did not free its space: free {:?}, full {free_full:?}, empty {free_empty:?}",
            rig.mounts.values().map(|m| free_bytes(m)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let resumed = rig.dir.path().join("data.jsonl");
    let resumed_s = resumed.to_str().expect("utf-8 path").to_string();
    rig.step(&["produce", "--topic", "data", "--count", "20", "--out", &resumed_s]);
    rig.step(&["consume", "--topic", "data", "--acked", &resumed_s]);
    rig.assert_alive();
}
