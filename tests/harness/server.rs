//! TLS servers on loopback: spawned bounded, ready when a TLS handshake with
//! the test certificate succeeds, killed (with their process group) on Drop.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cert::TestCert;
use crate::net::free_port;
use crate::paths::{apps_dir, debian13_command, system_python, venv_bin, wheel_set_pythonpath};
use crate::proc::{run_bounded, Process, DEFAULT_HARD_TIMEOUT};

/// How long a server may take to accept TLS after being started.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Size of nginx's small and large static files.
pub const NGINX_SMALL_FILE: (&str, usize) = ("/1k.bin", 1024);
pub const NGINX_LARGE_FILE: (&str, usize) = ("/64k.bin", 65536);
/// [`Server::nginx_h2`]'s static file: several HTTP/2 DATA frames.
pub const NGINX_H2_BIG_FILE: (&str, usize) = ("/big.bin", 300_000);
/// Bytes of filler before the key in [`Server::nginx_h2`]'s `/v1/export`.
pub const NGINX_H2_EXPORT_FILLER: usize = 70_000;

pub struct Server {
    name: String,
    port: u16,
    process: Process,
    /// A plain-HTTP app behind a TLS-terminating proxy (killed on Drop too).
    backend: Option<Process>,
    started_in: Duration,
    // Logs, configs, the rendered nginx prefix or the separate root: removed on Drop.
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts `cmd` (which must listen with TLS on 127.0.0.1:`port` using
    /// `cert`) and waits until it completes a TLS handshake.
    pub fn spawn(
        name: &str,
        cmd: &Command,
        port: u16,
        cert: &TestCert,
        dir: tempfile::TempDir,
    ) -> Result<Server> {
        let started = Instant::now();
        let process = Process::spawn(name, cmd, DEFAULT_HARD_TIMEOUT, dir.path())?;
        let mut server = Server {
            name: name.to_string(),
            port,
            process,
            backend: None,
            started_in: Duration::ZERO,
            dir,
        };
        server.wait_ready(cert, SERVER_READY_TIMEOUT)?;
        server.started_in = started.elapsed();
        Ok(server)
    }

    /// `leaky_fastapi.py` under uvicorn (`--ssl-certfile/--ssl-keyfile`).
    pub fn fastapi(cert: &TestCert) -> Result<Server> {
        let port = free_port()?;
        let mut cmd = Command::new(venv_bin("uvicorn")?);
        uvicorn_args(&mut cmd, port, cert);
        Server::spawn("uvicorn", &cmd, port, cert, tempdir("uvicorn")?)
    }

    /// The same, on Debian 13's OpenSSL 3.5 and glibc (unpacked by `cargo
    /// xtask setup`), through that glibc's own loader: a second OpenSSL
    /// build, with CET (`endbr64` at every function entry) and OpenSSL 3.3's
    /// write path.
    pub fn fastapi_on_debian13(cert: &TestCert) -> Result<Server> {
        let port = free_port()?;
        let mut cmd = debian13_command(&venv_bin("python")?)?;
        cmd.args(["-m", "uvicorn"]);
        uvicorn_args(&mut cmd, port, cert);
        Server::spawn("uvicorn-debian13", &cmd, port, cert, tempdir("uvicorn13")?)
    }

    /// `leaky_flask.py` under gunicorn (`--certfile/--keyfile`), gthread
    /// worker so that connections are kept alive.
    pub fn flask(cert: &TestCert) -> Result<Server> {
        let port = free_port()?;
        let mut cmd = Command::new(venv_bin("gunicorn")?);
        cmd.arg("--chdir")
            .arg(apps_dir())
            .args([
                "-k",
                "gthread",
                "--threads",
                "8",
                "--workers",
                "1",
                "--keep-alive",
                "30",
            ])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg("--certfile")
            .arg(cert.cert())
            .arg("--keyfile")
            .arg(cert.key())
            .args(["--log-level", "warning", "leaky_flask:app"]);
        python_env(&mut cmd);
        Server::spawn("gunicorn", &cmd, port, cert, tempdir("gunicorn")?)
    }

    /// `leaky_node.js` under node (OpenSSL linked into the node program).
    pub fn node(cert: &TestCert) -> Result<Server> {
        let port = free_port()?;
        let cmd = app_command("node", "leaky_node.js", port, cert);
        Server::spawn("node", &cmd, port, cert, tempdir("node")?)
    }

    /// `leaky_streams.js` under node: leaks in responses that do not end the
    /// usual way (an event stream, a trailer, a download cut by its client).
    pub fn node_streams(cert: &TestCert) -> Result<Server> {
        let port = free_port()?;
        let cmd = app_command("node", "leaky_streams.js", port, cert);
        Server::spawn("node", &cmd, port, cert, tempdir("node-streams")?)
    }

    /// nginx with TLS serving `/1k.bin` and `/64k.bin` (bytes `i % 251`) and
    /// `/healthz`, from `tests/apps/nginx.conf.template`.
    pub fn nginx(cert: &TestCert, workers: u32) -> Result<Server> {
        let files: Vec<(&str, Vec<u8>)> = [NGINX_SMALL_FILE, NGINX_LARGE_FILE]
            .into_iter()
            .map(|(path, size)| (path, deterministic_bytes(size)))
            .collect();
        nginx_from_template(
            cert,
            "nginx.conf.template",
            &[("@WORKERS@", workers.to_string())],
            &files,
        )
    }

    /// nginx (HTTP/1.1, one worker) from `tests/apps/nginx_resync.conf.template`:
    /// `/big.bin` (`big` bytes `i % 251`), `POST /upload` (answered once the
    /// whole body is read) and `/leak` (a 400 echoing `x-api-key`).
    pub fn nginx_resync(cert: &TestCert, big: usize) -> Result<Server> {
        let backend = free_port()?;
        nginx_from_template(
            cert,
            "nginx_resync.conf.template",
            &[("@BACKEND_PORT@", backend.to_string())],
            &[("/big.bin", deterministic_bytes(big))],
        )
    }

    /// nginx over HTTP/2 (`listen … ssl http2`, ALPN h2) with leaky
    /// locations, from `tests/apps/nginx_h2.conf.template` (its comments list
    /// them), one worker.  Serves `/big.bin` ([`NGINX_H2_BIG_FILE`], bytes
    /// `i % 251`) and `/v1/export` ([`nginx_h2_export_body`] with the
    /// request's `x-api-key` substituted); a plain-HTTP backend on another
    /// loopback port answers `/oauth/token`.
    pub fn nginx_h2(cert: &TestCert) -> Result<Server> {
        let backend = free_port()?;
        let files = [
            (
                NGINX_H2_BIG_FILE.0,
                deterministic_bytes(NGINX_H2_BIG_FILE.1),
            ),
            ("/v1/export", nginx_h2_export_body("@@REQUEST_KEY@@")),
        ];
        nginx_from_template(
            cert,
            "nginx_h2.conf.template",
            &[("@BACKEND_PORT@", backend.to_string())],
            &files,
        )
    }

    /// `leaky_node_h2.js`: node's `http2.createSecureServer` (ALPN h2 only).
    pub fn node_h2(cert: &TestCert) -> Result<Server> {
        let port = free_port()?;
        let cmd = app_command("node", "leaky_node_h2.js", port, cert);
        Server::spawn("node", &cmd, port, cert, tempdir("node-h2")?)
    }

    /// `leaky_pyopenssl.py`: TLS through pyOpenSSL, on the OpenSSL linked
    /// into the `cryptography` wheel's extension module.
    pub fn pyopenssl(cert: &TestCert) -> Result<Server> {
        pyopenssl_with(cert, None)
    }

    /// `leaky_pyopenssl.py` on a wheel set's OpenSSL build (see
    /// [`wheel_set_pythonpath`]), ahead of the venv's own.
    pub fn pyopenssl_on_wheel_set(cert: &TestCert, set: &str) -> Result<Server> {
        pyopenssl_with(cert, Some(set))
    }

    /// `leaky_fastapi.py` under another ASGI server, with TLS in that server
    /// (see [`Asgi`]).
    pub fn fastapi_under(asgi: Asgi, cert: &TestCert) -> Result<Server> {
        let port = free_port()?;
        let mut cmd = match asgi {
            Asgi::Hypercorn => {
                let mut c = Command::new(venv_bin("hypercorn")?);
                c.arg("--certfile")
                    .arg(cert.cert())
                    .arg("--keyfile")
                    .arg(cert.key())
                    .args(["--bind", &format!("127.0.0.1:{port}")])
                    .args(["--keep-alive", "30", "leaky_fastapi:app"]);
                c
            }
            Asgi::UvicornUvloop => {
                let mut c = Command::new(venv_bin("uvicorn")?);
                uvicorn_args(&mut c, port, cert);
                c.args(["--loop", "uvloop", "--http", "httptools"]);
                c
            }
            Asgi::Daphne => {
                let mut c = Command::new(venv_bin("daphne")?);
                c.arg("-e").arg(format!(
                    "ssl:{port}:privateKey={}:certKey={}:interface=127.0.0.1",
                    cert.key().display(),
                    cert.cert().display()
                ));
                c.args(["--http-timeout", "30", "leaky_fastapi:app"]);
                c
            }
        };
        cmd.env("PYTHONPATH", apps_dir());
        python_env(&mut cmd);
        Server::spawn(asgi.name(), &cmd, port, cert, tempdir(asgi.name())?)
    }

    /// `leaky_fastapi.py` under uvicorn over plain HTTP, behind `proxy`
    /// terminating TLS (the usual production shape: the app never sees TLS;
    /// the proxy's process is what the sensor probes).  `alpn`: the protocols
    /// the proxy offers (`["h2", "http/1.1"]` or `["http/1.1"]`).
    pub fn fastapi_behind(proxy: Proxy, cert: &TestCert, alpn: &[&str]) -> Result<Server> {
        let dir = tempdir(proxy.name())?;
        let backend_port = free_port()?;
        let mut app = Command::new(venv_bin("uvicorn")?);
        uvicorn_plain_args(&mut app, backend_port);
        let backend_dir = dir.path().join("backend");
        std::fs::create_dir_all(&backend_dir)?;
        let mut backend =
            Process::spawn("uvicorn-backend", &app, DEFAULT_HARD_TIMEOUT, &backend_dir)?;
        wait_tcp(backend_port, &mut backend)?;

        let port = free_port()?;
        let prefix = dir.path();
        let mut conf = std::fs::read_to_string(apps_dir().join(proxy.template()))
            .with_context(|| format!("reading {}", proxy.template()))?;
        let pem = prefix.join("cert-and-key.pem");
        std::fs::write(
            &pem,
            [std::fs::read(cert.cert())?, std::fs::read(cert.key())?].concat(),
        )?;
        for (var, value) in [
            ("@PREFIX@", prefix.display().to_string()),
            ("@PORT@", port.to_string()),
            ("@BACKEND_PORT@", backend_port.to_string()),
            ("@CERT@", cert.cert().display().to_string()),
            ("@KEY@", cert.key().display().to_string()),
            ("@PEM@", pem.display().to_string()),
            ("@ALPN@", alpn.join(",")),
            ("@PROTOCOLS@", alpn.join(" ")),
        ] {
            conf = conf.replace(var, &value);
        }
        let conf_path = prefix.join(proxy.template().trim_end_matches(".template"));
        std::fs::write(&conf_path, conf)?;
        // In the foreground (no daemon), on that config.
        let (program, foreground) = match proxy {
            Proxy::HAProxy => ("haproxy", "-db"),
            Proxy::Apache => ("apache2", "-DFOREGROUND"),
        };
        let mut cmd = Command::new(program);
        cmd.arg(foreground).arg("-f").arg(&conf_path);
        let mut server = Server::spawn(proxy.name(), &cmd, port, cert, dir)?;
        server.backend = Some(backend);
        Ok(server)
    }

    /// The stdlib demo API (`demo_api.py`) with the system Python.
    pub fn demo(cert: &TestCert) -> Result<Server> {
        let port = free_port()?;
        let mut cmd = app_command(system_python(), "demo_api.py", port, cert);
        python_env(&mut cmd);
        Server::spawn("demo-api", &cmd, port, cert, tempdir("demo")?)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.port, path)
    }

