//! The typed LXD client: connect with failover, send requests, read envelopes,
//! wait on operations.
//!
//! Owns: choosing an endpoint (next one only when one can't be reached — at
//! connect, and later when the member in use stops answering or is shutting
//! down, which LXD says before handling anything, so even writes move on), the
//! retry loop (reads and never-sent requests only), turning LXD answers into
//! `Outcome`s or `LxdError`s, waiting on operations, and counting every HTTP
//! request this client sends.
//! Must not: know LXD object shapes beyond envelopes, operations and `GET /1.0`;
//! decide policy (what to change, when to re-read after a 412); log bodies,
//! headers or operation metadata (tokens live there).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::api::{ETag, Envelope, Method, Operation, OperationState, Outcome, ResponseType, ServerInfo, SyncResponse};
use super::error::{error_chain, LxdError, Result};
use super::retry::{may_retry, Failure, RetryPolicy};
use super::tls::{pinned_config, ClientIdentity};
use super::transport::{Endpoint, Prepared, RawResponse, RequestBody, SendError, Timeouts, Transport};

/// The longest single `/wait?timeout=` call; longer waits loop. Keeps each HTTP
/// request well inside any proxy or load balancer idle limit.
const MAX_WAIT_CHUNK_SECS: u64 = 30;
/// Extra time a wait request gets over the server-side wait.
const WAIT_MARGIN: Duration = Duration::from_secs(10);
/// The longest `connect` waits for one endpoint's `GET /1.0` before moving on.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `connect` insists that the server trusts the client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrustRequirement {
    /// Fail with `Untrusted` unless LXD reports `auth: trusted` (normal use).
    #[default]
    Trusted,
    /// Connect anyway (for `login`, which adds the certificate to the trust store).
    AllowUntrusted,
}

/// How to connect and how patient to be.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    /// Default per-request timeout (a request can set its own).
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub trust: TrustRequirement,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            trust: TrustRequirement::Trusted,
        }
    }
}

/// A request with a raw or streamed body and extra headers (image uploads).
#[derive(Debug, Clone)]
pub struct LxdRequest {
    method: Method,
    path: String,
    body: RequestBody,
    headers: Vec<(String, String)>,
    if_match: Option<ETag>,
    timeout: Option<Duration>,
}

impl LxdRequest {
    /// `path` is path and query, already encoded (build it with `ApiPath`).
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        LxdRequest {
            method,
            path: path.into(),
            body: RequestBody::Empty,
            headers: Vec::new(),
            if_match: None,
            timeout: None,
        }
    }

    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<Self> {
        let data = serde_json::to_vec(body).map_err(|source| LxdError::Encode {
            method: self.method.to_string(),
            path: shown(&self.path),
            source,
        })?;
        self.body = RequestBody::Json(Bytes::from(data));
        Ok(self)
    }

    pub fn bytes(mut self, data: impl Into<Bytes>, content_type: &str) -> Self {
        self.body = RequestBody::Bytes { data: data.into(), content_type: content_type.to_string() };
        self
    }

    /// Streams a file from disk as the body (re-opened if the request is retried).
    pub fn file(mut self, path: impl Into<PathBuf>, content_type: &str) -> Self {
        self.body = RequestBody::File { path: path.into(), content_type: content_type.to_string() };
        self
    }

    /// An extra header, e.g. `X-LXD-fingerprint`. Values are never logged.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn if_match(mut self, etag: Option<&ETag>) -> Self {
        self.if_match = etag.cloned();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A connection to one LXD server or cluster member. Cheap to clone; clones
/// share the connection pool and the request counter.
#[derive(Clone)]
pub struct LxdClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Every endpoint given to `connect`, in order; `current` is the one in use.
    conns: Vec<Conn>,
    current: AtomicUsize,
    /// Off while `connect` probes endpoints one by one; on once connected, so a
    /// member that stops answering mid-session hands over to the next one.
    failover: AtomicBool,
    opts: ConnectOptions,
    requests: AtomicU64,
    /// What the last `GET /1.0` said: a 403 "not authorized" then means either an
    /// untrusted certificate or a restricted one.
    trusted: AtomicBool,
}

