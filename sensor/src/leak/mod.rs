//! Leak detection: credentials a request carried, searched for in its response.
pub mod cache;
pub mod config;
pub use config::LeakConfig;
pub mod decode;
pub mod detector;
pub mod extract;
pub mod fingerprint;
pub mod forms;
pub mod matcher;
pub mod views;

pub use cache::CacheStats;
pub use detector::{redact_target, Detector, Inspection};
pub use fingerprint::{load_or_create_key, Fingerprinter};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_extract;
#[cfg(test)]
mod tests_match;
