//! The TLS servers the benchmarks load: nginx (static files, config generated
//! into a temporary directory) and uvicorn/FastAPI (a tiny generated app).
//! Both listen on loopback only and are stopped by pid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::http::wait_listening;
use super::proc::{children, Proc};

/// A self-signed P-256 certificate for `localhost`/127.0.0.1 (cheap handshakes).
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_cert(dir: &Path) -> anyhow::Result<Cert> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl (install it: apt-get install -y openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Cert { cert, key })
}

/// Static files nginx serves: `/<name>` of `size` bytes.
pub const STATIC_FILES: &[(&str, usize)] = &[("1k.bin", 1024), ("64k.bin", 64 * 1024)];

pub struct Nginx {
    /// The master process; stopping it (on drop) stops the worker.
    _master: Proc,
    pub port: u16,
    /// The same server over HTTP/2 ([`super::PORT_NGINX_H2`]).
    pub h2_port: u16,
    /// The single worker process (where the probes fire and the TLS work is done).
    pub worker: u32,
}

impl Nginx {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn h2_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.h2_port)
    }
}

/// `upstream_port`: a plain-HTTP server block that answers uploads proxied to
/// it from `/upload` (nginx reads the whole TLS upload first, as a reverse
/// proxy in front of an API does).
pub fn start_nginx(
    dir: &Path,
    cert: &Cert,
    port: u16,
    upstream_port: u16,
    max_connections: u32,
) -> anyhow::Result<Nginx> {
    start_nginx_on(dir, cert, port, upstream_port, max_connections, None)
}

