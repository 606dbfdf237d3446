//! HTTP/1.x reassembly: two byte streams per connection → request/response pairs.
//!
//! Modelled on hyper's h1 decoder: heads are parsed with httparse, bodies are
//! framed by content-length, chunked encoding or connection close, and handed on
//! as zero-copy slices of the captured bytes.  Nothing here trusts its input:
//! every limit is in [`limits`], every give-up a [`ParseErrorReason`].

mod connection;
mod decode;
pub mod error;
mod head;
pub mod limits;
pub mod types;

#[cfg(test)]
mod tests;

pub use connection::{ConnectionParser, ParserOutput};
pub use decode::{MAX_CHUNK_EXT_BYTES, MAX_TRAILER_BYTES};
pub use error::ParseErrorReason;
pub use head::HARD_MAX_HEADERS;
