//! `sensor watch`: the operators' live terminal view.
mod interim;
pub use interim::*;
