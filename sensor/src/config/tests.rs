use std::io::Write;

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn args(argv: &[&str]) -> RunArgs {
    Cli::try_parse_from(std::iter::once("sensor-run").chain(argv.iter().copied()))
        .expect("flags parse")
        .run
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.path().join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p.display().to_string()
    }
}

fn load_err(argv: &[&str]) -> String {
    let e = RunConfig::load(&args(argv)).expect_err("an error");
    let s = e.to_string();
    assert!(!s.contains('\n'), "one line: {s}");
    s
}

#[test]
fn defaults() {
    let c = RunConfig::load(&args(&[])).unwrap();
    assert_eq!(c.findings, Output::Stdout);
    assert_eq!(c.pairs, None);
    assert_eq!(c.record, None);
    assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9477");
    assert_eq!(c.api_addr.to_string(), "127.0.0.1:9478");
    assert_eq!(c.api_token, None);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/sensor"));
    assert_eq!(
        c.fingerprint_key_file,
        PathBuf::from("/var/lib/sensor/fingerprint.key")
    );
    assert_eq!(c.role, RoleFilter::Any);
    assert_eq!(c.capture, CaptureConfig::default());
    assert_eq!(c.http_limits, HttpLimits::default());
    assert_eq!(c.max_connections, 16_384);
    assert_eq!(c.max_buffered_bytes, 512 << 20);
    assert_eq!(c.findings_ring, DEFAULT_FINDINGS_RING);
    assert_eq!(c.leak, LeakConfig::default());
}

#[test]
fn example_config_parses_and_states_the_true_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/sensor.example.toml");
    let from_file = RunConfig::load(&args(&["--config", path])).unwrap();
    let defaults = RunConfig::load(&args(&[])).unwrap();
    assert_eq!(
        RunConfig {
            config_file: None,
            ..from_file
        },
        defaults
    );
}

#[test]
fn flags_win_over_file_which_wins_over_defaults() {
    let d = Dir::new();
    let cfg = d.file(
        "sensor.toml",
        r#"
metrics_addr = "127.0.0.1:19477"
api_addr = "127.0.0.1:19478"
role = "server"
pid = [10, 11]
comm = ["uvicorn"]
max_connections = 100
count_only = true
findings = "findings.jsonl"
state_dir = "state"

[leak]
headers = ["X-Custom-Key"]
min_length = 12
"#,
    );
    let c = RunConfig::load(&args(&[
        "--config",
        &cfg,
        "--metrics-addr",
        "127.0.0.1:29477",
        "--pid",
        "42",
        "--findings",
        "out.jsonl",
    ]))
    .unwrap();
    assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:29477", "flag wins");
    assert_eq!(
        c.api_addr.to_string(),
        "127.0.0.1:19478",
        "file wins over default"
    );
    assert_eq!(
        c.capture.pids,
        vec![42],
        "a repeated flag replaces the file's list"
    );
    assert_eq!(c.capture.comms, vec!["uvicorn".to_string()]);
    assert_eq!(c.role, RoleFilter::Server);
    assert_eq!(c.max_connections, 100);
    assert!(c.capture.count_only);
    assert_eq!(
        c.findings,
        Output::File(PathBuf::from("out.jsonl")),
        "flag paths are as given"
    );
    // Paths from the file are relative to the file.
    assert_eq!(c.state_dir, d.0.path().join("state"));
    assert_eq!(
        c.fingerprint_key_file,
        d.0.path().join("state/fingerprint.key")
    );
    assert_eq!(
        c.leak.headers,
        vec!["x-custom-key".to_string()],
        "lower-cased"
    );
    assert_eq!(c.leak.min_length, 12);
    assert_eq!(
        c.leak.body_fields,
        LeakConfig::default().body_fields,
        "unset leak keys keep defaults"
    );
    assert_eq!(c.capture.probe_mode, ProbeMode::Auto, "default");
}

#[test]
fn unknown_field_names_the_line_and_the_choices() {
    let d = Dir::new();
    let cfg = d.file(
        "sensor.toml",
        "findings = \"-\"\n\nmetrics_adr = \"0.0.0.0:9477\"\n",
    );
    let e = load_err(&["--config", &cfg]);
    assert!(
        e.starts_with(&format!(
            "config {cfg}: line 3: unknown field `metrics_adr`, expected one of `findings`"
        )),
        "{e}"
    );
    assert!(e.contains("`metrics_addr`"), "{e}");
}

