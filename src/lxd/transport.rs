//! Moving one HTTP request to LXD and its answer back, over HTTPS or the local
//! unix socket.
//!
//! Owns: endpoint parsing (`https://host:port`, `unix:/path`), the two transports
//! (reqwest with the pinned rustls config; hyper 1 over a `UnixStream`, one
//! connection per request), request bodies (JSON, bytes, a file streamed from
//! disk), extra headers, connect and request timeouts, and sorting failures into
//! "nothing was sent", "sent but no answer", "timed out" and "wrong certificate".
//! Must not: interpret LXD envelopes, retry, count requests, or log bodies and
//! headers (they may carry tokens or image secrets).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, TryStreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::AsyncReadExt;

use super::api::{ETag, Method};
use super::error::{BoxError, LxdError};
use super::tls::{PinnedTls, SeenFingerprint};

const USER_AGENT: &str = concat!("lxd-gitops/", env!("CARGO_PKG_VERSION"));

/// Where LXD listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://host:port`, without a trailing slash.
    Https(String),
    /// The local unix socket (full admin, no certificate).
    Unix(PathBuf),
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, LxdError> {
        let invalid = |message: &str| LxdError::Invalid { what: format!("endpoint {s:?}"), message: message.into() };
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.starts_with('/') {
                return Err(invalid("a unix endpoint needs an absolute path, e.g. unix:/var/lib/lxd/unix.socket"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let url = url::Url::parse(s).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(invalid("use https://host:port or unix:/path"));
        }
        if url.host_str().is_none() {
            return Err(invalid("no host"));
        }
        if !(url.path() == "/" || url.path().is_empty()) || url.query().is_some() {
            return Err(invalid("give only https://host:port, without a path"));
        }
        let port = url.port().unwrap_or(8443);
        let host = url.host_str().unwrap_or_default();
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
        Ok(Endpoint::Https(format!("https://{host}:{port}")))
    }
}

/// A request body.
#[derive(Debug, Clone, Default)]
pub enum RequestBody {
    #[default]
    Empty,
    /// Serialized JSON.
    Json(Bytes),
    Bytes {
        data: Bytes,
        content_type: String,
    },
    /// A file streamed from disk (image uploads); re-opened for every try.
    File {
        path: PathBuf,
        content_type: String,
    },
}

/// One request, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub method: Method,
    /// Path and query, already encoded: `/1.0/instances?project=p`.
    pub path: String,
    pub body: RequestBody,
    pub headers: Vec<(String, String)>,
    pub if_match: Option<ETag>,
    pub timeout: Duration,
}

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn etag(&self) -> Option<ETag> {
        self.header("etag").and_then(ETag::parse)
    }

    pub fn location(&self) -> Option<String> {
        self.header("location").map(str::to_string)
    }
}

/// How sending failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made; nothing reached the server.
    NotConnected(BoxError),
    /// The server presented another certificate than the pinned one.
    Mismatch { got: String },
    /// Sent (or possibly sent), then no answer.
    NoAnswer(BoxError),
    /// No complete answer within the request timeout.
    TimedOut(Duration),
    /// The request could not be built (bad header, unreadable upload file).
    Local(LxdError),
}

/// Timeouts of a transport.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
}

pub(crate) enum Transport {
    Https(HttpsTransport),
    Unix(UnixTransport),
}

impl Transport {
    pub(crate) fn new(endpoint: &Endpoint, tls: Option<PinnedTls>, timeouts: Timeouts) -> Result<Transport, LxdError> {
        match endpoint {
            Endpoint::Https(base) => {
                let tls = tls.ok_or_else(|| LxdError::Invalid {
                    what: format!("endpoint {base}"),
                    message: "an https endpoint needs a pinned fingerprint".into(),
                })?;
                Ok(Transport::Https(HttpsTransport::new(base.clone(), tls, timeouts)?))
            }
            Endpoint::Unix(path) => Ok(Transport::Unix(UnixTransport { path: path.clone(), timeouts })),
        }
    }

    pub(crate) async fn send(&self, req: &Prepared) -> Result<RawResponse, SendError> {
        match self {
            Transport::Https(t) => t.send(req).await,
            Transport::Unix(t) => t.send(req).await,
        }
    }
}

