//! LXD's wire vocabulary: methods, paths with queries, ETags, the response
//! envelope, operations and the `GET /1.0` server description.
//!
//! Owns: building request paths (URL encoding of names and query values), parsing
//! envelopes and ETag headers, and the typed shapes of operations and server info.
//! Must not: do IO or know about transports, retries or policy. Pure, so it is
//! unit-tested with the JSON samples checked against a live daemon.

use std::collections::BTreeMap;
use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::Value;

/// HTTP methods the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Put,
    Patch,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    /// Only reads may be repeated after they reached the server.
    pub fn is_idempotent_read(self) -> bool {
        matches!(self, Method::Get)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything but RFC 3986 unreserved characters is encoded, in path segments and
/// in query values alike: LXD names may contain `/` (image aliases such as
/// `debian/12`), filters contain spaces and `=`.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, STRICT).to_string()
}

/// A request path with its query, built piece by piece so that every name and
/// value is encoded exactly once.
///
/// ```
/// use lxd_gitops::lxd::ApiPath;
/// let p = ApiPath::new("/1.0/images/aliases").segment("debian/12").project("web");
/// assert_eq!(p.to_string(), "/1.0/images/aliases/debian%2F12?project=web");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath {
    path: String,
    query: Vec<(String, String)>,
}

impl ApiPath {
    /// Starts from a literal path such as `/1.0/instances` (not encoded: write it
    /// as LXD documents it).
    pub fn new(base: &str) -> Self {
        ApiPath { path: base.trim_end_matches('/').to_string(), query: Vec::new() }
    }

    /// Appends one path segment, encoded (a `/` in it stays part of the name).
    pub fn segment(mut self, name: &str) -> Self {
        self.path.push('/');
        self.path.push_str(&encode_component(name));
        self
    }

    /// Adds `key=value`, both encoded. Keys may repeat.
    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.query.push((key.to_string(), value.to_string()));
        self
    }

    /// `project=<p>`; the default project is sent too, so a call never depends on
    /// what the server considers its default.
    pub fn project(self, project: &str) -> Self {
        self.query("project", project)
    }

    /// `target=<member>` or `target=@<group>`.
    pub fn target(self, target: &str) -> Self {
        self.query("target", target)
    }

    pub fn recursion(self, level: u8) -> Self {
        self.query("recursion", &level.to_string())
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for ApiPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{}={}", encode_component(k), encode_component(v))?;
        }
        Ok(())
    }
}

impl From<ApiPath> for String {
    fn from(p: ApiPath) -> String {
        p.to_string()
    }
}

/// Appends `key=value` to a path that may already carry a query (as LXD's own
/// operation URLs do: `/1.0/operations/<id>?project=p`).
pub fn append_query(path: &str, key: &str, value: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{}={}", encode_component(key), encode_component(value))
}

/// An entity tag as LXD sends it in `ETag` and accepts in `If-Match`. Stored
/// without quotes; LXD compares without them too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ETag(String);

impl ETag {
    /// Parses a header value; quotes and a weak `W/` prefix are optional.
    pub fn parse(header: &str) -> Option<ETag> {
        let s = header.trim();
        let s = s.strip_prefix("W/").unwrap_or(s);
        let s = s.strip_prefix('"').unwrap_or(s);
        let s = s.strip_suffix('"').unwrap_or(s);
        if s.is_empty() {
            None
        } else {
            Some(ETag(s.to_string()))
        }
    }

    pub fn new(value: impl Into<String>) -> Self {
        ETag(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `If-Match` header value, quoted as HTTP wants it.
    pub fn header_value(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three kinds of LXD response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseType {
    Sync,
    Async,
    Error,
}

/// LXD's response envelope, as sent for every call but raw downloads.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub response_type: ResponseType,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_code: i64,
    /// For async responses: `/1.0/operations/<uuid>[?project=p]`.
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub error_code: i64,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub metadata: Value,
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

fn resources_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, Vec<String>>>, D::Error> {
    let raw: Option<BTreeMap<String, Option<Vec<String>>>> = Deserialize::deserialize(d)?;
    Ok(raw.map(|m| m.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect()))
}

/// An LXD operation object (`metadata` of an async response or of a wait).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OperationState {
    pub id: String,
    /// `task`, `websocket` or `token`.
    #[serde(default)]
    pub class: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    /// `Running`, `Success`, `Failure`, `Cancelled`, ...
    #[serde(default)]
    pub status: String,
    /// 100..=199 in progress, 200 success, 400 failure, 401 cancelled.
    #[serde(default)]
    pub status_code: i64,
    /// Object URLs the operation touches, by kind (`instances`, ...). A kind LXD lists
    /// as `null` (a join token's `{"cluster": null}`) reads as no URLs.
    #[serde(default, deserialize_with = "resources_or_null")]
    pub resources: Option<BTreeMap<String, Vec<String>>>,
    /// Operation-specific result (a token's secret, an upload's fingerprint, ...).
    /// May hold secrets: never log it.
    #[serde(default)]
    pub metadata: Value,
    #[serde(default)]
    pub may_cancel: bool,
    #[serde(default)]
    pub err: String,
    /// The member that runs the operation (`none` on a standalone server).
    #[serde(default)]
    pub location: String,
}

/// Status codes LXD uses for operations.
pub mod status_code {
    pub const SUCCESS: i64 = 200;
    pub const RUNNING: i64 = 103;
    pub const FAILURE: i64 = 400;
    pub const CANCELLED: i64 = 401;
}

impl OperationState {
    /// Finished, one way or another (LXD codes 200 and above).
    pub fn is_done(&self) -> bool {
        self.status_code >= status_code::SUCCESS
    }

    pub fn is_success(&self) -> bool {
        self.status_code == status_code::SUCCESS
    }
}

/// A background operation LXD started for a request. Wait on it with
/// `LxdClient::wait_operation`, right away: LXD forgets finished operations after
/// about five seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// `/1.0/operations/<id>[?project=p]`, as LXD gave it.
    pub url: String,
    /// The state LXD reported when it created the operation.
    pub state: OperationState,
}

impl Operation {
    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn description(&self) -> &str {
        &self.state.description
    }

    /// `/1.0/operations/<id>/wait?[project=p&]timeout=<secs>`.
    pub fn wait_path(&self, timeout_secs: u64) -> String {
        let (path, query) = match self.url.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.url.as_str(), None),
        };
        let mut out = format!("{}/wait", path.trim_end_matches('/'));
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        append_query(&out, "timeout", &timeout_secs.to_string())
    }
}

