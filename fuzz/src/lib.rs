//! The sensor's HTTP stage, compiled from its own sources (`sensor/src/http`)
//! without the rest of the agent: the fuzz build then instruments a handful of
//! crates instead of the whole eBPF/async/TUI dependency tree.  The only thing
//! `http` takes from elsewhere in the sensor is `capture::event::Direction`,
//! mirrored here (a two-variant enum, checked against the real one by the
//! sensor's tests using the same names).

pub mod capture {
    pub mod event {
        /// Mirror of `sensor::capture::event::Direction`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Direction {
            Read,
            Write,
        }
    }
}

#[path = "../../sensor/src/http/mod.rs"]
pub mod http;

/// Drives the HTTP stage from fuzz input (shared by the connection targets).
pub mod drive;

/// The finding types the leak engine produces (`sensor/src/finding.rs`).
#[path = "../../sensor/src/finding.rs"]
pub mod finding;

/// The leak engine (`sensor/src/leak`): extraction, forms, matcher, decoding.
#[path = "../../sensor/src/leak/mod.rs"]
pub mod leak;
