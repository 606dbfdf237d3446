//! HTTP client for the sensor's live API (hyper-util; plain HTTP on loopback or
//! a cluster network, optional bearer token).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::finding::Finding;
use crate::outputs::live::{FindingsPage, StatsSnapshot, StreamItem};

/// Connect + whole-response timeout for the one-shot endpoints.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The stream sends stats about once a second; silence this long means it is gone.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JSON body or stream line accepted.
pub const MAX_BODY: usize = 8 << 20;
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the sensor (the message is short and human).
    #[error("{0}")]
    Unreachable(String),
    #[error("HTTP {status} from {url}")]
    Status { status: u16, url: String },
    #[error("bad response from {url}: {detail}")]
    Bad { url: String, detail: String },
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Empty<Bytes>>,
}

/// A short reason for a transport error: the innermost I/O error in human words.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut last = err.to_string();
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => io.to_string(),
            };
        }
        last = e.to_string();
        cur = e.source();
    }
    last
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(REQUEST_TIMEOUT));
        conn.set_nodelay(true);
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: Client::builder(TokioExecutor::new()).build(conn),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(&self, path: &str) -> Result<hyper::Response<Incoming>, ClientError> {
        let url = format!("{}{}", self.base, path);
        let uri: hyper::Uri = url.parse().map_err(|e| ClientError::Bad {
            url: url.clone(),
            detail: format!("invalid URL: {e}"),
        })?;
        let mut req = Request::get(uri);
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Empty::new()).map_err(|e| ClientError::Bad {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| ClientError::Unreachable("timed out".into()))?
            .map_err(|e| ClientError::Unreachable(describe(&e)))?;
        if !resp.status().is_success() {
            return Err(ClientError::Status {
                status: resp.status().as_u16(),
                url,
            });
        }
        Ok(resp)
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut body = self.send(path).await?.into_body();
        let mut buf = BytesMut::new();
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ClientError::Unreachable(describe(&e)))?;
                if let Some(d) = frame.data_ref() {
                    if buf.len() + d.len() > MAX_BODY {
                        return Err(ClientError::Bad {
                            url: url.clone(),
                            detail: format!("body larger than {MAX_BODY} bytes"),
                        });
                    }
                    buf.extend_from_slice(d);
                }
            }
            Ok(())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, read)
            .await
            .map_err(|_| ClientError::Unreachable("timed out".into()))??;
        serde_json::from_slice(&buf).map_err(|e| ClientError::Bad {
            url,
            detail: e.to_string(),
        })
    }

    pub async fn stats(&self) -> Result<StatsSnapshot, ClientError> {
        self.get_json("/api/v1/stats").await
    }

    pub async fn findings(&self, since: u64) -> Result<FindingsPage, ClientError> {
        self.get_json(&format!("/api/v1/findings?since={since}"))
            .await
    }

    /// Opens `/api/v1/stream`.
    pub async fn stream(&self) -> Result<LineStream, ClientError> {
        let resp = self.send("/api/v1/stream").await?;
        Ok(LineStream {
            body: resp.into_body(),
            buf: BytesMut::new(),
            skipping: false,
            oversized: 0,
        })
    }
}

/// Newline-delimited JSON from the stream, one bounded line at a time.
pub struct LineStream {
    body: Incoming,
    buf: BytesMut,
    /// Inside a line longer than MAX_LINE: drop bytes until its end.
    skipping: bool,
    pub oversized: u64,
}

impl LineStream {
    /// The next stream item; `Ok(None)` when the server closed the stream.
    /// Lines that do not parse are logged and skipped.
    pub async fn next_item(&mut self) -> Result<Option<StreamItem>, ClientError> {
        loop {
            while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                let line = &line[..pos];
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                match parse_stream_line(line) {
                    Ok(item) => return Ok(Some(item)),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a stream line that does not parse")
                    }
                }
            }
            if self.buf.len() > MAX_LINE {
                self.oversized += 1;
                tracing::warn!(max = MAX_LINE, "skipping an oversized stream line");
                self.buf.clear();
                self.skipping = true;
            }
            let frame = tokio::time::timeout(STREAM_IDLE_TIMEOUT, self.body.frame())
                .await
                .map_err(|_| ClientError::Unreachable("stream silent, timed out".into()))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Unreachable(describe(&e))),
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
            }
        }
    }
}

/// Accepts both `{"type":"finding","finding":{…}}` and the flattened
/// serde form of [`StreamItem`] (`{"type":"finding", …fields}`).
pub fn parse_stream_line(line: &[u8]) -> Result<StreamItem, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_slice(line)?;
    if let Some(obj) = v.as_object_mut() {
        let kind = obj.get("type").and_then(|t| t.as_str()).map(str::to_owned);
        match kind.as_deref() {
            Some("finding") if obj.contains_key("finding") => {
                let f: Finding = serde_json::from_value(obj.remove("finding").unwrap_or_default())?;
                return Ok(StreamItem::Finding(Box::new(f)));
            }
            Some("stats") if obj.contains_key("stats") => {
                let s: StatsSnapshot =
                    serde_json::from_value(obj.remove("stats").unwrap_or_default())?;
                return Ok(StreamItem::Stats(Box::new(s)));
            }
            _ => {}
        }
    }
    serde_json::from_value(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::fixtures::{finding, stats};

    #[test]
    fn parses_nested_and_flat_stream_lines() {
        let f = finding(1, "/a", "body");
        let nested = serde_json::json!({"type": "finding", "finding": f}).to_string();
        assert_eq!(
            parse_stream_line(nested.as_bytes()).unwrap(),
            StreamItem::Finding(Box::new(f.clone()))
        );
        let flat = serde_json::to_string(&StreamItem::Finding(Box::new(f.clone()))).unwrap();
        assert_eq!(
            parse_stream_line(flat.as_bytes()).unwrap(),
            StreamItem::Finding(Box::new(f))
        );
        let s = serde_json::json!({"type": "stats", "stats": stats()}).to_string();
        assert!(matches!(
            parse_stream_line(s.as_bytes()).unwrap(),
            StreamItem::Stats(_)
        ));
        assert!(parse_stream_line(b"{\"type\":\"nope\"}").is_err());
        assert!(parse_stream_line(b"\xff\x00garbage").is_err());
    }
}
