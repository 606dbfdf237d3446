//! End to end: a key a server echoes only in an interim response (a 103
//! Early Hints' `Link` URL, before a final 200 that does not echo it) is
//! reported, on the server's side and curl's, as a `link` header sink with
//! `response.status` 103, over HTTP/1.1 (Python's http.server over the
//! system OpenSSL) and HTTP/2 (node's http2, OpenSSL linked into node); the
//! pairs output does not have it.  Needs root and a built sensor.

use std::process::Command;

use sensor_e2e::paths::system_python;
use sensor_e2e::wait::{SENSOR_LAG, SETTLE};
use sensor_e2e::{
    assert_no_secrets, curl, findings_of, free_port, require_root, serial, Secret, Sensor, Server,
    TestCert,
};

/// Answers every GET with a 103 whose Link names a script URL carrying the
/// request's x-api-key, then a 200 that does not.
const EARLY_HINTS_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        key = self.headers.get("x-api-key", "")
        self.send_response_only(103)
        self.send_header("Link", f"</app.js?api_key={key}>; rel=preload; as=script")
        self.end_headers()
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

/// The same over HTTP/2: node's http2 sends the 103 as a HEADERS frame
/// before the response's.
const EARLY_HINTS_SERVER_H2: &str = r#"
const http2 = require('http2'), fs = require('fs');
const [port, cert, key] = process.argv.slice(1);
const server = http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) });
server.on('stream', (stream, headers) => {
  const k = headers['x-api-key'] || '';
  stream.additionalHeaders({ ':status': 103, link: `</app.js?api_key=${k}>; rel=preload; as=script` });
  stream.respond({ ':status': 200, 'content-type': 'application/json' });
  stream.end('{"ok":true}');
});
server.listen(Number(port), '127.0.0.1');
"#;

#[test]
fn a_key_echoed_only_in_an_early_hints_link_is_reported_as_the_103s_header() {
    early_hints_leak("python3", &["-c", EARLY_HINTS_SERVER], &[]);
}

#[test]
fn a_key_echoed_only_in_an_http2_early_hints_link_is_reported_as_the_103s_header() {
    early_hints_leak("node", &["-e", EARLY_HINTS_SERVER_H2], &["--http2"]);
}

/// `interpreter args PORT CERT KEY` serves the early hints; curl (with
/// `curl_args`) asks for them with a key.
fn early_hints_leak(interpreter: &str, args: &[&str], curl_args: &[&str]) {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let port = free_port().unwrap();
    let mut cmd = if interpreter == "python3" {
        Command::new(system_python())
    } else {
        Command::new(interpreter)
    };
    cmd.args(args)
        .arg(port.to_string())
        .arg(cert.cert())
        .arg(cert.key());
    let dir = tempfile::Builder::new()
        .prefix("sensor-e2e-early-hints")
        .tempdir()
        .unwrap();
    let server = Server::spawn("early-hints", &cmd, port, &cert, dir).unwrap();
    let sensor = Sensor::start(&[]).unwrap();
    let key = Secret::random("ak_", 32);
    let header = format!("x-api-key: {}", key.expose());
    let mut curl_args = curl_args.to_vec();
    curl_args.extend(["-H", &header]);
    let resp = curl(&cert, &server.url("/page"), &curl_args).unwrap();
    assert_eq!(resp.status, 200);
    let server_pids = server.pids();
    let client_pids = vec![resp.pid];
    sensor
        .wait_for_findings(
            |f| {
                !findings_of(f, "server", &server_pids).is_empty()
                    && !findings_of(f, "client", &client_pids).is_empty()
            },
            SENSOR_LAG,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", sensor.stderr_tail()));
    std::thread::sleep(SETTLE);
    let findings = sensor.findings().unwrap();
    for (role, pids) in [("server", &server_pids), ("client", &client_pids)] {
        let mine = findings_of(&findings, role, pids);
        assert_eq!(mine.len(), 1, "{role}: {mine:#?}");
        let f = &mine[0];
        assert_eq!(
            (f.sink.location.as_str(), f.sink.name.as_deref()),
            ("header", Some("link"))
        );
        assert_eq!(f.response.status, 103);
        assert_eq!(
            (f.credential.source.as_str(), f.credential.name.as_str()),
            ("header", "x-api-key")
        );
        assert_eq!(f.request.path, "/page");
    }
    let pairs = sensor.pairs().unwrap();
    assert!(pairs
        .iter()
        .any(|p| p.role == "server" && p.request.path == "/page" && p.response.status == 200));
    for (what, text) in [
        (
            "findings",
            std::fs::read_to_string(sensor.findings_path()).unwrap(),
        ),
        (
            "pairs",
            std::fs::read_to_string(sensor.pairs_path()).unwrap(),
        ),
        ("log", sensor.all_output()),
    ] {
        assert_no_secrets(what, &text, &[&key]);
    }
}
