//! A minimal HTTP/1.0 GET for the sensor's plain-text endpoints on loopback
//! (`/readyz`, `/metrics`) and a Prometheus text reader.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Largest response read from a metrics endpoint.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// `GET path` → (status, body).
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // One write: `write!` on the socket sends each formatted piece on its own.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    s.take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading GET {path} from {addr}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed HTTP response from {addr}{path}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in the response from {addr}{path}"))?;
    Ok((status, body.to_string()))
}

/// Polls `GET path` until it answers 200, up to `limit`; `alive` is asked
/// between attempts so a crashed server fails fast.
pub fn wait_200(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut last = String::from("no answer");
    while start.elapsed() < limit {
        alive()?;
        match get(addr, path, Duration::from_secs(2)) {
            Ok((200, _)) => return Ok(start.elapsed()),
            Ok((s, _)) => last = format!("status {s}"),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("GET http://{addr}{path} did not answer 200 within {limit:?} (last: {last})")
}

/// Sum of every series of `name` (any labels) in Prometheus text; `None` when absent.
pub fn prom_sum(text: &str, name: &str) -> Option<f64> {
    prom_sum_where(text, name, "")
}

/// Like [`prom_sum`], only the series whose label set contains `label` (e.g. `role="server"`).
pub fn prom_sum_where(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labels) = rest.strip_prefix('{') {
            labels
                .split_once('}')
                .filter(|(l, _)| l.contains(label))
                .map(|(_, v)| v)
        } else if rest.starts_with(' ') && label.is_empty() {
            Some(rest)
        } else {
            None // a longer metric name with this prefix
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()) {
            if let Ok(x) = v.parse::<f64>() {
                sum += x;
                found = true;
            }
        }
    }
    found.then_some(sum)
}

/// Wait until something accepts TCP connections on `addr`.
pub fn wait_listening(
    addr: SocketAddr,
    limit: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr} after {limit:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_sums_across_labels() {
        let text = "# HELP sensor_capture_events_total x\n\
            # TYPE sensor_capture_events_total counter\n\
            sensor_capture_events_total{direction=\"read\"} 10\n\
            sensor_capture_events_total{direction=\"write\"} 5\n\
            sensor_capture_events_total_extra 99\n\
            sensor_capture_lost_events_total 0\n";
        assert_eq!(prom_sum(text, "sensor_capture_events_total"), Some(15.0));
        assert_eq!(
            prom_sum(text, "sensor_capture_lost_events_total"),
            Some(0.0)
        );
        assert_eq!(prom_sum(text, "sensor_http_pairs_total"), None);
        assert_eq!(
            prom_sum_where(text, "sensor_capture_events_total", "direction=\"read\""),
            Some(10.0)
        );
        assert_eq!(
            prom_sum_where(text, "sensor_capture_lost_events_total", "x=\"y\""),
            None
        );
    }

    #[test]
    fn get_reads_status_and_body() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            // The whole request: closing with unread bytes would reset the
            // connection under the client's read.
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut b).unwrap();
                assert!(n > 0, "request cut short: {req:?}");
                req.extend_from_slice(&b[..n]);
            }
            c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                .unwrap();
        });
        let (s, body) = get(addr, "/readyz", Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        assert_eq!((s, body.as_str()), (200, "ok\n"));
    }
}
