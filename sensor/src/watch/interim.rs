//! INTERIM stand-in for the live view (branch `watch`); removed at merge.

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Live API of the sensor to watch.
    #[arg(long, default_value = "http://127.0.0.1:9478")]
    pub api: String,
    /// Print a plain-text snapshot and exit.
    #[arg(long)]
    pub once: bool,
}

pub async fn run(_args: WatchArgs) -> anyhow::Result<()> {
    anyhow::bail!("sensor watch is not available in this build")
}