#[test]
fn unknown_leak_field_names_the_line() {
    let d = Dir::new();
    let cfg = d.file("s.toml", "[leak]\nmin_len = 3\n");
    let e = load_err(&["--config", &cfg]);
    assert!(
        e.starts_with(&format!(
            "config {cfg}: line 2: unknown field `min_len`, expected one of `headers`"
        )),
        "{e}"
    );
}

#[test]
fn type_errors_name_the_key_and_line() {
    let d = Dir::new();
    let cfg = d.file("s.toml", "role = \"any\"\nmax_connections = \"lots\"\n");
    let e = load_err(&["--config", &cfg]);
    assert!(
        e.starts_with(&format!(
            "config {cfg}: line 2: max_connections: invalid type: string"
        )),
        "{e}"
    );
    let cfg = d.file("t.toml", "metrics_addr = \"localhost\"\n");
    let e = load_err(&["--config", &cfg]);
    assert!(
        e.starts_with(&format!("config {cfg}: line 1: metrics_addr: ")),
        "{e}"
    );
    let cfg = d.file("u.toml", "role = \"everyone\"\n");
    let e = load_err(&["--config", &cfg]);
    assert!(
        e.contains("line 1: ") && e.contains("`server`, `client`"),
        "{e}"
    );
    let cfg = d.file("v.toml", "role = \n");
    let e = load_err(&["--config", &cfg]);
    assert!(e.starts_with(&format!("config {cfg}: line 1: ")), "{e}");
}

#[test]
fn unreadable_and_yaml_files() {
    let e = load_err(&["--config", "/nonexistent/sensor.toml"]);
    assert_eq!(
        e,
        "config /nonexistent/sensor.toml: cannot read it: no such file"
    );
    let d = Dir::new();
    let e = load_err(&["--config", &d.0.path().display().to_string()]);
    assert!(e.ends_with("cannot read it: it is a directory"), "{e}");
}

#[test]
fn oversized_config_file_is_refused_without_reading_it_all() {
    let d = Dir::new();
    let big = "# padding\n".repeat((MAX_CONFIG_FILE_BYTES as usize / 10) + 2);
    let p = d.file("big.toml", &big);
    let e = load_err(&["--config", &p]);
    assert!(e.contains("larger than 1048576 bytes"), "{e}");
    // At the limit it is read.
    let at = "#".repeat(MAX_CONFIG_FILE_BYTES as usize);
    let p = d.file("at.toml", &at);
    RunConfig::load(&args(&["--config", &p])).unwrap();
}

#[test]
fn value_errors_say_where_the_value_came_from() {
    assert_eq!(
        load_err(&["--ring-buffer-bytes", "1000000"]),
        "--ring-buffer-bytes 1000000: must be a power of two from 1048576 to 1073741824 (e.g. 33554432)"
    );
    let d = Dir::new();
    let cfg = d.file("s.toml", "# ring\n\nring_buffer_bytes = 4096\n");
    assert_eq!(
        load_err(&["--config", &cfg]),
        format!("config {cfg}: line 3: ring_buffer_bytes = 4096: must be a power of two from 1048576 to 1073741824 (e.g. 33554432)")
    );
    assert_eq!(
        load_err(&["--max-connections", "0"]),
        "--max-connections 0: must be from 1 to 1048576"
    );
    assert_eq!(
        load_err(&["--max-body-bytes", "100"]),
        "--max-body-bytes 100: must be from 1024 to 268435456"
    );
    assert_eq!(
        load_err(&["--findings-ring", "0"]),
        "--findings-ring 0: must be from 1 to 65536"
    );
    assert_eq!(load_err(&["--pid", "0"]), "--pid 0: process ids start at 1");
    assert_eq!(
        load_err(&["--comm", "a-very-long-process-name"]),
        "--comm a-very-long-process-name: the kernel keeps only the first 15 bytes of a command name; use \"a-very-long-pro\""
    );
    assert_eq!(
        load_err(&["--pairs", "-"]),
        "--pairs -: findings already go to stdout; write pairs to a file (--pairs FILE) or findings to a file"
    );
    assert_eq!(
        load_err(&["--api-addr", "127.0.0.1:9477"]),
        "--api-addr 127.0.0.1:9477: the same address as --metrics-addr; give them different ports"
    );
    assert_eq!(
        load_err(&["--record", "-"]),
        "--record -: the recording holds secrets and binary data; give a file path"
    );
}

