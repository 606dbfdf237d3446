//! What an operator should do about a finding, by sink and source.

use crate::finding::{CredentialSource, Finding, SinkLocation};
use crate::http::types::Role;

/// Advice lines, most specific first; the last always names the credential to rotate.
pub fn remediation(f: &Finding) -> Vec<String> {
    let mut out = Vec::new();
    let header = f.sink.name.as_deref().unwrap_or("");
    match (f.sink.location, header) {
        (SinkLocation::Header, "location") => out.push(
            "Tokens in redirect URLs end up in browser history, server and proxy logs and \
             Referer headers: use the authorization code flow (with PKCE) or POST, never \
             put the credential in the Location URL."
                .to_string(),
        ),
        (SinkLocation::Header, "set-cookie") => out.push(
            "A request credential is copied into Set-Cookie: it lands in the browser's cookie \
             jar (and in scripts if not HttpOnly). Never derive cookies from other credentials; \
             issue a separate session id."
                .to_string(),
        ),
        (SinkLocation::Header, "www-authenticate") => out.push(
            "The WWW-Authenticate challenge reflects the credential: return a fixed challenge \
             without request data."
                .to_string(),
        ),
        (SinkLocation::Header, name) => out.push(format!(
            "Response header `{name}` carries the credential: remove debug headers in \
             production (proxies, CDNs and browsers log them)."
        )),
        (SinkLocation::Body, _) if f.response.status >= 400 => out.push(
            "The error response echoes the request credential: do not echo request \
             credentials (or whole request headers) in error messages; rotate the key."
                .to_string(),
        ),
        (SinkLocation::Body, _) => out.push(
            "The response body returns the credential: remove it from the payload (debug \
             fields, request dumps, HTML pages) so it is not cached, logged or shown."
                .to_string(),
        ),
    }
    if f.credential.source == CredentialSource::Query {
        out.push(
            "The credential was sent in the query string, where access logs keep it: send \
             it in a header instead."
                .to_string(),
        );
    }
    if f.role == Role::Client {
        out.push(format!(
            "Role client: the API that process {} called echoed its credential back; report \
             it to the API's owner.",
            f.process.comm
        ));
    }
    out.push(format!(
        "Rotate the credential with fingerprint {} ({} {} `{}`), and look for other uses of it.",
        f.credential.fingerprint,
        f.credential.kind.as_str(),
        f.credential.source.as_str(),
        f.credential.name
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::fixtures::{finding, varied_findings};

    #[test]
    fn advice_per_sink() {
        let v = varied_findings();
        let redirect = remediation(&v[0]).join("\n");
        assert!(redirect.contains("authorization code flow"));
        assert!(redirect.contains("query string"));
        let echo = remediation(&finding(1, "/a", "body")).join("\n");
        assert!(echo.contains("do not echo request credentials"));
        let debug = remediation(&v[4]).join("\n");
        assert!(debug.contains("remove debug headers"));
        let cookie = remediation(&v[5]).join("\n");
        assert!(cookie.contains("Set-Cookie"));
        let client = remediation(&v[6]).join("\n");
        assert!(client.contains("Role client"));
        for f in &v {
            let r = remediation(f);
            assert!(r.last().unwrap().contains(&f.credential.fingerprint));
        }
    }
}
