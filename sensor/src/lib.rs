//! The sensor: finds API credentials leaking out of HTTPS APIs, live.
//!
//! Stages (each a module with a small typed interface; only `capture` needs root):
//! `capture` (eBPF events) → `http` (request/response pairs) → `leak` (findings)
//! → `outputs` (findings, pairs, metrics, live API).  `pipeline` wires them and is
//! shared by `sensor run` and `sensor replay`.

pub mod blind;
pub mod capture;
pub mod cli;
pub mod config;
pub mod finding;
pub mod http;
pub mod identity;
pub mod leak;
pub mod memory;
pub mod outputs;
pub mod pipeline;
pub mod watch;

#[cfg(test)]
pub(crate) mod test_rng;
#[cfg(test)]
pub(crate) mod test_tools;
