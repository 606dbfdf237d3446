//! Kernel-facing capture: loading the eBPF programs, attaching them to TLS
//! libraries, reading the ring buffer.  `event` (parsing) needs no root.

pub mod config;
pub mod event;
pub mod record;