/// One endpoint and the transport to it.
struct Conn {
    endpoint: String,
    pinned: Option<String>,
    transport: Transport,
}

impl std::fmt::Debug for LxdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LxdClient")
            .field("endpoint", &self.conn().endpoint)
            .field("pinned", &self.conn().pinned)
            .field("requests", &self.request_count())
            .finish()
    }
}

impl LxdClient {
    /// Connects to the first endpoint that answers `GET /1.0`, in order.
    ///
    /// Moves on to the next endpoint only when one can't be reached (refused,
    /// unreachable, connect timeout, TLS failure other than the pin). A
    /// fingerprint mismatch, an LXD error or an untrusted certificate (unless
    /// `opts.trust` allows it) is final. `https://host:port` endpoints use the
    /// pinned `fingerprint` and the client certificate; `unix:/path` endpoints
    /// need neither. Empty `cert_pem` and `key_pem` mean "no client certificate".
    pub async fn connect(
        endpoints: &[String],
        fingerprint: &str,
        cert_pem: &str,
        key_pem: &str,
        opts: ConnectOptions,
    ) -> Result<LxdClient> {
        let identity = if cert_pem.trim().is_empty() && key_pem.trim().is_empty() {
            None
        } else {
            Some(ClientIdentity { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string() })
        };
        let mut conns = Vec::new();
        for raw in endpoints {
            let endpoint = Endpoint::parse(raw)?;
            let (name, pinned, tls) = match &endpoint {
                Endpoint::Https(base) => {
                    let tls = pinned_config(fingerprint, identity.as_ref())?;
                    (base.clone(), Some(tls.expected.clone()), Some(tls))
                }
                Endpoint::Unix(path) => (format!("unix:{}", path.display()), None, None),
            };
            let transport = Transport::new(&endpoint, tls, Timeouts { connect: opts.connect_timeout })?;
            conns.push(Conn { endpoint: name, pinned, transport });
        }
        let client = LxdClient {
            inner: Arc::new(Inner {
                conns,
                current: AtomicUsize::new(0),
                failover: AtomicBool::new(false),
                opts: opts.clone(),
                requests: AtomicU64::new(0),
                trusted: AtomicBool::new(false),
            }),
        };
        let mut attempts = Vec::new();
        for (i, conn) in client.inner.conns.iter().enumerate() {
            let name = conn.endpoint.clone();
            client.inner.current.store(i, Ordering::Relaxed);
            // One short try per endpoint: a dead or hung member should cost one
            // timeout, not three long ones, before the next one is tried.
            match client.server_info_with(&RetryPolicy::none(), Some(opts.request_timeout.min(PROBE_TIMEOUT))).await {
                Ok(info) => {
                    if opts.trust == TrustRequirement::Trusted && !info.is_trusted() {
                        return Err(LxdError::Untrusted { endpoint: name, method: "GET".into(), path: "/1.0".into() });
                    }
                    tracing::debug!(endpoint = %name, trusted = info.is_trusted(), "connected to LXD");
                    client.inner.failover.store(true, Ordering::Relaxed);
                    return Ok(client);
                }
                // The probe is a read: a member that accepts connections but
                // never answers is as unusable as one that refuses them.
                Err(e @ (LxdError::Connect { .. } | LxdError::Timeout { .. } | LxdError::Transport { .. })) => {
                    tracing::warn!(endpoint = %name, error = %e, "LXD endpoint unreachable, trying the next one");
                    let why = match &e {
                        LxdError::Connect { source, .. } => error_chain(source.as_ref()),
                        other => other.to_string(),
                    };
                    attempts.push((name, why));
                }
                Err(e) => return Err(e),
            }
        }
        Err(LxdError::AllEndpointsFailed { attempts })
    }

