//! Credential fingerprints: HMAC-SHA256 under a per-node key, so findings can be
//! correlated (same key → same fingerprint) without ever carrying the value.

use std::io::{Read, Write};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex digits of the HMAC kept in a fingerprint (64 bits: enough to correlate,
/// too few to confirm a guessed low-entropy value offline cheaply).
pub const FINGERPRINT_HEX_DIGITS: usize = 16;

#[derive(Clone)]
pub struct Fingerprinter {
    key: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter { key: <redacted> }")
    }
}

impl Fingerprinter {
    pub fn new(key: [u8; 32]) -> Self {
        Fingerprinter {
            key: zeroize::Zeroizing::new(key),
        }
    }

    pub fn fingerprint(&self, value: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..])
            .expect("HMAC accepts any key length");
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut s = hex::encode(&digest[..FINGERPRINT_HEX_DIGITS / 2]);
        s.truncate(FINGERPRINT_HEX_DIGITS);
        s
    }
}

/// Reads the 32-byte key at `path`, or creates it once (mode 0600, parent dirs
/// created) from the OS random source, so fingerprints stay stable across restarts.
pub fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::File::open(path) {
        Ok(mut f) => return read_key(&mut f, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key)
        }
        // Another sensor created it between our open and create: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(&mut std::fs::File::open(path)?, path)
        }
        Err(e) => Err(e),
    }
}

fn read_key(f: &mut std::fs::File, path: &Path) -> std::io::Result<[u8; 32]> {
    let mut buf = Vec::with_capacity(33);
    f.take(33).read_to_end(&mut buf)?;
    if buf.len() != 32 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "fingerprint key file {} must hold exactly 32 bytes (has {})",
                path.display(),
                buf.len()
            ),
        ));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&buf);
    zeroize::Zeroize::zeroize(&mut buf);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_16_hex_and_keyed() {
        let a = Fingerprinter::new([1; 32]);
        let b = Fingerprinter::new([2; 32]);
        let fa = a.fingerprint(b"sk_live_abc");
        assert_eq!(fa.len(), 16);
        assert!(fa.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(fa, a.fingerprint(b"sk_live_abc"));
        assert_ne!(fa, b.fingerprint(b"sk_live_abc"));
        assert_ne!(fa, a.fingerprint(b"sk_live_abd"));
    }

    #[test]
    fn key_created_once_0600_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/sub/fp.key");
        let k1 = load_or_create_key(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = load_or_create_key(&p).unwrap();
        assert_eq!(k1, k2);
        assert_ne!(k1, [0u8; 32]);
        std::fs::write(&p, b"short").unwrap();
        assert!(load_or_create_key(&p).is_err());
    }
}
