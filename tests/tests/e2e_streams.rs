//! End to end: leaks in responses that do not end the usual way, on node's
//! `http2` server (`tests/apps/leaky_streams.js`), read by curl over
//! HTTP/1.1 and over HTTP/2: a server-sent event stream is reported while it
//! is still open, and once; a key in a trailer is found; a download its
//! client hangs up on is searched as far as it got.  Needs root and a built
//! sensor.

use std::process::Command;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use sensor_e2e::contract::Finding;
use sensor_e2e::proc::Process;
use sensor_e2e::sensor::metric_sum_where;
use sensor_e2e::wait::{SENSOR_LAG, SETTLE};
use sensor_e2e::{
    assert_no_secrets, curl, findings_of, require_root, serial, Secret, Sensor, Server, TestCert,
};

/// How long the event stream stays open: well past the time its leak must
/// be reported in.
const STREAM_SECONDS: u64 = 10;
/// The leak of an open stream must be out by then (looks start a second
/// into a response and come once a second).
const STREAM_REPORTED_WITHIN: Duration = Duration::from_secs(8);

/// What every case starts with, under the root tests' lock: node's server,
/// a sensor, the server's pids and a fresh key.
struct Started {
    _serial: MutexGuard<'static, ()>,
    cert: TestCert,
    server: Server,
    sensor: Sensor,
    pids: Vec<u32>,
    key: Secret,
}

fn start() -> Started {
    require_root();
    let serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::node_streams(&cert).unwrap();
    let sensor = Sensor::start(&[]).unwrap();
    Started {
        _serial: serial,
        pids: server.pids(),
        cert,
        server,
        sensor,
        key: Secret::random("ak_", 32),
    }
}

fn api_key_header(key: &Secret) -> String {
    format!("x-api-key: {}", key.expose())
}

/// The one finding of `role` by `pids` at `path`, checked to be the
/// request's `x-api-key` come back in a 200 response, in the body or in the
/// header `sink_header`.
fn the_finding(
    findings: &[Finding],
    role: &str,
    pids: &[u32],
    path: &str,
    sink_header: Option<&str>,
) -> Finding {
    let mine: Vec<Finding> = findings_of(findings, role, pids)
        .into_iter()
        .filter(|f| f.path_only() == path)
        .collect();
    assert_eq!(mine.len(), 1, "{role} findings at {path}: {mine:#?}");
    let f = mine.into_iter().next().unwrap();
    assert_eq!(
        (f.credential.source.as_str(), f.credential.name.as_str()),
        ("header", "x-api-key")
    );
    assert_eq!(f.sink.name.as_deref(), sink_header, "{f:#?}");
    assert_eq!(
        f.sink.location,
        if sink_header.is_some() {
            "header"
        } else {
            "body"
        }
    );
    assert_eq!(f.response.status, 200);
    f
}

/// curl's option for HTTP/1.1 or HTTP/2, and the version pairs carry.
#[derive(Clone, Copy)]
enum Proto {
    Http1,
    Http2,
}

impl Proto {
    fn curl_arg(self) -> &'static str {
        match self {
            Proto::Http1 => "--http1.1",
            Proto::Http2 => "--http2",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Proto::Http1 => "HTTP/1.1",
            Proto::Http2 => "HTTP/2",
        }
    }
}

#[test]
fn an_event_stream_leak_is_reported_while_the_stream_is_open_and_once_over_http1() {
    event_stream_leak_is_reported_while_open(Proto::Http1);
}

#[test]
fn an_event_stream_leak_is_reported_while_the_stream_is_open_and_once_over_http2() {
    event_stream_leak_is_reported_while_open(Proto::Http2);
}

fn event_stream_leak_is_reported_while_open(proto: Proto) {
    // `_serial` first: dropped last, after the sensor and the server.
    let Started {
        _serial,
        cert,
        server,
        mut sensor,
        pids,
        key,
    } = start();

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sSN",
        proto.curl_arg(),
        "--max-time",
        "40",
        "-o",
        "/dev/null",
        "--cacert",
    ])
    .arg(cert.cert())
    .args(["-H", &api_key_header(&key)])
    .arg(server.url(&format!("/v1/events?seconds={STREAM_SECONDS}")));
    let started = Instant::now();
    let mut client = Process::spawn_unwrapped("curl-events", &cmd, dir.path()).unwrap();
    let curl_pid = client.main_pid().unwrap();
    let both_sides = |f: &[Finding]| {
        !findings_of(f, "server", &pids).is_empty()
            && !findings_of(f, "client", &[curl_pid]).is_empty()
    };
    let early = sensor
        .wait_for_findings(both_sides, STREAM_REPORTED_WITHIN)
        .unwrap_or_else(|e| panic!("no finding from the open stream: {e}"));
    let reported_after = started.elapsed();
    assert!(
        client.try_exited().is_none(),
        "the stream ended ({reported_after:?}) before its leak was reported"
    );
    eprintln!("event stream: leak reported {reported_after:?} after the request, stream open for {STREAM_SECONDS} s");
    the_finding(&early, "server", &pids, "/v1/events", None);
    the_finding(&early, "client", &[curl_pid], "/v1/events", None);

    let status = client
        .wait_timeout(Duration::from_secs(STREAM_SECONDS + 20))
        .expect("curl ends with the stream");
    assert!(status.success(), "curl: {status}");
    let pairs = sensor
        .wait_for_pairs(
            |p| p.iter().any(|p| p.request.path.starts_with("/v1/events")),
            SENSOR_LAG,
        )
        .unwrap();
    for p in pairs
        .iter()
        .filter(|p| p.request.path.starts_with("/v1/events"))
    {
        assert_eq!(p.request.version, proto.version());
    }
    std::thread::sleep(SETTLE);
    // The stream's end searched it whole: nothing more to report.
    let all = sensor.findings().unwrap();
    the_finding(&all, "server", &pids, "/v1/events", None);
    the_finding(&all, "client", &[curl_pid], "/v1/events", None);
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}