    /// The endpoint this client talks to (`https://host:port` or `unix:/path`).
    pub fn endpoint(&self) -> &str {
        &self.conn().endpoint
    }

    /// The endpoint in use now.
    fn conn(&self) -> &Conn {
        &self.inner.conns[self.inner.current.load(Ordering::Relaxed)]
    }

    /// The endpoint at `from` stopped answering: makes the next endpoint that
    /// answers `GET /1.0` the current one. True when the caller may send again
    /// (another request may have switched already).
    async fn fail_over(&self, from: usize) -> bool {
        let n = self.inner.conns.len();
        if !self.inner.failover.load(Ordering::Relaxed) || n < 2 {
            return false;
        }
        if self.inner.current.load(Ordering::Relaxed) != from {
            return true;
        }
        let probe = Prepared {
            timeout: self.inner.opts.request_timeout.min(PROBE_TIMEOUT),
            ..self.prepare(LxdRequest::new(Method::Get, "/1.0"))
        };
        for j in (1..n).map(|k| (from + k) % n) {
            let to = &self.inner.conns[j];
            self.inner.requests.fetch_add(1, Ordering::Relaxed);
            if matches!(to.transport.send(&probe).await, Ok(r) if r.status == 200) {
                let _ = self.inner.current.compare_exchange(from, j, Ordering::Relaxed, Ordering::Relaxed);
                tracing::warn!(
                    from = %self.inner.conns[from].endpoint,
                    to = %to.endpoint,
                    "LXD endpoint stopped answering; continuing on the next cluster member"
                );
                return true;
            }
        }
        false
    }

    /// HTTP requests sent so far, retries and operation waits included.
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// `GET /1.0`: how LXD sees this client, its name, certificate and extensions.
    pub async fn server_info(&self) -> Result<ServerInfo> {
        self.server_info_with(&self.inner.opts.retry, None).await
    }

    /// Whether LXD currently trusts the client certificate.
    pub async fn is_trusted(&self) -> Result<bool> {
        Ok(self.server_info().await?.is_trusted())
    }

