//! Bounds of the HTTP stage: every one a named constant, tested at the limit.

/// Body bytes kept per message by default; the rest is counted, not kept.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest request/response head (start line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in one head.
pub const MAX_HEADERS: usize = 128;
/// Requests waiting for their responses on one connection (pipelining depth).
pub const MAX_PENDING_REQUESTS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_pending_requests: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_head_bytes: MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
            max_pending_requests: MAX_PENDING_REQUESTS,
        }
    }
}

impl HttpLimits {
    /// Most bytes one `ConnectionParser` can hold under these limits, whatever it is
    /// fed: a head in progress per direction, every pending request (head and kept
    /// body), plus one response waiting for its request's body and one being read.
    pub fn max_buffered_bytes(&self) -> usize {
        let message = self.max_head_bytes.saturating_add(self.max_body_bytes);
        2usize
            .saturating_mul(self.max_head_bytes + super::head::SNIFF_LEN)
            .saturating_add(self.max_pending_requests.saturating_mul(message))
            .saturating_add(2usize.saturating_mul(message))
    }
}