#[test]
fn limits_are_accepted_at_the_bounds() {
    let c = RunConfig::load(&args(&[
        "--ring-buffer-bytes",
        "1048576",
        "--max-connections",
        "1048576",
        "--max-body-bytes",
        "1024",
        "--findings-ring",
        "65536",
        "--comm",
        "exactly15bytes_",
    ]))
    .unwrap();
    assert_eq!(c.capture.ring_buffer_bytes, MIN_RING_BUFFER_BYTES);
    assert_eq!(c.max_connections, MAX_MAX_CONNECTIONS);
    RunConfig::load(&args(&["--ring-buffer-bytes", "1073741824"])).unwrap();
    assert!(RunConfig::load(&args(&["--ring-buffer-bytes", "524288"])).is_err());
    assert!(RunConfig::load(&args(&["--max-connections", "1048577"])).is_err());
    for (v, ok) in [
        (MIN_MAX_BUFFERED_BYTES, true),
        (MIN_MAX_BUFFERED_BYTES - 1, false),
        (MAX_MAX_BUFFERED_BYTES, true),
        (MAX_MAX_BUFFERED_BYTES + 1, false),
    ] {
        let got = RunConfig::load(&args(&["--max-buffered-bytes", &v.to_string()]));
        assert_eq!(got.is_ok(), ok, "{v}");
        if ok {
            assert_eq!(got.unwrap().max_buffered_bytes, v);
        }
    }
}

#[test]
fn leak_section_errors() {
    let d = Dir::new();
    for (body, want) in [
        (
            "min_length = 0",
            "[leak] min_length = 0: must be at least 1 (default 8)",
        ),
        (
            "min_entropy_bits = 9.5",
            "[leak] min_entropy_bits = 9.5: bits per byte, from 0 to 8 (default 2.5)",
        ),
        (
            "max_decompressed_bytes = 10",
            "[leak] max_decompressed_bytes = 10: must be from 1024 to 1073741824",
        ),
        (
            "partial_min_chars = 0",
            "[leak] partial_min_chars = 0: must be at least 1 (default 16)",
        ),
        (
            "cookies = [\"sid\", \" \"]",
            "[leak] cookies = \" \": empty entry in the list",
        ),
    ] {
        let cfg = d.file("s.toml", &format!("role = \"any\"\n[leak]\n{body}\n"));
        assert_eq!(
            load_err(&["--config", &cfg]),
            format!("config {cfg}: line 2: {want}")
        );
    }
}

#[test]
fn non_loopback_api_needs_a_token_file() {
    assert_eq!(
        load_err(&["--api-addr", "0.0.0.0:9478"]),
        "--api-addr 0.0.0.0:9478: reachable from other hosts, so it needs a token: pass --api-token-file FILE, or bind it to loopback (--api-addr 127.0.0.1:9478)"
    );
    let d = Dir::new();
    let tok = d.file("token", "  s3cr3t-T0ken-value\n");
    let c = RunConfig::load(&args(&[
        "--api-addr",
        "0.0.0.0:9478",
        "--api-token-file",
        &tok,
    ]))
    .unwrap();
    assert_eq!(c.api_token.as_ref().unwrap().expose(), "s3cr3t-T0ken-value");
    assert_eq!(c.api_config().token.as_deref(), Some("s3cr3t-T0ken-value"));
    assert_eq!(c.api_config().addr.to_string(), "0.0.0.0:9478");
    // Never printed.
    assert!(!format!("{c:?}").contains("s3cr3t"));
    assert!(!format!("{:?}", c.api_config()).contains("s3cr3t"));

    let empty = d.file("empty", "\n \n");
    assert_eq!(
        load_err(&["--api-token-file", &empty]),
        format!("--api-token-file {empty}: the file is empty; put the token in it")
    );
    let spaced = d.file("spaced", "two words\n");
    assert!(load_err(&["--api-token-file", &spaced])
        .ends_with("one line of printable ASCII without spaces"));
    assert_eq!(
        load_err(&["--api-token-file", "/nonexistent/token"]),
        "--api-token-file /nonexistent/token: no such file"
    );
}

