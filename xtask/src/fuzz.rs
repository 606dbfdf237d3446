//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/` (one per entry
//! point: HTTP feed, HTTP connection, leak inspection), each for a bounded
//! time, with the pinned nightly; cargo-fuzz itself is installed into .tools.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::setup::{tools_dir, EBPF_NIGHTLY};
use crate::util::{root, run_cmd};

const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(clap::Args)]
pub struct Options {
    /// Seconds per target.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Only this target (default: every file in fuzz/fuzz_targets).
    #[arg(long)]
    pub target: Option<String>,
}

fn cargo_fuzz() -> anyhow::Result<PathBuf> {
    let bin = tools_dir().join("bin/cargo-fuzz");
    let have = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION))
        .unwrap_or(false);
    if have {
        eprintln!(
            "xtask fuzz: cargo-fuzz {CARGO_FUZZ_VERSION}: already in {}",
            bin.display()
        );
    } else {
        eprintln!(
            "xtask fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
            tools_dir().display()
        );
        run_cmd(
            Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    "--version",
                    CARGO_FUZZ_VERSION,
                    "--root",
                ])
                .arg(tools_dir())
                .arg("cargo-fuzz"),
        )?;
    }
    Ok(bin)
}

fn targets() -> anyhow::Result<Vec<String>> {
    let dir = root().join("fuzz/fuzz_targets");
    let mut t: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    t.sort();
    Ok(t)
}

/// libFuzzer's last "Done N runs in S second(s)" line, if any.
fn runs_done(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.starts_with("Done "))
        .map(str::to_string)
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    crate::setup::toolchain()?;
    let cargo_fuzz = cargo_fuzz()?;
    let all = targets()?;
    let chosen: Vec<String> = match &o.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t}: the targets are {}", all.join(", ")),
        None => all,
    };
    let mut summary = Vec::new();
    for t in &chosen {
        let corpus = root().join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let log = root().join(format!("target/fuzz-{t}.log"));
        eprintln!(
            "xtask fuzz: {t} for {} s (log {})",
            o.seconds,
            log.display()
        );
        let started = Instant::now();
        let out = Command::new(&cargo_fuzz)
            .current_dir(root())
            .env("RUSTUP_TOOLCHAIN", EBPF_NIGHTLY)
            .args(["fuzz", "run", t])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={}", o.seconds))
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1")
            .output()
            .context("cannot run cargo-fuzz")?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        std::fs::write(&log, &text)?;
        if !out.status.success() {
            bail!("fuzz target {t} failed ({}): see {} and the crash file it names under fuzz/artifacts/{t}/", out.status, log.display());
        }
        let files = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
        summary.push(format!(
            "{t}: {} ({} s wall, corpus {files} inputs)",
            runs_done(&text).unwrap_or_else(|| "no summary line".into()),
            started.elapsed().as_secs()
        ));
    }
    for s in summary {
        println!("xtask fuzz: {s}");
    }
    Ok(())
}