/// What a write returned: done at once, or running in the background.
// Returned once per write and matched by value right away: boxing the larger
// variant would buy nothing but noisier patterns.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sync(SyncResponse),
    Async(Operation),
}

/// A synchronous answer: its metadata and the headers that matter.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncResponse {
    pub status: u16,
    pub metadata: Value,
    pub etag: Option<ETag>,
    /// `Location` of a created object (201).
    pub location: Option<String>,
}

/// How LXD sees this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStatus {
    Trusted,
    Untrusted,
    /// Anything else LXD may report in future versions.
    Other(String),
}

impl AuthStatus {
    fn parse(s: &str) -> AuthStatus {
        match s {
            "trusted" => AuthStatus::Trusted,
            "untrusted" => AuthStatus::Untrusted,
            other => AuthStatus::Other(other.to_string()),
        }
    }
}

/// The parts of `GET /1.0` the client and its callers need.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    pub auth: AuthStatus,
    pub api_version: String,
    pub api_extensions: Vec<String>,
    /// Only shown to trusted clients.
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    /// Fingerprint of the certificate the server (cluster) presents; trusted only.
    pub certificate_fingerprint: Option<String>,
    pub clustered: bool,
    pub etag: Option<ETag>,
}

impl ServerInfo {
    pub fn has_extension(&self, name: &str) -> bool {
        self.api_extensions.iter().any(|e| e == name)
    }

    pub fn is_trusted(&self) -> bool {
        self.auth == AuthStatus::Trusted
    }

