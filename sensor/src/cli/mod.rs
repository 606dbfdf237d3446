//! The command line (`sensor run|watch|replay|check`), design/contract.md.

pub mod check;
pub mod replay;
pub mod run;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sensor",
    version,
    about = "Finds API credentials leaking out of HTTPS APIs, live, with eBPF",
    long_about = "Finds API credentials leaking out of HTTPS APIs, live.\n\n\
        eBPF probes on the TLS library see the plaintext HTTP of every process; the sensor pairs \
        requests with responses and reports every response that gives back a credential its \
        request carried. Logs go to stderr (RUST_LOG=debug for more)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand)]
// Parsed once per process; boxing `RunArgs` would only make the code noisier.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Attach to the TLS libraries of every process (and those started later), reassemble HTTP,
    /// detect leaks, serve metrics and the live API. Needs root (or CAP_BPF + CAP_PERFMON).
    Run(crate::config::RunArgs),
    /// Live terminal view of a running sensor (connects to its live API; no root needed).
    Watch(crate::watch::WatchArgs),
    /// Say, line by line, whether this host can run the sensor (no root needed).
    Check(check::CheckArgs),
    /// Run a pre-recorded capture (`sensor run --record FILE`) through the same pipeline.
    Replay(replay::ReplayArgs),
}

/// Logs to stderr, level from RUST_LOG (default info).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the command; errors are one actionable line, printed by `main`.
/// Logging is set up here, per command: `watch` owns the terminal and logs to a file.
pub fn main_with(cli: Cli) -> anyhow::Result<()> {
    if !matches!(cli.cmd, Command::Watch(_)) {
        init_logging();
    }
    match cli.cmd {
        Command::Run(a) => run::run(a),
        Command::Watch(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(crate::watch::run(a))
        }
        Command::Check(a) => check::run(a),
        Command::Replay(a) => replay::run(a),
    }
}
