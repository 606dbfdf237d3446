//! HTTP/2: the client preface comes first (so every input is read as
//! frames and HPACK blocks), then both directions as in `http_conn`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_http::capture::event::Direction;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| sensor_http::drive::connection(data, &[(Direction::Read, PREFACE)]));
