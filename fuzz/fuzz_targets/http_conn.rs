//! Both directions interleaved, with capture holes and close, driven by the
//! input (see `sensor_http::drive`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sensor_http::drive::connection(data, &[]));
