use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sensor", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Live terminal view of a running sensor (connects to its API).
    Watch(sensor::watch::WatchArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Watch(args) => sensor::watch::run(args).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
