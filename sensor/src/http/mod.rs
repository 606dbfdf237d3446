//! HTTP/1.x reassembly: two byte streams per connection → request/response pairs.

mod interim;
pub mod limits;
pub mod types;
pub use interim::*;