fn header_pairs(req: &Prepared, content_length: Option<u64>) -> Result<Vec<(HeaderName, HeaderValue)>, SendError> {
    let bad = |name: &str| {
        SendError::Local(LxdError::Invalid {
            what: format!("header {name:?} of {} {}", req.method, req.path),
            message: "not a valid HTTP header name or value".into(),
        })
    };
    let mut out = Vec::new();
    let content_type = match &req.body {
        RequestBody::Empty => None,
        RequestBody::Json(_) => Some("application/json"),
        RequestBody::Bytes { content_type, .. } | RequestBody::File { content_type, .. } => Some(content_type.as_str()),
    };
    if let Some(ct) = content_type {
        out.push((hyper::header::CONTENT_TYPE, HeaderValue::from_str(ct).map_err(|_| bad("content-type"))?));
    }
    if let Some(len) = content_length {
        out.push((hyper::header::CONTENT_LENGTH, HeaderValue::from(len)));
    }
    if let Some(tag) = &req.if_match {
        out.push((hyper::header::IF_MATCH, HeaderValue::from_str(&tag.header_value()).map_err(|_| bad("if-match"))?));
    }
    out.push((hyper::header::USER_AGENT, HeaderValue::from_static(USER_AGENT)));
    for (k, v) in &req.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(k))?;
        let value = HeaderValue::from_str(v).map_err(|_| bad(k))?;
        out.push((name, value));
    }
    Ok(out)
}

/// Opens an upload file, returning its length and a stream of its chunks.
async fn open_file(
    path: &Path,
) -> Result<(u64, impl Stream<Item = std::io::Result<Bytes>> + Send + 'static), SendError> {
    let io_err = |source| SendError::Local(LxdError::Io { context: format!("cannot read {}", path.display()), source });
    let file = tokio::fs::File::open(path).await.map_err(io_err)?;
    let len = file.metadata().await.map_err(io_err)?.len();
    let stream = futures_util::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok((len, stream))
}

pub(crate) struct HttpsTransport {
    base: String,
    client: reqwest::Client,
    seen: SeenFingerprint,
    expected: String,
}

impl HttpsTransport {
    fn new(base: String, tls: PinnedTls, timeouts: Timeouts) -> Result<HttpsTransport, LxdError> {
        let PinnedTls { config, seen, expected } = tls;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(timeouts.connect)
            // LXD endpoints are internal: never route them through a proxy
            // taken from the environment, and never follow redirects.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LxdError::Invalid { what: "HTTPS client".into(), message: e.to_string() })?;
        Ok(HttpsTransport { base, client, seen, expected })
    }

    fn mismatch(&self) -> Option<String> {
        self.seen.get().filter(|got| *got != self.expected)
    }

    async fn send(&self, req: &Prepared) -> Result<RawResponse, SendError> {
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        let url = format!("{}{}", self.base, req.path);
        let (body, len) = match &req.body {
            RequestBody::Empty => (None, None),
            RequestBody::Json(b) => (Some(reqwest::Body::from(b.clone())), None),
            RequestBody::Bytes { data, .. } => (Some(reqwest::Body::from(data.clone())), None),
            RequestBody::File { path, .. } => {
                let (len, stream) = open_file(path).await?;
                (Some(reqwest::Body::wrap_stream(stream)), Some(len))
            }
        };
        let mut builder = self.client.request(method, &url).timeout(req.timeout);
        for (k, v) in header_pairs(req, len)? {
            builder = builder.header(k, v);
        }
        if let Some(b) = body {
            builder = builder.body(b);
        }
        let classify = |e: reqwest::Error| -> SendError {
            if let Some(got) = self.mismatch() {
                SendError::Mismatch { got }
            } else if e.is_connect() {
                SendError::NotConnected(Box::new(e))
            } else if e.is_timeout() {
                SendError::TimedOut(req.timeout)
            } else {
                SendError::NoAnswer(Box::new(e))
            }
        };
        let resp = builder.send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(classify)?;
        Ok(RawResponse { status, headers, body })
    }
}

pub(crate) struct UnixTransport {
    path: PathBuf,
    timeouts: Timeouts,
}

type HyperBody = BoxBody<Bytes, std::io::Error>;

