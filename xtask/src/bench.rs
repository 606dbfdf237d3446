//! `cargo xtask bench`.

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_o: &Options) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench is not implemented yet")
}
