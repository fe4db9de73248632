//! A typed async client for snapd's REST API (`/v2/...`) over a unix socket.
//!
//! Owns: HTTP/1.1 over a `tokio::net::UnixStream` (one connection per request,
//! which also suits SSH-forwarded sockets), snapd's three response envelopes
//! (sync, async with a change id, error with a kind), the calls lxd-gitops needs
//! for the LXD snap (info, conf get/set, refresh) and waiting on changes.
//! Must not: decide what to set or when to reload (that is `policy` and the
//! planner), or retry on its own: a `Conflict` is returned to the caller, which
//! knows whether waiting is acceptable.
//!
//! API facts (canonical/snapd `daemon/`): `revision` is a JSON string; snapd keeps
//! config as a nested document (`daemon.debug` lives at `{"daemon":{"debug":…}}`);
//! `snap set lxd daemon.debug=true` from the CLI stores a JSON `true` while this
//! client always writes strings, so compare values with `conf_value_text`.

use super::transport::{Endpoint, Transport, TransportError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A snapd change id (`"123"`), as returned by async requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangeId(pub String);

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `GET /v2/snaps/<name>`, the fields lxd-gitops reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapInfo {
    pub name: String,
    pub version: String,
    /// snapd sends the revision as a string (`"31333"`; `"x1"` for local installs).
    pub revision: String,
    /// The channel the installed revision came from; absent for local installs.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub channel: Option<String>,
    /// The channel refreshes follow; absent when the snap tracks nothing.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub tracking_channel: Option<String>,
    /// `active` when installed and enabled.
    pub status: String,
    #[serde(default)]
    pub confinement: Option<String>,
}

fn empty_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()))
}

/// Status of a change or task, as snapd spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeStatus {
    Do,
    Doing,
    Done,
    Undo,
    Undoing,
    Undone,
    Hold,
    Wait,
    Abort,
    Error,
    /// A status this client does not know (newer snapd).
    #[serde(other)]
    Unknown,
}

impl fmt::Display for ChangeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Progress of one task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub total: u64,
}

/// One task of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Task {
    pub id: String,
    pub kind: String,
    pub summary: String,
    pub status: ChangeStatus,
    #[serde(default)]
    pub log: Vec<String>,
    #[serde(default)]
    pub progress: Progress,
}

/// `GET /v2/changes/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Change {
    pub id: ChangeId,
    /// `configure-snap`, `refresh-snap`, `switch-snap-channel`, ...
    pub kind: String,
    pub summary: String,
    pub status: ChangeStatus,
    pub ready: bool,
    /// snapd's error text when a task failed (`cannot perform the following tasks: ...`).
    #[serde(default)]
    pub err: Option<String>,
    #[serde(default)]
    pub spawn_time: Option<String>,
    #[serde(default)]
    pub ready_time: Option<String>,
    #[serde(default)]
    pub tasks: Vec<Task>,
}

impl Change {
    /// The tasks that ended in `Error`, as `summary: last log line`.
    pub fn failed_tasks(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|t| t.status == ChangeStatus::Error)
            .map(|t| match t.log.last() {
                Some(l) => format!("{}: {l}", t.summary),
                None => t.summary.clone(),
            })
            .collect()
    }
}

/// snapd's error kinds this crate acts on; others are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapdErrorKind {
    SnapNotFound,
    SnapChangeConflict,
    SnapNoUpdateAvailable,
    OptionNotFound,
    LoginRequired,
    /// Any other non-empty kind.
    Other(String),
    /// snapd sent no kind (plain bad request, not found, internal error).
    None,
}

impl SnapdErrorKind {
    fn parse(s: Option<&str>) -> SnapdErrorKind {
        match s.unwrap_or("") {
            "" => SnapdErrorKind::None,
            "snap-not-found" => SnapdErrorKind::SnapNotFound,
            "snap-change-conflict" => SnapdErrorKind::SnapChangeConflict,
            "snap-no-update-available" => SnapdErrorKind::SnapNoUpdateAvailable,
            "option-not-found" => SnapdErrorKind::OptionNotFound,
            "login-required" => SnapdErrorKind::LoginRequired,
            other => SnapdErrorKind::Other(other.to_string()),
        }
    }

