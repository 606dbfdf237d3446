//! `cargo xtask setup`.

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_o: &Options) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask setup is not implemented yet")
}
