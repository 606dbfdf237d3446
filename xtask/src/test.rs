//! `cargo xtask test`: every test, in the order that fails fastest.
//!
//! 1. setup (toolchains, packages) and build (eBPF object + agent);
//! 2. unit, property and snapshot tests of the whole workspace (no root);
//! 3. root tests one at a time: capture against real TLS, then the end-to-end
//!    tests (real servers and clients, alert rules, manifests, Prometheus);
//! 4. the benchmark smoke run, so the benchmarks cannot rot;
//! 5. every fuzz target for a few seconds, so the fuzz crate (built from the
//!    sensor's own sources) cannot rot either.

use std::process::Command;

use anyhow::bail;

use crate::secret_scan::TestRun;
use crate::util::{is_root, root, run_cmd_logged};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Skip the root end-to-end tests (unit and property tests only).
    #[arg(long)]
    pub no_root: bool,
    /// Skip the benchmark smoke run.
    #[arg(long)]
    pub no_bench: bool,
    /// Skip the fuzz smoke run.
    #[arg(long)]
    pub no_fuzz: bool,
    /// Only run tests whose name contains this (passed to the test binaries).
    pub filter: Option<String>,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let ws = root();
    let test_run = TestRun::new(&ws)?;
    let tests = run_tests(o, &test_run);
    // Scanned whether the tests passed or not: a failing test's output counts too.
    let scan = test_run.scan_and_forget()?;
    eprintln!(
        "xtask: secret scan: {} test credentials searched in {} bytes of test output ({}): {} found",
        scan.secrets,
        scan.bytes,
        test_run.dir.display(),
        scan.hits.len()
    );
    if !scan.hits.is_empty() {
        bail!(
            "raw test credentials appeared in the test output ({}): find what printed them and redact it",
            scan.hits.join("; ")
        );
    }
    tests?;
    eprintln!("xtask: all tests passed");
    Ok(())
}

fn run_tests(o: &Options, test_run: &TestRun) -> anyhow::Result<()> {
    if !o.no_root && !is_root() {
        bail!("the end-to-end tests load eBPF programs and need root: run `sudo -E cargo xtask test` (or `cargo xtask test --no-root` for the unit tests only)");
    }
    crate::setup::run(&crate::setup::Options::default())?;
    let sensor_bin = crate::build::run(&crate::build::Options::default())?;
    let ws = root();
    let filter: Vec<String> = o.filter.iter().cloned().collect();

    eprintln!("xtask: == unit, property and snapshot tests ==");
    run_cmd_logged(
        Command::new("cargo")
            .current_dir(&ws)
            // Tools the unit tests use (go, node, tmux) are installed by setup:
            // a missing one is a failure, not a skip.
            .env("SENSOR_REQUIRE_TOOLS", "1")
            .args(["test", "--workspace", "--exclude", "sensor-e2e", "--"])
            .args(&filter),
        &test_run.log("unit"),
    )?;

    if !o.no_root {
        let env = |c: &mut Command| {
            c.current_dir(&ws)
                .env("SENSOR_ROOT_TESTS", "1")
                .env("SENSOR_REQUIRE_TOOLS", "1")
                .env("SENSOR_BIN", &sensor_bin)
                .env("SENSOR_TOOLS_VENV", ws.join(".tools/venv"))
                .env("SENSOR_SECRET_LEDGER", test_run.ledger());
        };
        eprintln!("xtask: == root tests: capture against real TLS (one at a time) ==");
        let mut c = Command::new("cargo");
        c.args([
            "test",
            "-p",
            "sensor",
            "--test",
            "capture_root",
            "--",
            "--test-threads=1",
        ])
        .args(&filter);
        env(&mut c);
        run_cmd_logged(&mut c, &test_run.log("capture_root"))?;

        eprintln!("xtask: == root end-to-end tests (one at a time) ==");
        let mut c = Command::new("cargo");
        c.args(["test", "-p", "sensor-e2e", "--", "--test-threads=1"])
            .args(&filter);
        env(&mut c);
        run_cmd_logged(&mut c, &test_run.log("e2e"))?;
    }

    if !o.no_bench {
        eprintln!("xtask: == benchmark smoke run ==");
        crate::bench::run(&crate::bench::Options {
            quick: true,
            ..Default::default()
        })?;
    }

    if !o.no_fuzz && o.filter.is_none() {
        eprintln!("xtask: == fuzz smoke run (every target {FUZZ_SMOKE_SECONDS} s) ==");
        crate::fuzz::run(&crate::fuzz::Options {
            seconds: FUZZ_SMOKE_SECONDS,
            target: None,
        })?;
    }
    Ok(())
}

/// Seconds per fuzz target in `cargo xtask test`: enough to build it and
/// run ~300,000 inputs through the HTTP targets; real fuzzing is
/// `cargo xtask fuzz`.
const FUZZ_SMOKE_SECONDS: u64 = 10;
