//! Why the HTTP stage gave up on a message or a connection.

/// One label value of `sensor_http_parse_errors_total{reason}`: a small fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseErrorReason {
    /// Not HTTP/1.x (TLS-in-TLS, a binary protocol...): both directions
    /// opened with bytes that are no message start, or one waited for a
    /// start past `MAX_WAIT_FOR_START_BYTES` with no head ever seen.  (One
    /// direction alone that opens so may be a connection joined midway: it
    /// waits for the next message start.)
    NotHttp,
    /// HTTP/2 that cannot be followed: a wrong preface, frames or header
    /// blocks that do not decode (RFC 9113 / RFC 7541), an HPACK table larger
    /// than the peer allowed.  (HTTP/2 itself is parsed: `http::h2`.)
    Http2,
    /// A request head httparse rejects, or a request with impossible framing.
    InvalidRequest,
    /// A response head httparse rejects, or a request where a response was expected.
    InvalidResponse,
    /// A head longer than `max_head_bytes`.
    HeadTooLarge,
    /// A head with more than `max_headers` headers.
    TooManyHeaders,
    /// Chunked framing that does not parse (bad size line, missing CRLF, huge trailer).
    InvalidChunk,
    /// A Content-Length that is not a number, or several that disagree.
    InvalidContentLength,
    /// A response with no request waiting for it, or to a request lost in
    /// a capture hole (dropped, parsing goes on).
    ResponseWithoutRequest,
    /// A request dropped unanswered: more than `max_pending_requests` were
    /// waiting for responses (HTTP/1.x: the oldest waiting is dropped and its
    /// response skipped; HTTP/2: the new stream is not followed).  Parsing
    /// goes on.
    TooManyPending,
    /// Bytes of a head were lost (capture hole): resynchronised at the next message start.
    GapInHead,
    /// Bytes of a body were lost where the framing cannot say where it ends.
    GapInBody,
    /// 101 Switching Protocols or a successful CONNECT: the connection stops being HTTP/1.x.
    Upgrade,
    /// The connection closed inside a message body its framing says is not
    /// over (a client that hung up on a download, a server killed
    /// mid-response).  The message is kept, cut: a response is still paired
    /// and searched as far as it got.
    ClosedMidMessage,
    /// A direction waited for a message start (after a capture hole, or
    /// joined in the middle of a message) past
    /// [`super::limits::MAX_WAIT_FOR_START_BYTES`]: the connection is given
    /// up.  (One where no head was ever seen is `not_http`.)
    NoMessageStart,
}

impl ParseErrorReason {
    pub const ALL: [ParseErrorReason; 15] = [
        ParseErrorReason::NotHttp,
        ParseErrorReason::Http2,
        ParseErrorReason::InvalidRequest,
        ParseErrorReason::InvalidResponse,
        ParseErrorReason::HeadTooLarge,
        ParseErrorReason::TooManyHeaders,
        ParseErrorReason::InvalidChunk,
        ParseErrorReason::InvalidContentLength,
        ParseErrorReason::ResponseWithoutRequest,
        ParseErrorReason::TooManyPending,
        ParseErrorReason::GapInHead,
        ParseErrorReason::GapInBody,
        ParseErrorReason::Upgrade,
        ParseErrorReason::ClosedMidMessage,
        ParseErrorReason::NoMessageStart,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ParseErrorReason::NotHttp => "not_http",
            ParseErrorReason::Http2 => "http2",
            ParseErrorReason::InvalidRequest => "invalid_request",
            ParseErrorReason::InvalidResponse => "invalid_response",
            ParseErrorReason::HeadTooLarge => "head_too_large",
            ParseErrorReason::TooManyHeaders => "too_many_headers",
            ParseErrorReason::InvalidChunk => "invalid_chunk",
            ParseErrorReason::InvalidContentLength => "invalid_content_length",
            ParseErrorReason::ResponseWithoutRequest => "response_without_request",
            ParseErrorReason::TooManyPending => "too_many_pending",
            ParseErrorReason::GapInHead => "gap_in_head",
            ParseErrorReason::GapInBody => "gap_in_body",
            ParseErrorReason::Upgrade => "upgrade",
            ParseErrorReason::ClosedMidMessage => "closed_mid_message",
            ParseErrorReason::NoMessageStart => "no_message_start",
        }
    }
}

impl std::fmt::Display for ParseErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
