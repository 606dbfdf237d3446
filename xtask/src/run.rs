//! `cargo xtask run [--release] -- <sensor run args>`: build, then exec
//! `sensor run <args>` as root (through sudo when not root already).

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Build and run the release binary.
    #[arg(long)]
    pub release: bool,
    /// Arguments for `sensor run` (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let bin = crate::build::run(&crate::build::Options { release: o.release })?;
    let mut cmd = if crate::util::is_root() {
        Command::new(&bin)
    } else {
        // The probes need root (or CAP_BPF + CAP_PERFMON); keep RUST_LOG etc.
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&bin);
        c
    };
    cmd.arg("run").args(&o.args);
    eprintln!("xtask run: $ {}", crate::util::display(&cmd));
    // exec only returns on failure.
    let err = cmd.exec();
    Err(err).with_context(|| format!("could not exec {}", bin.display()))
}
