//! `cargo xtask build`: the eBPF object (pinned nightly, bpf-linker from `.tools`),
//! then the agent with that object embedded (see sensor/build.rs).

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::setup::{bpf_linker_path, EBPF_NIGHTLY};
use crate::util::{root, run_cmd};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Build the agent in release mode (the eBPF object is always optimised).
    #[arg(long)]
    pub release: bool,
}

/// Where the eBPF object lands.
pub fn ebpf_object_path() -> PathBuf {
    root()
        .join("sensor-ebpf")
        .join("target")
        .join("bpfel-unknown-none")
        .join("release")
        .join("sensor-ebpf")
}

/// Builds only the eBPF object; returns its path.
pub fn build_ebpf() -> anyhow::Result<PathBuf> {
    crate::setup::toolchain()?;
    let dir = root().join("sensor-ebpf");
    run_cmd(
        Command::new("cargo")
            .arg(format!("+{EBPF_NIGHTLY}"))
            .args([
                "build",
                "--release",
                // The lockfile pins aya-build 0.2.0 (0.2.1 needs rustc 1.98).
                "--locked",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .current_dir(&dir)
            // Without these, cargo would inherit the outer (stable) toolchain's settings.
            .env_remove("RUSTC")
            .env_remove("RUSTDOC")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR")
            .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", bpf_linker_path())
            // BTF in the object: the kernel wants func_info for `bpf_loop`'s callback.
            .env(
                "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
                "-C link-arg=--btf",
            )
            .env("LD_LIBRARY_PATH", crate::setup::tools_dir().join("lib")),
    )?;
    let obj = ebpf_object_path();
    anyhow::ensure!(
        obj.exists(),
        "eBPF build succeeded but {} is missing",
        obj.display()
    );
    Ok(obj)
}

/// Builds everything; returns the path of the sensor binary.
pub fn run(o: &Options) -> anyhow::Result<PathBuf> {
    let obj = build_ebpf()?;
    eprintln!("xtask build: eBPF object {}", obj.display());
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "-p", "sensor", "--bin", "sensor"])
        .current_dir(root())
        .env("SENSOR_EBPF_OBJECT", &obj);
    if o.release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let bin = target_dir
        .join(if o.release { "release" } else { "debug" })
        .join("sensor");
    let bin = bin
        .canonicalize()
        .with_context(|| format!("sensor binary not found at {}", bin.display()))?;
    eprintln!("xtask build: sensor binary {}", bin.display());
    Ok(bin)
}