    /// A synchronous read: the metadata decoded as `T`, and the ETag if LXD sent one.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<(T, Option<ETag>)> {
        let raw = self.send(self.prepare(LxdRequest::new(Method::Get, path)), &self.inner.opts.retry).await?;
        let sync = self.expect_sync(Method::Get, path, &raw)?;
        let value = serde_json::from_value(sync.metadata).map_err(|source| LxdError::Decode {
            method: "GET".into(),
            path: shown(path),
            source,
        })?;
        Ok((value, sync.etag))
    }

    /// A read whose answer is not an envelope (`/1.0/images/<fp>/export`). Error
    /// statuses still become `LxdError`s.
    pub async fn get_raw(&self, path: &str) -> Result<RawResponse> {
        let raw = self.send(self.prepare(LxdRequest::new(Method::Get, path)), &self.inner.opts.retry).await?;
        self.check_status(Method::Get, path, &raw)?;
        Ok(raw)
    }

    /// Replaces all writable fields. Pass the ETag from the read it is based on.
    pub async fn put<B: Serialize + ?Sized>(&self, path: &str, body: &B, if_match: Option<&ETag>) -> Result<Outcome> {
        self.execute(LxdRequest::new(Method::Put, path).json(body)?.if_match(if_match)).await
    }

    /// Merges into the object (mind LXD 5.0.2's PATCH bugs: prefer GET → PUT).
    pub async fn patch<B: Serialize + ?Sized>(&self, path: &str, body: &B, if_match: Option<&ETag>) -> Result<Outcome> {
        self.execute(LxdRequest::new(Method::Patch, path).json(body)?.if_match(if_match)).await
    }

    pub async fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<Outcome> {
        self.execute(LxdRequest::new(Method::Post, path).json(body)?).await
    }

    pub async fn delete(&self, path: &str) -> Result<Outcome> {
        self.execute(LxdRequest::new(Method::Delete, path)).await
    }

    /// Sends any request and reads LXD's envelope.
    pub async fn execute(&self, req: LxdRequest) -> Result<Outcome> {
        let method = req.method;
        let path = req.path.clone();
        let raw = self.send(self.prepare(req), &self.inner.opts.retry).await?;
        self.outcome(method, &path, &raw)
    }

    /// Waits for an operation to finish, with `GET /1.0/operations/<id>/wait`.
    ///
    /// Call it right after the request that started the operation: LXD forgets
    /// finished operations after about five seconds, and a vanished operation
    /// gives `OperationVanished` (outcome unknown). Success is
    /// `status_code == 200`; any other final code is `LxdError::Operation` with
    /// LXD's `err` text. Token operations never finish: read their metadata from
    /// the `Outcome` instead.
    pub async fn wait_operation(&self, op: &Operation, timeout: Duration) -> Result<OperationState> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(LxdError::Timeout {
                    what: format!("LXD operation {} ({})", op.id(), op.description()),
                    after: timeout,
                });
            }
            let secs = (remaining.as_secs_f64().ceil() as u64).clamp(1, MAX_WAIT_CHUNK_SECS);
            let path = op.wait_path(secs);
            let mut req = self.prepare(LxdRequest::new(Method::Get, path.clone()));
            req.timeout = Duration::from_secs(secs) + WAIT_MARGIN;
            let raw = self.send(req, &self.inner.opts.retry).await?;
            if raw.status == 404 {
                return Err(LxdError::OperationVanished {
                    id: op.id().to_string(),
                    description: op.description().to_string(),
                });
            }
            let sync = self.expect_sync(Method::Get, &path, &raw)?;
            let state: OperationState = serde_json::from_value(sync.metadata).map_err(|source| LxdError::Decode {
                method: "GET".into(),
                path: shown(&path),
                source,
            })?;
            if state.is_success() {
                return Ok(state);
            }
            if state.is_done() {
                let err = if state.err.is_empty() {
                    format!("status {} ({})", state.status, state.status_code)
                } else {
                    state.err
                };
                return Err(LxdError::Operation { id: state.id, description: state.description, err });
            }
            tracing::debug!(operation = %op.id(), status = %state.status, "LXD operation still running");
        }
    }

    /// The result of a write, however LXD ran it: a sync answer's metadata, or
    /// the metadata of the finished operation.
    pub async fn finish(&self, outcome: Outcome, timeout: Duration) -> Result<Value> {
        match outcome {
            Outcome::Sync(s) => Ok(s.metadata),
            Outcome::Async(op) => Ok(self.wait_operation(&op, timeout).await?.metadata),
        }
    }

    // -- internals -----------------------------------------------------------

    async fn server_info_with(&self, policy: &RetryPolicy, timeout: Option<Duration>) -> Result<ServerInfo> {
        let mut req = LxdRequest::new(Method::Get, "/1.0");
        req.timeout = timeout;
        let raw = self.send(self.prepare(req), policy).await?;
        let sync = self.expect_sync(Method::Get, "/1.0", &raw)?;
        let info = ServerInfo::from_metadata(&sync.metadata, sync.etag).map_err(|source| LxdError::Decode {
            method: "GET".into(),
            path: "/1.0".into(),
            source,
        })?;
        self.inner.trusted.store(info.is_trusted(), Ordering::Relaxed);
        Ok(info)
    }

    fn prepare(&self, req: LxdRequest) -> Prepared {
        Prepared {
            method: req.method,
            path: req.path,
            body: req.body,
            headers: req.headers,
            if_match: req.if_match,
            timeout: req.timeout.unwrap_or(self.inner.opts.request_timeout),
        }
    }

    /// Sends with retries as the policy and the method allow; returns any HTTP answer.
    async fn send(&self, req: Prepared, policy: &RetryPolicy) -> Result<RawResponse> {
        let mut attempt = 1;
        let mut failovers = 0;
        loop {
            self.inner.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let at = self.inner.current.load(Ordering::Relaxed);
            let conn = &self.inner.conns[at];
            let result = conn.transport.send(&req).await;
            let failure = match &result {
                Ok(r) if r.status >= 400 => Some(Failure::Status(r.status)),
                Ok(_) => None,
                Err(SendError::NotConnected(_)) => Some(Failure::NotConnected),
                Err(SendError::NoAnswer(_)) | Err(SendError::TimedOut(_)) => Some(Failure::NoAnswer),
                Err(SendError::Mismatch { .. }) | Err(SendError::Local(_)) => None,
            };
            tracing::debug!(
                endpoint = %conn.endpoint,
                method = %req.method,
                path = %shown(&req.path),
                status = result.as_ref().map(|r| r.status).unwrap_or(0),
                attempt,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "LXD request"
            );
            // Nothing reached this member, or it refused because it is shutting
            // down: any request, writes included, may go to another member.
            let unprocessed = matches!(failure, Some(Failure::NotConnected))
                || matches!(&result, Ok(r) if r.status == 503 && shutting_down(&r.body));
            if unprocessed && failovers + 1 < self.inner.conns.len() && self.fail_over(at).await {
                failovers += 1;
                continue;
            }
            if let Some(f) = failure {
                if attempt < policy.attempts && may_retry(req.method, f) {
                    attempt += 1;
                    tokio::time::sleep(policy.backoff(attempt)).await;
                    continue;
                }
            }
            return result.map_err(|e| self.send_error(&req, e));
        }
    }

    fn send_error(&self, req: &Prepared, e: SendError) -> LxdError {
        let endpoint = self.conn().endpoint.clone();
        match e {
            SendError::NotConnected(source) => LxdError::Connect { endpoint, source },
            SendError::Mismatch { got } => LxdError::FingerprintMismatch {
                endpoint,
                expected: self.conn().pinned.clone().unwrap_or_default(),
                got,
            },
            SendError::NoAnswer(source) => {
                LxdError::Transport { endpoint, method: req.method.to_string(), path: shown(&req.path), source }
            }
            SendError::TimedOut(after) => {
                LxdError::Timeout { what: format!("{} {} against {endpoint}", req.method, shown(&req.path)), after }
            }
            SendError::Local(e) => e,
        }
    }

    fn reader(&self) -> Reader<'_> {
        Reader { endpoint: &self.conn().endpoint, trusted: self.inner.trusted.load(Ordering::Relaxed) }
    }

    fn check_status(&self, method: Method, path: &str, raw: &RawResponse) -> Result<()> {
        self.reader().check_status(method, path, raw)
    }

    fn expect_sync(&self, method: Method, path: &str, raw: &RawResponse) -> Result<SyncResponse> {
        self.reader().expect_sync(method, path, raw)
    }

    fn outcome(&self, method: Method, path: &str, raw: &RawResponse) -> Result<Outcome> {
        self.reader().outcome(method, path, raw)
    }
}

