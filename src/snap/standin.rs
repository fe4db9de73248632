//! A stand-in for snapd, serving the part of its REST API lxd-gitops uses on a
//! unix socket, with the LXD snap's state kept in memory.
//!
//! Why it exists: snapd cannot run on machines without systemd and squashfs
//! mounts (CI containers, this project's build machine), so the client's tests, the
//! SSH transport test and the README demo talk to this instead. It is **not** snapd:
//! no store, no hooks, no confinement; one snap; changes progress on a timer.
//!
//! Owns: faithful envelopes, status codes, error kinds and change life cycles for
//! `GET /v2/snaps/<name>`, `GET|PUT /v2/snaps/<name>/conf`,
//! `POST /v2/snaps/<name>` (`refresh` only) and `GET|POST /v2/changes/<id>`
//! (shapes from canonical/snapd `daemon/`; see `lxd-api.md` section 9), plus knobs
//! for tests: fail the next change, keep the snap busy with another change, publish
//! a revision to a channel.
//! Must not: be used by the reconciler itself; nothing outside tests, the demo and
//! the `lxd-gitops-snapd-standin` binary constructs it.
//!
//! Time model: a change is `Do` for one step, `Doing` for the next, then ready
//! (`Done`, or `Error` when a failure was injected). Effects (new config, new
//! revision) apply when the change becomes ready, as in snapd. State advances
//! lazily on every request, so no background task is needed.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State as AxState};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::policy::{normalize_channel, Channel};

/// A revision published to a channel in the stand-in's pretend store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRevision {
    pub revision: u64,
    pub version: String,
}

/// How the stand-in starts.
#[derive(Debug, Clone)]
pub struct StandinOptions {
    /// The one snap it knows (`lxd`).
    pub snap_name: String,
    /// False: every snap request answers 404 `snap-not-found`.
    pub installed: bool,
    pub version: String,
    pub revision: u64,
    /// Channel of the installed revision, also the tracking channel.
    pub channel: String,
    /// Length of each of a change's two steps (`Do`, then `Doing`).
    pub step_delay: Duration,
    /// The initial config document (nested, as snapd stores it).
    pub conf: Map<String, Value>,
    /// Other channels and what they serve. The installed channel is added.
    pub store: BTreeMap<String, StoreRevision>,
}

impl Default for StandinOptions {
    fn default() -> Self {
        StandinOptions {
            snap_name: "lxd".into(),
            installed: true,
            version: "5.0.2-838e1b2".into(),
            revision: 24322,
            channel: "5.0/stable".into(),
            step_delay: Duration::from_millis(100),
            conf: Map::new(),
            store: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Installed {
    version: String,
    revision: u64,
    channel: String,
    tracking: String,
    install_date: DateTime<Utc>,
}

#[derive(Debug, Clone)]
enum Effect {
    None,
    Configure(Map<String, Value>),
    Refresh { channel: String, to: StoreRevision },
    Switch { channel: String },
}

#[derive(Debug, Clone)]
struct TaskRec {
    id: u64,
    kind: String,
    summary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Do,
    Doing,
    Done,
    Error,
    /// Aborted before it started: its tasks are on hold.
    Hold,
    /// Aborted while running: undone.
    Undone,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Do => "Do",
            Phase::Doing => "Doing",
            Phase::Done => "Done",
            Phase::Error => "Error",
            Phase::Hold => "Hold",
            Phase::Undone => "Undone",
        }
    }
    fn ready(self) -> bool {
        !matches!(self, Phase::Do | Phase::Doing)
    }
}

#[derive(Debug, Clone)]
struct ChangeRec {
    id: u64,
    kind: String,
    summary: String,
    spawned: Instant,
    spawned_wall: DateTime<Utc>,
    step: Duration,
    tasks: Vec<TaskRec>,
    /// Injected failure: the last task fails with this message.
    failure: Option<String>,
    effect: Effect,
    /// Set once ready: final phase and when.
    end: Option<(Phase, DateTime<Utc>)>,
}

impl ChangeRec {
    fn phase(&self, now: Instant) -> Phase {
        if let Some((p, _)) = self.end {
            return p;
        }
        if now < self.spawned + self.step {
            Phase::Do
        } else {
            Phase::Doing
        }
    }
}

#[derive(Debug)]
struct State {
    name: String,
    installed: Option<Installed>,
    conf: Map<String, Value>,
    store: BTreeMap<String, StoreRevision>,
    changes: BTreeMap<u64, ChangeRec>,
    next_id: u64,
    /// snapd numbers tasks separately from changes.
    next_task: u64,
    step_delay: Duration,
    fail_next: Option<String>,
    requests: Vec<String>,
}

impl State {
    fn new(o: StandinOptions) -> State {
        let channel = normalize_channel(&o.channel);
        let mut store: BTreeMap<String, StoreRevision> =
            o.store.into_iter().map(|(c, r)| (normalize_channel(&c), r)).collect();
        store.entry(channel.clone()).or_insert(StoreRevision { revision: o.revision, version: o.version.clone() });
        State {
            installed: o.installed.then(|| Installed {
                version: o.version,
                revision: o.revision,
                channel: channel.clone(),
                tracking: channel,
                install_date: Utc::now(),
            }),
            name: o.snap_name,
            conf: o.conf,
            store,
            changes: BTreeMap::new(),
            next_id: 1,
            next_task: 1,
            step_delay: o.step_delay,
            fail_next: None,
            requests: Vec::new(),
        }
    }