#[test]
fn sighup_parts() {
    let d = Dir::new();
    let a = d.file("a.toml", "pid = [1]\n[leak]\nmin_length = 10\n");
    let b = d.file(
        "b.toml",
        "pid = [2]\nmetrics_addr = \"127.0.0.1:19999\"\n[leak]\nmin_length = 11\n",
    );
    let ca = RunConfig::load(&args(&["--config", &a])).unwrap();
    let cb = RunConfig::load(&args(&["--config", &b])).unwrap();
    let r = cb.reloadable_part();
    assert_eq!(r.pids, vec![2]);
    assert_eq!(r.leak.min_length, 11);
    assert_eq!(r.role, RoleFilter::Any);
    assert_eq!(ca.restart_needed_for(&cb), vec!["metrics_addr"]);
    assert!(ca.restart_needed_for(&ca).is_empty());
}

#[test]
fn role_filter() {
    assert!(RoleFilter::Any.allows(Role::Server) && RoleFilter::Any.allows(Role::Client));
    assert!(RoleFilter::Server.allows(Role::Server) && !RoleFilter::Server.allows(Role::Client));
    assert!(RoleFilter::Client.allows(Role::Client) && !RoleFilter::Client.allows(Role::Server));
}

#[test]
fn daemonset_config_parses_with_the_daemonset_flags() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/sensor.toml"
    );
    let c = RunConfig::load(&args(&["--config", path, "--metrics-addr=0.0.0.0:9477"])).unwrap();
    assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:9477");
    assert_eq!(c.api_addr.to_string(), "127.0.0.1:9478");
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/sensor"));
    // Sized so idle + ring + budget stays under the 512Mi limit.
    assert_eq!(c.max_buffered_bytes, 320 << 20);
}

#[test]
fn yaml_config_gives_the_same_settings() {
    let d = Dir::new();
    let toml_cfg = d.file(
        "s.toml",
        "metrics_addr = \"127.0.0.1:19477\"\nrole = \"client\"\npid = [7, 8]\ncount_only = true\n\
         state_dir = \"st\"\n[leak]\nheaders = [\"x-k\"]\nmin_entropy_bits = 3.0\n",
    );
    let yaml_cfg = d.file(
        "s.yaml",
        "# comment\nmetrics_addr: 127.0.0.1:19477\nrole: client\npid: [7, 8]\ncount_only: true\n\
         state_dir: st\nleak:\n  headers:\n    - x-k\n  min_entropy_bits: 3.0\n",
    );
    let a = RunConfig::load(&args(&["--config", &toml_cfg])).unwrap();
    let b = RunConfig::load(&args(&["--config", &yaml_cfg])).unwrap();
    assert_eq!(
        RunConfig {
            config_file: None,
            ..a
        },
        RunConfig {
            config_file: None,
            ..b
        }
    );
    // An empty YAML file is all defaults.
    let empty = d.file("e.yml", "\n");
    RunConfig::load(&args(&["--config", &empty])).unwrap();
}

