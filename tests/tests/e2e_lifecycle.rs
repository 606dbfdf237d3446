//! End to end: the running sensor's life cycle.  SIGHUP applies a new leak
//! list without losing state (a TLS connection opened before the reload keeps
//! pairing on the same connection, counters keep counting), a new pid scope
//! takes effect at once and can be widened again, a bad file keeps the running
//! configuration, a `role` scope mutes the other side of connections in
//! the kernel until a reload widens it, and SIGTERM flushes a finding made
//! just before it and exits 0 within 5 s.  Needs root and a built sensor.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use sensor_e2e::paths::system_python;
use sensor_e2e::sensor::metric_sum_where;
use sensor_e2e::wait::SENSOR_LAG;
use sensor_e2e::{assert_no_secrets, require_root, serial, Secret, Sensor, Server, TestCert};

/// A header no default list names (`-credential` is not a default suffix).
const CUSTOM_HEADER: &str = "x-partner-credential";

/// A Python client that keeps one TLS connection open and sends, for each
/// line `PATH HEADER VALUE` on stdin, one GET on it; prints the status.
const KEEPALIVE_CLIENT: &str = r#"
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
conn = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[2]), context=ctx, timeout=10)
for line in sys.stdin:
    path, name, value = line.split()
    conn.request("GET", path, headers={name: value})
    r = conn.getresponse()
    r.read()
    print(r.status, flush=True)
"#;

struct KeepAliveClient {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl KeepAliveClient {
    fn start(cert: &TestCert, port: u16) -> Self {
        let mut child = Command::new(system_python())
            .args(["-c", KEEPALIVE_CLIENT])
            .arg(cert.cert())
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let out = BufReader::new(child.stdout.take().unwrap());
        KeepAliveClient { child, out }
    }