    /// Moves every change whose time has come to its end and applies its effect.
    fn advance(&mut self, now: Instant) {
        let due: Vec<u64> =
            self.changes.values().filter(|c| c.end.is_none() && now >= c.spawned + 2 * c.step).map(|c| c.id).collect();
        for id in due {
            let c = self.changes.get_mut(&id).expect("due change exists");
            // Ready when its time came, not when someone looked.
            let at = c.spawned_wall + chrono::Duration::from_std(2 * c.step).unwrap_or_default();
            if c.failure.is_some() {
                c.end = Some((Phase::Error, at));
                continue;
            }
            c.end = Some((Phase::Done, at));
            let effect = c.effect.clone();
            self.apply(effect);
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Configure(patch) => {
                for (key, value) in patch {
                    patch_conf(&mut self.conf, &key, value);
                }
            }
            Effect::Refresh { channel, to } => {
                if let Some(i) = self.installed.as_mut() {
                    i.revision = to.revision;
                    i.version = to.version;
                    i.channel = channel.clone();
                    i.tracking = channel;
                }
            }
            Effect::Switch { channel } => {
                if let Some(i) = self.installed.as_mut() {
                    i.channel = channel.clone();
                    i.tracking = channel;
                }
            }
        }
    }

    /// The first change on the snap that is not ready, if any.
    fn busy(&self) -> Option<&ChangeRec> {
        self.changes.values().find(|c| c.end.is_none())
    }

    fn spawn(&mut self, kind: &str, summary: String, tasks: &[(&str, String)], effect: Effect, step: Duration) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let tasks = tasks
            .iter()
            .map(|(k, s)| {
                let tid = self.next_task;
                self.next_task += 1;
                TaskRec { id: tid, kind: k.to_string(), summary: s.clone() }
            })
            .collect();
        self.changes.insert(
            id,
            ChangeRec {
                id,
                kind: kind.to_string(),
                summary,
                spawned: Instant::now(),
                spawned_wall: Utc::now(),
                step,
                tasks,
                failure: self.fail_next.take(),
                effect,
                end: None,
            },
        );
        id
    }

