//! Other OpenSSL builds for the tests, from the `cryptography` wheels on PyPI
//! (which keeps every old wheel, long after the distributions that shipped
//! those OpenSSL versions are archived).  Each wheel links OpenSSL into its
//! extension module, keeping the local symbols in `.symtab`: the tests check
//! the probe sites found from the wrappers' code against them.
//!
//! - **Wheel sets** (`tests/apps/requirements-<set>.txt`), installed with
//!   `pip install --target` into `.tools/<set>`: the e2e tests run
//!   `leaky_pyopenssl.py` on them (the venv's Python, the set first on
//!   `PYTHONPATH`).
//! - **The build matrix** (`tests/apps/openssl-builds.txt`): only the
//!   extension module, extracted into `.tools/openssl-builds/`, for the
//!   sensor's unit test that plans each one (no process runs them: the
//!   musllinux ones need musl's loader).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::setup::{step, tools_dir, venv_dir};
use crate::util::{root, run_cmd};

/// The wheel sets: `tests/apps/requirements-<set>.txt` → `.tools/<set>`.
pub const WHEEL_SETS: &[&str] = &["openssl111", "openssl35"];

/// Installs each of [`WHEEL_SETS`] unless the requirements it was installed
/// from are the current ones (a copy is kept in its directory as the stamp).
pub fn install_wheel_sets() -> anyhow::Result<()> {
    for set in WHEEL_SETS {
        let dir = tools_dir().join(set);
        let requirements = root().join(format!("tests/apps/requirements-{set}.txt"));
        let wanted = std::fs::read(&requirements)
            .with_context(|| format!("reading {}", requirements.display()))?;
        let stamp = dir.join("requirements.txt");
        if std::fs::read(&stamp).is_ok_and(|have| have == wanted) {
            step(&format!("wheel set {set}: present in {}", dir.display()));
            continue;
        }
        let _ = std::fs::remove_dir_all(&dir);
        step(&format!(
            "wheel set {set}: installing into {}",
            dir.display()
        ));
        run_cmd(
            pip()
                .args(["install", "--target"])
                .arg(&dir)
                .arg("-r")
                .arg(&requirements),
        )?;
        std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    }
    Ok(())
}

/// `.tools/openssl-builds`: one `cryptography-<version>-<platform>.so` per
/// line of `tests/apps/openssl-builds.txt`.
pub fn build_matrix_dir() -> PathBuf {
    tools_dir().join("openssl-builds")
}

/// Downloads each wheel of `tests/apps/openssl-builds.txt` (`<version>
/// <platform tag>` per line) that is not extracted yet, and keeps only its
/// extension module.
pub fn fetch_build_matrix() -> anyhow::Result<()> {
    let list = root().join("tests/apps/openssl-builds.txt");
    let text =
        std::fs::read_to_string(&list).with_context(|| format!("reading {}", list.display()))?;
    let dir = build_matrix_dir();
    std::fs::create_dir_all(&dir)?;
    let mut present = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((version, platform)) = line.split_once(char::is_whitespace) else {
            bail!(
                "{}: `{line}` is not `<version> <platform tag>`",
                list.display()
            );
        };
        let platform = platform.trim();
        let so = dir.join(format!("cryptography-{version}-{platform}.so"));
        if so.exists() {
            present += 1;
            continue;
        }
        let download = tempfile::tempdir()?;
        step(&format!(
            "OpenSSL build matrix: cryptography {version} ({platform})"
        ));
        run_cmd(
            pip()
                .args(["download", "--no-deps", "--platform", platform])
                .arg(format!("cryptography=={version}"))
                .arg("-d")
                .arg(download.path()),
        )?;
        extract_extension(download.path(), platform, &so)?;
    }
    step(&format!(
        "OpenSSL build matrix: {present} already in {}",
        dir.display()
    ));
    Ok(())
}

/// Writes the largest `cryptography/hazmat/bindings/_*.so` of the one wheel
/// in `download` (the module OpenSSL is linked into) to `to`, after checking
/// that the wheel is `platform`'s.
fn extract_extension(download: &Path, platform: &str, to: &Path) -> anyhow::Result<()> {
    const EXTRACT: &str = "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
        m = max((i for i in z.infolist() if i.filename.startswith('cryptography/hazmat/bindings/_') \
        and i.filename.endswith('.so')), key=lambda i: i.file_size); \
        open(sys.argv[2] + '.partial', 'wb').write(z.read(m))";
    let wheel = std::fs::read_dir(download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip downloaded no wheel into {}", download.display()))?;
    let name = wheel.file_name().unwrap_or_default().to_string_lossy();
    if !name.contains(platform) {
        bail!("pip chose {name}, not a {platform} wheel");
    }
    run_cmd(
        Command::new(venv_dir().join("bin/python"))
            .args(["-c", EXTRACT])
            .arg(&wheel)
            .arg(to),
    )?;
    let partial = to.with_extension("so.partial");
    std::fs::rename(&partial, to)
        .with_context(|| format!("moving {} to {}", partial.display(), to.display()))
}

/// The venv's pip, quiet, binary wheels only.
fn pip() -> Command {
    let mut c = Command::new(venv_dir().join("bin/python"));
    c.args(["-m", "pip"]);
    c.env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_QUIET", "1")
        .env("PIP_ONLY_BINARY", ":all:");
    c
}