    pub fn from_metadata(metadata: &Value, etag: Option<ETag>) -> Result<ServerInfo, serde_json::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            auth: String,
            #[serde(default)]
            api_version: String,
            #[serde(default)]
            api_extensions: Vec<String>,
            #[serde(default)]
            environment: Option<Env>,
        }
        #[derive(Deserialize)]
        struct Env {
            #[serde(default)]
            server_name: Option<String>,
            #[serde(default)]
            server_version: Option<String>,
            #[serde(default)]
            certificate_fingerprint: Option<String>,
            #[serde(default)]
            server_clustered: bool,
        }
        let raw: Raw = serde_json::from_value(metadata.clone())?;
        let env = raw.environment;
        Ok(ServerInfo {
            auth: AuthStatus::parse(&raw.auth),
            api_version: raw.api_version,
            api_extensions: raw.api_extensions,
            server_name: env.as_ref().and_then(|e| e.server_name.clone()),
            server_version: env.as_ref().and_then(|e| e.server_version.clone()),
            certificate_fingerprint: env.as_ref().and_then(|e| e.certificate_fingerprint.clone()),
            clustered: env.as_ref().map(|e| e.server_clustered).unwrap_or(false),
            etag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_encode_names_and_values() {
        let p = ApiPath::new("/1.0/instances")
            .recursion(1)
            .query("filter", "status eq Running")
            .project("my proj")
            .target("@gpu");
        assert_eq!(
            p.to_string(),
            "/1.0/instances?recursion=1&filter=status%20eq%20Running&project=my%20proj&target=%40gpu"
        );
        let a = ApiPath::new("/1.0/images/aliases/").segment("debian/12").project("default");
        assert_eq!(a.to_string(), "/1.0/images/aliases/debian%2F12?project=default");
        assert_eq!(ApiPath::new("/1.0").to_string(), "/1.0");
        assert_eq!(
            ApiPath::new("/1.0/profiles").segment("a?b&c=d#e%").to_string(),
            "/1.0/profiles/a%3Fb%26c%3Dd%23e%25"
        );
        assert_eq!(String::from(ApiPath::new("/1.0/x").segment("é")), "/1.0/x/%C3%A9");
    }

    #[test]
    fn queries_append_to_existing_ones() {
        assert_eq!(append_query("/1.0/x", "a", "b c"), "/1.0/x?a=b%20c");
        assert_eq!(append_query("/1.0/x?project=p", "a", "1"), "/1.0/x?project=p&a=1");
    }

    #[test]
    fn etags_parse_with_or_without_quotes() {
        assert_eq!(ETag::parse("\"8cb40dbe\"").unwrap().as_str(), "8cb40dbe");
        assert_eq!(ETag::parse("8cb40dbe").unwrap().as_str(), "8cb40dbe");
        assert_eq!(ETag::parse(" W/\"abc\" ").unwrap().as_str(), "abc");
        assert_eq!(ETag::parse("\"\""), None);
        assert_eq!(ETag::parse(""), None);
        assert_eq!(ETag::new("abc").header_value(), "\"abc\"");
    }

    #[test]
    fn sync_envelope() {
        let e = Envelope::parse(
            br#"{"type":"sync","status":"Success","status_code":200,"operation":"","error_code":0,"error":"","metadata":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(e.response_type, ResponseType::Sync);
        assert_eq!(e.metadata, json!({"a":1}));
    }

    #[test]
    fn async_envelope_and_its_operation() {
        let body = br#"{"type":"async","status":"Operation created","status_code":100,"operation":"/1.0/operations/c5d5?project=p","error_code":0,"error":"","metadata":{"id":"c5d5","class":"task","description":"Creating instance","created_at":"2026-11-23T08:55:21.670467784Z","updated_at":"2026-11-23T08:55:21.670467784Z","status":"Running","status_code":103,"resources":{"containers":["/1.0/containers/i1"],"instances":["/1.0/instances/i1"]},"metadata":null,"may_cancel":false,"err":"","location":"none"}}"#;
        let e = Envelope::parse(body).unwrap();
        assert_eq!(e.response_type, ResponseType::Async);
        let state: OperationState = serde_json::from_value(e.metadata).unwrap();
        assert_eq!(state.status_code, status_code::RUNNING);
        assert!(!state.is_done());
        let op = Operation { url: e.operation, state };
        assert_eq!(op.wait_path(30), "/1.0/operations/c5d5/wait?project=p&timeout=30");
        let plain = Operation { url: "/1.0/operations/c5d5".into(), ..op };
        assert_eq!(plain.wait_path(5), "/1.0/operations/c5d5/wait?timeout=5");
    }

    #[test]
    fn failed_operation_from_a_wait() {
        let body = br#"{"type":"sync","status":"Success","status_code":200,"operation":"","error_code":0,"error":"","metadata":{"id":"ca59","class":"task","description":"Creating instance","status":"Failure","status_code":400,"resources":null,"metadata":null,"may_cancel":false,"err":"Failed creating instance record: Add instance info to the database: This \"instances\" entry already exists","location":"none"}}"#;
        let e = Envelope::parse(body).unwrap();
        let state: OperationState = serde_json::from_value(e.metadata).unwrap();
        assert!(state.is_done());
        assert!(!state.is_success());
        assert!(state.err.contains("already exists"));
    }

    #[test]
    fn error_envelope() {
        let e = Envelope::parse(
            br#"{"type":"error","status":"","status_code":0,"operation":"","error_code":412,"error":"ETag doesn't match: 8cb4 vs abc","metadata":null}"#,
        )
        .unwrap();
        assert_eq!(e.response_type, ResponseType::Error);
        assert_eq!(e.error_code, 412);
        assert_eq!(e.error, "ETag doesn't match: 8cb4 vs abc");
    }

    #[test]
    fn server_info_trusted_and_untrusted() {
        let trusted = json!({"api_extensions":["clustering","etag"],"api_version":"1.0","auth":"trusted",
            "environment":{"server_name":"node1","server_version":"5.0.2","certificate_fingerprint":"41967f7b","server_clustered":true},
            "config":{}});
        let i = ServerInfo::from_metadata(&trusted, ETag::parse("\"x\"")).unwrap();
        assert!(i.is_trusted());
        assert!(i.has_extension("etag"));
        assert!(!i.has_extension("instance_create_start"));
        assert_eq!(i.server_name.as_deref(), Some("node1"));
        assert_eq!(i.certificate_fingerprint.as_deref(), Some("41967f7b"));
        assert!(i.clustered);
        let untrusted = json!({"api_extensions":["etag"],"api_status":"stable","api_version":"1.0","auth":"untrusted","public":false,"auth_methods":["tls"]});
        let u = ServerInfo::from_metadata(&untrusted, None).unwrap();
        assert_eq!(u.auth, AuthStatus::Untrusted);
        assert_eq!(u.server_name, None);
        assert!(!u.clustered);
    }
}
