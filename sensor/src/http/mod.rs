//! HTTP/1.x reassembly: two byte streams per connection → request/response pairs.

pub mod limits;
pub mod types;