    fn change_json(&self, c: &ChangeRec, now: Instant) -> Value {
        let phase = c.phase(now);
        let n = c.tasks.len();
        let tasks: Vec<Value> = c
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let last = i + 1 == n;
                let (status, done) = match phase {
                    Phase::Do => ("Do", 0),
                    Phase::Doing if i == 0 => ("Doing", 0),
                    Phase::Doing => ("Do", 0),
                    Phase::Done => ("Done", 1),
                    Phase::Error if last => ("Error", 1),
                    Phase::Error => ("Undone", 1),
                    Phase::Hold => ("Hold", 0),
                    Phase::Undone if i == 0 => ("Undone", 0),
                    Phase::Undone => ("Hold", 0),
                };
                let mut task = json!({
                    "id": t.id.to_string(),
                    "kind": t.kind,
                    "summary": t.summary,
                    "status": status,
                    "progress": {"label": "", "done": done, "total": 1},
                    "spawn-time": rfc3339(c.spawned_wall),
                });
                if let (Phase::Error, true, Some(msg), Some((_, at))) = (phase, last, &c.failure, c.end) {
                    task["log"] = json!([format!("{} ERROR {msg}", rfc3339(at))]);
                }
                if let Some((_, at)) = c.end {
                    task["ready-time"] = json!(rfc3339(at));
                }
                task
            })
            .collect();
        let mut v = json!({
            "id": c.id.to_string(),
            "kind": c.kind,
            "summary": c.summary,
            "status": phase.as_str(),
            "tasks": tasks,
            "ready": phase.ready(),
            "spawn-time": rfc3339(c.spawned_wall),
        });
        if let Some((_, at)) = c.end {
            v["ready-time"] = json!(rfc3339(at));
        }
        if phase == Phase::Error {
            let failed = c.tasks.last().map_or("", |t| t.summary.as_str());
            let msg = c.failure.as_deref().unwrap_or("");
            v["err"] = json!(format!("cannot perform the following tasks:\n- {failed} ({msg})"));
        }
        v
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Sets (or with `null`, removes) a dotted key in a nested config document,
/// creating intermediate maps as snapd does. Parents left empty stay as `{}`.
fn patch_conf(doc: &mut Map<String, Value>, key: &str, value: Value) {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts.split_last().expect("split yields one part");
    let mut cur = doc;
    for p in parents {
        if value.is_null() && !cur.contains_key(*p) {
            return;
        }
        let entry = cur.entry(p.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        cur = entry.as_object_mut().expect("just made an object");
    }
    if value.is_null() {
        cur.remove(*last);
    } else {
        cur.insert(last.to_string(), value);
    }
}

/// snapd's option name rule, per dotted part: lowercase letters, digits and single
/// inner dashes, at least one letter (`^(?:[a-z0-9]+-?)*[a-z](?:-?[a-z0-9])*$`).
fn valid_key_part(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('-')
        && !p.ends_with('-')
        && !p.contains("--")
        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && p.bytes().any(|b| b.is_ascii_lowercase())
}

fn lookup<'a>(doc: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let first = doc.get(parts.next()?)?;
    parts.try_fold(first, |v, p| v.as_object()?.get(p))
}

// ---------------------------------------------------------------------------
// Envelopes
// ---------------------------------------------------------------------------

fn envelope(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn sync(result: Value) -> Response {
    envelope(StatusCode::OK, json!({"type": "sync", "status-code": 200, "status": "OK", "result": result}))
}

fn accepted(change: u64) -> Response {
    envelope(
        StatusCode::ACCEPTED,
        json!({"type": "async", "status-code": 202, "status": "Accepted",
               "result": null, "change": change.to_string()}),
    )
}

fn error(status: StatusCode, message: &str, kind: Option<&str>, value: Option<Value>) -> Response {
    let mut result = json!({"message": message});
    if let Some(k) = kind {
        result["kind"] = json!(k);
    }
    if let Some(v) = value {
        result["value"] = v;
    }
    envelope(
        status,
        json!({"type": "error", "status-code": status.as_u16(),
               "status": status.canonical_reason().unwrap_or(""), "result": result}),
    )
}

fn not_installed(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("snap {name:?} is not installed"), Some("snap-not-found"), Some(json!(name)))
}

fn conflict(name: &str, busy: &ChangeRec) -> Response {
    error(
        StatusCode::CONFLICT,
        &format!("snap {name:?} has {:?} change in progress", busy.kind),
        Some("snap-change-conflict"),
        Some(json!({"snap-name": name, "change-kind": busy.kind})),
    )
}

fn method_not_allowed(m: &Method) -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, &format!("method {:?} not allowed", m.as_str()), None, None)
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// The stand-in's state and knobs; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Standin {
    state: Arc<Mutex<State>>,
}

