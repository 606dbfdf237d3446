//! Embeds the eBPF object built by `cargo xtask build` into the agent.
//!
//! Looks at `$SENSOR_EBPF_OBJECT`, else `<workspace>/sensor-ebpf/target/bpfel-unknown-none/
//! release/sensor-ebpf`.  When neither exists an empty file is embedded, so `cargo
//! build/clippy/test` work without the nightly and `Capture::start` reports "not built".

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let default = manifest
        .parent()
        .expect("sensor is inside the workspace")
        .join("sensor-ebpf/target/bpfel-unknown-none/release/sensor-ebpf");
    println!("cargo:rerun-if-env-changed=SENSOR_EBPF_OBJECT");
    let object = std::env::var_os("SENSOR_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-changed={}", object.display());
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("sensor-ebpf.o");
    let bytes = std::fs::read(&object).unwrap_or_default();
    std::fs::write(&out, bytes).expect("writing OUT_DIR/sensor-ebpf.o");
}