impl UnixTransport {
    async fn send(&self, req: &Prepared) -> Result<RawResponse, SendError> {
        let (body, len): (HyperBody, Option<u64>) = match &req.body {
            RequestBody::Empty => (Empty::<Bytes>::new().map_err(|n| match n {}).boxed(), None),
            RequestBody::Json(b) | RequestBody::Bytes { data: b, .. } => {
                (Full::new(b.clone()).map_err(|n| match n {}).boxed(), Some(b.len() as u64))
            }
            RequestBody::File { path, .. } => {
                let (len, stream) = open_file(path).await?;
                (BodyExt::boxed(StreamBody::new(stream.map_ok(Frame::data))), Some(len))
            }
        };
        let method = match req.method {
            Method::Get => hyper::Method::GET,
            Method::Put => hyper::Method::PUT,
            Method::Patch => hyper::Method::PATCH,
            Method::Post => hyper::Method::POST,
            Method::Delete => hyper::Method::DELETE,
        };
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(&req.path)
            // Go's HTTP/1.1 server insists on a Host header; any name does.
            .header(hyper::header::HOST, "lxd");
        for (k, v) in header_pairs(req, len)? {
            builder = builder.header(k, v);
        }
        let request = builder.body(body).map_err(|e| {
            SendError::Local(LxdError::Invalid {
                what: format!("request {} {}", req.method, req.path),
                message: e.to_string(),
            })
        })?;

        let connect = async {
            let stream = tokio::net::UnixStream::connect(&self.path).await?;
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)
        };
        let (mut sender, conn) = match tokio::time::timeout(self.timeouts.connect, connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(SendError::NotConnected(Box::new(e))),
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                return Err(SendError::NotConnected(Box::new(e)));
            }
        };
        // The connection lives as long as this request; its task ends with it.
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let exchange = async {
            let resp = sender.send_request(request).await.map_err(|e| SendError::NoAnswer(Box::new(e)))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| SendError::NoAnswer(Box::new(e)))?.to_bytes();
            Ok(RawResponse { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        let out = match tokio::time::timeout(req.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(SendError::TimedOut(req.timeout)),
        };
        driver.abort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(Endpoint::parse("https://10.0.0.1:8443").unwrap(), Endpoint::Https("https://10.0.0.1:8443".into()));
        assert_eq!(Endpoint::parse("https://node1/").unwrap(), Endpoint::Https("https://node1:8443".into()));
        assert_eq!(Endpoint::parse("https://[::1]:9443").unwrap(), Endpoint::Https("https://[::1]:9443".into()));
        assert_eq!(
            Endpoint::parse("unix:/var/lib/lxd/unix.socket").unwrap(),
            Endpoint::Unix("/var/lib/lxd/unix.socket".into())
        );
        assert_eq!(Endpoint::parse("unix:///run/lxd.socket").unwrap(), Endpoint::Unix("/run/lxd.socket".into()));
        assert!(Endpoint::parse("http://10.0.0.1:8443").is_err());
        assert!(Endpoint::parse("unix:relative.socket").is_err());
        assert!(Endpoint::parse("https://h:8443/1.0").is_err());
        assert!(Endpoint::parse("10.0.0.1:8443").is_err());
    }

    fn prepared(headers: Vec<(&str, &str)>) -> Prepared {
        Prepared {
            method: Method::Post,
            path: "/1.0/images".into(),
            body: RequestBody::Bytes {
                data: Bytes::from_static(b"x"),
                content_type: "application/octet-stream".into(),
            },
            headers: headers.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            if_match: Some(ETag::new("abc")),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn headers_include_body_type_if_match_and_extras() {
        let h = header_pairs(&prepared(vec![("X-LXD-fingerprint", "852f")]), Some(1)).unwrap();
        let get = |n: &str| h.iter().find(|(k, _)| k.as_str() == n).map(|(_, v)| v.to_str().unwrap().to_string());
        assert_eq!(get("content-type").as_deref(), Some("application/octet-stream"));
        assert_eq!(get("if-match").as_deref(), Some("\"abc\""));
        assert_eq!(get("x-lxd-fingerprint").as_deref(), Some("852f"));
        assert_eq!(get("content-length").as_deref(), Some("1"));
    }

    #[test]
    fn bad_headers_are_refused_without_echoing_the_value() {
        match header_pairs(&prepared(vec![("X-LXD-secret", "line\nbreak-secret")]), None) {
            Err(SendError::Local(e)) => assert!(!e.to_string().contains("break-secret"), "{e}"),
            other => panic!("expected a local error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn upload_files_stream_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.tar");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (len, stream) = open_file(&path).await.unwrap();
        assert_eq!(len, data.len() as u64);
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(chunks.concat(), data);
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_failure() {
        let t = UnixTransport {
            path: "/nonexistent/lxd.socket".into(),
            timeouts: Timeouts { connect: Duration::from_secs(1) },
        };
        let mut req = prepared(vec![]);
        req.method = Method::Get;
        req.body = RequestBody::Empty;
        assert!(matches!(t.send(&req).await, Err(SendError::NotConnected(_))));
    }
}