/// [`start_nginx`], on the glibc and OpenSSL in `runtime` (a directory with
/// `ld-linux-x86-64.so.2` and `libssl.so.3`: Debian 13's, unpacked by `cargo
/// xtask setup`) when given, through that glibc's loader.
pub fn start_nginx_on(
    dir: &Path,
    cert: &Cert,
    port: u16,
    upstream_port: u16,
    max_connections: u32,
    runtime: Option<&Path>,
) -> anyhow::Result<Nginx> {
    let prefix = dir.join("nginx");
    let root = prefix.join("root");
    std::fs::create_dir_all(&root)?;
    for (name, size) in STATIC_FILES {
        let body: Vec<u8> = (0..*size).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(root.join(name), body)?;
    }
    // Every connection is a file descriptor of the worker, which inherits our limit.
    let nofile = super::proc::nofile_limit();
    let max_connections = max_connections.min(nofile.saturating_sub(64) as u32);
    let h2_port = super::PORT_NGINX_H2;
    let conf = nginx_conf(
        &prefix,
        &root,
        cert,
        [port, h2_port, upstream_port],
        max_connections,
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let log = prefix.join("stderr.log");
    let mut c = match runtime {
        None => Command::new("nginx"),
        Some(lib) => {
            let nginx = super::which("nginx").context("nginx not found")?;
            let mut c = Command::new(lib.join("ld-linux-x86-64.so.2"));
            c.arg("--library-path").arg(lib).arg(nginx);
            c
        }
    };
    c.arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(prefix.join("error.log"));
    let mut proc = Proc::spawn("nginx", &mut c, Some(&log))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr, Duration::from_secs(20), || proc.ensure_alive())
        .with_context(|| format!("nginx did not start (see {})", prefix.display()))?;
    let mut worker = None;
    for _ in 0..100 {
        if let Some(w) = children(proc.pid()).first() {
            worker = Some(*w);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let worker = worker.context("nginx started no worker process")?;
    Ok(Nginx {
        _master: proc,
        port,
        h2_port,
        worker,
    })
}

fn nginx_conf(
    prefix: &Path,
    root: &Path,
    cert: &Cert,
    [port, h2_port, upstream_port]: [u16; 3],
    max_connections: u32,
) -> String {
    let p = prefix.display();
    format!(
        r#"# Generated by `cargo xtask bench`.
daemon off;
master_process on;
user root;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;

events {{
    worker_connections {max_connections};
}}

http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type application/octet-stream;
    sendfile off;
    keepalive_timeout 300s;
    keepalive_requests 10000000;

    server {{
        listen 127.0.0.1:{port} ssl;
        # nginx 1.22 (Debian 12) takes http2 on the listen line.
        listen 127.0.0.1:{h2_port} ssl http2;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;
        root {root};

        # Uploads are read completely (kept in memory) before they are proxied on.
        location = /upload {{
            client_max_body_size 2m;
            client_body_buffer_size 2m;
            proxy_request_buffering on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
        location / {{
            try_files $uri =404;
        }}
    }}

    server {{
        listen 127.0.0.1:{upstream_port};
        location / {{
            client_max_body_size 2m;
            default_type text/plain;
            return 200 "stored\n";
        }}
    }}
}}
"#,
        cert = cert.cert.display(),
        key = cert.key.display(),
        root = root.display(),
    )
}

/// A FastAPI app with a 1 KiB endpoint, served by uvicorn over TLS.
const FASTAPI_APP: &str = r#"# Generated by `cargo xtask bench`: the smallest FastAPI app with a 1 KiB answer.
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()
BODY = "a" * 1024


@app.get("/1k", response_class=PlainTextResponse)
def one_k() -> str:
    return BODY
"#;

pub struct Uvicorn {
    pub proc: Proc,
    pub port: u16,
}

impl Uvicorn {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/1k", self.port)
    }
}

/// `venv_python` must have uvicorn and fastapi.
pub fn start_uvicorn(
    dir: &Path,
    venv_python: &Path,
    cert: &Cert,
    port: u16,
) -> anyhow::Result<Uvicorn> {
    let app_dir = dir.join("fastapi");
    std::fs::create_dir_all(&app_dir)?;
    std::fs::write(app_dir.join("bench_app.py"), FASTAPI_APP)?;
    let log = app_dir.join("uvicorn.log");
    let mut c = Command::new(venv_python);
    c.current_dir(&app_dir)
        .args(["-m", "uvicorn", "bench_app:app", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .arg("--ssl-certfile")
        .arg(&cert.cert)
        .arg("--ssl-keyfile")
        .arg(&cert.key)
        .args([
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ]);
    let mut proc = Proc::spawn("uvicorn", &mut c, Some(&log))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr, Duration::from_secs(30), || proc.ensure_alive())
        .context("uvicorn did not start")?;
    Ok(Uvicorn { proc, port })
}

/// The tools venv's python, when it has uvicorn and fastapi.
pub fn venv_with_uvicorn(venv: &Path) -> Option<PathBuf> {
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import uvicorn, fastapi"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(py)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_config_is_loopback_tls13_and_bounded() {
        let cert = Cert {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
        };
        let ports = [24500, 24504, 24501];
        let c = nginx_conf(Path::new("/p"), Path::new("/r"), &cert, ports, 20000);
        assert!(c.contains("listen 127.0.0.1:24500 ssl;"));
        assert!(c.contains("listen 127.0.0.1:24504 ssl http2;"));
        assert!(c.contains("listen 127.0.0.1:24501;"));
        assert!(c.contains("ssl_protocols TLSv1.3;"));
        assert!(c.contains("worker_processes 1;"));
        assert!(c.contains("worker_connections 20000;"));
        assert!(c.contains("daemon off;"));
        assert!(!c.contains("0.0.0.0"));
        // Every path nginx writes is under the prefix.
        for line in c
            .lines()
            .filter(|l| l.contains("_path") || l.contains("error_log"))
        {
            assert!(line.contains("/p/"), "{line}");
        }
    }

    #[test]
    fn generated_python_is_valid() {
        let Some(py) = crate::bench::which("python3") else {
            return; // no python: the benchmarks that need it say so at run time
        };
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("bench_app.py", FASTAPI_APP),
            ("bench_clients.py", include_str!("bench_clients.py")),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let out = Command::new(&py)
                .args(["-m", "py_compile"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
