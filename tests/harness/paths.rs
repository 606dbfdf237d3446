//! Where things are: the workspace, the tools venv, the apps, the sensor binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The workspace root (this crate is `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// `tests/apps`: the Python apps, the nginx template, the clients.
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apps")
}

/// The Python venv with fastapi, uvicorn, flask, gunicorn and httpx
/// (`cargo xtask setup`): env `SENSOR_TOOLS_VENV`, else `<workspace>/.tools/venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("SENSOR_TOOLS_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join(".tools/venv"),
    }
}

/// `program` run on Debian 13's glibc and OpenSSL 3.5 (unpacked by `cargo
/// xtask setup` into `<workspace>/.tools/debian13/root`), through that
/// glibc's own loader.
pub fn debian13_command(program: &Path) -> Result<std::process::Command> {
    let lib = workspace_root().join(".tools/debian13/root/usr/lib/x86_64-linux-gnu");
    let loader = lib.join("ld-linux-x86-64.so.2");
    if !loader.exists() {
        bail!(
            "{} not found: unpack Debian 13's OpenSSL with `cargo xtask setup`",
            loader.display()
        );
    }
    let mut cmd = std::process::Command::new(loader);
    cmd.arg("--library-path").arg(lib).arg(program);
    Ok(cmd)
}

/// A wheel set of other OpenSSL builds for Python (`cargo xtask setup`
/// installs `tests/apps/requirements-<set>.txt` into
/// `<workspace>/.tools/<set>`; `openssl111`: pyOpenSSL 22 on the 1.1.1n in
/// `cryptography` 36; `openssl35`: pyOpenSSL 25 on the 3.5.2 in
/// `cryptography` 45): put first on `PYTHONPATH`, the venv's Python runs on it.
pub fn wheel_set_pythonpath(set: &str) -> Result<PathBuf> {
    let dir = workspace_root().join(".tools").join(set);
    if !dir.join("requirements.txt").exists() {
        bail!(
            "{} is not installed: install the wheel set {set} with `cargo xtask setup`",
            dir.display()
        );
    }
    Ok(dir)
}

/// A program from the venv's `bin/`, with a message that says how to get it.
pub fn venv_bin(name: &str) -> Result<PathBuf> {
    let path = venv_dir().join("bin").join(name);
    if !path.exists() {
        bail!(
            "{} not found: create the tools venv with `cargo xtask setup` \
             (or set SENSOR_TOOLS_VENV to a venv with fastapi uvicorn flask gunicorn httpx)",
            path.display()
        );
    }
    Ok(path)
}

/// The system Python 3 (standard library only: the demo API and the
/// separate-root server need nothing else).
pub fn system_python() -> PathBuf {
    for candidate in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("python3")
}

/// The sensor binary: env `SENSOR_BIN`, else `target/release/sensor`, else
/// `target/debug/sensor`.
pub fn sensor_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SENSOR_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.exists() {
            bail!("SENSOR_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    for profile in ["release", "debug"] {
        let bin = target.join(profile).join("sensor");
        if bin.exists() {
            return Ok(bin);
        }
    }
    bail!(
        "sensor binary not found under {}/{{release,debug}}: build it with `cargo xtask build` \
         or set SENSOR_BIN",
        target.display()
    )
}
