//! Content-Encoding removal for response bodies, streamed and capped: output is
//! handed on in blocks, never accumulated, and stops at the configured size.

use std::io::Read;

use bytes::Bytes;

use crate::finding::ContentEncoding;

/// Size of one decompressed block handed to the matcher.
pub const DECODE_BLOCK: usize = 64 * 1024;
/// zstd window limit (2^23 = 8 MiB, the HTTP content-coding limit of RFC 9659):
/// bounds decoder memory whatever the frame header asks for.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Reads a chunk list without joining it.
pub struct ChunkReader<'a> {
    chunks: &'a [Bytes],
    idx: usize,
    pos: usize,
}

impl<'a> ChunkReader<'a> {
    pub fn new(chunks: &'a [Bytes]) -> Self {
        ChunkReader {
            chunks,
            idx: 0,
            pos: 0,
        }
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.idx < self.chunks.len() {
            let c = &self.chunks[self.idx];
            if self.pos < c.len() {
                let n = buf.len().min(c.len() - self.pos);
                buf[..n].copy_from_slice(&c[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.idx += 1;
            self.pos = 0;
        }
        Ok(0)
    }
}

/// Parses a Content-Encoding header value.  `Err` for stacked or unknown codings.
pub fn parse_content_encoding(v: Option<&[u8]>) -> Result<ContentEncoding, &'static str> {
    let Some(v) = v else {
        return Ok(ContentEncoding::Identity);
    };
    let s = String::from_utf8_lossy(v).trim().to_ascii_lowercase();
    let codings: Vec<&str> = s.split(',').map(str::trim).filter(|c| !c.is_empty() && *c != "identity").collect();
    match codings.as_slice() {
        [] => Ok(ContentEncoding::Identity),
        ["gzip"] | ["x-gzip"] => Ok(ContentEncoding::Gzip),
        ["deflate"] => Ok(ContentEncoding::Deflate),
        ["br"] => Ok(ContentEncoding::Br),
        ["zstd"] => Ok(ContentEncoding::Zstd),
        [_] => Err("unknown_content_encoding"),
        _ => Err("stacked_content_encoding"),
    }
}

/// How a decode ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DecodeOutcome {
    pub decoded_bytes: u64,
    pub cap_hit: bool,
    pub error: Option<&'static str>,
}

/// zlib header check (RFC 1950): CM = 8 and the FCHECK multiple of 31.
fn looks_zlib(chunks: &[Bytes]) -> bool {
    let mut first = [0u8; 2];
    let mut r = ChunkReader::new(chunks);
    if r.read_exact(&mut first).is_err() {
        return false;
    }
    first[0] & 0x0f == 8 && (u16::from(first[0]) << 8 | u16::from(first[1])) % 31 == 0
}

/// Decodes `chunks` with `enc`, calling `out` with each block, up to `cap` bytes.
/// What was decoded before an error is still handed on.
pub fn decode_stream(
    enc: ContentEncoding,
    chunks: &[Bytes],
    cap: usize,
    out: &mut dyn FnMut(&[u8]),
) -> DecodeOutcome {
    let src = ChunkReader::new(chunks);
    let (mut reader, err_name): (Box<dyn Read + '_>, &'static str) = match enc {
        ContentEncoding::Identity => {
            let mut o = DecodeOutcome::default();
            for c in chunks {
                let room = cap.saturating_sub(o.decoded_bytes as usize);
                let n = c.len().min(room);
                out(&c[..n]);
                o.decoded_bytes += n as u64;
                if n < c.len() {
                    o.cap_hit = true;
                    break;
                }
            }
            return o;
        }
        ContentEncoding::Gzip => (Box::new(flate2::read::MultiGzDecoder::new(src)), "bad_gzip"),
        ContentEncoding::Deflate if looks_zlib(chunks) => {
            (Box::new(flate2::read::ZlibDecoder::new(src)), "bad_deflate")
        }
        ContentEncoding::Deflate => (Box::new(flate2::read::DeflateDecoder::new(src)), "bad_deflate"),
        ContentEncoding::Br => (Box::new(brotli::Decompressor::new(src, 4096)), "bad_br"),
        ContentEncoding::Zstd => match zstd::stream::read::Decoder::new(src) {
            Ok(mut d) => {
                if d.window_log_max(ZSTD_WINDOW_LOG_MAX).is_err() {
                    return DecodeOutcome {
                        error: Some("bad_zstd"),
                        ..Default::default()
                    };
                }
                (Box::new(d), "bad_zstd")
            }
            Err(_) => {
                return DecodeOutcome {
                    error: Some("bad_zstd"),
                    ..Default::default()
                }
            }
        },
    };
    let mut o = DecodeOutcome::default();
    let mut buf = vec![0u8; DECODE_BLOCK];
    loop {
        let room = cap - o.decoded_bytes as usize;
        // Ask for one byte past the cap to learn whether the cap cut anything.
        let want = buf.len().min(room + 1);
        match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                let take = n.min(room);
                out(&buf[..take]);
                o.decoded_bytes += take as u64;
                if take < n {
                    o.cap_hit = true;
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                o.error = Some(err_name);
                break;
            }
        }
    }
    zeroize::Zeroize::zeroize(&mut buf);
    o
}