#[test]
fn yaml_errors_name_the_key_or_line() {
    let d = Dir::new();
    let p = d.file("a.yaml", "findings: \"-\"\nmetrics_adr: 0.0.0.0:9477\n");
    let e = load_err(&["--config", &p]);
    assert!(
        e.starts_with(&format!(
            "config {p}: unknown field `metrics_adr`, expected one of"
        )),
        "{e}"
    );
    let p = d.file("b.yaml", "role: server\nmax_connections: lots\n");
    let e = load_err(&["--config", &p]);
    assert!(
        e.starts_with(&format!(
            "config {p}: max_connections: invalid type: string"
        )),
        "{e}"
    );
    let p = d.file("c.yaml", "role: server\n  bad: [indent\n");
    let e = load_err(&["--config", &p]);
    assert!(e.starts_with(&format!("config {p}: line ")), "{e}");
    let p = d.file("d.yaml", "- a\n- b\n");
    assert_eq!(
        load_err(&["--config", &p]),
        format!("config {p}: expected a mapping of settings (key: value)")
    );
    let p = d.file("e.yaml", "ring_buffer_bytes: 4096\n");
    assert_eq!(
        load_err(&["--config", &p]),
        format!("config {p}: ring_buffer_bytes = 4096: must be a power of two from 1048576 to 1073741824 (e.g. 33554432)")
    );
    let p = d.file("f.yaml", "leak:\n  min_length: 0\n");
    assert_eq!(
        load_err(&["--config", &p]),
        format!("config {p}: [leak] min_length = 0: must be at least 1 (default 8)")
    );
    let p = d.file("g.yaml", "pairs:\n");
    let e = load_err(&["--config", &p]);
    assert!(e.contains("remove the key to use its default"), "{e}");
}

/// `sensor replay --config`: the node's file gives the settings that decide
/// findings (leak lists, role, limits, key), with run's precedence (flags
/// win, relative paths from the file's directory); the live-only settings
/// (a non-loopback API whose token file is on the node, outputs) neither
/// apply nor fail.
#[test]
fn replay_takes_the_detection_settings_of_the_run_config() {
    let d = Dir::new();
    let cfg = d.file(
        "sensor.toml",
        "findings = \"/var/log/sensor/findings.jsonl\"\napi_addr = \"0.0.0.0:9478\"\n\
         api_token_file = \"/nonexistent/token\"\nstate_dir = \"state\"\nrole = \"server\"\n\
         max_body_bytes = 65536\nmax_connections = 100\n\
         [leak]\nheaders = [\"X-Partner-Credential\"]\n",
    );
    let c = ReplayConfig::load(&args(&["--config", &cfg])).unwrap();
    let dir = d.0.path();
    assert_eq!(
        c.fingerprint_key_file,
        dir.join("state").join(FINGERPRINT_KEY_NAME)
    );
    assert_eq!(c.role, RoleFilter::Server);
    assert_eq!(c.http_limits.max_body_bytes, 65536);
    assert_eq!(c.max_connections, 100);
    assert_eq!(c.leak.headers, vec!["x-partner-credential".to_string()]);
    // The same as run's for the settings both have.
    let both = d.file(
        "both.toml",
        "state_dir = \"state\"\nrole = \"server\"\nmax_body_bytes = 65536\n\
         max_connections = 100\nmax_buffered_bytes = 2097152\n\
         [leak]\nheaders = [\"X-Partner-Credential\"]\n",
    );
    let run = RunConfig::load(&args(&["--config", &both])).unwrap();
    let replay = ReplayConfig::load(&args(&["--config", &both])).unwrap();
    assert_eq!(run.fingerprint_key_file, replay.fingerprint_key_file);
    assert_eq!(run.role, replay.role);
    assert_eq!(run.leak, replay.leak);
    assert_eq!(run.http_limits, replay.http_limits);
    assert_eq!(run.max_connections, replay.max_connections);
    assert_eq!(run.max_buffered_bytes, replay.max_buffered_bytes);
    // Flags win.
    let c = ReplayConfig::load(&args(&[
        "--config",
        &cfg,
        "--fingerprint-key-file",
        "/k",
        "--role",
        "any",
        "--max-body-bytes",
        "2048",
    ]))
    .unwrap();
    assert_eq!(c.fingerprint_key_file, PathBuf::from("/k"));
    assert_eq!(c.role, RoleFilter::Any);
    assert_eq!(c.http_limits.max_body_bytes, 2048);
    // Errors are the file's, one line.
    let bad = d.file("bad.toml", "max_connections = 0\n");
    let e = ReplayConfig::load(&args(&["--config", &bad]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1: max_connections = 0"), "{e}");
    // Without a file: run's defaults.
    let c = ReplayConfig::load(&args(&[])).unwrap();
    assert_eq!(
        c.fingerprint_key_file,
        PathBuf::from(DEFAULT_STATE_DIR).join(FINGERPRINT_KEY_NAME)
    );
    assert_eq!(c.leak, LeakConfig::default());
}