    /// The kind as snapd spells it (empty when none).
    pub fn as_str(&self) -> &str {
        match self {
            SnapdErrorKind::SnapNotFound => "snap-not-found",
            SnapdErrorKind::SnapChangeConflict => "snap-change-conflict",
            SnapdErrorKind::SnapNoUpdateAvailable => "snap-no-update-available",
            SnapdErrorKind::OptionNotFound => "option-not-found",
            SnapdErrorKind::LoginRequired => "login-required",
            SnapdErrorKind::Other(s) => s,
            SnapdErrorKind::None => "",
        }
    }
}

impl fmt::Display for SnapdErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapdErrorKind::None => f.write_str("no kind"),
            k => f.write_str(k.as_str()),
        }
    }
}

/// Which member, through which transport, which request: the prefix of every error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub member: String,
    pub transport: String,
    pub method: String,
    pub path: String,
}

impl fmt::Display for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "snapd of member {} via {}: {} {}", self.member, self.transport, self.method, self.path)
    }
}

/// Everything that can go wrong talking to a member's snapd.
#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    /// The transport could not be opened (no socket, ssh failed).
    #[error("snapd of member {member}: {source}")]
    Transport { member: String, source: TransportError },
    /// Connecting, sending or reading failed, or the request timed out.
    #[error("{ctx}: {detail}")]
    Io { ctx: Box<RequestContext>, detail: String },
    /// snapd answered something that is not one of its envelopes.
    #[error("{ctx}: unexpected answer (HTTP {status}): {detail}")]
    Protocol { ctx: Box<RequestContext>, status: u16, detail: String },
    /// 404 `snap-not-found`: the snap is not installed on the member.
    #[error("{ctx}: snap {snap:?} is not installed on this member (snapd: {message})")]
    NotInstalled { ctx: Box<RequestContext>, snap: String, message: String },
    /// 409 `snap-change-conflict`: another change on the snap is in progress
    /// (maybe an auto-refresh); try again after it is ready.
    #[error("{ctx}: another change is in progress on the snap{} (409 snap-change-conflict: {message})",
        change_kind.as_ref().map(|k| format!(" ({k})")).unwrap_or_default())]
    Conflict { ctx: Box<RequestContext>, change_kind: Option<String>, message: String },
    /// Any other error envelope.
    #[error("{ctx}: snapd answered {status} ({kind}): {message}")]
    Api { ctx: Box<RequestContext>, status: u16, kind: SnapdErrorKind, message: String },
    /// The change became ready in a status other than `Done`.
    #[error("{ctx}: change {} ({}: {}) ended {}: {}{}", change.id, change.kind, change.summary,
        change.status, one_line(change.err.as_deref().unwrap_or("no error text from snapd")),
        failed_list(&change.failed_tasks()))]
    ChangeFailed { ctx: Box<RequestContext>, change: Box<Change> },
    /// The change was not ready within the time given.
    #[error("{ctx}: change {id} not ready after {waited:?} (last status {last_status})")]
    ChangeTimeout { ctx: Box<RequestContext>, id: ChangeId, waited: Duration, last_status: ChangeStatus },
}

/// snapd's multi-line `err` (`cannot perform the following tasks:\n- Task (why)`) on
/// one line, so the reason stays on the line that reports the failure.
fn one_line(err: &str) -> String {
    err.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn failed_list(tasks: &[String]) -> String {
    if tasks.is_empty() {
        String::new()
    } else {
        format!("; failed tasks: [{}]", tasks.join("; "))
    }
}

impl SnapError {
    /// snapd's error kind, when snapd answered with an error envelope.
    pub fn kind(&self) -> Option<SnapdErrorKind> {
        match self {
            SnapError::NotInstalled { .. } => Some(SnapdErrorKind::SnapNotFound),
            SnapError::Conflict { .. } => Some(SnapdErrorKind::SnapChangeConflict),
            SnapError::Api { kind, .. } => Some(kind.clone()),
            _ => None,
        }
    }
}

/// A successful answer: sync with a result, or async with a change to wait on.
#[derive(Debug)]
enum Answer {
    Sync(Value),
    Async(ChangeId),
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "status-code", default)]
    status_code: u16,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    change: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResult {
    #[serde(default)]
    message: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    value: Value,
}

