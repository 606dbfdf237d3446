//! HTTP/1.x and HTTP/2 reassembly: two byte streams per connection →
//! request/response pairs (HTTP/2: see [`h2`]).
//!
//! Modelled on hyper's h1 decoder: heads are parsed with httparse, bodies are
//! framed by content-length, chunked encoding or connection close, and handed on
//! as zero-copy slices of the captured bytes.  Nothing here trusts its input:
//! every limit is in [`limits`], every give-up a [`ParseErrorReason`].
//!
//! - Role: the direction that carries requests decides it (a process that reads
//!   a request line serves; one that writes it is a client), never sockets.
//! - Capture holes ([`ConnectionParser::gap`]): inside a body whose end the
//!   framing still knows (content-length, inside a chunk, close-delimited) the
//!   bytes are skipped and the body marked truncated.  Anywhere else the
//!   direction resynchronises: it scans for a line (or an SSL call) starting
//!   with a well-known method and a target, or `HTTP/1.x NNN`, and only takes it
//!   if the whole head then parses.  Responses lost in a hole are assumed to
//!   belong to all but the newest waiting request (true without pipelining);
//!   requests lost in a hole leave their responses unpaired
//!   (`response_without_request`) when they arrive before the next request.
//! - Memory: a head in progress per direction (< `max_head_bytes`), and per
//!   open message its head and at most `max_body_bytes` of body (requests:
//!   their first `max_request_body_kept` bytes, the rest counted and dropped),
//!   for at most `max_pending_requests` requests.  What is held is counted as
//!   held, not as kept: buffer capacities, a kept slice as the whole event it
//!   pins, a per-chunk overhead; small pieces are copied into gather blocks
//!   (`decode`): [`limits::HttpLimits::max_buffered_bytes`].

mod connection;
mod decode;
pub mod error;
pub mod h2;
mod head;
pub mod limits;
#[doc(hidden)]
pub mod throughput;
pub mod types;

#[cfg(test)]
mod tests;

pub use connection::{ConnectionParser, LookAt, ParserOutput, StreamLook};
pub use decode::{FeedData, MAX_CHUNK_EXT_BYTES, MAX_TRAILER_BYTES, SLICE_MIN};
pub use error::ParseErrorReason;
pub use head::HARD_MAX_HEADERS;
