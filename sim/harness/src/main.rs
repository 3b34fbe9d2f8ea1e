//! `keel-sim`: runs seeds of the deterministic simulation (use `sim/run`, which builds it with
//! `--cfg madsim` and the requested canary).

#[cfg(not(madsim))]
fn main() {
    eprintln!("keel-sim must be built with RUSTFLAGS=\"--cfg madsim\"; run it through sim/run");
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(sim_main::main());
}

#[cfg(madsim)]
mod sim_main {
    use std::path::PathBuf;

    use clap::Parser;
    use keel_sim::scenario;
    use keel_sim::scenario::RunOptions;

    #[derive(Parser, Debug)]
    #[command(name = "sim/run", about = "Keel's deterministic simulation: seeds, faults, checkers")]
    struct Args {
        /// Run this one seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Run a range of seeds, inclusive: `1..200`.
        #[arg(long)]
        seeds: Option<String>,
        /// The planted bug this binary was built with (sim/run builds it); checked, and echoed in
        /// replay commands.
        #[arg(long)]
        canary: Option<String>,
        /// Stop at the first failing seed (canary runs).
        #[arg(long)]
        stop_at_first_failure: bool,
        /// Simulated milliseconds of produce load per seed.
        #[arg(long, default_value_t = 20_000)]
        workload_ms: u64,
        /// Concurrent producers.
        #[arg(long, default_value_t = 3)]
        producers: u64,
        /// Replay this fault schedule (JSON, as saved on failure) instead of the seed's own.
        #[arg(long)]
        schedule: Option<PathBuf>,
        /// Where failing seeds' histories and schedules are written.
        #[arg(long, default_value = "sim/out")]
        out: PathBuf,
        /// Print the full checker report of every seed, not only failing ones.
        #[arg(long)]
        verbose: bool,
    }

    fn parse_range(s: &str) -> Result<(u64, u64), String> {
        let (a, b) = s.split_once("..").ok_or_else(|| format!("--seeds wants A..B, got {s:?}"))?;
        let b = b.trim_start_matches('=');
        let a: u64 = a.trim().parse().map_err(|e| format!("--seeds start {a:?}: {e}"))?;
        let b: u64 = b.trim().parse().map_err(|e| format!("--seeds end {b:?}: {e}"))?;
        if a > b {
            return Err(format!("--seeds {a}..{b} is empty"));
        }
        Ok((a, b))
    }

    pub fn main() -> i32 {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        let args = Args::parse();
        if args.canary.as_deref() != keel_node::CANARY {
            eprintln!(
                "this binary was built with canary {:?} but --canary says {:?}; run through sim/run",
                keel_node::CANARY,
                args.canary
            );
            return 2;
        }
        let (first, last) = match (&args.seed, &args.seeds) {
            (Some(s), _) => (*s, *s),
            (None, Some(r)) => match parse_range(r) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return 2;
                }
            },
            (None, None) => (1, 20),
        };
        let schedule = match &args.schedule {
            None => None,
            Some(p) => match std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
            {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("cannot read schedule {}: {e}", p.display());
                    return 2;
                }
            },
        };
        let canary_flag = args.canary.as_ref().map(|c| format!(" --canary {c}")).unwrap_or_default();
        let (mut passed, mut failed) = (0u64, 0u64);
        let started = std::time::Instant::now();
        let mut sim_ms_total = 0u64;
        for seed in first..=last {
            let options = RunOptions {
                workload_ms: args.workload_ms,
                producers: args.producers,
                schedule: schedule.clone(),
                ..RunOptions::default()
            };
            let o = scenario::run_seed(seed, options);
            sim_ms_total += o.sim_ms;
            let faults = o.schedule.len();
            if o.passed {
                passed += 1;
                println!(
                    "seed {seed}: ok     trace={:016x} acked={} faults={faults} sim={:.1}s",
                    o.trace_hash,
                    o.acked,
                    o.sim_ms as f64 / 1000.0
                );
            } else {
                failed += 1;
                println!(
                    "seed {seed}: FAILED trace={:016x} acked={} faults={faults} sim={:.1}s",
                    o.trace_hash,
                    o.acked,
                    o.sim_ms as f64 / 1000.0
                );
                for p in &o.problems {
                    println!("  problem: {p}");
                }
                if let Ok(h) = keel_checker::History::from_jsonl(&o.history_jsonl) {
                    for line in keel_checker::report(&h, &o.verdicts).lines() {
                        println!("  {line}");
                    }
                }
                let dir = args
                    .out
                    .join(format!("seed-{seed}{}", args.canary.as_ref().map(|c| format!("-{c}")).unwrap_or_default()));
                if std::fs::create_dir_all(&dir).is_ok() {
                    let _ = std::fs::write(dir.join("history.jsonl"), &o.history_jsonl);
                    let _ = std::fs::write(dir.join("schedule.json"), scenario::schedule_json(&o.schedule));
                    println!("  history and schedule saved in {}", dir.display());
                }
                println!(
                    "  replay: sim/run --seed {seed}{canary_flag} --workload-ms {} --producers {}",
                    args.workload_ms, args.producers
                );
            }
            if args.verbose
                && o.passed
                && let Ok(h) = keel_checker::History::from_jsonl(&o.history_jsonl)
            {
                println!("{}", keel_checker::report(&h, &o.verdicts));
            }
            if failed > 0 && args.stop_at_first_failure {
                println!("stopped at the first failure: seed {seed} ({} seeds run)", seed - first + 1);
                break;
            }
        }
        let wall = started.elapsed().as_secs_f64();
        println!(
            "simulated {:.0}s in {:.1}s of wall time ({:.0}x)",
            sim_ms_total as f64 / 1000.0,
            wall,
            sim_ms_total as f64 / 1000.0 / wall.max(1e-9)
        );
        println!("{passed} passed, {failed} failed");
        if failed > 0 { 1 } else { 0 }
    }
}
