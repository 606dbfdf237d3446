//! `cargo xtask build`.

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_o: &Options) -> anyhow::Result<std::path::PathBuf> {
    anyhow::bail!("cargo xtask build is not implemented yet")
}