    fn get(&mut self, path: &str, header: &str, value: &Secret) -> u16 {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{path} {header} {}", value.expose()).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().parse().expect("the client prints a status")
    }
}

impl Drop for KeepAliveClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(path: &std::path::Path, extra_headers: &[&str]) {
    write_scoped_config(path, extra_headers, None);
}

/// With `pid`, only that process is in scope.
fn write_scoped_config(path: &std::path::Path, extra_headers: &[&str], pid: Option<u32>) {
    let scope = pid.map(|p| format!("pid = [{p}]\n")).unwrap_or_default();
    let headers: Vec<String> = ["x-api-key"]
        .iter()
        .chain(extra_headers)
        .map(|h| format!("\"{h}\""))
        .collect();
    std::fs::write(
        path,
        format!("{scope}[leak]\nheaders = [{}]\n", headers.join(", ")),
    )
    .unwrap();
}

/// SIGHUP, then wait for the `n`th log line containing `line`.
fn sighup_and_wait_for(sensor: &Sensor, line: &str, n: usize) {
    sensor.signal(libc::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + SENSOR_LAG;
    while sensor.stderr().matches(line).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line #{n} \"{line}\" after SIGHUP:\n{}",
            sensor.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGHUP, then wait for the `n`th successful reload.
fn reload_and_wait(sensor: &Sensor, n: usize) {
    sighup_and_wait_for(sensor, "configuration reloaded", n);
}

#[test]
fn sighup_applies_new_lists_without_losing_connections_and_sigterm_flushes() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensor.toml");
    write_config(&config, &[]);
    let mut sensor = Sensor::start(&["--config", config.to_str().unwrap()]).unwrap();
    let pids = server.pids();
    let server_pairs = |s: &Sensor| {
        s.pairs()
            .unwrap()
            .into_iter()
            .filter(|p| p.role == "server" && pids.contains(&p.process.pid))
            .collect::<Vec<_>>()
    };

    // Before the reload: /debug echoes every request header, but the custom
    // header is not a credential yet, so no finding.
    let mut client = KeepAliveClient::start(&cert, server.port());
    let before = Secret::random("pc_", 32);
    assert_eq!(client.get("/debug", CUSTOM_HEADER, &before), 200);
    sensor
        .wait_for_pairs(|p| !p.is_empty(), SENSOR_LAG)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sensor.findings().unwrap().is_empty(),
        "not a credential before the reload"
    );
    let conn_before = server_pairs(&sensor)[0].connection.id.clone();

    // A broken file: logged, the running configuration stays.
    std::fs::write(&config, "[leak]\nheaders = 7\n").unwrap();
    sighup_and_wait_for(&sensor, "configuration not reloaded", 1);

    // The reload: the custom header joins the list.
    write_config(&config, &[CUSTOM_HEADER]);
    reload_and_wait(&sensor, 1);
    let after = Secret::random("pc_", 32);
    assert_eq!(client.get("/debug", CUSTOM_HEADER, &after), 200);
    // The Python client uses the same libssl: it is seen too, as `client`.
    let server_findings = |f: &[sensor_e2e::Finding]| {
        f.iter()
            .filter(|f| f.role == "server" && pids.contains(&f.process.pid))
            .cloned()
            .collect::<Vec<_>>()
    };
    let findings = server_findings(
        &sensor
            .wait_for_findings(|f| !server_findings(f).is_empty(), SENSOR_LAG)
            .unwrap(),
    );
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!(
        (f.credential.source.as_str(), f.credential.name.as_str()),
        ("header", CUSTOM_HEADER)
    );
    assert_eq!(f.sink.location, "body");
    // Same TLS connection as before the reload: its state survived.
    assert_eq!(
        f.connection.id, conn_before,
        "the connection kept its identity across SIGHUP"
    );
    let pairs = server_pairs(&sensor);
    assert_eq!(
        pairs.len(),
        2,
        "both requests on the kept-alive connection paired"
    );
    assert!(pairs.iter().all(|p| p.connection.id == conn_before));

    // Scope reload: with only pid 1 in scope, a leak from the server is not
    // looked at; back to every process, it is again.
    write_scoped_config(&config, &[CUSTOM_HEADER], Some(1));
    reload_and_wait(&sensor, 2);
    let hidden = Secret::random("pc_", 32);
    let resp = sensor_e2e::curl(
        &cert,
        &server.url("/debug"),
        &["-H", &format!("{CUSTOM_HEADER}: {}", hidden.expose())],
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        server_findings(&sensor.findings().unwrap()).len(),
        1,
        "out of scope after the reload"
    );
    // The server's own pid in scope: probed per process (no other process
    // traps), and its leaks seen again on the same kept-alive connection.
    let server_pid = server.main_pid().unwrap();
    write_scoped_config(&config, &[CUSTOM_HEADER], Some(server_pid));
    reload_and_wait(&sensor, 3);
    let scoped = Secret::random("pc_", 32);
    assert_eq!(client.get("/debug", CUSTOM_HEADER, &scoped), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server_findings(&sensor.findings().unwrap()).len() < 2
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        server_findings(&sensor.findings().unwrap()).len(),
        2,
        "in a --pid scope of the server after the reload"
    );
    write_config(&config, &[CUSTOM_HEADER]);
    reload_and_wait(&sensor, 4);

    // SIGTERM right after a new leak: the finding is flushed, exit 0 within 5 s.
    let last = Secret::random("pc_", 32);
    assert_eq!(client.get("/debug", CUSTOM_HEADER, &last), 200);
    let metrics = sensor.metrics().unwrap();
    let leaks = metric_sum_where(
        &metrics,
        "sensor_credential_leaks_total",
        &[("source", "header")],
    );
    assert!(leaks >= 1.0, "counter kept counting across the reload");
    std::thread::sleep(Duration::from_millis(400));
    drop(client);
    let stopped_at = std::time::Instant::now();
    sensor.stop().unwrap();
    println!("SIGTERM to exit: {} ms", stopped_at.elapsed().as_millis());
    let findings = server_findings(&sensor.findings().unwrap());
    assert_eq!(
        findings.len(),
        3,
        "the last finding was flushed before exit"
    );
    assert_no_secrets(
        "sensor output",
        &sensor.all_output(),
        &[&before, &after, &hidden, &scoped, &last],
    );
}

/// `role = "server"`: the Python client's side of a connection (its libssl is
/// probed too) is muted once its first request shows it — counted in
/// `sensor_capture_muted_calls_total`, neither paired nor reported —
/// while the server's side is reported.  SIGHUP to `any` unmutes it: the
/// same kept-alive connection's next request is paired and reported from
/// the client's side too.
#[test]
fn role_scope_mutes_the_other_side_and_sighup_unmutes_it() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensor.toml");
    let write_role = |role: &str| {
        std::fs::write(
            &config,
            format!("role = \"{role}\"\n[leak]\nheaders = [\"x-api-key\"]\n"),
        )
        .unwrap()
    };
    write_role("server");
    let sensor = Sensor::start(&["--config", config.to_str().unwrap()]).unwrap();
    let mut client = KeepAliveClient::start(&cert, server.port());
    let client_pid = client.child.id();
    let of_role = |f: &[sensor_e2e::Finding], role: &str| {
        f.iter()
            .filter(|f| f.role == role && f.request.path == "/debug")
            .count()
    };
    let muted_calls = |s: &Sensor| {
        metric_sum_where(
            &s.metrics().unwrap(),
            "sensor_capture_muted_calls_total",
            &[],
        )
    };

