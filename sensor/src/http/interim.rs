//! INTERIM stand-in for the real parser (branch `http`); removed at merge.
#![allow(dead_code, unused_variables)]
use super::limits::HttpLimits;
use super::types::{Exchange, Role};
use crate::capture::event::Direction;

pub struct ConnectionParser;
#[derive(Default)]
pub struct ParserOutput {
    pub exchanges: Vec<Exchange>,
    pub errors: Vec<ParseErrorReason>,
    pub body_bytes_over_cap: u64,
}
pub enum ParseErrorReason {
    NotHttp,
}
impl ParseErrorReason {
    pub fn as_str(&self) -> &'static str {
        "not_http"
    }
}
impl ConnectionParser {
    pub fn new(limits: HttpLimits) -> Self {
        ConnectionParser
    }
    pub fn feed(
        &mut self,
        dir: Direction,
        data: &bytes::Bytes,
        ts_ns: u64,
        out: &mut ParserOutput,
    ) {
    }
    pub fn gap(&mut self, dir: Direction, lost: u64, ts_ns: u64, out: &mut ParserOutput) {}
    pub fn close(&mut self, ts_ns: u64, out: &mut ParserOutput) {}
    pub fn is_ignored(&self) -> bool {
        false
    }
    pub fn buffered_bytes(&self) -> usize {
        0
    }
    pub fn role(&self) -> Option<Role> {
        None
    }
}