impl Standin {
    pub fn new(options: StandinOptions) -> Standin {
        Standin { state: Arc::new(Mutex::new(State::new(options))) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not take the whole stand-in down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The HTTP routes, for serving on any listener.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v2/snaps/{name}", any(snap))
            .route("/v2/snaps/{name}/conf", any(conf))
            .route("/v2/changes/{id}", any(change))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "not found", None, None) })
            .with_state(self.clone())
    }

    /// Binds `socket` (replacing a stale socket file there) and serves until the
    /// returned handle is dropped.
    pub async fn serve(&self, socket: &Path) -> std::io::Result<StandinServer> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(m) = std::fs::symlink_metadata(socket) {
            if m.file_type().is_socket() {
                std::fs::remove_file(socket)?;
            }
        }
        let listener = tokio::net::UnixListener::bind(socket)?;
        let router = self.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(StandinServer { socket: socket.to_path_buf(), task })
    }

    /// Makes the next change end in status `Error` with `message` as its failed
    /// task's error (and no effect).
    pub fn fail_next_change(&self, message: &str) {
        self.lock().fail_next = Some(message.to_string());
    }

    /// Starts a change of `kind` (say `auto-refresh`) that keeps the snap busy for
    /// `duration`, so that writes meanwhile get 409 `snap-change-conflict`.
    /// Returns its id.
    pub fn start_external_change(&self, kind: &str, duration: Duration) -> String {
        let mut s = self.lock();
        let name = s.name.clone();
        let fail = s.fail_next.take();
        let id = s.spawn(
            kind,
            format!("{kind} of {name:?} (started outside lxd-gitops)"),
            &[(kind, format!("{kind} of {name:?}"))],
            Effect::None,
            duration / 2,
        );
        s.fail_next = fail;
        id.to_string()
    }

    /// Publishes `revision` with `version` to `channel` of the pretend store, so a
    /// refresh to (or on) that channel finds it.
    pub fn publish(&self, channel: &str, revision: u64, version: &str) {
        self.lock().store.insert(normalize_channel(channel), StoreRevision { revision, version: version.to_string() });
    }

    /// Changes how long each change step lasts, for changes started from now on.
    pub fn set_step_delay(&self, d: Duration) {
        self.lock().step_delay = d;
    }

    /// The committed config document (what `GET .../conf` without keys returns).
    pub fn conf(&self) -> Map<String, Value> {
        let mut s = self.lock();
        s.advance(Instant::now());
        s.conf.clone()
    }

    /// Installed revision, channel and tracking channel, if installed.
    pub fn installed(&self) -> Option<(u64, String, String)> {
        let mut s = self.lock();
        s.advance(Instant::now());
        s.installed.as_ref().map(|i| (i.revision, i.channel.clone(), i.tracking.clone()))
    }

    /// Every request served so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }
}

