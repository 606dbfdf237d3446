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
    /// Query parameter and body field names that end, once normalised
    /// (lower-case ASCII letters and digits only: `new_password`,
    /// `clientSecret`, `user[password]`), in one of these are credentials
    /// too.  Entries are normalised the same way.
    pub credential_name_suffixes: Vec<String>,
    /// Words that make a name no credential whatever its suffix says
    /// (anti-forgery, idempotency, pagination, captcha tokens): checked in
    /// the normalised header, query, field and cookie name.  Names listed
    /// in `headers`, `query_params`, `cookies` or `body_fields` still count.
    pub not_credential_words: Vec<String>,
    /// Cookies that are never session credentials however random their
    /// value looks (analytics, advertising, consent, load-balancer
    /// affinity); case-insensitive, one `*` in an entry stands for any run
    /// of characters (`_ga_*`, `mp_*_mixpanel`).
    pub not_credential_cookies: Vec<String>,
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
            credential_name_suffixes: v(&[
                "password",
                "passwd",
                "passphrase",
                "pwd",
                "secret",
                "token",
                "apikey",
                "secretkey",
                "privatekey",
                "accesskey",
                "signingkey",
                "subscriptionkey",
                "credential",
                // PKCE's `code_verifier` (RFC 7636), the OIDC logout
                // `id_token_hint` (a JWT).
                "codeverifier",
                "idtokenhint",
                // Analytics SDKs' write keys (Segment's and RudderStack's
                // `writeKey`, Jitsu's `write_key`): they authenticate what
                // is sent to the project.  `writeKeyId` (an identifier of
                // the key) does not end in it.
                "writekey",
            ]),
            not_credential_words: v(&[
                // Anti-forgery tokens: made to be put in pages and read by
                // scripts, echoed by design; they authenticate nothing alone.
                "csrf",
                "xsrf",
                "authenticity",
                // ASP.NET's `__RequestVerificationToken`, `.AspNetCore.Antiforgery.*`.
                "requestverification",
                "antiforgery",
                // Request identities, not secrets.
                "idempotency",
                "websocketkey",
                // AWS idempotency tokens (`ClientRequestToken`, EC2's
                // `ClientToken`, EFS's `CreationToken`): echoed by design
                // (Secrets Manager returns one as the `VersionId`).
                "clientrequesttoken",
                "clienttoken",
                "creationtoken",
                // SigV4's scope in a presigned URL (`X-Amz-Credential`: the
                // access key id, date, region, service), an identifier that
                // every S3 error quotes; in the Authorization header it is
                // left out the same way (only `Signature` is taken).
                "amzcredential",
                // Pagination and sync cursors (AWS `NextToken`, `pageToken`).
                "pagetoken",
                "nexttoken",
                "pagination",
                "cursor",
                "continuation",
                "synctoken",
                // Proofs of a solved challenge, and push-notification addresses.
                "captcha",
                "turnstile",
                "devicetoken",
                "pushtoken",
                "fcmtoken",
            ]),
            not_credential_cookies: v(&[
                // Google Analytics / Ads
                "_ga",
                "_ga_*",
                "_gat*",
                "_gac_*",
                "_gid",
                "_gcl_*",
                "__utm*",
                "__gads",
                "__gpi",
                // Meta, Microsoft (Clarity, UET), TikTok, Pinterest, Snap, Reddit
                "_fbp",
                "_fbc",
                "_clck",
                "_clsk",
                "_uet*",
                "_ttp",
                "_pin_unauth",
                "_scid*",
                "_rdt_uuid",
                // Segment, Mixpanel, Amplitude, Heap, Snowplow, Hotjar, Matomo
                "ajs_*",
                "mp_*_mixpanel",
                "amp_*",
                "amplitude_id*",
                "_hp2_*",
                "_sp_id*",
                "_sp_ses*",
                "_hj*",
                "_pk_*",
                // HubSpot, Intercom (identities; its session cookie is not listed),
                // Optimizely, Adobe, Datadog RUM, Stripe fraud signals
                "__hstc",
                "__hssc",
                "__hssrc",
                "hubspotutk",
                "messagesutk",
                "intercom-id-*",
                "intercom-device-id-*",
                "optimizelyenduserid",
                "amcv_*",
                "amcvs_*",
                "s_vi",
                "s_fid",
                "_dd_s",
                "__stripe_mid",
                "__stripe_sid",
                // Consent banners
                "optanon*",
                "cookieconsent",
                "euconsent*",
                "cookieyes-consent",
                // Load-balancer affinity and bot management
                "awsalb*",
                "awselb*",
                "__cf_bm",
                "_cfuvid",
            ]),
            min_length: 8,
            min_entropy_bits: 2.5,
            max_decompressed_bytes: 16 * 1024 * 1024,
            partial_min_chars: 16,
        }
    }
}