    let first = Secret::random("sk_", 32);
    for _ in 0..3 {
        assert_eq!(client.get("/debug", "x-api-key", &first), 200);
    }
    sensor
        .wait_for_findings(|f| of_role(f, "server") >= 3, SENSOR_LAG)
        .unwrap();
    // The kernel counters reach the metrics once a second.
    let deadline = std::time::Instant::now() + SENSOR_LAG;
    while muted_calls(&sensor) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no out-of-scope call counted:\n{}",
            sensor.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(of_role(&sensor.findings().unwrap(), "client"), 0);
    assert!(
        sensor
            .pairs()
            .unwrap()
            .iter()
            .all(|p| p.role == "server" && p.process.pid != client_pid),
        "no pair from the client's side"
    );

    write_role("any");
    reload_and_wait(&sensor, 1);
    let second = Secret::random("sk_", 32);
    assert_eq!(client.get("/debug", "x-api-key", &second), 200);
    let findings = sensor
        .wait_for_findings(|f| of_role(f, "client") >= 1, SENSOR_LAG)
        .unwrap();
    let from_client: Vec<_> = findings
        .iter()
        .filter(|f| f.role == "client" && f.process.pid == client_pid)
        .collect();
    assert_eq!(from_client.len(), 1, "{findings:?}");
    assert_eq!(of_role(&findings, "server"), 4);
    assert_no_secrets("sensor output", &sensor.all_output(), &[&first, &second]);
}

/// Prints `permitted` or `denied`: whether this process may open a uprobe
/// perf event (on its own interpreter, at file offset 0: never executed).
const UPROBE_ORACLE: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
pmu = int(open("/sys/bus/event_source/devices/uprobe/type").read())
path = ctypes.create_string_buffer(sys.executable.encode())
attr = bytearray(112)
struct.pack_into("IIQ", attr, 0, pmu, 112, 0)
struct.pack_into("Q", attr, 40, 1)
struct.pack_into("QQ", attr, 56, ctypes.addressof(path), 0)
buf = (ctypes.c_char * 112).from_buffer(attr)
fd = libc.syscall(298, buf, -1, 0, -1, 8)
print("permitted" if fd >= 0 else "denied")
"#;

/// With CAP_BPF + CAP_PERFMON (+ SYS_PTRACE) and no CAP_SYS_ADMIN, as the
/// DaemonSet granted before: on a kernel that lets only CAP_SYS_ADMIN create
/// uprobes (stable kernels since mid-2025), `sensor check` fails its
/// privileges line and `sensor run` exits at once with one line naming the
/// fix — instead of running attached to nothing and reporting ready.  On a
/// kernel that still takes CAP_PERFMON, both pass.
#[test]
fn without_the_capability_uprobes_need_the_sensor_says_so_and_exits() {
    require_root();
    let _serial = serial();
    let bin = sensor_e2e::paths::sensor_bin().unwrap();
    let limited = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--bounding-set",
                "-all,+bpf,+perfmon,+sys_ptrace,+dac_read_search",
                "--inh-caps",
                "-all",
            ])
            .arg(&bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv runs")
    };
    // The oracle, independent of the sensor: may a process with these
    // capabilities create a uprobe (perf_event_open of the uprobe PMU)?
    let oracle = Command::new("setpriv")
        .args([
            "--bounding-set",
            "-all,+bpf,+perfmon,+sys_ptrace,+dac_read_search",
            "--inh-caps",
            "-all",
        ])
        .arg(system_python())
        .args(["-c", UPROBE_ORACLE])
        .output()
        .expect("setpriv runs");
    let oracle = String::from_utf8_lossy(&oracle.stdout).trim().to_string();
    let check = limited(&["check"]);
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    let privileges = text
        .lines()
        .find(|l| l.contains("privileges"))
        .unwrap_or_else(|| panic!("no privileges line:\n{text}"));
    if oracle == "permitted" {
        println!("this kernel lets CAP_PERFMON create uprobes: {privileges}");
        assert!(privileges.trim_start().starts_with("ok"), "{privileges}");
        return;
    }
    assert_eq!(oracle, "denied");
    assert!(privileges.contains("MISSING"), "{privileges}");
    assert!(privileges.contains("SYS_ADMIN"), "{privileges}");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = sensor_e2e::free_port().unwrap().to_string();
    let api = sensor_e2e::free_port().unwrap().to_string();
    let started = std::time::Instant::now();
    let run = limited(&[
        "run",
        "--state-dir",
        state.to_str().unwrap(),
        "--findings",
        dir.path().join("f").to_str().unwrap(),
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
        "--api-addr",
        &format!("127.0.0.1:{api}"),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "run must fail:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(stderr.contains("SYS_ADMIN"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr
            .lines()
            .filter(|l| l.contains("ERROR") || l.starts_with("Error"))
            .count()
            <= 1,
        "{stderr}"
    );
}
