//! `cargo xtask setup`: installs what a fresh Debian 12 root machine lacks.
//! Idempotent: every step first checks whether its result is already there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::util::{root, run_cmd};

/// The nightly that builds the eBPF crate (see /work/shared/notes/toolchain.md).
pub const EBPF_NIGHTLY: &str = "nightly-2026-05-20";
/// bpf-linker must link the same LLVM major as that nightly (22).
pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// System packages: TLS servers/clients for tests and demo, load generators,
/// monitoring and lint tools.
pub const APT_PACKAGES: &[&str] = &[
    "nginx",
    // TLS-terminating proxies in front of a plain-HTTP app (e2e_leaks).
    "haproxy",
    "apache2",
    "curl",
    "openssl",
    "ca-certificates",
    "python3",
    "python3-venv",
    "wrk",
    // h2load: `cargo xtask bench`'s HTTP/2 load.
    "nghttp2-client",
    "prometheus",
    "golang-go",
    // Debian's node links OpenSSL statically: the blind-spot test's example.
    "nodejs",
    "tmux",
    "yamllint",
    "iproute2",
    "linux-perf",
    // `cargo xtask bench` (event_cost) compiles a C program against libssl.
    "gcc",
    "libssl-dev",
    // Erlang/OTP's own TLS (`ssl` over the crypto NIF): a blind-spot test's example.
    "erlang-base",
    "erlang-crypto",
    "erlang-ssl",
    "erlang-inets",
];

/// Python packages in `<workspace>/.tools/venv`: the test servers' pinned
/// versions come from `tests/apps/requirements.txt` (the versions the apps were
/// verified with); these names are what `pip show` checks for.
pub const PIP_PACKAGES: &[&str] = &[
    "fastapi",
    "uvicorn",
    "flask",
    "gunicorn",
    "httpx",
    "h2",
    "pyOpenSSL",
    "hypercorn",
    "uvloop",
    "httptools",
    "daphne",
    "kubernetes-validate",
];
/// Installed next to the requirements file (manifest validation in the deploy checks).
const PIP_EXTRA: &[&str] = &["kubernetes-validate"];

#[derive(clap::Args, Default)]
pub struct Options {
    /// Only the eBPF toolchain (nightly, rust-src, bpf-linker); no apt or pip packages.
    #[arg(long)]
    pub toolchain_only: bool,
    /// Not Debian 13's OpenSSL runtime, which only the tests and benchmarks use
    /// (set by `cargo xtask demo`).
    #[arg(skip)]
    pub without_test_runtimes: bool,
}

/// `<workspace>/.tools`: gitignored prefix for bpf-linker and the venv.
pub fn tools_dir() -> PathBuf {
    root().join(".tools")
}

pub fn bpf_linker_path() -> PathBuf {
    tools_dir().join("bin").join("bpf-linker")
}

pub fn venv_dir() -> PathBuf {
    tools_dir().join("venv")
}

/// Debian 13's OpenSSL 3.5 (built with CET: `endbr64` at every function
/// entry, and OpenSSL 3.3's `ssl_write_internal` signature) with the glibc it
/// needs, unpacked under `.tools/debian13/root`: the tests run real servers
/// on it through its own loader, so the probe sites are checked on a second,
/// different OpenSSL build than the host's.
fn debian13_root() -> PathBuf {
    tools_dir().join("debian13/root")
}

/// Debian 13's glibc loader, in [`debian13_lib`].
const DEBIAN13_LOADER: &str = "ld-linux-x86-64.so.2";

/// Where Debian 13's loader, glibc and libssl are in [`debian13_root`].
fn debian13_lib() -> PathBuf {
    debian13_root().join("usr/lib/x86_64-linux-gnu")
}

/// [`debian13_lib`], when setup has unpacked its loader and libssl there.
pub fn debian13_unpacked() -> Option<PathBuf> {
    let lib = debian13_lib();
    (lib.join("libssl.so.3").exists() && lib.join(DEBIAN13_LOADER).exists()).then_some(lib)
}

