//! A server in a separate root filesystem, the way a container runs one: a
//! minimal root built by copying the system Python, the standard library and
//! every shared library they need (so its libssl/libcrypto are COPIES, other
//! inodes than the host's), then `unshare --mount --fork chroot <root>
//! python3 /app/demo_api.py`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cert::TestCert;
use crate::net::free_port;
use crate::paths::{apps_dir, system_python};
use crate::proc::run_bounded;
use crate::server::Server;

/// Parts of the standard library a TLS HTTP server never imports.
const STDLIB_SKIP: &[&str] = &[
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "__pycache__",
];
/// Building the root must not take longer than this.
pub const ROOT_BUILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds a separate root in a temporary directory and starts `demo_api.py`
/// inside it (chroot in a new mount namespace); returns once it serves TLS.
/// The returned server's [`Server::dir`] is the root.
pub fn separate_root(cert: &TestCert) -> Result<Server> {
    let dir = tempfile::Builder::new()
        .prefix("sensor-e2e-root")
        .tempdir()?;
    let python = build_root(dir.path())?;
    let port = free_port()?;
    std::fs::create_dir_all(dir.path().join("app"))?;
    std::fs::create_dir_all(dir.path().join("certs"))?;
    std::fs::copy(
        apps_dir().join("demo_api.py"),
        dir.path().join("app/demo_api.py"),
    )?;
    std::fs::copy(cert.cert(), dir.path().join("certs/cert.pem"))?;
    std::fs::copy(cert.key(), dir.path().join("certs/key.pem"))?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--fork", "chroot"])
        .arg(dir.path())
        .arg(&python)
        .args(["/app/demo_api.py", "--port", &port.to_string()])
        .args(["--cert", "/certs/cert.pem", "--key", "/certs/key.pem"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    Server::spawn("root-demo-api", &cmd, port, cert, dir)
}

/// Copies Python, its standard library and shared libraries into `root`;
/// returns the interpreter's path inside the root.
pub fn build_root(root: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    let python = std::fs::canonicalize(system_python()).context("resolving the system python")?;
    let version = python
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.starts_with("python3."))
        .with_context(|| format!("{} is not a versioned python3.X binary", python.display()))?
        .to_string();
    let stdlib = PathBuf::from("/usr/lib").join(&version);
    if !stdlib.join("os.py").exists() {
        bail!(
            "standard library of {} not found at {}",
            python.display(),
            stdlib.display()
        );
    }

    // Top-level symlinks (merged /usr: /lib -> usr/lib, /bin -> usr/bin, …).
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        if let Ok(target) = std::fs::read_link(&host) {
            std::os::unix::fs::symlink(&target, root.join(top))?;
        }
    }
    for d in ["usr/bin", "tmp", "dev", "etc", "app", "certs"] {
        std::fs::create_dir_all(root.join(d))?;
    }

    copy_file(&python, &root.join(python.strip_prefix("/")?))?;
    std::os::unix::fs::symlink(&version, root.join("usr/bin/python3"))?;
    copy_tree(&stdlib, &root.join(stdlib.strip_prefix("/")?))?;

    // Shared libraries of the interpreter and of every extension module.
    let mut elves = vec![python.clone()];
    if let Ok(entries) = std::fs::read_dir(stdlib.join("lib-dynload")) {
        elves.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "so")),
        );
    }
    for lib in shared_libraries(&elves)? {
        let parent = std::fs::canonicalize(lib.parent().context("library without a directory")?)?;
        let dest = root
            .join(parent.strip_prefix("/")?)
            .join(lib.file_name().context("library without a name")?);
        if !dest.exists() {
            copy_file(&lib, &dest)?;
        }
    }

    make_device(&root.join("dev/null"), 1, 3)?;
    make_device(&root.join("dev/zero"), 1, 5)?;
    make_device(&root.join("dev/random"), 1, 8)?;
    make_device(&root.join("dev/urandom"), 1, 9)?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;

    if started.elapsed() > ROOT_BUILD_TIMEOUT {
        bail!("building the separate root took {:?}", started.elapsed());
    }
    Ok(Path::new("/").join(python.strip_prefix("/")?))
}

/// The shared libraries `ldd` lists for `elves` (one ldd run for all).
fn shared_libraries(elves: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new("ldd");
    cmd.args(elves);
    let out = run_bounded("ldd", &cmd, Duration::from_secs(30))?;
    // ldd exits non-zero when one of many files is not dynamic; the listing is still complete.
    let mut libs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.ends_with(':') {
                return None; // "file:" header of a multi-file listing
            }
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    libs.sort();
    libs.dedup();
    if !libs.iter().any(|l| l.to_string_lossy().contains("libssl")) {
        bail!("ldd found no libssl for the python ssl module");
    }
    Ok(libs)
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // fs::copy follows symlinks: the destination is a new file (new inode).
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if STDLIB_SKIP.contains(&name_str.as_ref()) || name_str.starts_with("config-") {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

fn make_device(path: &Path, major: u32, minor: u32) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: mknod(2) with a valid NUL-terminated path; root only.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    if rc != 0 {
        bail!(
            "mknod {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
