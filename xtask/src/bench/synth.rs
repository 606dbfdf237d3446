//! Synthetic recordings for `sensor replay`: keep-alive TLS connections of a
//! server process, written exactly as the kernel side would deliver them
//! (`sensor_common::EventHeader` + data, chunks of at most `CHUNK_SIZE`, in
//! the `--record` file format of `sensor/src/capture/record.rs`).
//!
//! Requests carry API keys (x-api-key, Authorization: Bearer); a known share
//! of responses leaks the connection's key (JSON body, gzip body, debug
//! header, redirect), so the findings a replay reports can be checked.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use sensor_common::{
    EventHeader, CHUNK_SIZE, DIR_READ, DIR_WRITE, EVENT_HEADER_LEN, KIND_CLOSE, KIND_DATA,
    RECORDING_MAGIC, RECORDING_VERSION, SITE_INTERNAL,
};

// The header is written as raw bytes: it must have no padding.
const _: () = assert!(EVENT_HEADER_LEN == 64);

/// Bytes per SSL call the synthetic server makes (nginx writes 16 KiB records).
const CALL_BYTES: usize = 16 * 1024;
const TGID: u32 = 4242;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Workload {
    pub name: &'static str,
    pub connections: usize,
    pub pairs: usize,
    /// Response body size: log-uniform between the two (equal: fixed).
    pub body_min: usize,
    pub body_max: usize,
    /// Every n-th response gzip-compressed / chunked / a leak; every n-th request an upload (0: never).
    pub gzip_every: usize,
    pub chunked_every: usize,
    pub leak_every: usize,
    pub upload_every: usize,
    /// Every request carries a key never used before (no two pairs share a
    /// credential set, so nothing keyed by credentials can be reused).
    pub distinct_keys: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Written {
    pub pairs: u64,
    pub leaks: u64,
    pub events: u64,
    pub file_bytes: u64,
    /// Plaintext bytes (both directions) the events carry.
    pub payload_bytes: u64,
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n).map(|_| A[self.below(A.len())] as char).collect()
    }
}

struct Conn {
    ssl: u64,
    call_seq: u32,
    key: String,
    bearer: bool,
}

struct Out {
    w: BufWriter<File>,
    ts: u64,
    written: Written,
}

impl Out {
    fn event(&mut self, h: &EventHeader, data: &[u8]) -> io::Result<()> {
        // SAFETY: EventHeader is repr(C) plain data without padding (asserted above).
        let hb = unsafe {
            std::slice::from_raw_parts(h as *const EventHeader as *const u8, EVENT_HEADER_LEN)
        };
        self.w
            .write_all(&((EVENT_HEADER_LEN + data.len()) as u32).to_le_bytes())?;
        self.w.write_all(hb)?;
        self.w.write_all(data)?;
        self.written.events += 1;
        self.written.payload_bytes += data.len() as u64;
        self.written.file_bytes += 4 + (EVENT_HEADER_LEN + data.len()) as u64;
        Ok(())
    }

    fn header(&mut self, c: &Conn, kind: u8, direction: u8) -> EventHeader {
        self.ts += 20_000;
        let mut comm = [0u8; 16];
        comm[..9].copy_from_slice(b"bench-api");
        EventHeader {
            ssl: c.ssl,
            pid_tgid: ((TGID as u64) << 32) | TGID as u64,
            ts_ns: self.ts,
            call_seq: c.call_seq,
            call_len: 0,
            offset: 0,
            data_len: 0,
            lost_before: 0,
            kind,
            direction,
            flags: 0,
            site: SITE_INTERNAL,
            comm,
        }
    }

    /// One SSL call of `data`, split into events of at most CHUNK_SIZE.
    fn call(&mut self, c: &mut Conn, direction: u8, data: &[u8]) -> io::Result<()> {
        c.call_seq += 1;
        for (i, chunk) in data.chunks(CHUNK_SIZE).enumerate() {
            let mut h = self.header(c, KIND_DATA, direction);
            h.call_len = data.len() as u32;
            h.offset = (i * CHUNK_SIZE) as u32;
            h.data_len = chunk.len() as u32;
            self.event(&h, chunk)?;
        }
        Ok(())
    }

    /// `data` as the server would move it: SSL calls of up to CALL_BYTES.
    fn stream(&mut self, c: &mut Conn, direction: u8, data: &[u8]) -> io::Result<()> {
        for part in data.chunks(CALL_BYTES) {
            self.call(c, direction, part)?;
        }
        Ok(())
    }
}

