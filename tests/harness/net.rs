//! Loopback ports and a minimal HTTP/1.1 GET (for the sensor's plain-HTTP
//! /readyz and /metrics; no TLS, no dependencies).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The TCP ports the e2e tests may use (this project's assignment).
pub const PORT_RANGE: std::ops::RangeInclusive<u16> = 23000..=23999;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A port in [`PORT_RANGE`] that is free right now on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    free_port_in(PORT_RANGE)
}

/// A port in `range` that is free right now on 127.0.0.1.  Successive calls
/// walk the range (starting at an offset derived from the pid, so concurrent
/// test binaries rarely collide), skipping ports that are in use.
pub fn free_port_in(range: std::ops::RangeInclusive<u16>) -> Result<u16> {
    let (lo, hi) = (*range.start() as u32, *range.end() as u32);
    let span = hi - lo + 1;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(97)) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = (lo + NEXT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free TCP port in {lo}..={hi}")
}

/// GET `path` from a plain-HTTP server; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: sensor-e2e\r\n\r\n"
    )?;
    // Read until the message is complete (Content-Length, chunked end, or
    // EOF), so a server that keeps the connection open does not stall us.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if message_complete(&raw) {
            break;
        }
        if raw.len() > MAX_RESPONSE_BYTES {
            bail!("response from {addr}{path} larger than {MAX_RESPONSE_BYTES} bytes");
        }
        match stream.read(&mut buf)? {
            0 => break,
            n => raw.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status code")?;
    let body = if is_chunked(head) {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Largest response `http_get` accepts (metrics pages are far smaller).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

fn is_chunked(head: &str) -> bool {
    head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    })
}

fn message_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if is_chunked(&head) {
        return body.windows(5).any(|w| w == b"0\r\n\r\n");
    }
    match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        Some(len) => len.trim().parse::<usize>().is_ok_and(|n| body.len() >= n),
        None => false, // close-delimited: read to EOF
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A TCP relay on 127.0.0.1 that waits `delay` after accepting before it
/// connects on to `to`: a client's first TLS bytes then go out `delay` after
/// its start, as over a real network, so a short-lived client lives that
/// long.  Runs until the test process ends.
pub fn delaying_relay(to: u16, delay: Duration) -> u16 {
    let port = free_port().expect("a free loopback port");
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    return;
                };
                let pipe = |mut a: TcpStream, mut b: TcpStream| {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = a.read(&mut buf) {
                        if n == 0 || b.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = b.shutdown(std::net::Shutdown::Write);
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let t = std::thread::spawn(move || pipe(c2, s2));
                pipe(server, client);
                let _ = t.join();
            });
        }
    });
    port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_in_range_and_distinct() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert!(PORT_RANGE.contains(&a) && PORT_RANGE.contains(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn dechunk_joins_chunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
