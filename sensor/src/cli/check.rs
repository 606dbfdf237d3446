//! `sensor check`: can this host run the sensor?  And what would it not see?

use std::path::{Path, PathBuf};

use crate::blind::ExpectedBlind;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// The `sensor run` config file whose `expected_blind` list to apply
    /// (default: the built-in list).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The expected-blind list of a config file (its `expected_blind`, or the
/// defaults when it has none).
fn expected_from(config: Option<&Path>) -> anyhow::Result<ExpectedBlind> {
    let Some(path) = config else {
        return Ok(ExpectedBlind::default());
    };
    let args = crate::config::RunArgs {
        config: Some(path.to_path_buf()),
        ..Default::default()
    };
    let cfg = crate::config::RunConfig::load(&args)?;
    Ok(ExpectedBlind::new(cfg.expected_blind))
}

pub fn run(a: CheckArgs) -> anyhow::Result<()> {
    let lines = crate::capture::check_host();
    let expected = expected_from(a.config.as_deref())?;
    crate::blind::set_expected_blind(expected.clone());
    // Processes whose TLS file `sensor run` would attach to (a libssl, node
    // with OpenSSL linked in) are seen: not listed.  The others with TLS code
    // and TCP sockets are, expected ones (a node's own agents) apart.
    let attachable = crate::capture::check::attachable_tls_files(Path::new("/proc"));
    let blind = crate::blind::scan_blind_processes(&attachable);
    let (expected_blind, unexpected): (Vec<_>, Vec<_>) =
        blind.iter().cloned().partition(|b| b.expected);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "checks": lines,
                "tls_processes_not_probed_now": blind,
                "expected_blind": expected.names(),
            })
        );
    } else {
        for l in &lines {
            println!("{l}");
        }
        if !unexpected.is_empty() {
            println!("\nprocesses with TLS the sensor cannot see (sensor_blind_processes{{expected=\"false\"}}: the SensorBlindProcesses alert):");
            for b in &unexpected {
                println!("  pid {:<7} {:<16} {}", b.pid, b.comm, b.reason);
            }
        }
        if !expected_blind.is_empty() {
            println!("\nexpected blind (on the expected_blind list; counted under expected=\"true\", no alert):");
            for b in &expected_blind {
                println!("  pid {:<7} {:<16} {}", b.pid, b.comm, b.reason);
            }
        }
        println!(
            "\nexpected_blind ({}): {}",
            if a.config.is_some() {
                "from the config"
            } else {
                "built-in; expected_blind in the config replaces it"
            },
            expected.names().join(", ")
        );
    }
    if lines.iter().all(|l| l.ok) {
        Ok(())
    } else {
        anyhow::bail!("this host lacks what the sensor needs (see the MISSING lines above)")
    }
}