#[test]
fn a_key_in_a_chunked_trailer_is_found_over_http1() {
    a_key_in_a_trailer_is_found(Proto::Http1);
}

#[test]
fn a_key_in_a_trailer_is_found_over_http2() {
    a_key_in_a_trailer_is_found(Proto::Http2);
}

fn a_key_in_a_trailer_is_found(proto: Proto) {
    // `_serial` first: dropped last, after the sensor and the server.
    let Started {
        _serial,
        cert,
        server,
        mut sensor,
        pids,
        key,
    } = start();

    let resp = curl(
        &cert,
        &server.url("/v1/trailer"),
        &[proto.curl_arg(), "-H", &api_key_header(&key)],
    )
    .unwrap();
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"{\"ok\":true}"[..])
    );
    let found = sensor
        .wait_for_findings(
            |f| {
                !findings_of(f, "server", &pids).is_empty()
                    && !findings_of(f, "client", &[resp.pid]).is_empty()
            },
            SENSOR_LAG,
        )
        .unwrap();
    the_finding(
        &found,
        "server",
        &pids,
        "/v1/trailer",
        Some("x-debug-token"),
    );
    the_finding(
        &found,
        "client",
        &[resp.pid],
        "/v1/trailer",
        Some("x-debug-token"),
    );
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}

#[test]
fn a_download_its_client_hangs_up_on_is_searched_as_far_as_it_got_over_http1() {
    a_download_cut_by_its_client_is_searched(Proto::Http1);
}

#[test]
fn a_download_its_client_hangs_up_on_is_searched_as_far_as_it_got_over_http2() {
    a_download_cut_by_its_client_is_searched(Proto::Http2);
}

fn a_download_cut_by_its_client_is_searched(proto: Proto) {
    // `_serial` first: dropped last, after the sensor and the server.
    let Started {
        _serial,
        cert,
        server,
        mut sensor,
        pids,
        key,
    } = start();

    // curl writes into `head`, which stops reading after 64 KiB: curl fails
    // to write (exit 23) and hangs up on the 8 MiB response.
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "curl -sSN {} --max-time 30 --cacert '{}' -H '{}' '{}' | head -c 65536 > /dev/null",
        proto.curl_arg(),
        cert.cert().display(),
        api_key_header(&key),
        server.url("/v1/download"),
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let mut client = Process::spawn_unwrapped("curl-download", &cmd, dir.path()).unwrap();
    client
        .wait_timeout(Duration::from_secs(40))
        .expect("the download is cut");

    let found = sensor
        .wait_for_findings(|f| !findings_of(f, "server", &pids).is_empty(), SENSOR_LAG)
        .unwrap();
    the_finding(&found, "server", &pids, "/v1/download", None);
    let pairs = sensor
        .wait_for_pairs(
            |p| {
                p.iter()
                    .any(|p| p.role == "server" && p.request.path == "/v1/download")
            },
            SENSOR_LAG,
        )
        .unwrap();
    let cut = pairs
        .iter()
        .find(|p| p.role == "server" && p.request.path == "/v1/download")
        .unwrap();
    assert!(cut.response.body_truncated, "{cut:#?}");
    assert!(
        cut.response.body_len < 8 << 20,
        "the response was cut: {} bytes",
        cut.response.body_len
    );
    assert_eq!(cut.request.version, proto.version());
    if let Proto::Http1 = proto {
        // (An HTTP/2 stream cut short is handed on the same way, but its
        // connection did not close inside an HTTP/1.x message.)
        let metrics = sensor.metrics().unwrap();
        let cuts = metric_sum_where(
            &metrics,
            "sensor_http_parse_errors_total",
            &[("reason", "closed_mid_message")],
        );
        assert!(cuts >= 1.0, "closed_mid_message = {cuts}");
    }
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}
