//! Checks of `deploy/`: alert rules (promtool check + unit tests, and that the
//! unit tests can fail), YAML lint, Kubernetes schema validation of every
//! manifest and of the kustomize build, the PrometheusRule carrying exactly
//! the rules file's rules, and the DaemonSet's security-relevant settings.
//!
//! Tools: promtool (Debian `prometheus`), yamllint, kubernetes-validate (PyPI,
//! in `$SENSOR_TOOLS_VENV` or `<workspace>/.tools/venv`), and `kustomize` or
//! `kubectl kustomize`.  A missing tool skips its check with a message, unless
//! `SENSOR_REQUIRE_TOOLS=1` (set by `cargo xtask test`), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Kubernetes versions the manifests are validated against: an older one
/// still common in production and a recent one.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.34.0"];

/// Kinds whose schema is not part of Kubernetes (Prometheus Operator CRDs,
/// the kustomize file): validated by the checks below instead.
const NON_CORE_KINDS: &[&str] = &["PrometheusRule", "ServiceMonitor", "Kustomization"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn require_tools() -> bool {
    std::env::var("SENSOR_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Finds an executable on PATH (or at an absolute path).
fn which(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// The tool, or None after saying why this check is skipped (a failure when
/// tools are required).
fn tool(found: Option<PathBuf>, what: &str, install: &str) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let msg = format!("{what} not found ({install})");
    if require_tools() {
        panic!("{msg}; SENSOR_REQUIRE_TOOLS=1 requires it");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn venv_bin(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("SENSOR_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/venv"));
    let p = venv.join("bin").join(name);
    p.is_file().then_some(p)
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn promtool() -> Option<PathBuf> {
    tool(which("promtool"), "promtool", "apt-get install prometheus")
}

#[test]
fn alert_rules_are_valid() {
    let Some(promtool) = promtool() else { return };
    let out = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(deploy().join("prometheus/sensor-rules.yaml")));
    assert_ok(&out, "promtool check rules");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
}

#[test]
fn alert_rules_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    let tests = yaml_files(&deploy().join("prometheus/tests"));
    assert!(!tests.is_empty());
    for t in tests {
        let out = run(Command::new(&promtool).arg("test").arg("rules").arg(&t));
        assert_ok(&out, &format!("promtool test rules {}", t.display()));
    }
}

/// Every alert has a unit test with a firing case and a quiet case.
#[test]
fn every_alert_has_a_positive_and_a_negative_unit_test() {
    let rules = std::fs::read_to_string(deploy().join("prometheus/sensor-rules.yaml")).unwrap();
    let tests =
        std::fs::read_to_string(deploy().join("prometheus/tests/sensor-rules.test.yaml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 6, "{alerts:?}");
    for a in alerts {
        let cases: Vec<&str> = tests
            .split("alertname: ")
            .skip(1)
            .filter(|c| c.starts_with(&format!("{a}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{a}: no case where it stays quiet"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{a}: no case where it fires"
        );
    }
}

/// The unit tests can fail: break each alert's expression and promtool test
/// must notice.
#[test]
fn alert_unit_tests_catch_broken_rules() {
    let Some(promtool) = promtool() else { return };
    let rules = std::fs::read_to_string(deploy().join("prometheus/sensor-rules.yaml")).unwrap();
    let tests =
        std::fs::read_to_string(deploy().join("prometheus/tests/sensor-rules.test.yaml")).unwrap();
    let mutations: &[(&str, &str)] = &[
        // The first-leak branch.
        (
            "(sensor_credential_leaks_total > 0 unless sensor_credential_leaks_total offset 5m)",
            "(vector(0) > 1)",
        ),
        (
            "increase(sensor_credential_leaks_total[5m]) > 0",
            "increase(sensor_credential_leaks_total[5m]) > 5",
        ),
        ("> 0.01", "> 0.5"),
        ("up{job=\"sensor\"} == 0", "up{job=\"sensor\"} == 2"),
        ("absent(up{job=\"sensor\"})", "absent(up)"),
        (
            "unless on (job, instance) sensor_tls_attachments",
            "unless on (job) sensor_tls_attachments",
        ),
        (
            "(sensor_blind_processes{expected!=\"true\"}) > 0",
            "(sensor_blind_processes{expected!=\"true\"}) >= 0",
        ),
        // Expected blind processes (a node's own agents) must not fire it.
        (
            "sensor_blind_processes{expected!=\"true\"}",
            "sensor_blind_processes",
        ),
    ];
    let dir = std::env::temp_dir().join(format!("sensor-rules-mutants-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(dir.join("tests/t.yaml"), &tests).unwrap();
    for (from, to) in mutations {
        assert!(rules.contains(from), "mutation target gone: {from}");
        std::fs::write(dir.join("sensor-rules.yaml"), rules.replacen(from, to, 1)).unwrap();
        let out = run(Command::new(&promtool)
            .arg("test")
            .arg("rules")
            .arg(dir.join("tests/t.yaml")));
        assert!(
            !out.status.success(),
            "the unit tests did not notice: {from} -> {to}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn yaml_is_lint_clean() {
    let Some(yamllint) = tool(which("yamllint"), "yamllint", "apt-get install yamllint") else {
        return;
    };
    let out = run(Command::new(yamllint)
        .arg("-s")
        .arg("-c")
        .arg(deploy().join(".yamllint.yaml"))
        .arg(deploy()));
    assert_ok(&out, "yamllint -s deploy/");
}

fn kubernetes_validate() -> Option<PathBuf> {
    tool(
        venv_bin("kubernetes-validate").or_else(|| which("kubernetes-validate")),
        "kubernetes-validate",
        "pip install kubernetes-validate into $SENSOR_TOOLS_VENV or .tools/venv (cargo xtask setup)",
    )
}

/// Runs kubernetes-validate --strict on files; fails on any failure, and
/// checks that only the known non-core kinds were left unvalidated.
fn validate(kv: &Path, files: &[PathBuf], version: &str) {
    let out = run(Command::new(kv)
        .args(["--strict", "-k", version])
        .args(files));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate {version} failed:\n{text}"
    );
    for line in text.lines().filter(|l| l.contains("Couldn't find schema")) {
        let known = NON_CORE_KINDS
            .iter()
            .any(|k| line.contains(&format!("kind {k} ")));
        assert!(known, "a manifest kind went unvalidated: {line}");
        eprintln!("skipped (not a core Kubernetes kind; checked elsewhere): {line}");
    }
    assert!(
        text.contains("passed for resource daemonset/sensor"),
        "{text}"
    );
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let Some(kv) = kubernetes_validate() else {
        return;
    };
    let files = yaml_files(&deploy().join("kubernetes"));
    for v in KUBERNETES_VERSIONS {
        validate(&kv, &files, v);
    }
}

/// The validator does reject a wrong manifest (so a pass means something).
#[test]
fn kubernetes_validate_rejects_a_broken_daemonset() {
    let Some(kv) = kubernetes_validate() else {
        return;
    };
    let ds = std::fs::read_to_string(deploy().join("kubernetes/daemonset.yaml")).unwrap();
    let broken = ds.replacen("hostPID: true", "hostPID: true\n      hostPIDs: true", 1);
    assert_ne!(ds, broken);
    let p = std::env::temp_dir().join(format!("sensor-broken-ds-{}.yaml", std::process::id()));
    std::fs::write(&p, broken).unwrap();
    let out = run(Command::new(&kv)
        .args(["--strict", "-k", KUBERNETES_VERSIONS[1]])
        .arg(&p));
    let _ = std::fs::remove_file(&p);
    assert!(!out.status.success(), "an unknown field passed validation");
}

/// `kustomize build` (or `kubectl kustomize`) output, if either tool exists.
fn kustomize_build() -> Option<String> {
    let (cmd, args): (PathBuf, Vec<&str>) = if let Some(k) = which("kustomize") {
        (k, vec!["build"])
    } else if let Some(k) = which("kubectl") {
        (k, vec!["kustomize"])
    } else {
        tool(None, "kustomize (or kubectl)", "install kustomize")?;
        unreachable!()
    };
    let out = run(Command::new(cmd)
        .args(args)
        .arg(deploy().join("kubernetes")));
    assert_ok(&out, "kustomize build deploy/kubernetes");
    Some(String::from_utf8(out.stdout).unwrap())
}

/// YAML (all documents) as JSON, through the venv's PyYAML.
fn yaml_to_json(yaml: &str) -> Option<Vec<serde_json::Value>> {
    let py = tool(
        venv_bin("python"),
        "the tools venv's python (with PyYAML)",
        "cargo xtask setup",
    )?;
    let p = std::env::temp_dir().join(format!(
        "sensor-y2j-{}-{}.yaml",
        std::process::id(),
        yaml.len()
    ));
    std::fs::write(&p, yaml).unwrap();
    let out = run(Command::new(py).arg("-c").arg(
        "import sys, json, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
    ).arg(&p));
    let _ = std::fs::remove_file(&p);
    assert_ok(&out, "yaml to json");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn kustomize_build_validates() {
    let Some(kv) = kubernetes_validate() else {
        return;
    };
    let Some(built) = kustomize_build() else {
        return;
    };
    let p = std::env::temp_dir().join(format!("sensor-kustomized-{}.yaml", std::process::id()));
    std::fs::write(&p, &built).unwrap();
    for v in KUBERNETES_VERSIONS {
        validate(&kv, std::slice::from_ref(&p), v);
    }
    let _ = std::fs::remove_file(&p);
}

#[test]
fn prometheusrule_carries_exactly_the_rules_file() {
    let rules = std::fs::read_to_string(deploy().join("prometheus/sensor-rules.yaml")).unwrap();
    let crd = std::fs::read_to_string(deploy().join("kubernetes/prometheusrule.yaml")).unwrap();
    let (Some(rules), Some(crd)) = (yaml_to_json(&rules), yaml_to_json(&crd)) else {
        return;
    };
    assert_eq!(crd[0]["kind"], "PrometheusRule");
    assert_eq!(
        crd[0]["spec"]["groups"], rules[0]["groups"],
        "deploy/kubernetes/prometheusrule.yaml differs from deploy/prometheus/sensor-rules.yaml"
    );
}

#[test]
fn daemonset_is_unprivileged_with_the_capabilities_it_needs() {
    let Some(built) = kustomize_build() else {
        return;
    };
    let Some(docs) = yaml_to_json(&built) else {
        return;
    };
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "DaemonSet",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(
            kinds.contains(&k),
            "{k} missing from the kustomize build: {kinds:?}"
        );
    }
    assert!(
        !kinds.iter().any(|k| k.contains("Role")),
        "the sensor needs no RBAC"
    );
    for d in &docs {
        assert_eq!(
            d["metadata"]["namespace"].as_str().unwrap_or("sensor"),
            "sensor"
        );
    }
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert!(pod["hostNetwork"].is_null(), "no host network needed");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE", "SYS_PTRACE"])
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--metrics-addr=0.0.0.0:9477"), "{args:?}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 9477);
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    // Config from the generated ConfigMap; the state dir survives restarts.
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let cm_name = cm["metadata"]["name"].as_str().unwrap();
    let vols = pod["volumes"].as_array().unwrap();
    assert!(
        vols.iter().any(|v| v["configMap"]["name"] == cm_name),
        "config volume uses {cm_name}"
    );
    assert!(vols
        .iter()
        .any(|v| v["hostPath"]["path"] == "/var/lib/sensor"));
    assert!(vols
        .iter()
        .any(|v| v["hostPath"]["path"] == "/sys/kernel/btf"));
    let mounts = c["volumeMounts"].as_array().unwrap();
    let btf = mounts
        .iter()
        .find(|m| m["mountPath"] == "/sys/kernel/btf")
        .unwrap();
    assert_eq!(btf["readOnly"], true);
    assert!(cm["data"]["sensor.toml"]
        .as_str()
        .unwrap()
        .contains("api_addr = \"127.0.0.1:9478\""));
    // The Service selects the pods and the ServiceMonitor selects the Service.
    let svc = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    let sm = docs.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v);
    }
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v);
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
}

#[test]
fn dockerfile_builds_with_xtask_and_runs_the_binary_only() {
    let d = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    assert!(d.contains("cargo xtask build --release"));
    assert!(d.contains("FROM debian:12-slim"));
    assert!(d.contains("ENTRYPOINT [\"/usr/local/bin/sensor\"]"));
}
