//! Event cost: what one probed SSL call costs, in nanoseconds.  A small C
//! program (evcost.c, compiled here against the system libssl) ping-pongs
//! 64-byte SSL_write/SSL_read on a loopback TLS connection; ns per call with
//! no sensor, count-only, full capture and exported entries, and the
//! difference against the no-sensor run of the same round.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use super::http::prom_sum;
use super::proc::run_measured;
use super::report::{BenchReport, Figure};
use super::sensor::{rotated, Sensor, Variant};
use super::{ratio, Ctx, PORT_EVENT_COST};

const SOURCE: &str = include_str!("evcost.c");
/// The same loop through pyOpenSSL, for OpenSSL builds linked into Python wheels.
const PY_SOURCE: &str = include_str!("pyevcost.py");

pub fn compile(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let src = dir.join("evcost.c");
    let bin = dir.join("evcost");
    std::fs::write(&src, SOURCE)?;
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .args(["-lssl", "-lcrypto", "-lpthread"])
        .output()
        .context("running cc")?;
    if !out.status.success() {
        bail!(
            "compiling evcost.c failed (libssl headers missing? `apt-get install -y libssl-dev`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(bin)
}

#[derive(serde::Deserialize, serde::Serialize, Clone, Debug)]
struct EvOut {
    iterations: u64,
    calls: u64,
    seconds: f64,
    cpu_seconds: f64,
    ns_per_call: f64,
    cpu_ns_per_call: f64,
}

/// Which OpenSSL build evcost runs on.
#[derive(Clone, Debug, PartialEq)]
enum Build {
    /// The host's libssl.
    Host,
    /// Debian 13's OpenSSL 3.5 (CET build) and glibc, from this directory,
    /// through that glibc's loader (`cargo xtask setup` unpacks them).
    Debian13(PathBuf),
    /// pyevcost.py on the wheel set `.tools/openssl35` (pyOpenSSL on the
    /// OpenSSL 3.5.2 of the cryptography 45 wheel, shrink-wrapped: before
    /// the sensor skipped its NULL guard, such builds got the exported
    /// entries, single-stepped, which the "exported" column still shows).
    Wheel35 {
        python: PathBuf,
        script: PathBuf,
        pythonpath: PathBuf,
    },
}

impl Build {
    /// Prefix of the figure names.
    fn label(&self) -> &'static str {
        match self {
            Build::Host => "64 B SSL call",
            Build::Debian13(_) => "64 B SSL call, Debian 13 OpenSSL 3.5",
            Build::Wheel35 { .. } => {
                "64 B SSL call, pyOpenSSL on the cryptography 45 wheel's OpenSSL 3.5.2"
            }
        }
    }

    fn command(&self, bin: &Path) -> Command {
        match self {
            Build::Host => Command::new(bin),
            Build::Debian13(lib) => crate::setup::debian13_command(lib, bin),
            Build::Wheel35 {
                python,
                script,
                pythonpath,
            } => {
                let mut c = Command::new(python);
                c.arg(script).env("PYTHONPATH", pythonpath);
                c
            }
        }
    }
}

/// The builds measured: the host's, Debian 13's when it is unpacked, and the
/// openssl35 wheel set's when it is installed (pyevcost.py written to `dir`,
/// which [`compile`] made).
fn builds(dir: &Path) -> anyhow::Result<Vec<Build>> {
    let mut b = vec![Build::Host];
    if let Some(lib) = crate::setup::debian13_unpacked() {
        b.push(Build::Debian13(lib));
    } else {
        eprintln!(
            "xtask bench: event cost on Debian 13's OpenSSL skipped: not unpacked (`cargo xtask setup`)"
        );
    }
    let pythonpath = crate::setup::tools_dir().join("openssl35");
    let python = crate::setup::venv_dir().join("bin/python");
    if pythonpath.join("requirements.txt").exists() && python.exists() {
        let script = dir.join("pyevcost.py");
        std::fs::write(&script, PY_SOURCE)?;
        b.push(Build::Wheel35 {
            python,
            script,
            pythonpath,
        });
    } else {
        eprintln!(
            "xtask bench: event cost on the cryptography 45 wheel's OpenSSL skipped: not installed (`cargo xtask setup`)"
        );
    }
    Ok(b)
}

/// Keeps an evcost running on `build` until the sensor has attached to a
/// library it had not attached to before: a library outside the host's is
/// attached once a process is seen mapping it, which a short run can end
/// before.
fn await_attach(ctx: &Ctx, bin: &Path, build: &Build, sensor: &mut Sensor) -> anyhow::Result<()> {
    let before = attachments(sensor)?;
    let mut child = build
        .command(bin)
        .arg(&ctx.cert.cert)
        .arg(&ctx.cert.key)
        .arg(PORT_EVENT_COST.to_string())
        .arg("100000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting evcost")?;
    let result = wait_attachments_above(sensor, before, &format!("{build:?}"));
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// `sensor_tls_attachments`: the libraries the sensor has probes on.
fn attachments(sensor: &mut Sensor) -> anyhow::Result<f64> {
    Ok(prom_sum(&sensor.metrics()?, "sensor_tls_attachments").unwrap_or(0.0))
}

/// Waits up to 20 s for more than `before` attached libraries (`what`: the
/// library waited for, for the error).
fn wait_attachments_above(sensor: &mut Sensor, before: f64, what: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while attachments(sensor)? <= before {
        if std::time::Instant::now() >= deadline {
            bail!("the sensor did not attach to {what} in 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run_once(ctx: &Ctx, bin: &Path, build: &Build, iterations: u64) -> anyhow::Result<EvOut> {
    let dir = ctx.scratch("evcost-run");
    std::fs::create_dir_all(&dir)?;
    let mut c = build.command(bin);
    c.arg(&ctx.cert.cert)
        .arg(&ctx.cert.key)
        .arg(PORT_EVENT_COST.to_string())
        .arg(iterations.to_string());
    let out_path = dir.join("out");
    let err_path = dir.join("err");
    let m = run_measured(
        &mut c,
        std::fs::File::create(&out_path)?,
        std::fs::File::create(&err_path)?,
        Duration::from_secs(300),
    )?;
    let out = std::fs::read_to_string(&out_path)?;
    if m.status != 0 {
        bail!(
            "evcost failed (exit {}): {}{}",
            m.status,
            out,
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
    }
    serde_json::from_str(out.trim()).with_context(|| format!("evcost printed {out:?}"))
}

/// One evcost run (host build) while the sensor, in full capture, is scoped
/// with `--pid` to another process that maps the host's libssl (an idle
/// Python that imported `ssl`): evcost itself is out of scope.
fn out_of_scope_once(ctx: &Ctx, bin: &Path, iterations: u64) -> anyhow::Result<EvOut> {
    let python = crate::bench::which("python3").context("python3 is needed")?;
    let mut idle = Command::new(python)
        .args([
            "-c",
            "import ssl, sys; print('ready', flush=True); sys.stdin.read()",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the in-scope process")?;
    let mut line = String::new();
    {
        use std::io::BufRead;
        let stdout = idle.stdout.take().context("its stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
    }
    let result = (|| {
        let opts = super::sensor::SensorOptions {
            pids: vec![idle.id()],
            ..Default::default()
        };
        let mut sensor = ctx
            .maybe_sensor_with(Variant::Full, &opts)?
            .context("a sensor is needed")?;
        wait_attachments_above(&mut sensor, 0.0, "the in-scope process's libssl")?;
        let out = run_once(ctx, bin, &Build::Host, iterations)?;
        sensor.check_alive()?;
        sensor.stop()?;
        Ok(out)
    })();
    let _ = idle.kill();
    let _ = idle.wait();
    result
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<BenchReport>> {
    let mut report = BenchReport::new("event_cost", ctx.quick);
    let dir = ctx.scratch("evcost");
    let bin = compile(&dir)?;
    let iterations: u64 = if ctx.quick { 2_000 } else { 50_000 };
    let variants = ctx.variants();
    let builds = builds(&dir)?;
    // Warm-up, not recorded.
    for b in &builds {
        run_once(ctx, &bin, b, iterations / 10 + 1)?;
    }
    let mut cells: Vec<(usize, Variant, &Build, EvOut)> = Vec::new();
    // Full capture scoped with `--pid` to another process that maps the same
    // libssl: evcost is out of scope (its calls must cost what no sensor's do).
    let mut out_of_scope: Vec<(usize, EvOut)> = Vec::new();
    for run in 0..ctx.runs {
        for v in rotated(&variants, run) {
            let mut sensor = ctx.maybe_sensor(v)?;
            for b in &builds {
                // Libraries other than the host's are attached once a
                // process maps them.
                if let (Some(s), false) = (sensor.as_mut(), *b == Build::Host) {
                    await_attach(ctx, &bin, b, s)?;
                }
                let out = run_once(ctx, &bin, b, iterations)?;
                eprintln!(
                    "xtask bench:   event cost run {} {:<15} {:>7.0} ns/call CPU, {:>7.0} wall  ({})",
                    run + 1,
                    v.label(),
                    out.cpu_ns_per_call,
                    out.ns_per_call,
                    b.label()
                );
                cells.push((run, v, b, out));
            }
            if let Some(mut s) = sensor {
                s.check_alive()?;
                s.stop()?;
            }
        }
        if variants.contains(&Variant::Full) {
            let out = out_of_scope_once(ctx, &bin, iterations)?;
            eprintln!(
                "xtask bench:   event cost run {} {:<15} {:>7.0} ns/call CPU, {:>7.0} wall  (64 B SSL call)",
                run + 1,
                "out of scope",
                out.cpu_ns_per_call,
                out.ns_per_call,
            );
            out_of_scope.push((run, out));
        }
    }
    for build in &builds {
        for (what, pick) in [
            ("CPU", (|o: &EvOut| o.cpu_ns_per_call) as fn(&EvOut) -> f64),
            ("wall", |o: &EvOut| o.ns_per_call),
        ] {
            let get = |v: Variant, r: usize| {
                cells
                    .iter()
                    .find(|(run, var, b, _)| *run == r && *var == v && *b == build)
                    .map(|(_, _, _, o)| pick(o))
            };
            let base = |r| get(Variant::Baseline, r);
            let unit = format!("ns/call ({what})");
            let call = build.label();
            report.figures.push(Figure::new(
                format!("{call}, no sensor"),
                unit.clone(),
                (0..ctx.runs).filter_map(base).collect(),
            ));
            for v in [Variant::CountOnly, Variant::Full, Variant::Exported] {
                if !variants.contains(&v) {
                    continue;
                }
                let l = v.label();
                report.figures.push(Figure::new(
                    format!("{call}, {l}"),
                    unit.clone(),
                    (0..ctx.runs).filter_map(|r| get(v, r)).collect(),
                ));
                report.figures.push(Figure::new(
                    format!("{call}, {l}: added"),
                    unit.clone(),
                    (0..ctx.runs)
                        .filter_map(|r| Some(get(v, r)? - base(r)?))
                        .collect(),
                ));
                if what == "CPU" {
                    report.figures.push(Figure::new(
                        format!("{call}, {l}: time"),
                        "x",
                        (0..ctx.runs)
                            .filter_map(|r| Some(ratio(get(v, r)?, base(r)?)))
                            .collect(),
                    ));
                }
            }
        }
    }
    let base_host = |r: usize| {
        cells
            .iter()
            .find(|(run, v, b, _)| *run == r && *v == Variant::Baseline && **b == Build::Host)
            .map(|(_, _, _, o)| o.cpu_ns_per_call)
    };
    if !out_of_scope.is_empty() {
        report.figures.push(Figure::new(
            "64 B SSL call, out of a --pid scope (full capture of another process on the same libssl): added",
            "ns/call (CPU)",
            out_of_scope
                .iter()
                .filter_map(|(r, o)| Some(o.cpu_ns_per_call - base_host(*r)?))
                .collect(),
        ));
    }
    report.params = json!({
        "runs": ctx.runs,
        "iterations": iterations,
        "calls_per_iteration": 4,
        "message_bytes": 64,
        "what": "one thread drives both ends of a loopback TLS 1.3 connection: client SSL_write, server SSL_read, server SSL_write, client SSL_read; CPU = CLOCK_THREAD_CPUTIME_ID (probe traps are charged to it, preemption is not)",
    });
    report.raw = serde_json::to_value(
        cells
            .iter()
            .map(|(r, v, b, o)| json!({"run": r, "variant": v, "openssl": b.label(), "result": o}))
            .collect::<Vec<_>>(),
    )?;
    report.notes.push("both ends of the connection are in the probed process: each of the 4 calls per round trip is probed (entry + return); CPU figures are the precise ones on a shared machine".into());
    report.notes.push("\"Debian 13 OpenSSL 3.5\": the same program on Debian 13's libssl and glibc (a CET build: endbr64 at every function entry), through that glibc's loader".into());
    report.notes.push("\"out of a --pid scope\": full capture with --pid of an idle Python that imported ssl (the host's libssl): evcost is not in scope; since 72eafa9 a --pid scope probes those processes only, so its calls should cost what they do with no sensor (before, they trapped and were dropped in the sensor)".into());
    report.notes.push("\"pyOpenSSL on the cryptography 45 wheel's OpenSSL 3.5.2\": the same loop in Python (pyevcost.py, memory BIOs, no sockets) on a GCC build that shrink-wraps ssl_write_internal (a NULL test before its prologue); \"exported\" there is what the sensor used on such builds before it skipped that guard".into());
    Ok(vec![report])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evcost_compiles_and_measures() {
        if crate::bench::which("cc").is_none() || crate::bench::which("openssl").is_none() {
            return; // the benchmark itself fails with a clear message then
        }
        let dir = tempfile::tempdir().unwrap();
        let bin = compile(dir.path()).unwrap();
        let cert = crate::bench::servers::make_cert(dir.path()).unwrap();
        // An ephemeral-range port of our own range, distinct from the benchmark's.
        let out = Command::new(&bin)
            .arg(&cert.cert)
            .arg(&cert.key)
            .arg((PORT_EVENT_COST + 300).to_string())
            .arg("200")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let o: EvOut = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(o.calls, 800);
        assert!(o.ns_per_call > 0.0 && o.cpu_ns_per_call > 0.0);
        assert!(o.cpu_seconds <= o.seconds * 1.05 + 0.001);
    }
}
