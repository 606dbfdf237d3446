//! `cargo xtask test`.

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_o: &Options) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask test is not implemented yet")
}
