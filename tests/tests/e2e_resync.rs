//! End to end: keep-alive connections the sensor starts in the middle of —
//! one mid-download, one mid-upload, against nginx, each read or written by
//! a real Python client — are followed again from their next message: the
//! keys later requests on them carry and nginx echoes are reported, on the
//! server's side (nginx) and the client's, each paired with its own
//! request.  Needs root and a built sensor.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

use sensor_e2e::paths::system_python;
use sensor_e2e::sensor::metric_sum_where;
use sensor_e2e::wait::{SENSOR_LAG, SETTLE};
use sensor_e2e::{
    assert_no_secrets, findings_of, require_root, serial, Secret, Sensor, Server, TestCert,
};

/// `/big.bin`: far more than socket buffers hold, so nginx is still
/// writing it (its SSL_write calls blocked) when the sensor starts.
const BIG: usize = 64 << 20;

/// One keep-alive TLS connection: `download` GETs /big.bin, `upload` POSTs
/// 32 MiB to /upload; after 2 MiB it prints MID and waits for a line on
/// stdin, then finishes and sends one GET /leak per key given, printing
/// each status line, then DONE.
const MID_TRANSFER_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.check_hostname = False
port, mode, keys = int(sys.argv[2]), sys.argv[3], sys.argv[4:]
t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60))
def response():
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = t.recv(65536)
        if not d: raise SystemExit("closed")
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    return head, body, n
if mode == "download":
    t.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body, n = response()
    got = len(body)
    while got < 2 << 20:
        got += len(t.recv(65536))
    print("MID", flush=True); sys.stdin.readline()
    while got < n:
        got += len(t.recv(min(1 << 20, n - got)))
else:
    N = 32 << 20
    t.sendall(f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {N}\r\n\r\n".encode())
    chunk, sent = b"a" * (1 << 20), 0
    while sent < N:
        if sent == 2 << 20:
            print("MID", flush=True); sys.stdin.readline()
        t.sendall(chunk); sent += len(chunk)
    head, body, n = response()
    while len(body) < n:
        body += t.recv(65536)
for k in keys:
    t.sendall(f"GET /leak HTTP/1.1\r\nHost: x\r\nx-api-key: {k}\r\n\r\n".encode())
    head, body, n = response()
    while len(body) < n:
        body += t.recv(65536)
    print(head.split(b"\r\n")[0].decode(), flush=True)
print("DONE", flush=True)
"#;

struct Client {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Client {
    fn start(cert: &TestCert, port: u16, mode: &str, keys: &[Secret]) -> Client {
        let mut child = Command::new(system_python())
            .args(["-c", MID_TRANSFER_CLIENT])
            .arg(cert.cert())
            .arg(port.to_string())
            .arg(mode)
            .args(keys.iter().map(|k| k.expose()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let out = BufReader::new(child.stdout.take().unwrap());
        Client { child, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn go(&mut self) {
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn connections_in_the_middle_of_a_download_or_upload_at_start_are_followed_from_their_next_request()
{
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::nginx_resync(&cert, BIG).unwrap();
    let keys: Vec<Vec<Secret>> = (0..2)
        .map(|_| (0..3).map(|_| Secret::random("ak_", 32)).collect())
        .collect();
    let mut clients: Vec<Client> = ["download", "upload"]
        .iter()
        .zip(&keys)
        .map(|(mode, keys)| Client::start(&cert, server.port(), mode, keys))
        .collect();
    for c in &mut clients {
        assert_eq!(c.line(), "MID");
    }
    let client_pids: Vec<u32> = clients.iter().map(|c| c.child.id()).collect();
    let server_pids = server.pids();
    let mut scope = Vec::new();
    for pid in server_pids.iter().chain(&client_pids) {
        scope.push("--pid".to_string());
        scope.push(pid.to_string());
    }
    let scope: Vec<&str> = scope.iter().map(String::as_str).collect();
    // Started while both transfers are under way.
    let sensor = Sensor::start(&scope).unwrap();
    for c in &mut clients {
        c.go();
    }
    for c in &mut clients {
        for _ in 0..3 {
            assert_eq!(c.line(), "HTTP/1.1 400 Bad Request");
        }
        assert_eq!(c.line(), "DONE");
    }
    // Each key once on each side: 6 on nginx's, 3 on each client's.
    sensor
        .wait_for_findings(
            |f| {
                findings_of(f, "server", &server_pids).len() >= 6
                    && findings_of(f, "client", &client_pids).len() >= 6
            },
            SENSOR_LAG,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", sensor.stderr_tail()));
    std::thread::sleep(SETTLE);
    let findings = sensor.findings().unwrap();
    for (role, pids) in [("server", &server_pids), ("client", &client_pids)] {
        let mine = findings_of(&findings, role, pids);
        assert_eq!(mine.len(), 6, "{role}: {mine:#?}");
        for f in &mine {
            assert_eq!((f.request.path.as_str(), f.response.status), ("/leak", 400));
            assert_eq!(
                (f.credential.source.as_str(), f.credential.name.as_str()),
                ("header", "x-api-key")
            );
            assert_eq!(f.sink.location, "body");
        }
        // Six different keys: each finding is its own request's.
        let prints: std::collections::BTreeSet<&str> = mine
            .iter()
            .map(|f| f.credential.fingerprint.as_str())
            .collect();
        assert_eq!(prints.len(), 6, "{role}");
    }
    // The pairs on nginx's side: the six /leak requests, each with its
    // own answer; nothing of the transfers it saw only part of.
    let pairs = sensor.pairs().unwrap();
    let server_pairs: Vec<_> = pairs
        .iter()
        .filter(|p| p.role == "server" && server_pids.contains(&p.process.pid))
        .collect();
    assert_eq!(server_pairs.len(), 6, "{server_pairs:#?}");
    assert!(server_pairs
        .iter()
        .all(|p| p.request.path == "/leak" && p.response.status == 400));
    let metrics = sensor.metrics().unwrap();
    // Four sides joined mid-message: nginx's writes (download) and reads
    // (upload), the clients' reads (download) and writes (upload).
    let joined = metric_sum_where(
        &metrics,
        "sensor_http_resyncs_total",
        &[("after", "joined_midway")],
    );
    assert_eq!(joined, 4.0, "{metrics}");
    let flat: Vec<&Secret> = keys.iter().flatten().collect();
    assert_no_secrets(
        "findings",
        &std::fs::read_to_string(sensor.findings_path()).unwrap(),
        &flat,
    );
    assert_no_secrets(
        "pairs",
        &std::fs::read_to_string(sensor.pairs_path()).unwrap(),
        &flat,
    );
    assert_no_secrets("log", &sensor.all_output(), &flat);
}