/// A running stand-in; dropping it stops serving and removes the socket file.
#[derive(Debug)]
pub struct StandinServer {
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl StandinServer {
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for StandinServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn note(s: &mut State, method: &Method, path: &str, query: &Option<String>) {
    let q = query.as_deref().map(|q| format!("?{q}")).unwrap_or_default();
    s.requests.push(format!("{method} {path}{q}"));
}

async fn snap(
    AxState(st): AxState<Standin>,
    method: Method,
    UrlPath(name): UrlPath<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut s = st.lock();
    note(&mut s, &method, &format!("/v2/snaps/{name}"), &query);
    s.advance(Instant::now());
    match method {
        Method::GET => snap_info(&s, &name),
        Method::POST => snap_action(&mut s, &name, &body),
        m => method_not_allowed(&m),
    }
}

fn snap_info(s: &State, name: &str) -> Response {
    let Some(i) = s.installed.as_ref().filter(|_| name == s.name) else {
        return not_installed(name);
    };
    sync(json!({
        "name": s.name,
        "title": "LXD",
        "summary": "LXD - container and VM manager",
        "type": "app",
        "base": "core22",
        "publisher": {"id": "canonical", "username": "canonical",
                      "display-name": "Canonical", "validation": "verified"},
        "developer": "canonical",
        "status": "active",
        "version": i.version,
        "revision": i.revision.to_string(),
        "channel": i.channel,
        "tracking-channel": i.tracking,
        "confinement": "strict",
        "devmode": false,
        "jailmode": false,
        "private": false,
        "ignore-validation": false,
        "mounted-from": format!("/var/lib/snapd/snaps/{}_{}.snap", s.name, i.revision),
        "install-date": rfc3339(i.install_date),
    }))
}

fn snap_action(s: &mut State, name: &str, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Action {
        #[serde(default)]
        action: String,
        #[serde(default)]
        channel: Option<String>,
    }
    let a: Action = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot decode request body into snap instruction: {e}"),
                None,
                None,
            )
        }
    };
    if a.action != "refresh" {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("unsupported action {:?} (the stand-in implements refresh only)", a.action),
            None,
            None,
        );
    }
    let Some(installed) = s.installed.clone().filter(|_| name == s.name) else {
        return not_installed(name);
    };
    if let Some(busy) = s.busy() {
        return conflict(name, busy);
    }
    let requested = a.channel.clone().filter(|c| !c.is_empty());
    let target = requested.as_deref().map_or_else(|| installed.tracking.clone(), normalize_channel);
    if Channel::parse(&target).is_none() {
        return error(StatusCode::BAD_REQUEST, &format!("invalid channel name {target:?}"), None, None);
    }
    let offer = match s.store.get(&target) {
        Some(r) => r.clone(),
        None => {
            // An unknown channel serves a new revision: refreshing bumps it.
            let top = s.store.values().map(|r| r.revision).chain([installed.revision]).max().unwrap_or(0);
            let track = Channel::parse(&target).map(|c| c.track).unwrap_or_default();
            let r = StoreRevision { revision: top + 1, version: format!("{track}-standin") };
            s.store.insert(target.clone(), r.clone());
            r
        }
    };
    let summary = match requested.as_deref() {
        Some(c) if c != "stable" => format!("Refresh {name:?} snap from {c:?} channel"),
        _ => format!("Refresh {name:?} snap"),
    };
    let step = s.step_delay;
    if offer.revision == installed.revision {
        if target == installed.tracking {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("snap {name:?} has no updates available"),
                Some("snap-no-update-available"),
                Some(json!(name)),
            );
        }
        // Same revision on another channel: only the tracking changes.
        let task = format!("Switch snap {name:?} from channel {:?} to {target:?}", installed.tracking);
        let id = s.spawn(
            "refresh-snap",
            summary,
            &[("switch-snap-channel", task)],
            Effect::Switch { channel: target },
            step,
        );
        return accepted(id);
    }
    let rev = offer.revision;
    let tasks = [
        ("download-snap", format!("Download snap {name:?} ({rev}) from channel {target:?}")),
        ("link-snap", format!("Make snap {name:?} ({rev}) available to the system")),
        ("start-snap-services", format!("Start snap {name:?} ({rev}) services")),
        ("run-hook", format!("Run configure hook of {name:?} snap if present")),
    ];
    let id = s.spawn("refresh-snap", summary, &tasks, Effect::Refresh { channel: target, to: offer }, step);
    accepted(id)
}

async fn conf(
    AxState(st): AxState<Standin>,
    method: Method,
    UrlPath(name): UrlPath<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut s = st.lock();
    note(&mut s, &method, &format!("/v2/snaps/{name}/conf"), &query);
    s.advance(Instant::now());
    match method {
        Method::GET => get_conf(&s, &name, query.as_deref()),
        Method::PUT => put_conf(&mut s, &name, &body),
        m => method_not_allowed(&m),
    }
}

