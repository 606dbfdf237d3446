//! The finding: schema `sensor.finding.v1` (design/contract.md).  What users,
//! alert rules and scripts rely on; change only on purpose (new schema version,
//! old fields kept).

use serde::{Deserialize, Serialize};

use crate::http::types::{ConnInfo, ProcessInfo, Role};

pub const FINDING_SCHEMA: &str = "sensor.finding.v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub schema: String,
    /// RFC 3339, UTC, microseconds.
    pub ts: String,
    /// Always "credential_leak" in v1.
    pub kind: String,
    pub severity: Severity,
    pub exposure: Exposure,
    pub credential: CredentialRef,
    pub sink: Sink,
    pub request: RequestSummary,
    pub response: ResponseSummary,
    pub role: Role,
    pub process: ProcessInfo,
    pub connection: ConnInfo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exposure {
    /// The whole value.
    Full,
    /// A long unmasked part of it.
    Partial,
}

impl Exposure {
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::Full => "full",
            Exposure::Partial => "partial",
        }
    }
}

/// Where in the request the credential was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    Authorization,
    Header,
    Query,
    Cookie,
    Form,
    Json,
}

impl CredentialSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Authorization => "authorization",
            CredentialSource::Header => "header",
            CredentialSource::Query => "query",
            CredentialSource::Cookie => "cookie",
            CredentialSource::Form => "form",
            CredentialSource::Json => "json",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialType {
    ApiKey,
    BearerToken,
    Jwt,
    BasicCredentials,
    Password,
    SessionCookie,
    ClientSecret,
    RefreshToken,
    AccessToken,
    Secret,
}

impl CredentialType {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::ApiKey => "api_key",
            CredentialType::BearerToken => "bearer_token",
            CredentialType::Jwt => "jwt",
            CredentialType::BasicCredentials => "basic_credentials",
            CredentialType::Password => "password",
            CredentialType::SessionCookie => "session_cookie",
            CredentialType::ClientSecret => "client_secret",
            CredentialType::RefreshToken => "refresh_token",
            CredentialType::AccessToken => "access_token",
            CredentialType::Secret => "secret",
        }
    }
}

/// A credential, by reference only: never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRef {
    pub source: CredentialSource,
    /// Header/parameter/cookie/field name, or the Authorization scheme
    /// (`bearer`, `basic`, `basic_password`, …).
    pub name: String,
    #[serde(rename = "type")]
    pub kind: CredentialType,
    /// First 16 hex digits of HMAC-SHA256(node key, credential bytes).
    pub fingerprint: String,
    pub length: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkLocation {
    Body,
    Header,
}

impl SinkLocation {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkLocation::Body => "body",
            SinkLocation::Header => "header",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Plain,
    Percent,
    JsonEscaped,
    HtmlEntity,
    Base64,
    Base64url,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Plain => "plain",
            Encoding::Percent => "percent",
            Encoding::JsonEscaped => "json_escaped",
            Encoding::HtmlEntity => "html_entity",
            Encoding::Base64 => "base64",
            Encoding::Base64url => "base64url",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentEncoding {
    Identity,
    Gzip,
    Deflate,
    Br,
    Zstd,
}

impl ContentEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentEncoding::Identity => "identity",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Deflate => "deflate",
            ContentEncoding::Br => "br",
            ContentEncoding::Zstd => "zstd",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sink {
    pub location: SinkLocation,
    /// Header name (lower-case) for header sinks, null for the body.
    pub name: Option<String>,
    pub encoding: Encoding,
    pub content_encoding: ContentEncoding,
    /// Byte offset of the match within the (decoded) body or header value.
    pub offset: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSummary {
    pub method: String,
    /// Path with query values redacted (`/v1/items?api_key=<redacted>`).
    pub path: String,
    pub host: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseSummary {
    pub status: u16,
    pub content_type: Option<String>,
}
