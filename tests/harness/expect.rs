//! Exact expectations on findings: each expected leak must be reported
//! exactly once with the right fields, and nothing else may be reported.

use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::contract::{Finding, FINDING_SCHEMA};
use crate::secrets::Secret;

/// One finding a test expects (credential by its test value; the finding
/// itself only carries a fingerprint and a length).
#[derive(Clone, Debug)]
pub struct ExpectedFinding {
    pub secret: Secret,
    pub source: &'static str,
    pub name: String,
    /// Credential type, when the contract fixes it (`None`: any type).
    pub kind: Option<&'static str>,
    pub method: &'static str,
    /// Path without query.
    pub path: String,
    pub status: u16,
    pub sink_location: &'static str,
    pub sink_name: Option<&'static str>,
    pub encoding: &'static str,
    pub content_encoding: &'static str,
    pub exposure: &'static str,
    /// The match must be at or after this offset (e.g. past 64 KiB).
    pub min_offset: u64,
}

impl ExpectedFinding {
    /// A credential from `source`/`name` reflected in the response body,
    /// plain, full, identity content encoding; refine with the builders.
    pub fn new(secret: &Secret, source: &'static str, name: &str) -> Self {
        ExpectedFinding {
            secret: secret.clone(),
            source,
            name: name.to_string(),
            kind: None,
            method: "GET",
            path: String::new(),
            status: 200,
            sink_location: "body",
            sink_name: None,
            encoding: "plain",
            content_encoding: "identity",
            exposure: "full",
            min_offset: 0,
        }
    }

    pub fn kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
        self
    }

    pub fn request(mut self, method: &'static str, path: &str, status: u16) -> Self {
        self.method = method;
        self.path = path.to_string();
        self.status = status;
        self
    }

    /// Sink is a response header (lower-case name), e.g. `location`.
    pub fn in_header(mut self, name: &'static str) -> Self {
        self.sink_location = "header";
        self.sink_name = Some(name);
        self
    }

    pub fn encoding(mut self, encoding: &'static str) -> Self {
        self.encoding = encoding;
        self
    }

    pub fn content_encoding(mut self, ce: &'static str) -> Self {
        self.content_encoding = ce;
        self
    }

    pub fn min_offset(mut self, offset: u64) -> Self {
        self.min_offset = offset;
        self
    }

    fn key(&self) -> String {
        format!(
            "{} {} | {}/{} -> {}{}",
            self.method,
            self.path,
            self.source,
            self.name,
            self.sink_location,
            self.sink_name.map(|n| format!(":{n}")).unwrap_or_default()
        )
    }

    fn matches(&self, f: &Finding) -> bool {
        f.credential.source == self.source
            && f.credential.name == self.name
            && f.sink.location == self.sink_location
            && f.sink.name.as_deref() == self.sink_name
            && f.request.method == self.method
            && f.path_only() == self.path
    }
}

/// Keeps the findings reported for `role` by one of `pids`.
pub fn findings_of(findings: &[Finding], role: &str, pids: &[u32]) -> Vec<Finding> {
    findings
        .iter()
        .filter(|f| f.role == role && pids.contains(&f.process.pid))
        .cloned()
        .collect()
}

