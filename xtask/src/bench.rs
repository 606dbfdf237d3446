//! `cargo xtask bench`.

#[derive(clap::Args, Default)]
pub struct Options {
    /// Smoke mode: every benchmark once, tiny sizes, under 2 minutes (run by `cargo xtask test`).
    #[arg(long)]
    pub quick: bool,
}

pub fn run(_o: &Options) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench is not implemented yet")
}
