//! `keel-sim`: runs seeds of the deterministic simulation (use `sim/run`, which builds it with
//! `--cfg madsim` and the requested canary). Three modes: run seeds (the default), shrink one
//! failing seed's fault schedule (`--shrink`), replay the regression files (`--regressions`).

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
    use std::path::Path;
    use std::path::PathBuf;

    use clap::Parser;
    use keel_sim::failure::failure_kinds;
    use keel_sim::faults::Scheduled;
    use keel_sim::regression;
    use keel_sim::regression::Expect;
    use keel_sim::regression::Regression;
    use keel_sim::scenario;
    use keel_sim::scenario::RunOptions;
    use keel_sim::scenario::SeedOutcome;
    use keel_sim::shrink;

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
        /// Concurrent idempotent producers, besides `--producers`.
        #[arg(long, default_value_t = 2)]
        idempotent_producers: u64,
        /// Members of the simulated consumer group (commit after processing; they crash now
        /// and then).
        #[arg(long, default_value_t = 2)]
        group_members: u64,
        /// Replay this fault schedule instead of the seed's own: a schedule as saved on failure,
        /// or a regression file (its `schedule` is used).
        #[arg(long)]
        schedule: Option<PathBuf>,
        /// Where failing seeds' histories and schedules are written.
        #[arg(long, default_value = "sim/out")]
        out: PathBuf,
        /// Print the full checker report of every seed, not only failing ones.
        #[arg(long)]
        verbose: bool,
        /// Shrink the failing `--seed`'s fault schedule to a small one that fails the same way,
        /// and save it as a regression.
        #[arg(long, requires = "seed")]
        shrink: bool,
        /// Candidate schedules `--shrink` may run at most.
        #[arg(long, default_value_t = 300)]
        shrink_runs: usize,
        /// Save the run of `--seed` (or the shrunk schedule) as `<regressions-dir>/<NAME>.json`;
        /// `--shrink` saves under `[canary-]<canary>-seed-<N>` when no name is given.
        #[arg(long, requires = "seed")]
        save_regression: Option<String>,
        /// The note stored in a saved regression: what bug it protects against.
        #[arg(long, default_value = "")]
        note: String,
        /// Replay every regression file and check its expectation.
        #[arg(long, conflicts_with_all = ["seed", "seeds", "shrink"])]
        regressions: bool,
        /// Where regression files live.
        #[arg(long, default_value = "sim/regressions")]
        regressions_dir: PathBuf,
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

    /// A schedule file: a bare schedule, or a regression file.
    fn read_schedule(p: &Path) -> Result<Vec<Scheduled>, String> {
        let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
        match serde_json::from_str::<Regression>(&text) {
            Ok(r) => Ok(r.schedule),
            Err(_) => serde_json::from_str(&text).map_err(|e| e.to_string()),
        }
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
        if args.regressions {
            return replay_regressions(&args);
        }
        let schedule = match &args.schedule {
            None => None,
            Some(p) => match read_schedule(p) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("cannot read schedule {}: {e}", p.display());
                    return 2;
                }
            },
        };
        if args.shrink {
            return shrink_seed(&args, schedule);
        }
        run_seeds(&args, schedule)
    }

    fn options(args: &Args, schedule: Option<Vec<Scheduled>>) -> RunOptions {
        RunOptions {
            workload_ms: args.workload_ms,
            producers: args.producers,
            idempotent_producers: args.idempotent_producers,
            group_members: args.group_members,
            schedule,
            ..RunOptions::default()
        }
    }

    fn canary_flag(canary: Option<&str>) -> String {
        canary.map(|c| format!(" --canary {c}")).unwrap_or_default()
    }

    /// The header of the per-seed summary table.
    const TABLE_HEADER: &str =
        "seed N: result shape      faults ops ok/fail/info    acked checkers         sim s  wall s trace";

    /// One row of the per-seed summary table: `seed N: ok|FAILED shape faults ok/fail/info
    /// acked checkers sim-seconds wall-seconds trace=hash`.
    fn seed_line(o: &SeedOutcome) -> String {
        let failing: Vec<&str> = o.verdicts.iter().filter(|v| !v.ok).map(|v| v.checker).collect();
        let checkers = if failing.is_empty() {
            format!("{}/{} ok", o.verdicts.len(), o.verdicts.len())
        } else {
            failing.join(",")
        };
        let problems = if o.problems.is_empty() {
            String::new()
        } else {
            format!(" problems={}", failure_kinds(&[], &o.problems).join(","))
        };
        format!(
            "seed {}: {} {:<9} {:>6} {:>18} {:>5} {:<16} {:>5.1} {:>7.2} trace={:016x}{problems}",
            o.seed,
            if o.passed { "ok    " } else { "FAILED" },
            o.kind.name(),
            o.schedule.len(),
            format!("{}/{}/{}", o.ops.ok, o.ops.fail, o.ops.info),
            o.acked,
            checkers,
            o.sim_ms as f64 / 1000.0,
            o.wall_ms as f64 / 1000.0,
            o.trace_hash,
        )
    }

    /// Prints a failing seed's problems, checker report and the text timeline around the first
    /// violation, and saves its history, schedule, timeline.txt and timeline.svg under
    /// `<out>/<dir_name>/`.
    fn print_failure(o: &SeedOutcome, out: &Path, dir_name: &str) {
        for p in &o.problems {
            println!("  problem: {p}");
        }
        let history = keel_checker::History::from_jsonl(&o.history_jsonl).ok();
        if let Some(h) = &history {
            for line in keel_checker::report(h, &o.verdicts).lines() {
                println!("  {line}");
            }
        }
        let timeline = history.as_ref().map(|h| keel_checker::timeline::text(h, &o.verdicts));
        if let Some(t) = &timeline {
            println!();
            for line in t.lines() {
                println!("  {line}");
            }
        }
        let dir = out.join(dir_name);
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join("history.jsonl"), &o.history_jsonl);
            let _ = std::fs::write(dir.join("schedule.json"), scenario::schedule_json(&o.schedule));
            if let (Some(h), Some(t)) = (&history, &timeline) {
                let failing: Vec<&str> = o.verdicts.iter().filter(|v| !v.ok).map(|v| v.checker).collect();
                let kinds = failure_kinds(&o.verdicts, &o.problems);
                let caption = format!(
                    "seed {} ({}, {} faults): failed with {}{}",
                    o.seed,
                    o.kind.name(),
                    o.schedule.len(),
                    kinds.join(", "),
                    if failing.is_empty() { String::new() } else { format!(" ({} checkers)", failing.len()) }
                );
                let _ = std::fs::write(dir.join("timeline.txt"), t);
                let _ = std::fs::write(
                    dir.join("timeline.svg"),
                    keel_checker::svg_timeline::render(h, &o.verdicts, &caption),
                );
            }
            println!("  history, schedule and timeline (timeline.svg opens in a browser) saved in {}", dir.display());
        }
    }

    fn seed_dir(seed: u64, canary: Option<&str>) -> String {
        format!("seed-{seed}{}", canary.map(|c| format!("-{c}")).unwrap_or_default())
    }

    fn run_seeds(args: &Args, schedule: Option<Vec<Scheduled>>) -> i32 {
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
        let canary = args.canary.as_deref();
        let (mut passed, mut failed) = (0u64, 0u64);
        let started = std::time::Instant::now();
        let mut sim_ms_total = 0u64;
        println!("{TABLE_HEADER}");
        for seed in first..=last {
            let o = scenario::run_seed(seed, options(args, schedule.clone()));
            sim_ms_total += o.sim_ms;
            println!("{}", seed_line(&o));
            if o.passed {
                passed += 1;
                if args.verbose
                    && let Ok(h) = keel_checker::History::from_jsonl(&o.history_jsonl)
                {
                    println!("{}", keel_checker::report(&h, &o.verdicts));
                    let dir = args.out.join(seed_dir(seed, canary));
                    if std::fs::create_dir_all(&dir).is_ok() {
                        let _ = std::fs::write(dir.join("history.jsonl"), &o.history_jsonl);
                        println!("history saved in {}", dir.join("history.jsonl").display());
                    }
                }
            } else {
                failed += 1;
                print_failure(&o, &args.out, &seed_dir(seed, canary));
                println!(
                    "  replay: sim/run --seed {seed}{} --workload-ms {} --producers {} --idempotent-producers {} --group-members {}",
                    canary_flag(canary),
                    args.workload_ms,
                    args.producers,
                    args.idempotent_producers,
                    args.group_members
                );
            }
            if let Some(name) = &args.save_regression {
                let expect = if o.passed { Expect::Pass } else { Expect::Fail };
                let kinds = failure_kinds(&o.verdicts, &o.problems);
                if let Err(e) = save_regression(args, name, o.schedule.clone(), expect, kinds.first().cloned()) {
                    eprintln!("{e}");
                    return 2;
                }
            }
            if failed > 0 && args.stop_at_first_failure {
                println!("stopped at the first failure: seed {seed} ({} seeds run)", seed - first + 1);
                break;
            }
        }
        let wall = started.elapsed().as_secs_f64();
        println!(
            "simulated {:.0}s in {:.1}s of wall time: {:.0} simulated seconds per wall second",
            sim_ms_total as f64 / 1000.0,
            wall,
            sim_ms_total as f64 / 1000.0 / wall.max(1e-9)
        );
        println!("{passed} passed, {failed} failed");
        if failed > 0 { 1 } else { 0 }
    }

    fn save_regression(
        args: &Args,
        name: &str,
        schedule: Vec<Scheduled>,
        expect: Expect,
        fails_with: Option<String>,
    ) -> Result<(), String> {
        let r = Regression {
            seed: args.seed.unwrap_or_default(),
            canary: args.canary.clone(),
            kind: keel_sim::kind::ScenarioKind::for_seed(args.seed.unwrap_or_default()),
            workload_ms: args.workload_ms,
            producers: args.producers,
            idempotent_producers: args.idempotent_producers,
            group_members: args.group_members,
            schedule,
            expect,
            fails_with: if expect == Expect::Fail { fails_with } else { None },
            note: args.note.clone(),
        };
        let path = args.regressions_dir.join(format!("{name}.json"));
        std::fs::create_dir_all(&args.regressions_dir)
            .and_then(|()| std::fs::write(&path, r.to_json()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("regression saved in {} (expect {expect:?})", path.display());
        Ok(())
    }

    fn schedule_is_the_seeds(args: &Args) -> bool {
        args.schedule.is_none()
    }

    fn shrink_seed(args: &Args, schedule: Option<Vec<Scheduled>>) -> i32 {
        let seed = args.seed.unwrap_or_default();
        let canary = args.canary.as_deref();
        let original = scenario::run_seed(seed, options(args, schedule));
        println!("{}", seed_line(&original));
        let kinds = failure_kinds(&original.verdicts, &original.problems);
        let Some(target) = kinds.first().cloned() else {
            println!("seed {seed} passes: nothing to shrink");
            return 1;
        };
        println!("fails with {}; shrinking while it still fails with {target}", kinds.join(", "));
        let mut still_fails = |candidate: &[Scheduled]| {
            let o = scenario::run_seed(seed, options(args, Some(candidate.to_vec())));
            let kept = failure_kinds(&o.verdicts, &o.problems).contains(&target);
            if kept {
                println!("  kept: {} (trace={:016x})", shrink::size(candidate), o.trace_hash);
            }
            kept
        };
        // The seed's own schedule shrinks through its proptest value tree first; a schedule
        // read from a file (no tree) only greedily.
        let (start, tree_runs) = if schedule_is_the_seeds(args) {
            let kind = keel_sim::kind::ScenarioKind::for_seed(seed);
            let config = scenario::schedule_config(kind, args.workload_ms);
            let t = keel_sim::strategy::shrink(seed, &config, args.shrink_runs, &mut still_fails);
            println!("proptest shrinking: {} runs, {} kept: {}", t.runs, t.kept, shrink::size(&t.schedule));
            (t.schedule, t.runs)
        } else {
            (original.schedule.clone(), 0)
        };
        let greedy_budget = args.shrink_runs.saturating_sub(tree_runs).max(args.shrink_runs / 4);
        let shrunk = shrink::shrink(&start, greedy_budget, &mut still_fails);
        println!(
            "shrunk in {} runs ({} proptest, then {} greedy with {} kept{}): original {}; shrunk {}",
            tree_runs + shrunk.runs,
            tree_runs,
            shrunk.runs,
            shrunk.steps,
            if shrunk.budget_spent { ", run budget spent" } else { ", fixed point" },
            shrink::size(&original.schedule),
            shrink::size(&shrunk.schedule)
        );
        println!("minimal schedule:\n{}", scenario::schedule_json(&shrunk.schedule));
        let last = scenario::run_seed(seed, options(args, Some(shrunk.schedule.clone())));
        println!("{}", seed_line(&last));
        print_failure(&last, &args.out, &format!("{}-shrunk", seed_dir(seed, canary)));
        let name = args.save_regression.clone().unwrap_or_else(|| match canary {
            Some(c) => format!("canary-{c}-seed-{seed}"),
            None => format!("seed-{seed}"),
        });
        if let Err(e) = save_regression(args, &name, shrunk.schedule, Expect::Fail, Some(target)) {
            eprintln!("{e}");
            return 2;
        }
        println!(
            "replay: sim/run --seed {seed}{} --workload-ms {} --producers {} --idempotent-producers {} --group-members {} --schedule {}",
            canary_flag(canary),
            args.workload_ms,
            args.producers,
            args.idempotent_producers,
            args.group_members,
            args.regressions_dir.join(format!("{name}.json")).display()
        );
        0
    }

    fn replay_regressions(args: &Args) -> i32 {
        let canary = args.canary.as_deref();
        let all = match regression::load_dir(&args.regressions_dir) {
            Ok(all) => all,
            Err(e) => {
                eprintln!("{e}");
                return 2;
            }
        };
        let (mut passed, mut failed) = (0u64, 0u64);
        for (name, r) in all.iter().filter(|(_, r)| r.applies_to(canary)) {
            let opts = RunOptions {
                kind: Some(r.kind),
                workload_ms: r.workload_ms,
                producers: r.producers,
                idempotent_producers: r.idempotent_producers,
                group_members: r.group_members,
                schedule: Some(r.schedule.clone()),
                ..RunOptions::default()
            };
            let o = scenario::run_seed(r.seed, opts);
            let kinds = failure_kinds(&o.verdicts, &o.problems);
            let expected = r.expected_under(canary);
            let shown =
                if kinds.is_empty() { "passed".to_owned() } else { format!("failed with {}", kinds.join(", ")) };
            match r.judge(canary, &kinds) {
                Ok(()) => {
                    passed += 1;
                    println!("{name}: ok     (expect {expected:?}, {shown}) trace={:016x}", o.trace_hash);
                }
                Err(e) => {
                    failed += 1;
                    println!("{name}: WRONG  {e} trace={:016x}", o.trace_hash);
                    if !o.passed {
                        print_failure(&o, &args.out, &format!("regression-{name}"));
                    }
                    println!(
                        "  replay: sim/run --seed {}{} --workload-ms {} --producers {} --idempotent-producers {} --group-members {} --schedule {}",
                        r.seed,
                        canary_flag(canary),
                        r.workload_ms,
                        r.producers,
                        r.idempotent_producers,
                        r.group_members,
                        args.regressions_dir.join(format!("{name}.json")).display()
                    );
                }
            }
        }
        println!("{passed} passed, {failed} failed");
        if failed > 0 { 1 } else { 0 }
    }
}
