//! Test credentials: random per run, registered so that everything the
//! harness prints can be redacted, and asserted absent from every output.

use std::fmt;
use std::io::Read;
use std::sync::Mutex;

/// Every secret created in this test process (for [`redact`]).
static REGISTRY: Mutex<Vec<String>> = Mutex::new(Vec::new());

const ALPHANUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A test credential.  `Debug`/`Display` never show the value; use
/// [`Secret::expose`] where the value must go to a client.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret {
    value: String,
}

impl Secret {
    /// `prefix` followed by `random_len` random alphanumerics.
    pub fn random(prefix: &str, random_len: usize) -> Secret {
        Secret::from_parts(&[prefix, &random_alphanum(random_len)])
    }

    /// A secret built from fixed and random parts, e.g. to place characters
    /// that an encoding must change (`/`, `+`, `&`).
    pub fn from_parts(parts: &[&str]) -> Secret {
        let value: String = parts.concat();
        register(&value);
        Secret { value }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn len(&self) -> usize {
        self.value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(len={})", self.value.len())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret len={}>", self.value.len())
    }
}

/// Registers an extra string (e.g. the base64 of a Basic credential) as
/// secret, so [`redact`] hides it too.
pub fn register(value: &str) {
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    if !value.is_empty() && !reg.iter().any(|v| v == value) {
        reg.push(value.to_string());
        append_to_ledger(value);
    }
}

/// `cargo xtask test` names a ledger file (mode 0600, deleted after the run)
/// in `SENSOR_SECRET_LEDGER`: every test secret of every test process goes
/// there, so the whole suite's output can be scanned for them afterwards.
fn append_to_ledger(value: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = std::env::var_os("SENSOR_SECRET_LEDGER") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path);
    match file {
        // One write per line: lines from parallel test processes never interleave.
        Ok(mut f) => {
            let _ = f.write_all(format!("{value}\n").as_bytes());
        }
        Err(e) => panic!(
            "cannot append to the secret ledger {}: {e}",
            std::path::Path::new(&path).display()
        ),
    }
}

/// `text` with every registered secret replaced by `<secret#N>`.
pub fn redact(text: &str) -> String {
    let reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_string();
    // Longest first, so a secret containing another is replaced whole.
    let mut secrets: Vec<(usize, &String)> = reg.iter().enumerate().collect();
    secrets.sort_by_key(|(_, s)| std::cmp::Reverse(s.len()));
    for (i, s) in secrets {
        out = out.replace(s.as_str(), &format!("<secret#{i}>"));
    }
    out
}

/// Fails (naming the output and the secret's index, never its value) if any
/// raw secret occurs in `text`.
pub fn assert_no_secrets(what: &str, text: &str, secrets: &[&Secret]) {
    let found: Vec<String> = secrets
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty() && text.contains(s.expose()))
        .map(|(i, s)| format!("secret #{i} ({s})"))
        .collect();
    assert!(
        found.is_empty(),
        "raw test credential(s) leaked into {what}: {}",
        found.join(", ")
    );
}

/// `n` random alphanumeric characters from /dev/urandom.
pub fn random_alphanum(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    // 62 symbols: the small modulo bias does not matter for test keys.
    bytes
        .iter()
        .map(|b| ALPHANUM[*b as usize % ALPHANUM.len()] as char)
        .collect()
}

/// Standard base64 (for building Basic credentials and expected blobs).
pub fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn redact_hides_registered_values() {
        let s = Secret::random("rd_", 20);
        let text = format!("a {} b", s.expose());
        assert!(!redact(&text).contains(s.expose()));
        assert!(format!("{s:?} {s}").find(s.expose()).is_none());
    }

    #[test]
    #[should_panic(expected = "leaked into stdout")]
    fn assert_no_secrets_fails_on_a_raw_secret() {
        let s = Secret::random("nf_", 20);
        assert_no_secrets("stdout", &format!("xx{}xx", s.expose()), &[&s]);
    }

    #[test]
    fn assert_no_secrets_passes_without_one() {
        let s = Secret::random("ok_", 20);
        assert_no_secrets("stdout", "nothing here", &[&s]);
    }
}
