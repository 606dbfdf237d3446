use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg(if tool == "go" { "version" } else { "--version" })
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        crate::test_tools::tool_missing(tool);
    }
    ok
}

#[test]
fn maps_lines() {
    let text = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fd:01 1311 /usr/bin/python3.11
55d0c0a28000-55d0c0cf0000 r-xp 00028000 fd:01 1311 /usr/bin/python3.11
7f10c0000000-7f10c0021000 rw-p 00000000 00:00 0 
7f10c1000000-7f10c1040000 r-xp 00020000 fd:01 2622 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f10c2000000-7f10c2040000 r-xp 00000000 103:02 77 /opt/app/libgnutls.so.30 (deleted)
7ffc3a5d3000-7ffc3a5f4000 rw-p 00000000 00:00 0                          [stack]
7ffc3a5fb000-7ffc3a5fd000 r-xp 00000000 00:00 0                          [vdso]
bad line
";
    let m = parse_maps(text);
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].key, (libc::makedev(0xfd, 1), 1311));
    assert!(m[0].executable, "r-x of the same file merged in");
    assert_eq!(m[1].path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
    assert_eq!(m[2].key, (libc::makedev(0x103, 2), 77));
    assert_eq!(m[2].path, "/opt/app/libgnutls.so.30");
    assert!(m[2].deleted && !m[1].deleted);
}

#[test]
fn libraries_by_name() {
    assert_eq!(
        library_reason_by_name("/usr/lib/x86_64-linux-gnu/libgnutls.so.30"),
        Some("gnutls")
    );
    assert_eq!(library_reason_by_name("/usr/lib/libnss3.so"), Some("nss"));
    assert_eq!(library_reason_by_name("/usr/lib/libssl3.so"), Some("nss"));
    assert_eq!(
        library_reason_by_name("/usr/lib/libwolfssl.so.35"),
        Some("wolfssl")
    );
    assert_eq!(
        library_reason_by_name("/usr/lib/libmbedtls.so.14"),
        Some("mbedtls")
    );
    assert_eq!(
        library_reason_by_name("/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"),
        Some("java_tls")
    );
    assert_eq!(
        library_reason_by_name("/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so"),
        None
    );
    assert_eq!(
        library_reason_by_name("/usr/local/lib/librustls.so"),
        Some("rustls")
    );
    assert_eq!(
        library_reason_by_name("/usr/lib/x86_64-linux-gnu/libs2n.so.1"),
        Some("unknown_tls")
    );
    assert_eq!(
        library_reason_by_name("/usr/lib/x86_64-linux-gnu/libbotan-2.so.19"),
        Some("unknown_tls")
    );
    assert_eq!(
        library_reason_by_name("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
        None
    );
    assert!(is_shared_libssl("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
    assert!(is_shared_libssl(
        "/site-packages/cryptography.libs/libssl-3b2c1a.so.3"
    ));
    assert!(!is_shared_libssl("/usr/bin/node"));
}

fn libssl_path() -> Option<String> {
    [
        "/lib/x86_64-linux-gnu/libssl.so.3",
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/lib/aarch64-linux-gnu/libssl.so.3",
    ]
    .iter()
    .find(|p| Path::new(p).exists())
    .map(|p| p.to_string())
}

/// Compiles `src` (C) with `cc`, stripped or not.
fn cc_build(dir: &Path, name: &str, src: &str, strip: bool) -> PathBuf {
    cc_build_with(dir, name, src, if strip { &["-s"] } else { &[] })
}

/// Compiles `src` (C) with `cc` and extra flags (`-shared -fPIC` for a library).
fn cc_build_with(dir: &Path, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let bin = dir.join(name);
    let mut cmd = Command::new("cc");
    cmd.arg("-O1").args(flags).arg(&c).arg("-o").arg(&bin);
    let out = cmd.output().expect("cc");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// A Rust program with rustls in it, as the ELF shows it: by its mangled
/// symbols, or, stripped, by rustls's source paths in its panic locations.
/// (Stand-ins built with cc: a Rust build pulling rustls takes minutes.)
#[test]
fn rustls_programs_are_recognised() {
    if !have("cc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let classify = |p: &Path| classify_elf(File::open(p).unwrap());
    let with_symbol = cc_build(
        dir.path(),
        "with_symbol",
        "void w(void) __asm__(\"_ZN6rustls4conn10connection6Writer5write17h0123456789abcdefE\");\n\
         void w(void) {}\n\
         int main(void) { w(); return 0; }\n",
        false,
    );
    assert_eq!(classify(&with_symbol), Some("rustls"));
    let stripped = cc_build(
        dir.path(),
        "stripped",
        "#include <stdio.h>\n\
         int main(int argc, char **argv) {\n\
           if (argc > 5) puts(\"/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/rustls-0.23.12/src/conn.rs\");\n\
           return 0; }\n",
        true,
    );
    assert_eq!(classify(&stripped), Some("rustls"));
    // A symbol that only contains the letters, and an unstripped program
    // whose strings mention rustls, are not rustls programs.
    let lookalike = cc_build(
        dir.path(),
        "lookalike",
        "#include <stdio.h>\n\
         void trustlsx(void) {}\n\
         int main(int argc, char **argv) { if (argc > 5) puts(\"/rustls-\"); trustlsx(); return 0; }\n",
        false,
    );
    assert_eq!(classify(&lookalike), None);
}

#[test]
fn elf_classification_of_system_files() {
    let classify = |p: &str| classify_elf(File::open(p).unwrap());
    assert_eq!(classify("/bin/ls"), None, "no TLS");
    assert_eq!(
        classify("/usr/bin/curl"),
        None,
        "imports SSL_* from a shared libssl"
    );
    if let Some(libssl) = libssl_path() {
        assert_eq!(
            classify(&libssl),
            Some("static_openssl"),
            "defines SSL_write"
        );
    }
    if Path::new("/usr/bin/node").exists() && have("node") {
        assert_eq!(classify("/usr/bin/node"), Some("static_openssl"));
    }
    // Not an ELF file at all.
    assert_eq!(classify("/etc/hostname"), None);
}

struct Kid(Child);
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> (Kid, BufReader<ChildStdout>) {
    let mut c = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let out = BufReader::new(c.stdout.take().unwrap());
    (Kid(c), out)
}

fn wait_for(out: &mut BufReader<ChildStdout>, word: &str) {
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), word);
}

const GO_TLS_SERVER: &str = r#"package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"time"
)

func main() {
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return nil, errors.New("no certificate")
	}}
	l, err := tls.Listen("tcp", os.Args[1], cfg)
	if err != nil {
		panic(err)
	}
	fmt.Println("listening")
	go func() {
		for {
			c, err := l.Accept()
			if err == nil {
				c.Close()
			}
		}
	}()
	time.Sleep(120 * time.Second)
}
"#;