fn get_conf(s: &State, name: &str, query: Option<&str>) -> Response {
    // snapd does not check that the snap is installed here: an unknown snap
    // simply has no configuration.
    let empty = Map::new();
    let doc = if name == s.name { &s.conf } else { &empty };
    let keys: Vec<String> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "keys")
        .flat_map(|(_, v)| v.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect::<Vec<_>>())
        .collect();
    if keys.is_empty() {
        return sync(Value::Object(doc.clone()));
    }
    let mut out = Map::new();
    for k in keys {
        if !k.split('.').all(valid_key_part) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("invalid option name: {k:?}"), None, None);
        }
        match lookup(doc, &k) {
            Some(v) => {
                out.insert(k, v.clone());
            }
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("snap {name:?} has no {k:?} configuration option"),
                    Some("option-not-found"),
                    None,
                )
            }
        }
    }
    sync(Value::Object(out))
}

fn put_conf(s: &mut State, name: &str, body: &[u8]) -> Response {
    let patch: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot decode request body into patch values: {e}"),
                None,
                None,
            )
        }
    };
    if s.installed.is_none() || name != s.name {
        return not_installed(name);
    }
    if let Some(bad) = patch.keys().find(|k| !k.split('.').all(valid_key_part)) {
        return error(StatusCode::BAD_REQUEST, &format!("invalid option name: {bad:?}"), None, None);
    }
    if let Some(busy) = s.busy() {
        return conflict(name, busy);
    }
    let step = s.step_delay;
    let id = s.spawn(
        "configure-snap",
        format!("Change configuration of {name:?} snap"),
        &[("run-hook", format!("Run configure hook of {name:?} snap"))],
        Effect::Configure(patch),
        step,
    );
    accepted(id)
}

async fn change(
    AxState(st): AxState<Standin>,
    method: Method,
    UrlPath(id): UrlPath<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut s = st.lock();
    note(&mut s, &method, &format!("/v2/changes/{id}"), &query);
    let now = Instant::now();
    s.advance(now);
    let Some(num) = id.parse::<u64>().ok().filter(|n| s.changes.contains_key(n)) else {
        return error(StatusCode::NOT_FOUND, &format!("cannot find change with id {id:?}"), None, None);
    };
    match method {
        Method::GET => {
            let c = &s.changes[&num];
            sync(s.change_json(c, now))
        }
        Method::POST => {
            #[derive(serde::Deserialize)]
            struct Req {
                #[serde(default)]
                action: String,
            }
            let req: Req = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot decode data from request body: {e}"),
                        None,
                        None,
                    )
                }
            };
            if req.action != "abort" {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("change action {:?} is unsupported", req.action),
                    None,
                    None,
                );
            }
            let c = s.changes.get_mut(&num).expect("checked above");
            let phase = c.phase(now);
            if phase.ready() {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot abort change {id} with nothing pending"),
                    None,
                    None,
                );
            }
            let end = if phase == Phase::Do { Phase::Hold } else { Phase::Undone };
            c.end = Some((end, Utc::now()));
            let c = &s.changes[&num];
            sync(s.change_json(c, now))
        }
        m => method_not_allowed(&m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_patches_nest_and_unset() {
        let mut doc = Map::new();
        patch_conf(&mut doc, "daemon.debug", json!("true"));
        patch_conf(&mut doc, "daemon.group", json!("adm"));
        patch_conf(&mut doc, "ui.enable", json!(true));
        assert_eq!(
            Value::Object(doc.clone()),
            json!({"daemon": {"debug": "true", "group": "adm"}, "ui": {"enable": true}})
        );
        patch_conf(&mut doc, "daemon.debug", Value::Null);
        patch_conf(&mut doc, "ui.enable", Value::Null);
        patch_conf(&mut doc, "nothing.here", Value::Null);
        assert_eq!(Value::Object(doc.clone()), json!({"daemon": {"group": "adm"}, "ui": {}}));
        assert_eq!(lookup(&doc, "daemon.group"), Some(&json!("adm")));
        assert_eq!(lookup(&doc, "daemon"), Some(&json!({"group": "adm"})));
        assert_eq!(lookup(&doc, "daemon.group.x"), None);
    }

    #[test]
    fn option_names_follow_snapd() {
        for ok in ["daemon", "debug", "user-group", "a1", "1a", "x-1-y"] {
            assert!(valid_key_part(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", "12", "a b"] {
            assert!(!valid_key_part(bad), "{bad}");
        }
    }
}