/// JSON-ish filler: an array of small objects, `len` bytes.
fn filler(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 128);
    v.push(b'[');
    let mut i = 0u64;
    while v.len() < len {
        let _ = write!(
            v,
            "{{\"id\":{i},\"name\":\"item-{i}\",\"price\":{}.{:02},\"tags\":[\"blue\",\"l\"]}},",
            i * 7 % 1000,
            i % 100
        );
        i += 1;
    }
    v.truncate(len.saturating_sub(1));
    v.push(b']');
    v
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + body.len() / 1000 + 16);
    for part in body.chunks(8192) {
        let _ = write!(v, "{:x}\r\n", part.len());
        v.extend_from_slice(part);
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"0\r\n\r\n");
    v
}

/// A fresh API key: a GitHub token (sent as Bearer) or a Stripe-like key.
fn new_key(rng: &mut Rng, bearer: bool) -> String {
    if bearer {
        format!("ghp_{}", rng.alnum(36))
    } else {
        format!("sk_live_{}", rng.alnum(32))
    }
}

/// Body sizes are drawn from a few fixed sizes so compressed bodies can be reused.
fn body_size(w: &Workload, rng: &mut Rng) -> usize {
    if w.body_min >= w.body_max {
        return w.body_min;
    }
    const STEPS: usize = 12;
    let (lo, hi) = ((w.body_min as f64).ln(), (w.body_max as f64).ln());
    let k = rng.below(STEPS + 1) as f64 / STEPS as f64;
    (lo + (hi - lo) * k).exp().round() as usize
}

pub fn write(path: &Path, w: &Workload, seed: u64) -> io::Result<Written> {
    let mut rng = Rng(seed | 1);
    let mut out = Out {
        w: BufWriter::with_capacity(1 << 20, File::create(path)?),
        ts: 1_000_000_000,
        written: Written::default(),
    };
    out.w.write_all(RECORDING_MAGIC)?;
    out.w.write_all(&RECORDING_VERSION.to_le_bytes())?;
    out.w.write_all(&0i64.to_le_bytes())?;
    out.written.file_bytes = 18;
    let big = filler(w.body_max.max(w.body_min));
    let mut gz_cache: std::collections::HashMap<usize, Vec<u8>> = Default::default();
    let mut conns: Vec<Conn> = (0..w.connections.max(1))
        .map(|i| {
            let bearer = i % 2 == 1;
            Conn {
                ssl: 0x5555_0000_0000 + (i as u64) * 0x1000,
                call_seq: 0,
                key: new_key(&mut rng, bearer),
                bearer,
            }
        })
        .collect();
    for n in 0..w.pairs {
        let c = &mut conns[n % w.connections.max(1)];
        let every = |k: usize| k != 0 && n % k == k - 1;
        let leak = every(w.leak_every);
        let gz = every(w.gzip_every);
        let is_chunked = every(w.chunked_every);
        let upload = every(w.upload_every);
        if w.distinct_keys && n >= w.connections.max(1) {
            c.key = new_key(&mut rng, c.bearer);
        }

        // Request.
        let auth = if c.bearer {
            format!("authorization: Bearer {}", c.key)
        } else {
            format!("x-api-key: {}", c.key)
        };
        let upload_body: &[u8] = if upload {
            &big[..body_size(w, &mut rng).min(big.len())]
        } else {
            &[]
        };
        let mut req = Vec::with_capacity(256 + upload_body.len());
        if upload {
            let _ = write!(
                req,
                "POST /v1/items HTTP/1.1\r\nhost: api.example\r\nuser-agent: bench\r\n{auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                upload_body.len()
            );
            req.extend_from_slice(upload_body);
        } else {
            let _ = write!(
                req,
                "GET /v1/items/{n}?page=2 HTTP/1.1\r\nhost: api.example\r\nuser-agent: bench\r\naccept: application/json\r\naccept-encoding: gzip\r\n{auth}\r\n\r\n"
            );
        }
        out.stream(c, DIR_READ, &req)?;

        // Response.
        let size = body_size(w, &mut rng).min(big.len());
        let mut extra_headers = String::new();
        let mut status = "200 OK";
        let plain: std::borrow::Cow<[u8]> = if leak {
            // Rotate through the sinks: JSON body (gzip when this one is), debug header, redirect.
            match (n / w.leak_every.max(1)) % 3 {
                0 => {
                    status = "401 Unauthorized";
                    let mut b = big[..size.saturating_sub(64).max(1)].to_vec();
                    let _ = write!(b, ",{{\"error\":\"invalid key\",\"key\":\"{}\"}}]", c.key);
                    b.into()
                }
                1 => {
                    extra_headers = format!("x-debug-auth: {}\r\n", c.key);
                    big[..size].into()
                }
                _ => {
                    status = "302 Found";
                    extra_headers = format!(
                        "location: https://app.example/cb#access_token={}\r\n",
                        c.key
                    );
                    big[..size].into()
                }
            }
        } else {
            big[..size].into()
        };
        let body: Vec<u8> = if gz {
            extra_headers.push_str("content-encoding: gzip\r\n");
            if leak {
                gzip(&plain)
            } else {
                gz_cache.entry(size).or_insert_with(|| gzip(&plain)).clone()
            }
        } else {
            plain.into_owned()
        };
        let mut resp = Vec::with_capacity(body.len() + 256);
        let _ = write!(
            resp,
            "HTTP/1.1 {status}\r\nserver: bench\r\ncontent-type: application/json\r\n{extra_headers}"
        );
        if is_chunked {
            resp.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            resp.extend_from_slice(&chunked(&body));
        } else {
            let _ = write!(resp, "content-length: {}\r\n\r\n", body.len());
            resp.extend_from_slice(&body);
        }
        out.stream(c, DIR_WRITE, &resp)?;
        out.written.pairs += 1;
        if leak {
            out.written.leaks += 1;
        }
    }
    for c in &mut conns {
        let h = out.header(c, KIND_CLOSE, DIR_READ);
        out.event(&h, &[])?;
    }
    out.w.flush()?;
    Ok(out.written)
}