/// Checks that `actual` holds exactly the `expected` findings (one each, all
/// fields as expected, `role` everywhere), that fingerprints are consistent
/// (one per credential, different credentials differ) and that nothing else
/// was reported.  The error lists every problem.
pub fn check_findings(actual: &[Finding], expected: &[ExpectedFinding], role: &str) -> Result<()> {
    let mut problems = Vec::new();
    let mut used = vec![false; actual.len()];
    let mut fingerprint_of: HashMap<&str, &str> = HashMap::new();

    for f in actual {
        if f.schema != FINDING_SCHEMA || f.kind != "credential_leak" {
            problems.push(format!(
                "bad schema/kind {}/{}: {}",
                f.schema,
                f.kind,
                f.summary()
            ));
        }
        if f.credential.fingerprint.len() != 16
            || !f
                .credential
                .fingerprint
                .chars()
                .all(|c| c.is_ascii_hexdigit())
        {
            problems.push(format!("fingerprint is not 16 hex digits: {}", f.summary()));
        }
    }

    for e in expected {
        let hits: Vec<usize> = (0..actual.len())
            .filter(|&i| e.matches(&actual[i]))
            .collect();
        if hits.len() != 1 {
            problems.push(format!(
                "expected exactly one finding [{}], got {}",
                e.key(),
                hits.len()
            ));
        }
        for &i in &hits {
            used[i] = true;
            let f = &actual[i];
            let mut wrong = Vec::new();
            if f.response.status != e.status {
                wrong.push(format!("status {} != {}", f.response.status, e.status));
            }
            if f.sink.encoding != e.encoding {
                wrong.push(format!("encoding {} != {}", f.sink.encoding, e.encoding));
            }
            if f.sink.content_encoding != e.content_encoding {
                wrong.push(format!(
                    "content_encoding {} != {}",
                    f.sink.content_encoding, e.content_encoding
                ));
            }
            if f.exposure != e.exposure {
                wrong.push(format!("exposure {} != {}", f.exposure, e.exposure));
            }
            if let Some(kind) = e.kind {
                if f.credential.kind != kind {
                    wrong.push(format!("credential type {} != {kind}", f.credential.kind));
                }
            }
            if f.credential.length != e.secret.len() {
                wrong.push(format!(
                    "credential length {} != {}",
                    f.credential.length,
                    e.secret.len()
                ));
            }
            if f.sink.offset < e.min_offset {
                wrong.push(format!("sink offset {} < {}", f.sink.offset, e.min_offset));
            }
            if f.role != role {
                wrong.push(format!("role {} != {role}", f.role));
            }
            if !wrong.is_empty() {
                problems.push(format!("[{}]: {}", e.key(), wrong.join(", ")));
            }
            match fingerprint_of.insert(e.secret.expose(), &f.credential.fingerprint) {
                Some(prev) if prev != f.credential.fingerprint => problems.push(format!(
                    "[{}]: same credential, different fingerprints",
                    e.key()
                )),
                _ => {}
            }
        }
    }

    let mut secret_of: HashMap<&str, &str> = HashMap::new();
    for (secret, fp) in &fingerprint_of {
        if let Some(other) = secret_of.insert(fp, secret) {
            if other != *secret {
                problems.push(format!("two different credentials share fingerprint {fp}"));
            }
        }
    }

    for (i, f) in actual.iter().enumerate() {
        if !used[i] {
            problems.push(format!("unexpected finding: {}", f.summary()));
        }
    }
    if !problems.is_empty() {
        bail!(
            "findings differ from expectations:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(path: &str, fingerprint: &str, length: usize, encoding: &str) -> Finding {
        serde_json::from_value(serde_json::json!({
            "schema": "sensor.finding.v1", "ts": "2026-11-22T21:00:00.123456Z",
            "kind": "credential_leak", "severity": "high", "exposure": "full",
            "credential": {"source": "header", "name": "x-api-key", "type": "api_key",
                           "fingerprint": fingerprint, "length": length},
            "sink": {"location": "body", "name": null, "encoding": encoding,
                     "content_encoding": "identity", "offset": 10},
            "request": {"method": "GET", "path": path, "host": null},
            "response": {"status": 401, "content_type": "application/json"},
            "role": "server",
            "process": {"pid": 7, "comm": "uvicorn", "container_id": null, "pod": null},
            "connection": {"id": "7:1:1", "peer": null}
        }))
        .unwrap()
    }

    fn expect(secret: &Secret, path: &str) -> ExpectedFinding {
        ExpectedFinding::new(secret, "header", "x-api-key")
            .kind("api_key")
            .request("GET", path, 401)
    }

    #[test]
    fn exact_match_passes() {
        let a = Secret::random("a", 19);
        let b = Secret::random("b", 21);
        let actual = [
            finding("/a", "00000000000000aa", 20, "plain"),
            finding("/b?k=<redacted>", "00000000000000bb", 22, "plain"),
        ];
        check_findings(&actual, &[expect(&a, "/a"), expect(&b, "/b")], "server").unwrap();
    }

    #[test]
    fn duplicates_missing_and_extra_findings_fail() {
        let a = Secret::random("a", 19);
        let dup = [
            finding("/a", "00000000000000aa", 20, "plain"),
            finding("/a", "00000000000000aa", 20, "plain"),
        ];
        let err = check_findings(&dup, &[expect(&a, "/a")], "server")
            .unwrap_err()
            .to_string();
        assert!(err.contains("got 2"), "{err}");
        let err = check_findings(&[], &[expect(&a, "/a")], "server")
            .unwrap_err()
            .to_string();
        assert!(err.contains("got 0"), "{err}");
        let err = check_findings(&dup[..1], &[], "server")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected finding"), "{err}");
    }

    #[test]
    fn wrong_fields_and_fingerprints_fail() {
        let a = Secret::random("a", 19);
        let b = Secret::random("b", 19);
        let err = check_findings(
            &[finding("/a", "00000000000000aa", 99, "base64")],
            &[expect(&a, "/a")],
            "client",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("encoding base64 != plain")
                && err.contains("length 99 != 20")
                && err.contains("role server != client"),
            "{err}"
        );
        // Same credential twice with different fingerprints.
        let actual = [
            finding("/a", "00000000000000aa", 20, "plain"),
            finding("/a2", "00000000000000ab", 20, "plain"),
        ];
        let err = check_findings(&actual, &[expect(&a, "/a"), expect(&a, "/a2")], "server")
            .unwrap_err()
            .to_string();
        assert!(err.contains("different fingerprints"), "{err}");
        // Different credentials sharing one fingerprint.
        let actual = [
            finding("/a", "00000000000000aa", 20, "plain"),
            finding("/b", "00000000000000aa", 20, "plain"),
        ];
        let err = check_findings(&actual, &[expect(&a, "/a"), expect(&b, "/b")], "server")
            .unwrap_err()
            .to_string();
        assert!(err.contains("share fingerprint"), "{err}");
        // Not hex.
        let err = check_findings(
            &[finding("/a", "xyz", 20, "plain")],
            &[expect(&a, "/a")],
            "server",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("16 hex digits"), "{err}");
    }
}
