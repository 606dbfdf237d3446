//! `cargo xtask demo`.

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_o: &Options) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask demo is not implemented yet")
}
