//! Bearer-token check for the live API.
//!
//! Both sides are hashed before comparing so the comparison takes the same time
//! whatever the token's length or the position of the first differing byte.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// The configured token, kept only as its digest.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    digest: [u8; 32],
}

impl TokenCheck {
    pub(crate) fn new(token: &str) -> TokenCheck {
        TokenCheck {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// True when the request carries `Authorization: Bearer <token>`.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let Some(presented) = value
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case(b"bearer "))
            .map(|_| &value[7..])
        else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(presented).into();
        constant_time_eq(&got, &self.digest)
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let c = TokenCheck::new("s3cret-token-value");
        assert!(c.allows(&headers("Bearer s3cret-token-value")));
        assert!(c.allows(&headers("bearer s3cret-token-value")));
        assert!(!c.allows(&headers("Bearer s3cret-token-valuE")));
        assert!(!c.allows(&headers("Bearer s3cret-token-value ")));
        assert!(!c.allows(&headers("Bearer s3cret-token-valu")));
        assert!(!c.allows(&headers("Basic s3cret-token-value")));
        assert!(!c.allows(&headers("Bearer")));
        assert!(!c.allows(&headers("")));
        assert!(!c.allows(&HeaderMap::new()));
    }
}