const GO_PLAIN_SERVER: &str = r#"package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	l, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		panic(err)
	}
	fmt.Println("listening")
	_ = l
	time.Sleep(120 * time.Second)
}
"#;

/// Builds a Go program (the build cache lives under target/ so reruns are quick).
fn go_build(dir: &Path, name: &str, src: &str) -> PathBuf {
    let src_path = dir.join(format!("{name}.go"));
    std::fs::write(&src_path, src).unwrap();
    let bin = dir.join(name);
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-build-cache");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src_path)
        .env("GOCACHE", &cache)
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .output()
        .expect("go build");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// (st_dev, st_ino) of the libssl a process maps, as the capture stage would record it.
fn mapped_libssl_key(pid: u32) -> FileKey {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let m = parse_maps(&maps)
        .into_iter()
        .find(|m| is_shared_libssl(&m.path))
        .expect("python maps libssl after `import ssl`");
    let md = std::fs::metadata(format!("/proc/{pid}/root{}", m.path)).unwrap();
    (md.dev(), md.ino())
}

#[test]
fn go_and_node_are_blind_python_ssl_covered_plain_servers_not_blind() {
    if !(have("go") && have("node") && have("python3")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let go_tls = go_build(dir.path(), "gotls", GO_TLS_SERVER);
    let go_plain = go_build(dir.path(), "goplain", GO_PLAIN_SERVER);
    eprintln!("go builds: {:?}", t.elapsed());
    assert_eq!(classify_elf(File::open(&go_tls).unwrap()), Some("go_tls"));
    assert_eq!(
        classify_elf(File::open(&go_plain).unwrap()),
        None,
        "Go without crypto/tls"
    );

    let (go, mut go_out) = spawn(Command::new(&go_tls).arg("127.0.0.1:21200"));
    wait_for(&mut go_out, "listening");
    let (goplain, mut goplain_out) = spawn(Command::new(&go_plain).arg("127.0.0.1:21204"));
    wait_for(&mut goplain_out, "listening");
    let (node, mut node_out) = spawn(Command::new("node").args([
        "-e",
        "require('https').createServer({}, (q, s) => s.end()).listen(21201, '127.0.0.1', () => console.log('listening')); setTimeout(() => process.exit(0), 120000)",
    ]));
    wait_for(&mut node_out, "listening");
    let (py_tls, mut py_tls_out) = spawn(Command::new("python3").args([
        "-c",
        "import socket, ssl, time\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\ns = socket.socket()\n\
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', 21202))\ns.listen(8)\n\
print('listening', flush=True)\ntime.sleep(120)",
    ]));
    wait_for(&mut py_tls_out, "listening");
    let (py_plain, mut py_plain_out) = spawn(Command::new("python3").args([
        "-c",
        "import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind(('127.0.0.1', 21203))\ns.listen(8)\nprint('listening', flush=True)\ntime.sleep(120)",
    ]));
    wait_for(&mut py_plain_out, "listening");

    let attached: HashSet<FileKey> = [mapped_libssl_key(py_tls.0.id())].into();
    let ours = [
        go.0.id(),
        goplain.0.id(),
        node.0.id(),
        py_tls.0.id(),
        py_plain.0.id(),
    ];
    let mut scanner = BlindScanner::new();
    let t = Instant::now();
    let all = scanner.scan(&attached);
    let first = t.elapsed();
    let t = Instant::now();
    let again = scanner.scan(&attached);
    let cached = t.elapsed();
    eprintln!(
        "scan: {first:?} first, {cached:?} with the ELF cache; {} blind on this host",
        all.len()
    );
    for found in [&all, &again] {
        let mine: Vec<(u32, &str)> = found
            .iter()
            .filter(|b| ours.contains(&b.pid))
            .map(|b| (b.pid, b.reason.as_str()))
            .collect();
        assert_eq!(mine, {
            let mut v = vec![(go.0.id(), "go_tls"), (node.0.id(), "static_openssl")];
            v.sort();
            v
        });
    }
    let g = all.iter().find(|b| b.pid == go.0.id()).unwrap();
    assert_eq!(g.comm, "gotls");

    // The Go binary replaced on disk by a TLS-free one (an upgrade while it
    // runs): the running process is still judged by what it mapped.
    std::fs::remove_file(&go_tls).unwrap();
    std::fs::copy(&go_plain, &go_tls).unwrap();
    let replaced = BlindScanner::new().scan(&attached);
    let g = replaced
        .iter()
        .find(|b| b.pid == go.0.id())
        .expect("still reported");
    assert_eq!(g.reason, "go_tls");

    // Without the attachment the Python server is blind too: its libssl is not probed.
    let none = scanner.scan(&HashSet::new());
    let py = none
        .iter()
        .find(|b| b.pid == py_tls.0.id())
        .expect("python reported");
    assert_eq!(py.reason, "openssl_unattached");
    assert!(!none
        .iter()
        .any(|b| b.pid == py_plain.0.id() || b.pid == goplain.0.id()));

    // The gauge counts by reason, and returns to 0.
    let metrics = Metrics::new();
    let mine: Vec<BlindProcess> = all.into_iter().filter(|b| ours.contains(&b.pid)).collect();
    update_blind_gauge(&metrics, &mine);
    assert_eq!(
        metrics
            .blind_processes
            .with_label_values(&["go_tls", "false"])
            .get(),
        1
    );
    assert_eq!(
        metrics
            .blind_processes
            .with_label_values(&["static_openssl", "false"])
            .get(),
        1
    );
    assert_eq!(
        metrics
            .blind_processes
            .with_label_values(&["gnutls", "false"])
            .get(),
        0
    );
    update_blind_gauge(&metrics, &[]);
    assert_eq!(
        metrics
            .blind_processes
            .with_label_values(&["go_tls", "false"])
            .get(),
        0
    );
    drop((go, goplain, node, py_tls, py_plain));
    std::thread::sleep(Duration::from_millis(50));
}

/// A stripped shared library with a `.dynsym` of its own exports (none of
/// them SSL_*) and `marker` in `.rodata`: grpcio's cygrpc.so in small.
fn stripped_library(dir: &Path, name: &str, marker: &str) -> PathBuf {
    cc_build_with(
        dir,
        name,
        &format!(
            "const char *grpc_version_string(void) {{ return \"{marker}\"; }}\n\
             int grpc_init(void) {{ return 1; }}\n"
        ),
        &["-shared", "-fPIC", "-s"],
    )
}

#[test]
fn stripped_library_with_a_dynsym_and_boringssl_inside() {
    if !have("cc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let classify = |p: &Path| classify_elf(File::open(p).unwrap());
    let lib = stripped_library(dir.path(), "libgrpcish.so", "BoringSSL");
    let data = std::fs::read(&lib).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    assert!(
        elf.symbols().next().is_none() && elf.dynamic_symbols().next().is_some(),
        "no .symtab, a .dynsym"
    );
    assert_eq!(classify(&lib), Some("boringssl"));
    let plain = stripped_library(dir.path(), "libplain.so", "grpc 1.62");
    assert_eq!(classify(&plain), None);
    // libcrypto-like: OpenSSL's version string with a .dynsym is not TLS code.
    let crypto = stripped_library(dir.path(), "libcryptoish.so", "OpenSSL 3.0.19 27 Jan 2026");
    assert_eq!(classify(&crypto), None);
    // How long classifying a real one takes (its .rodata searched), when here.
    let cygrpc = "/work/cap/venv/lib/python3.11/site-packages/grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so";
    if Path::new(cygrpc).exists() {
        let t = Instant::now();
        assert_eq!(classify(Path::new(cygrpc)), Some("boringssl"));
        eprintln!("classify cygrpc.so: {:?}", t.elapsed());
    }
}

/// A /proc tree for one process holding TCP socket 5151 with these maps.
fn fake_process(root: &Path, pid: u32, exe: &str, maps: &[&str]) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(dir.join("fd")).unwrap();
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::os::unix::fs::symlink("socket:[5151]", dir.join("fd/3")).unwrap();
    std::fs::write(
        dir.join("net/tcp"),
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
0: 0100007F:5208 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
    let lines: Vec<String> = maps
        .iter()
        .enumerate()
        .map(|(i, path)| {
            format!(
                "7f00{i:02x}000000-7f00{i:02x}100000 r-xp 00000000 fd:01 {} {path}\n",
                9000 + i
            )
        })
        .collect();
    std::fs::write(dir.join("maps"), lines.concat()).unwrap();
    std::fs::write(dir.join("comm"), format!("{}\n", file_name(exe))).unwrap();
}

#[test]
fn erlang_vm_with_otp_crypto_is_blind_on_a_synthetic_proc() {
    let root = tempfile::tempdir().unwrap();
    let beam = "/usr/lib/erlang/erts-13.1.5/bin/beam.smp";
    let nif = "/usr/lib/erlang/lib/crypto-5.1.2/priv/lib/crypto.so";
    let libcrypto = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3";
    fake_process(root.path(), 100, beam, &[beam, nif, libcrypto]);
    // Without OTP's crypto (plain gen_tcp): nothing to decrypt.
    fake_process(root.path(), 101, beam, &[beam, libcrypto]);
    // A release with its own runtime: the VM known by its erts-* directory.
    let rel = "/opt/app/erts-14.2/bin/beam.smp";
    let rel_nif = "/opt/app/lib/crypto-5.4/priv/lib/crypto.so";
    fake_process(
        root.path(),
        102,
        "/opt/app/erts-14.2/bin/erlexec",
        &[rel, rel_nif],
    );
    // Something else that has a crypto.so under priv/lib: not the VM.
    fake_process(
        root.path(),
        103,
        "/usr/bin/python3",
        &["/usr/bin/python3", nif],
    );
    let found = BlindScanner::with_proc_root(root.path()).scan(&HashSet::new());
    let got: Vec<(u32, &str)> = found.iter().map(|b| (b.pid, b.reason.as_str())).collect();
    assert_eq!(got, [(100, "erlang_tls"), (102, "erlang_tls")]);
    assert_eq!(found[0].comm, "beam.smp");
    assert!(REASONS.contains(&"erlang_tls"));
}

fn have_erl() -> bool {
    // `erl` has no --version: ask the VM to print its release and stop.
    let ok = Command::new("erl")
        .args([
            "-noshell",
            "-eval",
            "io:format(erlang:system_info(otp_release)), halt().",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        crate::test_tools::tool_missing("erl");
    }
    ok
}

/// `erl` running `expr` and then waiting; prints "listening" when `expr` did.
fn spawn_erl(expr: &str) -> (Kid, BufReader<ChildStdout>) {
    spawn(Command::new("erl").args([
        "-noshell",
        "-eval",
        &format!("{expr}, io:format(\"listening~n\"), timer:sleep(120000), halt()."),
    ]))
}

#[test]
fn erlang_ssl_server_is_blind_plain_erlang_server_is_not() {
    if !have_erl() {
        return;
    }
    let (tls, mut tls_out) = spawn_erl(
        "{ok, _} = application:ensure_all_started(ssl), \
         {ok, _} = ssl:listen(21210, [{ip, {127,0,0,1}}, {reuseaddr, true}])",
    );
    wait_for(&mut tls_out, "listening");
    let (plain, mut plain_out) =
        spawn_erl("{ok, _} = gen_tcp:listen(21211, [{ip, {127,0,0,1}}, {reuseaddr, true}])");
    wait_for(&mut plain_out, "listening");
    let ours = [tls.0.id(), plain.0.id()];
    let found = BlindScanner::new().scan(&HashSet::new());
    let mine: Vec<(u32, &str, &str)> = found
        .iter()
        .filter(|b| ours.contains(&b.pid))
        .map(|b| (b.pid, b.comm.as_str(), b.reason.as_str()))
        .collect();
    assert_eq!(mine, [(tls.0.id(), "beam.smp", "erlang_tls")]);
}

/// The (st_dev, st_ino) of the libssl a live process maps.
fn attached_libssl(pid: u32) -> HashSet<FileKey> {
    [mapped_libssl_key(pid)].into()
}

/// A Python server that imported `ssl` and loaded `lib` with ctypes.
fn python_with_ssl_and(lib: &str, port: u16) -> (Kid, BufReader<ChildStdout>) {
    spawn(Command::new("python3").args([
        "-c",
        &format!(
            "import ctypes, socket, ssl, time\nctypes.CDLL({lib:?})\ns = socket.socket()\n\
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', {port}))\ns.listen(8)\n\
print('listening', flush=True)\ntime.sleep(120)"
        ),
    ]))
}

#[test]
fn attached_libssl_does_not_hide_another_tls_stack() {
    if !(have("python3") && have("cc")) || libssl_path().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let grpcish = stripped_library(dir.path(), "libgrpcish.so", "BoringSSL");
    // grpcio's BoringSSL next to Python's ssl.
    let (boring, mut out) = python_with_ssl_and(grpcish.to_str().unwrap(), 21220);
    wait_for(&mut out, "listening");
    // pycurl's GnuTLS next to Python's ssl (GnuTLS loaded for its own sake).
    let (gnutls, mut out) = python_with_ssl_and("libgnutls.so.30", 21221);
    wait_for(&mut out, "listening");
    let mut scanner = BlindScanner::new();
    let check = |scanner: &mut BlindScanner, pid: u32| {
        let mut tcp = HashMap::new();
        scanner.check_process(pid, &attached_libssl(pid), &mut tcp)
    };
    assert_eq!(check(&mut scanner, boring.0.id()), Some("boringssl"));
    assert_eq!(check(&mut scanner, gnutls.0.id()), Some("gnutls"));
    // Debian's libcurl (OpenSSL) pulls GnuTLS in through librtmp and libldap:
    // only an OpenSSL user needs it, so the attached libssl covers it.
    let libcurl = [
        "/usr/lib/x86_64-linux-gnu/libcurl.so.4",
        "/lib/x86_64-linux-gnu/libcurl.so.4",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    if let Some(libcurl) = libcurl {
        let (curl, mut out) = python_with_ssl_and(libcurl, 21222);
        wait_for(&mut out, "listening");
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", curl.0.id())).unwrap();
        if maps.contains("libgnutls") {
            eprintln!("libcurl.so.4 maps GnuTLS here (librtmp/libldap)");
        }
        assert_eq!(check(&mut scanner, curl.0.id()), None);
    }
}

/// A short-lived GnuTLS client (wget's kind): judged right after its exec it
/// is counted once, though no periodic scan ever lists it.
#[test]
fn short_lived_blind_process_is_counted_once() {
    if !have("python3") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (client, mut out) = spawn(Command::new("python3").args([
        "-c",
        &format!(
            "import ctypes, socket, sys\nctypes.CDLL('libgnutls.so.30')\n\
s = socket.create_connection(('127.0.0.1', {port}))\nprint('connected', flush=True)\nsys.stdin.read()"
        ),
    ]).stdin(Stdio::piped()));
    wait_for(&mut out, "connected");
    let pid = client.0.id();
    let metrics = Metrics::new();
    let seen = |m: &Metrics| {
        m.blind_processes_seen
            .with_label_values(&["gnutls", "false"])
            .get()
    };
    assert_eq!(
        judge_new_process(pid, &HashSet::new(), &metrics),
        Some("gnutls")
    );
    assert_eq!(
        judge_new_process(pid, &HashSet::new(), &metrics),
        Some("gnutls")
    );
    assert_eq!(seen(&metrics), 1, "once per process");
    // The periodic scan finding it too does not count it again.
    count_blind_seen(
        &metrics,
        &[BlindProcess {
            pid,
            comm: "python3".into(),
            reason: "gnutls".into(),
            expected: false,
        }],
    );
    assert_eq!(seen(&metrics), 1);
    drop(client);
    assert_eq!(
        seen(&metrics),
        1,
        "a counter: stays after the process is gone"
    );
    assert!(!BlindScanner::new()
        .scan(&HashSet::new())
        .iter()
        .any(|b| b.pid == pid));
    assert_eq!(
        metrics
            .blind_processes_seen
            .with_label_values(&["go_tls", "false"])
            .get(),
        0
    );
}

/// Once per (process, reason): another reason counts, the same pid reused by
/// a new process (another start time) counts again.
#[test]
fn seen_processes_count_once_per_process_and_reason() {
    let root = tempfile::tempdir().unwrap();
    let stat = |start: u64| {
        format!("42 (a (weird) name) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 {start} 1 1 18446744073709551615\n")
    };
    std::fs::create_dir_all(root.path().join("42")).unwrap();
    std::fs::write(root.path().join("42/stat"), stat(1000)).unwrap();
    assert_eq!(start_time(root.path(), 42), Some(1000));
    let metrics = Metrics::new();
    let mut seen = SeenProcesses::new();
    assert!(seen.count(root.path(), 42, "gnutls", false, &metrics));
    assert!(!seen.count(root.path(), 42, "gnutls", false, &metrics));
    assert!(seen.count(root.path(), 42, "boringssl", false, &metrics));
    std::fs::write(root.path().join("42/stat"), stat(2000)).unwrap();
    assert!(seen.count(root.path(), 42, "gnutls", false, &metrics));
    assert!(!seen.count(root.path(), 42, "not_a_reason", false, &metrics));
    let get = |r: &str| {
        metrics
            .blind_processes_seen
            .with_label_values(&[r, "false"])
            .get()
    };
    assert_eq!((get("gnutls"), get("boringssl")), (2, 1));
}

/// What one look at a new process costs (the capture's maps read and the
/// blind judgment), on a Python server that imported ssl.
#[test]
fn cost_of_one_look_at_a_process() {
    if !have("python3") {
        return;
    }
    let (py, mut out) = spawn(Command::new("python3").args([
        "-c",
        "import socket, ssl, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen(8)\n\
print('listening', flush=True)\ntime.sleep(60)",
    ]));
    wait_for(&mut out, "listening");
    let pid = py.0.id();
    let mut scanner = BlindScanner::new();
    let attached = attached_libssl(pid);
    // ELF verdicts cached, as after the first look; the capture's too.
    scanner.check_pid(pid, &attached);
    let mut embedded = crate::capture::procfs::EmbeddedOpenssl::default();
    const LOOKS: u32 = 200;
    let t = Instant::now();
    for _ in 0..LOOKS {
        let maps = crate::capture::procfs::read_maps(Path::new("/proc"), pid).unwrap();
        let mut index = crate::capture::procfs::LibraryIndex::default();
        index.add_process(Path::new("/proc"), pid, &maps, &mut embedded);
    }
    let capture_part = t.elapsed() / LOOKS;
    let t = Instant::now();
    for _ in 0..LOOKS {
        assert_eq!(scanner.check_pid(pid, &attached), None);
    }
    let blind_part = t.elapsed() / LOOKS;
    let live = capture_part + blind_part;
    let t = Instant::now();
    for _ in 0..LOOKS {
        assert!(crate::capture::procfs::read_maps(Path::new("/proc"), u32::MAX - 1).is_err());
        assert_eq!(scanner.check_pid(u32::MAX - 1, &attached), None);
    }
    let gone = t.elapsed() / LOOKS;
    eprintln!(
        "one look: {live:?} at a live process with sockets and libssl \
         ({capture_part:?} the capture's, {blind_part:?} the blind judgment), {gone:?} at a gone one"
    );
    assert!(live < Duration::from_millis(20));
}

#[test]
fn expected_blind_names_match_the_executable_or_the_comm() {
    let e = ExpectedBlind::default();
    assert!(e.matches(Some("kubelet"), "kubelet"));
    // The comm is cut at 15 bytes; the executable's name is whole.
    assert!(e.matches(Some("kube-controller-manager"), "kube-controller"));
    assert!(e.matches(Some("containerd-shim-runc-v2"), "containerd-shim"));
    assert!(e.matches(None, "calico-node"));
    // An API server, a gateway, a prefix of a name: not expected.
    assert!(!e.matches(Some("api-server"), "api-server"));
    assert!(!e.matches(Some("kubelet-api"), "kubelet-api"));
    assert!(!e.matches(Some("envoy"), "envoy"));
    assert!(!e.matches(None, ""));
    // The config replaces the list; an empty one expects nothing.
    let own = ExpectedBlind::new(["payments-*".to_string(), String::new()]);
    assert_eq!(own.names(), ["payments-*"]);
    assert!(own.matches(Some("payments-api"), "payments-api"));
    assert!(!own.matches(Some("kubelet"), "kubelet"));
    assert!(!ExpectedBlind::new([]).matches(Some("kubelet"), "kubelet"));
}

/// A Go TLS server named like a node agent (kubelet) is listed blind but
/// expected; the same program under another name (an application's Go API
/// server) is blind and not expected; the gauge splits them by `expected`,
/// so the alert (`expected!="true"`) fires for the second only.  node with
/// its OpenSSL attached is not blind at all.
#[test]
fn a_node_agent_is_expected_blind_an_application_is_not() {
    if !(have("go") && have("node")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = go_build(dir.path(), "goapi", GO_TLS_SERVER);
    let agent = dir.path().join("kubelet");
    std::fs::copy(&app, &agent).unwrap();
    let (kubelet, mut out1) = spawn(Command::new(&agent).arg("127.0.0.1:21230"));
    wait_for(&mut out1, "listening");
    let (goapi, mut out2) = spawn(Command::new(&app).arg("127.0.0.1:21231"));
    wait_for(&mut out2, "listening");
    let (node, mut node_out) = spawn(Command::new("node").args([
        "-e",
        "require('https').createServer({}, (q, s) => s.end()).listen(21232, '127.0.0.1', () => console.log('listening')); setTimeout(() => process.exit(0), 120000)",
    ]));
    wait_for(&mut node_out, "listening");
    let node_exe = std::fs::metadata(format!("/proc/{}/exe", node.0.id())).unwrap();
    // What `sensor run` (and now `sensor check`) has attached: node's program.
    let attached: HashSet<FileKey> = [(node_exe.dev(), node_exe.ino())].into();
    let ours = [kubelet.0.id(), goapi.0.id(), node.0.id()];
    let found: Vec<BlindProcess> = BlindScanner::new()
        .scan(&attached)
        .into_iter()
        .filter(|b| ours.contains(&b.pid))
        .collect();
    let mut got: Vec<(u32, &str, bool)> = found
        .iter()
        .map(|b| (b.pid, b.reason.as_str(), b.expected))
        .collect();
    got.sort();
    let mut want = vec![
        (kubelet.0.id(), "go_tls", true),
        (goapi.0.id(), "go_tls", false),
    ];
    want.sort();
    assert_eq!(got, want);
    let metrics = Metrics::new();
    update_blind_gauge(&metrics, &found);
    let g = |e: &str| {
        metrics
            .blind_processes
            .with_label_values(&["go_tls", e])
            .get()
    };
    assert_eq!((g("false"), g("true")), (1, 1));
    drop((kubelet, goapi, node));
}
