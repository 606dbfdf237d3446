//! `cargo xtask …`: the only place that knows how to get the toolchains and
//! system packages and how to build the eBPF object.  One module per subcommand.

mod bench;
mod build;
mod demo;
mod fuzz;
mod openssl_wheels;
mod run;
mod secret_scan;
mod setup;
mod test;
#[allow(dead_code)] // grows as subcommands land
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Build, run, demo, test and benchmark the sensor"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks (nightly + rust-src, bpf-linker, apt and pip packages). Idempotent.
    Setup(setup::Options),
    /// Build the eBPF object and the agent.
    Build(build::Options),
    /// Build, then run `sensor run` as root with the given arguments.
    Run(run::Options),
    /// Build, start the sensor and a leaky TLS demo API, drive traffic, show findings.
    Demo(demo::Options),
    /// Every test: unit, property, root end-to-end, alert rules, manifests, bench smoke.
    Test(test::Options),
    /// Run every cargo-fuzz target (HTTP feed, HTTP connection, leak inspection) for a while.
    Fuzz(fuzz::Options),
    /// Benchmarks: overhead, throughput, memory, loss (ratios against same-run baselines).
    Bench(bench::Options),
}

fn main() -> std::process::ExitCode {
    // One line per failure, no backtrace: the messages say what to do.
    match dispatch(Cli::parse().cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Setup(o) => setup::run(&o),
        Cmd::Build(o) => build::run(&o).map(|_| ()),
        Cmd::Run(o) => run::run(&o),
        Cmd::Demo(o) => demo::run(&o),
        Cmd::Test(o) => test::run(&o),
        Cmd::Bench(o) => bench::run(&o),
        Cmd::Fuzz(o) => fuzz::run(&o),
    }
}