/// LXD's answer while it stops: `503 "LXD is shutting down"`, given before the
/// request is handled.
fn shutting_down(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).contains("shutting down")
}

/// Reads LXD answers. Pure (no IO), so every envelope shape is unit-tested.
struct Reader<'a> {
    endpoint: &'a str,
    /// Whether LXD said at the last `GET /1.0` that it trusts the certificate.
    trusted: bool,
}

impl Reader<'_> {
    /// Maps an error status to an `LxdError`, keeping LXD's text verbatim.
    fn check_status(&self, method: Method, path: &str, raw: &RawResponse) -> Result<()> {
        if raw.status < 400 {
            return Ok(());
        }
        let message = match Envelope::parse(&raw.body) {
            Ok(env) if !env.error.is_empty() => env.error,
            _ => body_excerpt(&raw.body).unwrap_or_else(|| format!("HTTP {}", raw.status)),
        };
        Err(self.api_error(method, path, raw.status, message))
    }

    fn api_error(&self, method: Method, path: &str, status: u16, message: String) -> LxdError {
        let (method_s, path_s) = (method.to_string(), shown(path));
        match status {
            412 => LxdError::PreconditionFailed { method: method_s, path: path_s, message },
            404 => LxdError::NotFound { method: method_s, path: path_s, message },
            // 403 is also used for "The default profile cannot be deleted": only
            // LXD's authorization text means the certificate is not trusted. A
            // trusted but restricted certificate gets the same text; then it is
            // an API error, not a reason to log in again.
            403 if message == "not authorized" && !self.trusted => {
                LxdError::Untrusted { endpoint: self.endpoint.to_string(), method: method_s, path: path_s }
            }
            _ => LxdError::Api { method: method_s, path: path_s, status, message },
        }
    }

    fn expect_sync(&self, method: Method, path: &str, raw: &RawResponse) -> Result<SyncResponse> {
        match self.outcome(method, path, raw)? {
            Outcome::Sync(s) => Ok(s),
            Outcome::Async(op) => Err(LxdError::Protocol {
                method: method.to_string(),
                path: shown(path),
                message: format!("expected a synchronous answer, got operation {}", op.id()),
            }),
        }
    }

    fn outcome(&self, method: Method, path: &str, raw: &RawResponse) -> Result<Outcome> {
        self.check_status(method, path, raw)?;
        let env = Envelope::parse(&raw.body).map_err(|source| LxdError::Decode {
            method: method.to_string(),
            path: shown(path),
            source,
        })?;
        match env.response_type {
            ResponseType::Sync => Ok(Outcome::Sync(SyncResponse {
                status: raw.status,
                metadata: env.metadata,
                etag: raw.etag(),
                location: raw.location(),
            })),
            ResponseType::Async => {
                let url = if env.operation.is_empty() { raw.location() } else { Some(env.operation) };
                let url = url.ok_or_else(|| LxdError::Protocol {
                    method: method.to_string(),
                    path: shown(path),
                    message: "an async answer without an operation URL".into(),
                })?;
                let url = with_request_project(url, path);
                let state = serde_json::from_value(env.metadata).map_err(|source| LxdError::Decode {
                    method: method.to_string(),
                    path: shown(path),
                    source,
                })?;
                Ok(Outcome::Async(Operation { url, state }))
            }
            ResponseType::Error => {
                let status = u16::try_from(env.error_code).ok().filter(|s| *s >= 400).unwrap_or(raw.status);
                Err(self.api_error(method, path, status, env.error))
            }
        }
    }
}