/// Path segments and query values: keep what snapd's names use, encode the rest.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// A client for one member's snapd.
#[derive(Debug)]
pub struct SnapdClient {
    member: String,
    transport: String,
    endpoint: Endpoint,
    request_timeout: Duration,
}

impl SnapdClient {
    /// Opens `transport` (starting the SSH forward if needed) for `member`.
    pub async fn connect(member: &str, transport: &Transport) -> Result<SnapdClient, SnapError> {
        let endpoint =
            transport.open().await.map_err(|source| SnapError::Transport { member: member.to_string(), source })?;
        Ok(SnapdClient::with_endpoint(member, &transport.to_string(), endpoint))
    }

    /// A client over an already opened endpoint; `transport` names it in errors.
    pub fn with_endpoint(member: &str, transport: &str, endpoint: Endpoint) -> SnapdClient {
        SnapdClient {
            member: member.to_string(),
            transport: transport.to_string(),
            endpoint,
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Bounds every single request (not `wait_change`, which has its own timeout).
    pub fn with_request_timeout(mut self, t: Duration) -> SnapdClient {
        self.request_timeout = t;
        self
    }

    /// The member this client talks to.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The endpoint (socket, ssh diagnostics).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Closes the transport (waits for ssh to exit).
    pub async fn close(self) {
        self.endpoint.close().await
    }

    /// `GET /v2/snaps/<snap>`.
    pub async fn snap_info(&self, snap: &str) -> Result<SnapInfo, SnapError> {
        let path = format!("/v2/snaps/{}", enc(snap));
        let ctx = self.ctx(Method::GET, &path);
        let v = self.sync(&ctx, Method::GET, &path, None).await?;
        serde_json::from_value(v).map_err(|e| protocol(&ctx, 200, format!("snap info: {e}")))
    }

    /// `GET /v2/snaps/<snap>/conf`.
    ///
    /// With no keys: the whole (nested) document, `{}` when nothing is set.
    /// With keys: the value of each key that is set, by dotted key; **keys that are
    /// not set are left out of the map** rather than failing the call. (snapd fails
    /// the whole request with 400 `option-not-found` at the first unset key; on that
    /// answer this reads the whole document once and picks the keys from it.)
    pub async fn get_conf(&self, snap: &str, keys: &[&str]) -> Result<BTreeMap<String, Value>, SnapError> {
        let base = format!("/v2/snaps/{}/conf", enc(snap));
        if keys.is_empty() {
            return self.conf_document(&base).await;
        }
        let query: Vec<String> = keys.iter().map(|k| enc(k)).collect();
        let path = format!("{base}?keys={}", query.join(","));
        let ctx = self.ctx(Method::GET, &path);
        match self.sync(&ctx, Method::GET, &path, None).await {
            Ok(v) => object(&ctx, v),
            Err(SnapError::Api { kind: SnapdErrorKind::OptionNotFound, .. }) => {
                let doc = Value::Object(self.conf_document(&base).await?.into_iter().collect());
                Ok(keys.iter().filter_map(|k| lookup(&doc, k).map(|v| (k.to_string(), v.clone()))).collect())
            }
            Err(e) => Err(e),
        }
    }

    async fn conf_document(&self, path: &str) -> Result<BTreeMap<String, Value>, SnapError> {
        let ctx = self.ctx(Method::GET, path);
        let v = self.sync(&ctx, Method::GET, path, None).await?;
        object(&ctx, v)
    }

    /// `PUT /v2/snaps/<snap>/conf`: sets each key to its string value, unsets keys
    /// mapped to `None` (JSON `null`). Returns the `configure-snap` change; the new
    /// values are visible once it is `Done`.
    pub async fn set_conf(&self, snap: &str, values: &BTreeMap<String, Option<String>>) -> Result<ChangeId, SnapError> {
        let path = format!("/v2/snaps/{}/conf", enc(snap));
        let body: serde_json::Map<String, Value> =
            values.iter().map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String))).collect();
        let ctx = self.ctx(Method::PUT, &path);
        self.async_change(&ctx, Method::PUT, &path, Value::Object(body)).await
    }

    /// `POST /v2/snaps/<snap> {"action":"refresh","channel":…}`: refreshes to (and
    /// tracks) `channel`. `Ok(None)` when snapd says there is nothing to do
    /// (400 `snap-no-update-available`); a busy snap is `SnapError::Conflict`.
    pub async fn refresh(&self, snap: &str, channel: &str) -> Result<Option<ChangeId>, SnapError> {
        let path = format!("/v2/snaps/{}", enc(snap));
        let body = serde_json::json!({"action": "refresh", "channel": channel});
        let ctx = self.ctx(Method::POST, &path);
        match self.async_change(&ctx, Method::POST, &path, body).await {
            Ok(id) => Ok(Some(id)),
            Err(SnapError::Api { kind: SnapdErrorKind::SnapNoUpdateAvailable, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/changes/<id>`, once.
    pub async fn change(&self, id: &ChangeId) -> Result<Change, SnapError> {
        let path = format!("/v2/changes/{}", enc(&id.0));
        let ctx = self.ctx(Method::GET, &path);
        let v = self.sync(&ctx, Method::GET, &path, None).await?;
        serde_json::from_value(v).map_err(|e| protocol(&ctx, 200, format!("change: {e}")))
    }

    /// Polls the change until it is ready (50 ms, doubling up to 1 s), then requires
    /// status `Done`. Any other final status is `ChangeFailed` with snapd's `err` and
    /// the failed tasks; not ready within `timeout` is `ChangeTimeout` (the change
    /// keeps running in snapd; see `abort_change`).
    pub async fn wait_change(&self, id: &ChangeId, timeout: Duration) -> Result<Change, SnapError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let change = self.change(id).await?;
            if change.ready {
                if change.status == ChangeStatus::Done {
                    return Ok(change);
                }
                let path = format!("/v2/changes/{}", enc(&id.0));
                return Err(SnapError::ChangeFailed { ctx: self.ctx(Method::GET, &path), change: Box::new(change) });
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                let path = format!("/v2/changes/{}", enc(&id.0));
                return Err(SnapError::ChangeTimeout {
                    ctx: self.ctx(Method::GET, &path),
                    id: id.clone(),
                    waited: elapsed,
                    last_status: change.status,
                });
            }
            tokio::time::sleep(pause.min(timeout - elapsed)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// `POST /v2/changes/<id> {"action":"abort"}`. snapd refuses (400) when the
    /// change is already ready ("nothing pending").
    pub async fn abort_change(&self, id: &ChangeId) -> Result<Change, SnapError> {
        let path = format!("/v2/changes/{}", enc(&id.0));
        let ctx = self.ctx(Method::POST, &path);
        let v = self.sync(&ctx, Method::POST, &path, Some(serde_json::json!({"action": "abort"}))).await?;
        serde_json::from_value(v).map_err(|e| protocol(&ctx, 200, format!("change: {e}")))
    }

    // -- plumbing ------------------------------------------------------------

    fn ctx(&self, method: Method, path: &str) -> Box<RequestContext> {
        Box::new(RequestContext {
            member: self.member.clone(),
            transport: self.transport.clone(),
            method: method.to_string(),
            path: path.to_string(),
        })
    }

    async fn sync(
        &self,
        ctx: &RequestContext,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, SnapError> {
        match self.call(ctx, method, path, body).await? {
            Answer::Sync(v) => Ok(v),
            Answer::Async(id) => Err(protocol(ctx, 202, format!("expected a sync answer, got async change {id}"))),
        }
    }

    async fn async_change(
        &self,
        ctx: &RequestContext,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<ChangeId, SnapError> {
        match self.call(ctx, method, path, Some(body)).await? {
            Answer::Async(id) => Ok(id),
            Answer::Sync(_) => Err(protocol(ctx, 200, "expected an async answer with a change id, got sync".into())),
        }
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, SnapError> {
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(detail)) => return Err(self.io(ctx, detail)),
            Err(_) => return Err(self.io(ctx, format!("no answer within {:?}", self.request_timeout))),
        };
        parse_envelope(ctx, status, &bytes)
    }

    fn io(&self, ctx: &RequestContext, detail: String) -> SnapError {
        let detail = match self.endpoint.diagnostics() {
            Some(d) => format!("{detail}; ssh said: {d}"),
            None => detail,
        };
        SnapError::Io { ctx: Box::new(ctx.clone()), detail }
    }

    /// One HTTP/1.1 request on a fresh connection to the endpoint's socket.
    async fn exchange(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Bytes), String> {
        let socket = self.endpoint.socket();
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            // The error, if any, surfaces through `send_request` below.
            let _ = conn.await;
        });
        let payload = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v).expect("JSON values serialize")),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            // Go's HTTP server (snapd) rejects HTTP/1.1 requests without a Host.
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::USER_AGENT, concat!("lxd-gitops/", env!("CARGO_PKG_VERSION")))
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(payload)).map_err(|e| format!("building request: {e}"))?;
        let result = async {
            let resp = sender.send_request(req).await.map_err(|e| format!("sending request: {e}"))?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map_err(|e| format!("reading answer: {e}"))?.to_bytes();
            Ok((status, bytes))
        }
        .await;
        driver.abort();
        result
    }
}

fn protocol(ctx: &RequestContext, status: u16, detail: String) -> SnapError {
    SnapError::Protocol { ctx: Box::new(ctx.clone()), status, detail }
}

fn object(ctx: &RequestContext, v: Value) -> Result<BTreeMap<String, Value>, SnapError> {
    match v {
        Value::Object(m) => Ok(m.into_iter().collect()),
        // snapd answers `null` for a snap with no configuration on some versions.
        Value::Null => Ok(BTreeMap::new()),
        other => Err(protocol(ctx, 200, format!("expected a JSON object, got {other}"))),
    }
}

fn parse_envelope(ctx: &RequestContext, status: StatusCode, bytes: &[u8]) -> Result<Answer, SnapError> {
    let env: RawEnvelope = serde_json::from_slice(bytes).map_err(|e| {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        protocol(ctx, status.as_u16(), format!("not a snapd envelope ({e}): {text:?}"))
    })?;
    let code = if env.status_code != 0 { env.status_code } else { status.as_u16() };
    match env.kind.as_str() {
        "sync" => Ok(Answer::Sync(env.result)),
        "async" => match env.change {
            Some(id) if !id.is_empty() => Ok(Answer::Async(ChangeId(id))),
            _ => Err(protocol(ctx, code, "async answer without a change id".into())),
        },
        "error" => {
            let er: ErrorResult = serde_json::from_value(env.result).unwrap_or(ErrorResult {
                message: String::new(),
                kind: None,
                value: Value::Null,
            });
            let kind = SnapdErrorKind::parse(er.kind.as_deref());
            Err(match kind {
                SnapdErrorKind::SnapNotFound => SnapError::NotInstalled {
                    ctx: Box::new(ctx.clone()),
                    snap: er.value.as_str().map(str::to_string).unwrap_or_else(|| snap_of_path(&ctx.path)),
                    message: er.message,
                },
                SnapdErrorKind::SnapChangeConflict => SnapError::Conflict {
                    ctx: Box::new(ctx.clone()),
                    change_kind: er.value.get("change-kind").and_then(Value::as_str).map(str::to_string),
                    message: er.message,
                },
                kind => SnapError::Api { ctx: Box::new(ctx.clone()), status: code, kind, message: er.message },
            })
        }
        other => Err(protocol(ctx, code, format!("unknown envelope type {other:?}"))),
    }
}

fn snap_of_path(path: &str) -> String {
    path.trim_start_matches("/v2/snaps/").split(['/', '?']).next().unwrap_or("").to_string()
}

/// The value at dotted `key` in a nested snapd config document.
pub fn lookup<'a>(doc: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(doc, |v, part| v.get(part))
}

/// Flattens a nested snapd config document into dotted keys of its leaves
/// (`{"daemon":{"debug":true}}` → `daemon.debug: true`). Empty maps vanish.
pub fn flatten_conf(doc: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (k, v) in doc {
        walk(k, v, &mut out);
    }
    out
}

/// A config value as text, the way `snapctl get` shows a scalar and the way the
/// fleet writes it: strings as they are, `true`/`false`/numbers as JSON, `null` as
/// the empty string; maps and lists as compact JSON.
pub fn conf_value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestContext {
        RequestContext {
            member: "m1".into(),
            transport: "unix:/run/snapd.socket".into(),
            method: "GET".into(),
            path: "/v2/snaps/lxd".into(),
        }
    }

    #[test]
    fn envelopes_parse() {
        let a = parse_envelope(
            &ctx(),
            StatusCode::OK,
            br#"{"type":"sync","status-code":200,"status":"OK","result":{"a":1}}"#,
        )
        .unwrap();
        assert!(matches!(a, Answer::Sync(v) if v["a"] == 1));
        let a = parse_envelope(
            &ctx(),
            StatusCode::ACCEPTED,
            br#"{"type":"async","status-code":202,"status":"Accepted","result":null,"change":"123"}"#,
        )
        .unwrap();
        assert!(matches!(a, Answer::Async(ChangeId(id)) if id == "123"));
    }

    #[test]
    fn error_envelopes_become_typed_errors_with_context() {
        let e = parse_envelope(
            &ctx(),
            StatusCode::CONFLICT,
            br#"{"type":"error","status-code":409,"status":"Conflict","result":{"message":"snap \"lxd\" has \"configure-snap\" change in progress","kind":"snap-change-conflict","value":{"snap-name":"lxd","change-kind":"configure-snap"}}}"#,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(matches!(&e, SnapError::Conflict { change_kind: Some(k), .. } if k == "configure-snap"));
        assert!(text.contains("member m1") && text.contains("GET /v2/snaps/lxd"), "{text}");
        assert!(text.contains("snap-change-conflict"), "{text}");

        let e = parse_envelope(
            &ctx(),
            StatusCode::NOT_FOUND,
            br#"{"type":"error","status-code":404,"status":"Not Found","result":{"message":"snap \"lxd\" is not installed","kind":"snap-not-found","value":"lxd"}}"#,
        )
        .unwrap_err();
        assert!(matches!(&e, SnapError::NotInstalled { snap, .. } if snap == "lxd"), "{e}");
        assert!(e.to_string().contains("not installed"));

        let e = parse_envelope(
            &ctx(),
            StatusCode::BAD_REQUEST,
            br#"{"type":"error","status-code":400,"status":"Bad Request","result":{"message":"boom","kind":"some-new-kind"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind(), Some(SnapdErrorKind::Other("some-new-kind".into())));
        assert!(e.to_string().contains("400 (some-new-kind): boom"), "{e}");

        let e = parse_envelope(&ctx(), StatusCode::BAD_GATEWAY, b"<html>").unwrap_err();
        assert!(matches!(e, SnapError::Protocol { status: 502, .. }), "{e}");
    }

    #[test]
    fn config_documents_flatten_and_values_render_like_snapctl() {
        let doc: BTreeMap<String, Value> =
            serde_json::from_str(r#"{"daemon":{"debug":true,"group":"lxd"},"lxcfs":{"cfs":"false"},"empty":{}}"#)
                .unwrap();
        let flat = flatten_conf(&doc);
        assert_eq!(flat.keys().collect::<Vec<_>>(), ["daemon.debug", "daemon.group", "lxcfs.cfs"]);
        assert_eq!(conf_value_text(&flat["daemon.debug"]), "true");
        assert_eq!(conf_value_text(&flat["lxcfs.cfs"]), "false");
        assert_eq!(conf_value_text(&serde_json::json!(3)), "3");
        let whole = Value::Object(doc.into_iter().collect());
        assert_eq!(lookup(&whole, "daemon.group"), Some(&Value::from("lxd")));
        assert_eq!(lookup(&whole, "daemon.nope"), None);
        assert_eq!(lookup(&whole, "lxcfs.cfs.deeper"), None);
    }

    #[test]
    fn changes_deserialize_and_report_failed_tasks() {
        let c: Change = serde_json::from_str(
            r#"{"id":"7","kind":"configure-snap","summary":"Change configuration of \"lxd\" snap",
                "status":"Error","ready":true,"err":"cannot perform the following tasks:\n- Run configure hook of \"lxd\" snap (boom)",
                "spawn-time":"2024-01-01T00:00:00Z","ready-time":"2024-01-01T00:00:01Z",
                "tasks":[{"id":"9","kind":"run-hook","summary":"Run configure hook of \"lxd\" snap","status":"Error",
                  "log":["2024-01-01T00:00:01Z ERROR boom"],"progress":{"label":"","done":1,"total":1}}],
                "data":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(c.status, ChangeStatus::Error);
        assert_eq!(c.failed_tasks(), ["Run configure hook of \"lxd\" snap: 2024-01-01T00:00:01Z ERROR boom"]);
        let s: ChangeStatus = serde_json::from_str("\"Frobnicating\"").unwrap();
        assert_eq!(s, ChangeStatus::Unknown);
    }
}
