use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before any thread exists: see `sensor::memory`.
    sensor::memory::one_arena();
    let cli = sensor::cli::Cli::parse();
    match sensor::cli::main_with(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line a person can act on; no backtrace.
            eprintln!("sensor: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