/// `program` run on the glibc and libraries in `lib` (from
/// [`debian13_unpacked`]), through that glibc's own loader.
pub fn debian13_command(lib: &Path, program: &Path) -> Command {
    let mut c = Command::new(lib.join(DEBIAN13_LOADER));
    c.arg("--library-path").arg(lib).arg(program);
    c
}

/// Debian 13 packages unpacked into [`debian13_root`].
const DEBIAN13_PACKAGES: &[&str] = &["libc6", "libssl3t64", "zlib1g", "libzstd1"];

pub fn run(o: &Options) -> anyhow::Result<()> {
    toolchain()?;
    if !o.toolchain_only {
        apt_packages()?;
        python_venv()?;
        if !o.without_test_runtimes {
            debian13_openssl()?;
            crate::openssl_wheels::install_wheel_sets()?;
            crate::openssl_wheels::fetch_build_matrix()?;
        }
    }
    step("setup complete");
    Ok(())
}

pub(crate) fn step(msg: &str) {
    eprintln!("xtask setup: {msg}");
}

/// The eBPF toolchain: nightly + rust-src, then bpf-linker against its libLLVM.
pub fn toolchain() -> anyhow::Result<()> {
    nightly()?;
    bpf_linker()
}

fn nightly() -> anyhow::Result<()> {
    let have = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_NIGHTLY,
        ])
        .stderr(Stdio::null())
        .output()
        .context("rustup not found: install it from https://rustup.rs")?;
    let installed = String::from_utf8_lossy(&have.stdout);
    if have.status.success() && installed.lines().any(|l| l.starts_with("rust-src")) {
        step(&format!("{EBPF_NIGHTLY} with rust-src: already installed"));
        return Ok(());
    }
    step(&format!("installing {EBPF_NIGHTLY} with rust-src"));
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        EBPF_NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn nightly_libllvm() -> anyhow::Result<PathBuf> {
    let out = Command::new("rustc")
        .arg(format!("+{EBPF_NIGHTLY}"))
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc")?;
    if !out.status.success() {
        bail!("rustc +{EBPF_NIGHTLY} --print sysroot failed");
    }
    let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib");
    // The nightly ships libLLVM.so.<major>.<minor>-rust-<version>; take the one there is.
    let found = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        });
    found.with_context(|| format!("no libLLVM.so.* in {}", lib.display()))
}

fn bpf_linker_installed(path: &Path) -> bool {
    // It loads the nightly's libLLVM at run time (linked under .tools/lib).
    Command::new(path)
        .arg("--version")
        .env("LD_LIBRARY_PATH", tools_dir().join("lib"))
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false)
}

fn bpf_linker() -> anyhow::Result<()> {
    let linker = bpf_linker_path();
    let prefix = tools_dir();
    let libdir = prefix.join("lib");
    std::fs::create_dir_all(&libdir).with_context(|| format!("creating {}", libdir.display()))?;
    // bpf-linker's build script looks for $LLVM_PREFIX/lib/libLLVM.so; at run time
    // it needs the library under its own soname too.
    let llvm = nightly_libllvm()?;
    let soname = llvm.file_name().context("libLLVM path has a file name")?;
    for link in [libdir.join("libLLVM.so"), libdir.join(soname)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), llvm.display()))?;
    }
    if bpf_linker_installed(&linker) {
        step(&format!(
            "bpf-linker {BPF_LINKER_VERSION}: already in {}",
            linker.display()
        ));
        return Ok(());
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)",
        llvm.display()
    ));
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
                "--root",
            ])
            .arg(&prefix)
            .arg("--force")
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_installed(&linker) {
        bail!("bpf-linker was built but {} does not run", linker.display());
    }
    Ok(())
}

