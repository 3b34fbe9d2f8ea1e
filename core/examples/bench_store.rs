//! Benchmark: fsync'd appends through the segment log against a bare `write` + `fdatasync` loop
//! on the same disk. Not a test: machines are shared and noisy, so it reports the ratio of the two
//! measured in one run, interleaved in rounds.
//!
//!     cargo run --release -p keel-core --example bench_store -- [DIR] [RECORD_BYTES] [APPENDS]
//!
//! Both sides write the same bytes (a one-record batch of RECORD_BYTES) and fsync after every
//! append, which is the worst case for Keel (no group commit). A third line shows the group-commit
//! case: 16 appends per fsync through the log.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use keel_core::batch::BatchBuilder;
use keel_core::log::LogConfig;
use keel_core::log::PartitionLog;
use keel_core::storage::Storage;
use keel_core::storage::fs::FsStorage;

fn batch(record_bytes: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, Some(b"key"), Some(&vec![b'x'; record_bytes]));
    b.build()
}

fn bare(dir: &Path, payload: &[u8], appends: usize) -> f64 {
    let path = dir.join("bare.bin");
    let _ = std::fs::remove_file(&path);
    let mut f = OpenOptions::new().create(true).append(true).open(&path).expect("open bare file");
    let t = Instant::now();
    for _ in 0..appends {
        f.write_all(payload).expect("write");
        f.sync_data().expect("fdatasync");
    }
    t.elapsed().as_secs_f64()
}

fn through_log(dir: &Path, payload: &[u8], appends: usize, appends_per_sync: usize) -> f64 {
    let log_dir = dir.join("log");
    let _ = std::fs::remove_dir_all(&log_dir);
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    storage.create_dir_all(&log_dir).expect("create log dir");
    let (mut log, _) = PartitionLog::open(storage.clone(), log_dir, LogConfig::default()).expect("open log");
    let t = Instant::now();
    for i in 0..appends {
        let index = log.next_index();
        log.append(index, 1, payload.to_vec(), 1_700_000_000_000).expect("append");
        if (i + 1) % appends_per_sync == 0
            && let Some(plan) = log.prepare_sync()
        {
            plan.execute(&*storage).expect("sync");
            log.complete_sync(plan);
        }
    }
    if let Some(plan) = log.prepare_sync() {
        plan.execute(&*storage).expect("sync");
        log.complete_sync(plan);
    }
    t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "target/bench-store".into()));
    let record_bytes: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let appends: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2000);
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let payload = batch(record_bytes);
    let rounds = 3;
    let (mut t_bare, mut t_log, mut t_group) = (0.0, 0.0, 0.0);
    for _ in 0..rounds {
        t_bare += bare(&dir, &payload, appends);
        t_log += through_log(&dir, &payload, appends, 1);
        t_group += through_log(&dir, &payload, appends, 16);
    }
    let n = (appends * rounds) as f64;
    println!("dir={} batch_bytes={} appends={} rounds={rounds}", dir.display(), payload.len(), appends);
    println!("bare write+fdatasync      : {:>9.1} appends/s", n / t_bare);
    println!("log append+sync (1/fsync) : {:>9.1} appends/s  ratio to bare {:.2}", n / t_log, t_bare / t_log);
    println!("log append, 16 per fsync  : {:>9.1} appends/s  ratio to bare {:.2}", n / t_group, t_bare / t_group);
}