    /// Time from spawn to the first successful TLS handshake.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The server's own pid (below the `timeout` wrapper).
    pub fn main_pid(&self) -> Option<u32> {
        self.process.main_pid()
    }

    /// Every process of the server (master and workers, or the process in
    /// the separate root): a finding from this server has one of these pids.
    pub fn pids(&self) -> Vec<u32> {
        self.process.tree()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stderr_tail(&self) -> String {
        self.process.stderr_tail()
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// Kills the server's process group and reaps it.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    pub fn is_running(&mut self) -> bool {
        self.process.try_exited().is_none()
    }

    fn wait_ready(&mut self, cert: &TestCert, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_exited() {
                bail!(
                    "{} exited ({status}) before accepting TLS on port {}; stderr:\n{}",
                    self.name,
                    self.port,
                    self.process.stderr_tail()
                );
            }
            if tls_handshake_ok(self.port, cert) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not accept TLS on port {} within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.port,
                    self.process.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A full TLS handshake with certificate verification, and no HTTP request
/// (so readiness probes never show up as pairs).
pub fn tls_handshake_ok(port: u16, cert: &TestCert) -> bool {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-brief",
        "-verify_return_error",
    ])
    .arg("-CAfile")
    .arg(cert.cert());
    matches!(run_bounded("s_client", &cmd, Duration::from_secs(5)), Ok(out) if out.status.success())
}

/// The body of [`Server::nginx_h2`]'s `/v1/export` with `key` where nginx
/// puts the request's `x-api-key`: the key starts past 64 KiB.
pub fn nginx_h2_export_body(key: &str) -> Vec<u8> {
    format!(
        r#"{{"rows":"{}","request_key":"{key}"}}"#,
        "r".repeat(NGINX_H2_EXPORT_FILLER)
    )
    .into_bytes()
}

/// nginx from `tests/apps/<template>`: `@PREFIX@ @PORT@ @CERT@ @KEY@ @ROOT@`
/// and `vars` replaced, `files` (URL path, content) written under the root.
fn nginx_from_template(
    cert: &TestCert,
    template: &str,
    vars: &[(&str, String)],
    files: &[(&str, Vec<u8>)],
) -> Result<Server> {
    let port = free_port()?;
    let dir = tempdir("nginx")?;
    let prefix = dir.path();
    let root = prefix.join("www");
    std::fs::create_dir_all(&root)?;
    for (path, content) in files {
        let file = root.join(path.trim_start_matches('/'));
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, content)?;
    }
    let mut conf = std::fs::read_to_string(apps_dir().join(template))
        .with_context(|| format!("reading {template}"))?;
    for (var, value) in vars {
        conf = conf.replace(var, value);
    }
    let conf = conf
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@CERT@", &cert.cert().display().to_string())
        .replace("@KEY@", &cert.key().display().to_string())
        .replace("@ROOT@", &root.display().to_string());
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(format!("{}/", prefix.display()));
    Server::spawn("nginx", &cmd, port, cert, dir)
}

