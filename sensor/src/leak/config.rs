//! What counts as a credential, and detection bounds.  Every list is
//! configurable (config file `[leak]` section); defaults follow the taxonomy in
//! design/architecture.md.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeakConfig {
    /// Request headers (lower-case) whose value is a credential.
    pub headers: Vec<String>,
    /// Header-name suffixes that mark a credential header (`-key`, `-token`, `-secret`).
    pub header_suffixes: Vec<String>,
    /// Query parameters whose value is a credential.
    pub query_params: Vec<String>,
    /// Cookie names that are session credentials (others count when they look random enough).
    pub cookies: Vec<String>,
    /// Form / JSON / multipart body fields whose value is a credential.
    pub body_fields: Vec<String>,
    /// Shortest value that can be a credential.
    pub min_length: usize,
    /// Least Shannon entropy (bits per byte) a value needs to be a candidate.
    pub min_entropy_bits: f64,
    /// Largest decompressed response body searched (bomb guard).
    pub max_decompressed_bytes: usize,
    /// Unmasked run of the credential that makes a partial exposure.
    pub partial_min_chars: usize,
}

impl Default for LeakConfig {
    fn default() -> Self {
        fn v(items: &[&str]) -> Vec<String> {
            items.iter().map(|s| s.to_string()).collect()
        }
        LeakConfig {
            headers: v(&[
                "x-api-key",
                "api-key",
                "apikey",
                "x-auth-token",
                "x-access-token",
            ]),
            header_suffixes: v(&["-key", "-token", "-secret"]),
            query_params: v(&[
                "api_key",
                "apikey",
                "key",
                "token",
                "access_token",
                "id_token",
                "client_secret",
                "code",
            ]),
            cookies: v(&[
                "session",
                "sessionid",
                "session_id",
                "sid",
                "connect.sid",
                "jsessionid",
                "phpsessid",
            ]),
            body_fields: v(&[
                "client_secret",
                "refresh_token",
                "access_token",
                "password",
                "api_key",
            ]),
            min_length: 8,
            min_entropy_bits: 2.5,
            max_decompressed_bytes: 16 * 1024 * 1024,
            partial_min_chars: 16,
        }
    }
}