/// LXD 5.0.2 gives operation URLs without `?project=` even for requests in
/// another project. Its waits work without it (for restricted clients too,
/// checked), but the operation belongs to that project and LXD's own client
/// always sends it, so the request's project is carried over: the URL then
/// names the project as the API documentation shows it.
fn with_request_project(url: String, request_path: &str) -> String {
    let has_project =
        |p: &str| p.split_once('?').is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("project=")));
    if has_project(&url) {
        return url;
    }
    let project = request_path
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("project=")))
        .filter(|p| !p.is_empty());
    match project {
        // Already encoded in the request path: appended as is.
        Some(p) => format!("{url}{}project={p}", if url.contains('?') { '&' } else { '?' }),
        None => url,
    }
}

/// A short, printable excerpt of a non-envelope error body.
fn body_excerpt(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    Some(out)
}

/// A path as it may appear in logs and errors: the values of `secret` query
/// parameters (operation websockets) hidden.
fn shown(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("secret") => format!("{k}=<redacted>"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_queries_are_hidden() {
        assert_eq!(
            shown("/1.0/operations/x/websocket?secret=abc&project=p"),
            "/1.0/operations/x/websocket?secret=<redacted>&project=p"
        );
        assert_eq!(shown("/1.0/instances?project=p"), "/1.0/instances?project=p");
    }

    #[test]
    fn operations_keep_the_project_of_their_request() {
        let u = |url: &str, req: &str| with_request_project(url.to_string(), req);
        assert_eq!(
            u("/1.0/operations/a", "/1.0/instances?project=my%20p&target=n1"),
            "/1.0/operations/a?project=my%20p"
        );
        assert_eq!(u("/1.0/operations/a?project=q", "/1.0/instances?project=p"), "/1.0/operations/a?project=q");
        assert_eq!(u("/1.0/operations/a", "/1.0/instances"), "/1.0/operations/a");
        assert_eq!(u("/1.0/operations/a", "/1.0/instances?project="), "/1.0/operations/a");
    }

    #[test]
    fn non_envelope_bodies_are_excerpted() {
        assert_eq!(body_excerpt(b"  \n"), None);
        assert_eq!(body_excerpt(b"404 page not found\n").as_deref(), Some("404 page not found"));
        assert_eq!(body_excerpt(&[b'x'; 300]).unwrap().chars().count(), 201);
    }

    fn raw(status: u16, headers: &[(&'static str, &'static str)], body: &'static str) -> RawResponse {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, hyper::header::HeaderValue::from_static(v));
        }
        RawResponse { status, headers: h, body: Bytes::from_static(body.as_bytes()) }
    }

    const TRUSTED: Reader<'static> = Reader { endpoint: "https://127.0.0.1:8443", trusted: true };
    const UNTRUSTED: Reader<'static> = Reader { endpoint: "https://127.0.0.1:8443", trusted: false };

    #[test]
    fn sync_answers_carry_metadata_etag_and_location() {
        let r = raw(
            200,
            &[("etag", "\"8cb4\"")],
            r#"{"type":"sync","status":"Success","status_code":200,"operation":"","error_code":0,"error":"","metadata":{"name":"default"}}"#,
        );
        let s = TRUSTED.expect_sync(Method::Get, "/1.0/profiles/default", &r).unwrap();
        assert_eq!(s.metadata["name"], "default");
        assert_eq!(s.etag, Some(ETag::new("8cb4")));
        let created = raw(
            201,
            &[("location", "/1.0/profiles/p1")],
            r#"{"type":"sync","status":"Success","status_code":200,"operation":"","error_code":0,"error":"","metadata":{}}"#,
        );
        match TRUSTED.outcome(Method::Post, "/1.0/profiles", &created).unwrap() {
            Outcome::Sync(s) => assert_eq!(s.location.as_deref(), Some("/1.0/profiles/p1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn async_answers_become_operations() {
        let r = raw(
            202,
            &[("location", "/1.0/operations/c5d5")],
            r#"{"type":"async","status":"Operation created","status_code":100,"operation":"/1.0/operations/c5d5?project=p","error_code":0,"error":"","metadata":{"id":"c5d5","class":"task","description":"Creating instance","status":"Running","status_code":103,"resources":{"instances":["/1.0/instances/i1?project=p"]},"metadata":null,"may_cancel":false,"err":"","location":"none"}}"#,
        );
        match TRUSTED.outcome(Method::Post, "/1.0/instances?project=p", &r).unwrap() {
            Outcome::Async(op) => {
                assert_eq!(op.id(), "c5d5");
                assert_eq!(op.url, "/1.0/operations/c5d5?project=p");
                assert_eq!(op.description(), "Creating instance");
            }
            other => panic!("{other:?}"),
        }
        let err = TRUSTED.expect_sync(Method::Get, "/1.0/x", &r).unwrap_err();
        assert!(matches!(err, LxdError::Protocol { .. }), "{err}");
    }

    #[test]
    fn error_envelopes_map_by_status_with_lxd_text_verbatim() {
        let e412 = raw(
            412,
            &[],
            r#"{"type":"error","status":"","status_code":0,"operation":"","error_code":412,"error":"ETag doesn't match: 8cb4 vs abc","metadata":null}"#,
        );
        match TRUSTED.outcome(Method::Put, "/1.0/profiles/default", &e412).unwrap_err() {
            LxdError::PreconditionFailed { method, path, message } => {
                assert_eq!((method.as_str(), path.as_str()), ("PUT", "/1.0/profiles/default"));
                assert_eq!(message, "ETag doesn't match: 8cb4 vs abc");
            }
            other => panic!("{other}"),
        }
        let e404 = raw(
            404,
            &[],
            r#"{"type":"error","status":"","status_code":0,"operation":"","error_code":404,"error":"Operation not found","metadata":null}"#,
        );
        assert!(TRUSTED.outcome(Method::Get, "/1.0/operations/x", &e404).unwrap_err().is_not_found());
        let e500 = raw(
            500,
            &[],
            r#"{"type":"error","status":"","status_code":0,"operation":"","error_code":500,"error":"Invalid config: Unknown configuration key: bogus.key","metadata":null}"#,
        );
        let err = TRUSTED.outcome(Method::Patch, "/1.0/profiles/p", &e500).unwrap_err();
        assert!(matches!(err, LxdError::Api { status: 500, .. }));
        assert!(err.to_string().contains("PATCH /1.0/profiles/p"));
        assert!(err.to_string().contains("Invalid config: Unknown configuration key: bogus.key"));
    }

    #[test]
    fn only_an_authorization_403_means_untrusted() {
        let denied = raw(
            403,
            &[],
            r#"{"type":"error","status":"","status_code":0,"operation":"","error_code":403,"error":"not authorized","metadata":null}"#,
        );
        let err = UNTRUSTED.outcome(Method::Get, "/1.0/profiles", &denied).unwrap_err();
        assert!(matches!(err, LxdError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("lxd-gitops login"));
        // Trusted but restricted: an API error, not a login problem.
        assert!(matches!(
            TRUSTED.outcome(Method::Get, "/1.0/profiles", &denied).unwrap_err(),
            LxdError::Api { status: 403, .. }
        ));
        let profile = raw(
            403,
            &[],
            r#"{"type":"error","status":"","status_code":0,"operation":"","error_code":403,"error":"The \"default\" profile cannot be deleted","metadata":null}"#,
        );
        let err = UNTRUSTED.outcome(Method::Delete, "/1.0/profiles/default", &profile).unwrap_err();
        assert!(matches!(err, LxdError::Api { status: 403, .. }), "{err}");
    }

    #[test]
    fn non_lxd_answers_are_reported_not_panicked_on() {
        let html = raw(502, &[], "<html>bad gateway</html>");
        let err = TRUSTED.outcome(Method::Get, "/1.0", &html).unwrap_err();
        assert!(err.to_string().contains("bad gateway"), "{err}");
        let junk = raw(200, &[], "not json");
        assert!(matches!(TRUSTED.outcome(Method::Get, "/1.0", &junk).unwrap_err(), LxdError::Decode { .. }));
        let no_url = raw(202, &[], r#"{"type":"async","operation":"","metadata":{"id":"x"}}"#);
        assert!(matches!(TRUSTED.outcome(Method::Post, "/1.0/x", &no_url).unwrap_err(), LxdError::Protocol { .. }));
    }

    #[test]
    fn default_options_match_the_contract() {
        let o = ConnectOptions::default();
        assert_eq!(o.connect_timeout, Duration::from_secs(5));
        assert_eq!(o.request_timeout, Duration::from_secs(60));
        assert_eq!(o.retry, RetryPolicy::default());
        assert_eq!(o.trust, TrustRequirement::Trusted);
    }
}