/// A recording with no event (the replay's fixed start-up cost).
pub fn write_empty(path: &Path) -> io::Result<()> {
    let mut v = RECORDING_MAGIC.to_vec();
    v.extend_from_slice(&RECORDING_VERSION.to_le_bytes());
    v.extend_from_slice(&0i64.to_le_bytes());
    std::fs::write(path, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_is_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec");
        let w = Workload {
            name: "t",
            connections: 3,
            pairs: 30,
            body_min: 100,
            body_max: 40_000,
            gzip_every: 4,
            chunked_every: 5,
            leak_every: 3,
            upload_every: 7,
            distinct_keys: false,
        };
        let got = write(&p, &w, 7).unwrap();
        assert_eq!(got.pairs, 30);
        assert_eq!(got.leaks, 10);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len() as u64, got.file_bytes);
        assert_eq!(&bytes[..8], RECORDING_MAGIC);
        // Walk the records: every one is a valid header + declared data.
        let mut off = 18;
        let mut events = 0;
        let mut closes = 0;
        while off < bytes.len() {
            let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            off += 4;
            let raw = &bytes[off..off + len];
            // SAFETY: test-only read of a plain-data header from checked bytes.
            let h: EventHeader =
                unsafe { std::ptr::read_unaligned(raw.as_ptr() as *const EventHeader) };
            assert_eq!(h.data_len as usize, len - EVENT_HEADER_LEN);
            assert!(h.data_len as usize <= CHUNK_SIZE);
            assert!(h.offset + h.data_len <= h.call_len || h.kind == KIND_CLOSE);
            if h.kind == KIND_CLOSE {
                closes += 1;
            }
            off += len;
            events += 1;
        }
        assert_eq!(events, got.events);
        assert_eq!(closes, 3);
        // Deterministic.
        let p2 = dir.path().join("rec2");
        write(&p2, &w, 7).unwrap();
        assert_eq!(std::fs::read(&p2).unwrap(), bytes);
    }

    /// Every key a recording holds, in order (the values after `x-api-key: ` / `Bearer `).
    fn keys(bytes: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(bytes);
        let mut out = Vec::new();
        for marker in ["x-api-key: ", "Bearer "] {
            for (i, _) in text.match_indices(marker) {
                let rest = &text[i + marker.len()..];
                let end = rest.find('\r').unwrap_or(rest.len());
                out.push((i, rest[..end].to_string()));
            }
        }
        out.sort();
        out.into_iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn distinct_keys_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Workload {
            name: "t",
            connections: 4,
            pairs: 40,
            body_min: 100,
            body_max: 100,
            gzip_every: 0,
            chunked_every: 0,
            leak_every: 3,
            upload_every: 0,
            distinct_keys: true,
        };
        let p = dir.path().join("distinct");
        let got = write(&p, &w, 7).unwrap();
        assert_eq!(got.pairs, 40);
        let ks = keys(&std::fs::read(&p).unwrap());
        assert_eq!(ks.len(), 40);
        let set: std::collections::HashSet<&String> = ks.iter().collect();
        assert_eq!(set.len(), 40, "every request has its own key");
        w.distinct_keys = false;
        let p = dir.path().join("shared");
        write(&p, &w, 7).unwrap();
        let ks = keys(&std::fs::read(&p).unwrap());
        let set: std::collections::HashSet<&String> = ks.iter().collect();
        assert_eq!(set.len(), 4, "one key per connection");
    }

    #[test]
    fn filler_and_chunking() {
        assert_eq!(filler(1000).len(), 1000);
        assert_eq!(filler(1).len(), 1);
        let c = chunked(&[b'a'; 10000]);
        assert!(c.starts_with(b"2000\r\n"));
        assert!(c.ends_with(b"0\r\n\r\n"));
    }
}