/// Packages of `wanted` that dpkg does not report as installed.
fn missing_apt_packages(wanted: &[&str]) -> Vec<String> {
    wanted
        .iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .stderr(Stdio::null())
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

fn apt_packages() -> anyhow::Result<()> {
    let missing = missing_apt_packages(APT_PACKAGES);
    if missing.is_empty() {
        step(&format!(
            "apt packages: all {} installed",
            APT_PACKAGES.len()
        ));
        return Ok(());
    }
    if !crate::util::is_root() {
        bail!(
            "apt packages missing ({}): run `cargo xtask setup` as root",
            missing.join(" ")
        );
    }
    step(&format!("apt packages to install: {}", missing.join(" ")));
    run_cmd(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn python_venv() -> anyhow::Result<()> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    if !python.exists() {
        step(&format!("creating Python venv {}", venv.display()));
        run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    // `pip show` fails only when none of them is installed: a missing one is
    // named on stderr ("Package(s) not found").
    let have_all = Command::new(&python)
        .args(["-m", "pip", "show", "-q"])
        .args(PIP_PACKAGES)
        .stdout(Stdio::null())
        .output()
        .map(|o| o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("not found"))
        .unwrap_or(false);
    if have_all {
        step(&format!(
            "pip packages: all {} installed in {}",
            PIP_PACKAGES.len(),
            venv.display()
        ));
        return Ok(());
    }
    let requirements = root().join("tests/apps/requirements.txt");
    step(&format!(
        "pip install -r {} {}",
        requirements.display(),
        PIP_EXTRA.join(" ")
    ));
    run_cmd(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .args(PIP_EXTRA),
    )
}

/// Downloads [`DEBIAN13_PACKAGES`] with apt (signatures checked against the
/// host's Debian archive keyring) into a private apt state under
/// `.tools/debian13`, and unpacks them into [`debian13_root`].  Nothing is
/// installed on the host.
fn debian13_openssl() -> anyhow::Result<()> {
    let root = debian13_root();
    if debian13_unpacked().is_some() {
        step(&format!("Debian 13 OpenSSL: present in {}", root.display()));
        return Ok(());
    }
    if std::env::consts::ARCH != "x86_64" {
        step("Debian 13 OpenSSL: skipped (its tests are for x86-64)");
        return Ok(());
    }
    let base = tools_dir().join("debian13");
    let apt = base.join("apt");
    // Only this run's downloads get unpacked.
    let _ = std::fs::remove_dir_all(apt.join("debs"));
    for d in ["lists/partial", "cache/archives/partial", "debs"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    let sources = apt.join("sources.list");
    std::fs::write(
        &sources,
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://deb.debian.org/debian trixie main\n",
    )?;
    let opts = |c: &mut Command| {
        c.arg("-q")
            .arg(format!("-oDir::Etc::SourceList={}", sources.display()))
            .arg("-oDir::Etc::SourceParts=/dev/null")
            .arg(format!(
                "-oDir::State::Lists={}",
                apt.join("lists").display()
            ))
            .arg(format!("-oDir::Cache={}", apt.join("cache").display()))
            .arg("-oDir::State::status=/dev/null")
            .arg("-oAPT::Architecture=amd64")
            .arg("-oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false")
            .arg("-oAPT::Sandbox::User=root")
            .arg("-oDebug::NoLocking=1");
    };
    step("Debian 13 OpenSSL: apt-get update (trixie, private state)");
    let mut update = Command::new("apt-get");
    opts(&mut update);
    run_cmd(update.arg("update"))
        .context("fetching the Debian 13 package index (deb.debian.org)")?;
    let debs = apt.join("debs");
    let mut download = Command::new("apt-get");
    opts(&mut download);
    run_cmd(
        download
            .arg("download")
            .args(DEBIAN13_PACKAGES)
            .current_dir(&debs),
    )
    .context("downloading the Debian 13 OpenSSL packages")?;
    let staging = base.join("root.partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    for entry in std::fs::read_dir(&debs)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&staging, &root)?;
    step(&format!(
        "Debian 13 OpenSSL: unpacked into {}",
        root.display()
    ));
    Ok(())
}
