//! `cargo run --release --example http_throughput` (stable or nightly): the HTTP
//! stage's throughput baseline, built without fuzz instrumentation.
fn main() {
    for line in sensor_http::http::throughput::measure() {
        println!("{line}");
    }
}
