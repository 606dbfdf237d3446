//! Leak detection: credentials a request carried, searched for in its response.
pub mod config;
mod interim;
pub use config::LeakConfig;
pub use interim::*;