/// `leaky_pyopenssl.py` with the venv's Python, on the wheel set `set`
/// when given (first on `PYTHONPATH`).
fn pyopenssl_with(cert: &TestCert, set: Option<&str>) -> Result<Server> {
    let port = free_port()?;
    let mut cmd = app_command(venv_bin("python")?, "leaky_pyopenssl.py", port, cert);
    python_env(&mut cmd);
    if let Some(set) = set {
        cmd.env("PYTHONPATH", wheel_set_pythonpath(set)?);
    }
    let dir = tempdir(&set.map_or("pyopenssl".into(), |s| format!("pyopenssl-{s}")))?;
    Server::spawn("pyopenssl", &cmd, port, cert, dir)
}

/// ASGI servers for the FastAPI app besides plain uvicorn, each doing TLS
/// its own way over the host's libssl (or, for daphne, the wheel's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asgi {
    /// hypercorn: HTTP/2 when the client offers it (ALPN), through the h2 library.
    Hypercorn,
    /// uvicorn with uvloop's event loop and httptools' parser (`uvicorn[standard]`,
    /// its production setup): TLS through uvloop's SSL protocol on memory BIOs.
    UvicornUvloop,
    /// daphne: Twisted's TLS through pyOpenSSL, on the OpenSSL linked into
    /// the `cryptography` wheel; HTTP/2 when offered.
    Daphne,
}

