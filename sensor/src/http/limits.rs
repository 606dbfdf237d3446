//! Bounds of the HTTP stage: every one a named constant, tested at the limit.

/// Body bytes kept per message by default; the rest is counted, not kept.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Request body bytes kept per request for credential extraction (form, JSON,
/// multipart fields come first in real requests); the rest of an upload is
/// counted in `sensor_http_request_body_bytes_not_kept_total` and dropped.
/// Responses keep up to `max_body_bytes`: leaks are looked for there.
pub const MAX_REQUEST_BODY_KEPT: usize = 64 * 1024;
/// Largest request/response head (start line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in one head.
pub const MAX_HEADERS: usize = 128;
/// Requests waiting for their responses on one connection (pipelining
/// depth).  Past it the oldest waiting request is dropped unanswered
/// (`sensor_http_parse_errors_total{reason="too_many_pending"}`) and its
/// response skipped when it comes: the connection stays followed.
pub const MAX_PENDING_REQUESTS: usize = 64;
/// Interim (1xx) response heads kept per response, their headers searched
/// for leaks as the final response's are (a 103 Early Hints' `Link`, a 100
/// Continue's headers); more are counted in
/// `sensor_http_interim_heads_not_kept_total` and dropped.  One 100 Continue
/// and a 103 or two is what servers send.
pub const MAX_INTERIM_HEADS: usize = 4;
/// Memory the interim heads of one response may hold (copied at their
/// size): a head that would pass it is counted and dropped, as above.
pub const MAX_INTERIM_BYTES: usize = 16 * 1024;
/// Bytes a direction may carry while it waits for a message start (the
/// sensor joined it in the middle of a message, or after a capture hole)
/// before its connection is given up (and muted in the kernel).  Waiting
/// keeps nothing (the bytes are looked at, not held), so the bound is on
/// what the wait costs: every byte is still copied through the ring buffer
/// and looked at, ~0.6 s of the pipeline per GiB at the 1.7 GB/s it
/// handles (BENCHMARKS.md).  It is paid once per such connection, and
/// covers the downloads and uploads a keep-alive connection is in the
/// middle of when the sensor starts (hundreds of MiB), whose later requests
/// are what the wait is for.  Traffic in both directions that is not HTTP
/// (a database or mail protocol over TLS) does not wait: it is given up at
/// its first round trip.
pub const MAX_WAIT_FOR_START_BYTES: u64 = 1 << 30;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    /// Request bodies keep at most this many bytes (and never more than `max_body_bytes`).
    pub max_request_body_kept: usize,
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_pending_requests: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_request_body_kept: MAX_REQUEST_BODY_KEPT,
            max_head_bytes: MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
            max_pending_requests: MAX_PENDING_REQUESTS,
        }
    }
}

impl HttpLimits {
    /// Bytes of a request body kept at most.
    pub fn request_body_cap(&self) -> usize {
        self.max_request_body_kept.min(self.max_body_bytes)
    }

    /// Request bodies keep a prefix by design (below the body cap): bytes
    /// past it are seen and counted, and do not make the body truncated.
    pub fn request_body_is_prefix(&self) -> bool {
        self.max_request_body_kept < self.max_body_bytes
    }

    /// Most memory one `ConnectionParser` can hold under these limits, whatever
    /// it is fed (as `ConnectionParser::buffered_bytes` counts it: capacities and
    /// what kept chunks pin).  HTTP/1.x: a head in progress per direction, every
    /// pending request (head and kept body), plus one response waiting for its
    /// request's body and one being read.  HTTP/2: see `h2::max_buffered_bytes`.
    pub fn max_buffered_bytes(&self) -> usize {
        use super::decode::{max_body_held, CHUNK_OVERHEAD};
        // A head pins at most twice its length (a slice of an event it is at
        // least half of, or a buffer grown by doubling).
        let head = self
            .max_head_bytes
            .saturating_mul(2)
            .saturating_add(CHUNK_OVERHEAD);
        let request = head.saturating_add(max_body_held(self.request_body_cap()));
        let response = head.saturating_add(max_body_held(self.max_body_bytes));
        let http1 = 2usize
            .saturating_mul(head.saturating_add(super::head::SNIFF_LEN))
            .saturating_add(self.max_pending_requests.saturating_mul(request))
            .saturating_add(2usize.saturating_mul(response))
            // Interim heads: those of the response being read, of one
            // waiting for its request's end, of one gathering them.
            .saturating_add(3 * MAX_INTERIM_BYTES);
        // A server's opening SETTINGS held until the client preface, then HTTP/2.
        let http2 = super::h2::max_buffered_bytes(self)
            .saturating_add(super::connection::MAX_EARLY_H2_BYTES.saturating_mul(2));
        http1.max(http2)
    }
}
