//! `sensor check`: can this host run the sensor?  And what would it not see?

use std::collections::HashSet;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CheckArgs) -> anyhow::Result<()> {
    let lines = crate::capture::check_host();
    // Without the sensor running nothing is attached: every process with TLS
    // code and TCP sockets is listed, with why the sensor would or would not see it.
    let blind = crate::blind::scan_blind_processes(&HashSet::new());
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "checks": lines, "tls_processes_not_probed_now": blind })
        );
    } else {
        for l in &lines {
            println!("{l}");
        }
        if !blind.is_empty() {
            println!("\nprocesses with TLS the sensor does not see now (openssl_unattached is covered once `sensor run` attaches):");
            for b in &blind {
                println!("  pid {:<7} {:<16} {}", b.pid, b.comm, b.reason);
            }
        }
    }
    if lines.iter().all(|l| l.ok) {
        Ok(())
    } else {
        anyhow::bail!("this host lacks what the sensor needs (see the MISSING lines above)")
    }
}
