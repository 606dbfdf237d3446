//! `cargo xtask run`.

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_o: &Options) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask run is not implemented yet")
}
