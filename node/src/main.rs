//! `keel`: run nodes, look at them, move records in and out. The commands live in [`cli`]; this
//! file sets up logging and the runtime, runs one command and turns its outcome into an exit
//! code: 0 on success (and on a closed stdout pipe, as `keel cluster status | head -1`), 1 with
//! the error's message on stderr otherwise, 2 for bad flags (clap).

mod cli;

use clap::Parser;

/// Huge blocks reserve address space: a Kafka request claiming a huge array must not abort the
/// node (see `keel_node::alloc`).
#[global_allocator]
static ALLOC: keel_node::alloc::ReservingAllocator = keel_node::alloc::ReservingAllocator;

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Each line of a node carries its span, `node{id=N}` (see `cli::start`). Colours only on a
    // terminal: a log file or a test's pipe gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keel: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if cli::output::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