impl Asgi {
    pub fn name(self) -> &'static str {
        match self {
            Asgi::Hypercorn => "hypercorn",
            Asgi::UvicornUvloop => "uvicorn-uvloop",
            Asgi::Daphne => "daphne",
        }
    }
}

/// A TLS-terminating reverse proxy from Debian (see [`Server::fastapi_behind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// HAProxy, config `tests/apps/haproxy.cfg.template`.
    HAProxy,
    /// Apache httpd with mod_ssl, mod_http2 and mod_proxy, config
    /// `tests/apps/apache.conf.template`.
    Apache,
}

impl Proxy {
    pub fn name(self) -> &'static str {
        match self {
            Proxy::HAProxy => "haproxy",
            Proxy::Apache => "apache2",
        }
    }

    fn template(self) -> &'static str {
        match self {
            Proxy::HAProxy => "haproxy.cfg.template",
            Proxy::Apache => "apache.conf.template",
        }
    }
}

/// Waits until something accepts TCP on 127.0.0.1:`port` (the plain-HTTP
/// backend), or `process` exits, or [`SERVER_READY_TIMEOUT`] passes.
fn wait_tcp(port: u16, process: &mut Process) -> Result<()> {
    let deadline = Instant::now() + SERVER_READY_TIMEOUT;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = process.try_exited() {
            bail!(
                "the backend exited ({status}); stderr:\n{}",
                process.stderr_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!("the backend did not listen on port {port} within {SERVER_READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// n bytes of the pattern `i % 251` (what the apps and nginx serve).
pub fn deterministic_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// `interpreter apps/<script> --port P --cert C --key K`: the apps that take
/// their port and certificate on the command line.
fn app_command(
    interpreter: impl AsRef<std::ffi::OsStr>,
    script: &str,
    port: u16,
    cert: &TestCert,
) -> Command {
    let mut cmd = Command::new(interpreter);
    cmd.arg(apps_dir().join(script))
        .args(["--port", &port.to_string()])
        .arg("--cert")
        .arg(cert.cert())
        .arg("--key")
        .arg(cert.key());
    cmd
}

/// `leaky_fastapi:app` on 127.0.0.1:`port` with `cert`, keep-alive 30 s.
fn uvicorn_args(cmd: &mut Command, port: u16, cert: &TestCert) {
    uvicorn_plain_args(cmd, port);
    cmd.arg("--ssl-certfile")
        .arg(cert.cert())
        .arg("--ssl-keyfile")
        .arg(cert.key());
}

/// `leaky_fastapi:app` on 127.0.0.1:`port` over plain HTTP, keep-alive 30 s.
fn uvicorn_plain_args(cmd: &mut Command, port: u16) {
    cmd.arg("leaky_fastapi:app")
        .arg("--app-dir")
        .arg(apps_dir())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--log-level", "warning", "--timeout-keep-alive", "30"]);
    python_env(cmd);
}

fn python_env(cmd: &mut Command) {
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
}

fn tempdir(name: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("sensor-e2e-{name}"))
        .tempdir()?)
}
