//! The executor: one plan step at a time, as LXD requests.
//!
//! Owns: what each (kind, action) of a `Step` means in LXD calls — GET → modify →
//! PUT with `If-Match` for updates, waiting on async
//! operations, the two-step creation of pools and networks in a cluster, joining
//! members, evacuation, stop-before-delete. A step whose object someone else
//! changed since the plan read it (`conflict`), or between its GET and PUT (412),
//! is a conflict: nothing is overwritten and the report says so, for the caller to
//! plan again. Turns the engine's results into an `ApplyReport`. Must not: diff (the planner did), choose order (the engine does).

use super::engine::{self, Node, Outcome, StepResult};
use super::requests as rq;
pub use crate::lxd::Method;
use crate::model::*;
use crate::plan::{Action, Flag, PhaseKind, Plan, Step};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

/// An error from LXD as the executor needs to tell them apart.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// 412: the ETag sent with If-Match no longer matches.
    pub precondition_failed: bool,
    pub not_found: bool,
    /// LXD's own text, with method and path.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An LXD response before waiting: sync metadata, or an operation to wait on
/// (then `metadata` is the operation's own metadata, e.g. a join token).
#[derive(Debug, Clone)]
pub struct Response {
    pub metadata: Value,
    pub operation: Option<crate::lxd::Operation>,
}

/// What the executor needs from an LXD client.
pub trait LxdApi: Send + Sync + Sized {
    fn get(&self, path: &str) -> impl Future<Output = Result<(Value, Option<String>), ApiError>> + Send;
    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<String>,
    ) -> impl Future<Output = Result<Response, ApiError>> + Send;
    /// Waits for an async operation (sync responses return at once) and returns its metadata.
    fn wait(&self, response: Response) -> impl Future<Output = Result<Value, ApiError>> + Send;
    /// Uploads a unified image tarball (async), returning the operation response.
    fn upload_image(
        &self,
        path: &str,
        file: PathBuf,
        public: bool,
    ) -> impl Future<Output = Result<Response, ApiError>> + Send;
    /// A client for another LXD server (a member being joined), pinned to its fingerprint,
    /// with the same client certificate.
    fn connect_to(&self, endpoint: &str, fingerprint: &str) -> impl Future<Output = Result<Self, ApiError>> + Send;
    /// Endpoint of the cluster member this client talks to (`host:port`).
    fn cluster_address(&self) -> String;
}

/// Applies snap steps (the snap module supplies the real one; a cluster without
/// snapd access configured gets `NoSnap`, which skips those steps with a reason).
pub trait SnapApply: Send + Sync {
    fn apply(
        &self,
        member: &str,
        want: &SnapSettings,
        live: Option<&SnapSettings>,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// No snapd access configured: snap steps are skipped, with that reason.
pub struct NoSnap;

impl SnapApply for NoSnap {
    async fn apply(&self, member: &str, _: &SnapSettings, _: Option<&SnapSettings>) -> Result<String, String> {
        Err(format!(
            "no snapd access is configured for member `{member}` (clusters.<name>.snapd in the runtime config)"
        ))
    }
}

/// How the executor runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Steps of one phase at once (members and snap phases always run one at a time).
    pub concurrency: usize,
    /// Seconds to wait for a graceful stop before forcing it.
    pub stop_timeout: u32,
    /// Folder the fleet was loaded from (image tarballs are relative to it).
    pub repo_root: PathBuf,
}

/// One step's result, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub id: String,
    pub object: String,
    pub action: Action,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// The step failed because its object changed since the plan read it (or
    /// between its read and its write): nothing was overwritten; plan again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conflict: bool,
}

impl StepReport {
    /// Why the step failed, without the `<action> <object>: ` the executor puts in
    /// front (for lines that name the step already). None unless it failed.
    pub fn failure(&self) -> Option<&str> {
        let Outcome::Failed(e) = &self.outcome else { return None };
        let prefix = format!("{} {}: ", self.action, self.object);
        Some(e.strip_prefix(prefix.as_str()).unwrap_or(e))
    }
}

/// What an apply did, step by step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub cluster: String,
    pub steps: Vec<StepReport>,
    pub duration_ms: u64,
}

impl ApplyReport {
    pub fn counts(&self) -> (usize, usize, usize) {
        let ok = self.steps.iter().filter(|s| s.outcome == Outcome::Ok).count();
        let failed = self.steps.iter().filter(|s| matches!(s.outcome, Outcome::Failed(_))).count();
        (ok, failed, self.steps.len() - ok - failed)
    }

    pub fn succeeded(&self) -> bool {
        self.counts().1 == 0
    }

    /// The steps that failed as conflicts (see `StepReport::conflict`).
    pub fn conflicts(&self) -> impl Iterator<Item = &StepReport> {
        self.steps.iter().filter(|s| s.conflict)
    }

    pub fn render_text(&self) -> String {
        let mut s = String::new();
        for r in &self.steps {
            let (mark, detail) = match &r.outcome {
                Outcome::Ok => ("ok     ", String::new()),
                Outcome::Failed(_) => ("FAILED ", format!(": {}", r.failure().unwrap_or_default())),
                Outcome::Skipped(why) => ("skipped", format!(": {why}")),
            };
            s.push_str(&format!("{mark} {} {} ({} ms){detail}\n", r.action, r.object, r.duration_ms));
        }
        let (ok, failed, skipped) = self.counts();
        s.push_str(&format!(
            "Apply to cluster {}: {ok} ok, {failed} failed, {skipped} skipped in {:.1} s\n",
            self.cluster,
            self.duration_ms as f64 / 1000.0
        ));
        s
    }
}

struct Ctx<'a, C: LxdApi, S: SnapApply> {
    api: &'a C,
    snap: &'a S,
    cluster: &'a str,
    opts: &'a ApplyOptions,
    /// Members of the cluster when the apply started (for per-member creations).
    members: Vec<String>,
    /// Ids of the steps that failed as conflicts.
    conflicts: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Why a step did not succeed.
#[derive(Debug)]
struct StepError {
    message: String,
    /// The object moved under the step; nothing was written.
    conflict: bool,
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        StepError { message, conflict: false }
    }
}

impl From<&str> for StepError {
    fn from(message: &str) -> Self {
        StepError { message: message.to_string(), conflict: false }
    }
}

/// Runs `plan` against the cluster behind `api`. A blocked plan runs nothing.
pub async fn execute<C: LxdApi, S: SnapApply>(
    plan: &Plan,
    api: &C,
    snap: &S,
    opts: &ApplyOptions,
    mut progress: impl FnMut(&StepReport),
) -> ApplyReport {
    let started = std::time::Instant::now();
    let steps: Vec<&Step> = plan.steps().collect();
    let by_id: std::collections::HashMap<&str, &Step> = steps.iter().map(|s| (s.id.as_str(), *s)).collect();
    if let Some(reason) = &plan.blocked {
        let reports = steps
            .iter()
            .map(|s| StepReport {
                id: s.id.clone(),
                object: s.object.to_string(),
                action: s.action,
                outcome: Outcome::Skipped(format!("plan refused: {reason}")),
                duration_ms: 0,
                conflict: false,
            })
            .collect();
        return ApplyReport { cluster: plan.cluster.clone(), steps: reports, duration_ms: 0 };
    }
    let members = match api.get("/1.0/cluster/members").await {
        Ok((v, _)) => v
            .as_array()
            .map(|a| {
                a.iter().filter_map(|u| u.as_str()).map(|u| u.rsplit('/').next().unwrap_or(u).to_string()).collect()
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let ctx = Arc::new(Ctx { api, snap, cluster: &plan.cluster, opts, members, conflicts: Default::default() });
    let phases: Vec<Vec<Node<&Step>>> = plan
        .phases
        .iter()
        .map(|p| {
            p.steps
                .iter()
                .map(|s| Node {
                    id: s.id.clone(),
                    depends_on: s.depends_on.clone(),
                    hold: s.flags.iter().find(|f| f.skips_step()).map(Flag::label),
                    work: s,
                })
                .collect()
        })
        .collect();
    let kinds: Vec<PhaseKind> = plan.phases.iter().map(|p| p.kind).collect();
    let concurrency = opts.concurrency.max(1);
    let results: Vec<StepResult> = engine::run(
        phases,
        |i| match kinds.get(i) {
            Some(PhaseKind::Members) | Some(PhaseKind::Snap) => 1,
            _ => concurrency,
        },
        |step: &Step| {
            let ctx = ctx.clone();
            async move {
                run_step(&ctx, step).await.map_err(|e| {
                    if e.conflict {
                        ctx.conflicts.lock().expect("conflicts").insert(step.id.clone());
                    }
                    format!("{} {}: {}", step.action, step.object, e.message)
                })
            }
        },
        |r| {
            if let Some(s) = by_id.get(r.id.as_str()) {
                progress(&report_of(s, r, &ctx));
            }
        },
    )
    .await;
    let reports = results.iter().filter_map(|r| by_id.get(r.id.as_str()).map(|s| report_of(s, r, &ctx))).collect();
    ApplyReport { cluster: plan.cluster.clone(), steps: reports, duration_ms: started.elapsed().as_millis() as u64 }
}

fn report_of<C: LxdApi, S: SnapApply>(s: &Step, r: &StepResult, ctx: &Ctx<'_, C, S>) -> StepReport {
    StepReport {
        id: s.id.clone(),
        object: s.object.to_string(),
        action: s.action,
        outcome: r.outcome.clone(),
        duration_ms: r.duration_ms,
        conflict: ctx.conflicts.lock().expect("conflicts").contains(&s.id),
    }
}

fn want<T: serde::de::DeserializeOwned>(step: &Step) -> Result<T, String> {
    let v = step.desired.clone().ok_or("the plan step has no desired object")?;
    serde_json::from_value(v).map_err(|e| format!("the plan step's desired object is unreadable: {e}"))
}

fn live_of<T: serde::de::DeserializeOwned>(step: &Step) -> Result<T, String> {
    let v = step.live.clone().ok_or("the plan step has no live object")?;
    serde_json::from_value(v).map_err(|e| format!("the plan step's live object is unreadable: {e}"))
}

fn project_of(step: &Step) -> &str {
    step.object.project.as_deref().unwrap_or("default")
}

fn e(err: ApiError) -> StepError {
    if err.precondition_failed {
        StepError {
            message: format!("{}: the object changed while this step ran; not overwritten", err.message),
            conflict: true,
        }
    } else {
        err.message.into()
    }
}

impl<C: LxdApi, S: SnapApply> Ctx<'_, C, S> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<String>,
    ) -> Result<Value, StepError> {
        let r = self.api.request(method, path, body, if_match).await.map_err(e)?;
        self.api.wait(r).await.map_err(e)
    }

    /// GET → build the body from what LXD returned → PUT with that GET's ETag.
    async fn get_put(&self, path: &str, body: impl FnOnce(&Value) -> Value) -> Result<(), StepError> {
        let (live, etag) = self.api.get(path).await.map_err(e)?;
        self.call(Method::Put, path, Some(body(&live)), etag).await.map(|_| ())
    }

    /// `get_put` for an update step, refused as a conflict when the fields it
    /// writes moved since the plan read them.
    async fn update(&self, step: &Step, path: &str, body: impl FnOnce(&Value) -> Value) -> Result<(), StepError> {
        let (live, etag) = self.api.get(path).await.map_err(e)?;
        let moved = super::conflict::moved_since_plan(step, &live);
        if !moved.is_empty() {
            return Err(StepError {
                message: format!(
                    "changed by someone else since the plan read it ({}); not overwritten",
                    moved.join(", ")
                ),
                conflict: true,
            });
        }
        self.call(Method::Put, path, Some(body(&live)), etag).await.map(|_| ())
    }
}

async fn run_step<C: LxdApi, S: SnapApply>(ctx: &Ctx<'_, C, S>, step: &Step) -> Result<(), StepError> {
    let name = step.object.name.as_str();
    let project = project_of(step);
    let pq = rq::project_query(project);
    let cluster = ctx.cluster;
    match (step.object.kind, step.action) {
        // -- server config ---------------------------------------------------
        (Kind::Cluster, Action::Update) => {
            let want: Value = step.desired.clone().ok_or("no desired config")?;
            let want = want.get("config").cloned().unwrap_or(json!({}));
            let live = step.live.as_ref().and_then(|l| l.get("config")).cloned().unwrap_or(json!({}));
            ctx.call(Method::Patch, "/1.0", Some(json!({ "config": config_patch(&want, &live) })), step.etag.clone())
                .await?;
        }
        (Kind::Member, Action::Update) if step.changes.iter().all(|c| c.path.starts_with("server_config.")) => {
            let want: Value = step.desired.clone().ok_or("no desired config")?;
            let want = want.get("server_config").cloned().unwrap_or(json!({}));
            let live = step.live.as_ref().and_then(|l| l.get("server_config")).cloned().unwrap_or(json!({}));
            let path = format!("/1.0?target={}", rq::enc(name));
            ctx.call(Method::Patch, &path, Some(json!({ "config": config_patch(&want, &live) })), step.etag.clone())
                .await?;
        }
        // -- projects ----------------------------------------------------------
        (Kind::Project, Action::Create) => {
            let p: Project = want(step)?;
            let (path, body) = rq::project_create(&p, cluster);
            ctx.call(Method::Post, &path, Some(body), None).await?;
        }
        (Kind::Project, Action::Update) => {
            let p: Project = want(step)?;
            ctx.update(step, &format!("/1.0/projects/{}", rq::enc(name)), |live| rq::project_put(&p, live)).await?;
        }
        (Kind::Project, Action::Delete) => {
            ctx.call(Method::Delete, &format!("/1.0/projects/{}", rq::enc(name)), None, None).await?;
        }
        // -- storage pools and networks ------------------------------------------
        (Kind::StoragePool, Action::Create) => {
            let p: StoragePool = want(step)?;
            let reqs = rq::pool_create(&p, &ctx.members, cluster);
            create_per_member(ctx, reqs).await?;
            // LXD drops the description of the final POST of a pending pool: set it.
            if !p.description.is_empty() {
                let path = format!("/1.0/storage-pools/{}", rq::enc(name));
                let keys = crate::model::names::POOL_MEMBER_KEYS;
                ctx.get_put(&path, |live| rq::global_put(&p.description, &p.config, live, keys)).await?;
            }
        }
        (Kind::StoragePool, Action::Update) => {
            let p: StoragePool = want(step)?;
            let base = format!("/1.0/storage-pools/{}", rq::enc(name));
            update_global_and_members(
                ctx,
                &base,
                "",
                &p.description,
                &p.config,
                &p.member_config,
                crate::model::names::POOL_MEMBER_KEYS,
            )
            .await?;
        }
        (Kind::StoragePool, Action::Delete) => {
            ctx.call(Method::Delete, &format!("/1.0/storage-pools/{}", rq::enc(name)), None, None).await?;
        }
        (Kind::Network, Action::Create) => {
            let n: Network = want(step)?;
            let reqs = rq::network_create(&n, &ctx.members, cluster);
            create_per_member(ctx, reqs).await?;
            // LXD drops the description of the final POST of a pending network: set it.
            if !n.description.is_empty() {
                let path = rq::with_query(&format!("/1.0/networks/{}", rq::enc(name)), &[pq]);
                let keys = crate::model::names::NETWORK_MEMBER_KEYS;
                ctx.get_put(&path, |live| rq::global_put(&n.description, &n.config, live, keys)).await?;
            }
        }
        (Kind::Network, Action::Update) => {
            let n: Network = want(step)?;
            let base = format!("/1.0/networks/{}", rq::enc(name));
            update_global_and_members(
                ctx,
                &base,
                &pq,
                &n.description,
                &n.config,
                &n.member_config,
                crate::model::names::NETWORK_MEMBER_KEYS,
            )
            .await?;
        }
        (Kind::Network, Action::Delete) => {
            ctx.call(Method::Delete, &rq::with_query(&format!("/1.0/networks/{}", rq::enc(name)), &[pq]), None, None)
                .await?;
        }
        // -- profiles -------------------------------------------------------------
        (Kind::Profile, Action::Create) => {
            let p: Profile = want(step)?;
            let (path, body) = rq::profile_create(&p, cluster);
            ctx.call(Method::Post, &path, Some(body), None).await?;
        }
        (Kind::Profile, Action::Update) => {
            let p: Profile = want(step)?;
            ctx.update(step, &rq::profile_path(project, name), |live| rq::profile_put(&p, live)).await?;
        }
        (Kind::Profile, Action::Delete) => {
            ctx.call(Method::Delete, &rq::profile_path(project, name), None, None).await?;
        }
        // -- images ------------------------------------------------------------------
        (Kind::Image, Action::Create) => create_image(ctx, step).await?,
        (Kind::Image, Action::Update) | (Kind::Image, Action::Refresh) => update_image(ctx, step).await?,
        (Kind::Image, Action::Delete) => {
            let live: Image = live_of(step)?;
            let fp = live.fingerprint.ok_or("the live image has no fingerprint")?;
            ctx.call(Method::Delete, &rq::with_query(&format!("/1.0/images/{}", rq::enc(&fp)), &[pq]), None, None)
                .await?;
        }
        // -- members and groups -------------------------------------------------------
        (Kind::ClusterGroup, Action::Create) => {
            let g: ClusterGroup = want(step)?;
            ctx.call(
                Method::Post,
                "/1.0/cluster/groups",
                Some(json!({"name": g.name, "description": g.description, "members": []})),
                None,
            )
            .await?;
        }
        (Kind::ClusterGroup, Action::Update) => {
            let g: ClusterGroup = want(step)?;
            let path = format!("/1.0/cluster/groups/{}", rq::enc(name));
            ctx.get_put(&path, |live| {
                json!({"description": g.description, "members": live.get("members").cloned().unwrap_or(json!([]))})
            })
            .await?;
        }
        (Kind::ClusterGroup, Action::Delete) => {
            ctx.call(Method::Delete, &format!("/1.0/cluster/groups/{}", rq::enc(name)), None, None).await?;
        }
        (Kind::Member, Action::Update) => {
            let m: Member = want(step)?;
            ctx.get_put(&rq::member_path(name), |live| rq::member_put(&m, live)).await?;
        }
        (Kind::Member, Action::Join) => join_member(ctx, step).await?,
        (Kind::Member, Action::Evacuate) | (Kind::Member, Action::Restore) => {
            let action = if step.action == Action::Evacuate { "evacuate" } else { "restore" };
            let path = format!("{}/state", rq::member_path(name));
            ctx.call(Method::Post, &path, Some(json!({ "action": action })), None).await?;
        }
        (Kind::Member, Action::RemoveMember) => {
            ctx.call(Method::Delete, &rq::member_path(name), None, None).await?;
        }
        // -- instances ----------------------------------------------------------------
        (Kind::Instance, Action::Create) => {
            let i: Instance = want(step)?;
            let (path, body) = rq::instance_create(&i, i.image.as_deref(), cluster);
            ctx.call(Method::Post, &path, Some(body), None).await.map_err(|mut err| {
                if err.message.contains("UNIQUE constraint failed: storage_volumes") {
                    err.message.push_str(
                        " (LXD still holds the storage volume of an earlier, interrupted creation of this \
                         instance, e.g. when its member shut down mid-creation; LXD's API cannot delete \
                         instance volumes, so it has to be removed on that member before this can succeed)",
                    );
                }
                err
            })?;
        }
        (Kind::Instance, Action::Update) => {
            let i: Instance = want(step)?;
            ctx.update(step, &rq::instance_path(project, name), |live| rq::instance_put(&i, live)).await?;
        }
        (Kind::Instance, Action::Start) => instance_state(ctx, project, name, "start").await?,
        (Kind::Instance, Action::Stop) => instance_state(ctx, project, name, "stop").await?,
        (Kind::Instance, Action::Restart) => instance_state(ctx, project, name, "restart").await?,
        (Kind::Instance, Action::Move) => {
            let i: Instance = want(step)?;
            let target = i.target.clone().ok_or("a move needs a target")?;
            let path = rq::with_query(
                &format!("/1.0/instances/{}", rq::enc(name)),
                &[pq, format!("target={}", rq::enc(&target))],
            );
            ctx.call(Method::Post, &path, Some(json!({"name": name, "migration": true, "live": false})), None).await?;
        }
        (Kind::Instance, Action::Delete) => {
            ctx.call(Method::Delete, &rq::instance_path(project, name), None, None).await?;
        }
        // -- trust -----------------------------------------------------------------------
        (Kind::Certificate, Action::Create) => {
            let c: Certificate = want(step)?;
            let (path, body) = rq::certificate_create(&c)?;
            ctx.call(Method::Post, &path, Some(body), None).await?;
        }
        (Kind::Certificate, Action::Update) => {
            let c: Certificate = want(step)?;
            let live: Certificate = live_of(step)?;
            let path = format!("/1.0/certificates/{}", rq::enc(&live.fingerprint));
            let (_, etag) = ctx.api.get(&path).await.map_err(e)?;
            ctx.call(Method::Put, &path, Some(rq::certificate_put(&c)), etag).await?;
        }
        (Kind::Certificate, Action::Delete) => {
            let live: Certificate = live_of(step)?;
            ctx.call(Method::Delete, &format!("/1.0/certificates/{}", rq::enc(&live.fingerprint)), None, None).await?;
        }
        // -- snap -------------------------------------------------------------------------
        (Kind::Snap, Action::Update) => {
            let want: SnapSettings = want(step)?;
            let live: Option<SnapSettings> = step.live.clone().and_then(|v| serde_json::from_value(v).ok());
            ctx.snap.apply(name, &want, live.as_ref()).await?;
        }
        (kind, action) => return Err(format!("lxd-gitops cannot {action} a {kind} yet").into()),
    }
    Ok(())
}

/// PATCH body for a config map: changed and new keys, removed keys as "".
fn config_patch(want: &Value, live: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(w) = want.as_object() {
        for (k, v) in w {
            if live.get(k) != Some(v) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(l) = live.as_object() {
        for k in l.keys() {
            if want.get(k).is_none() {
                out.insert(k.clone(), json!(""));
            }
        }
    }
    Value::Object(out)
}

/// Pools and networks in a cluster: per-member POSTs (pending), then the global
/// one. On a standalone server there are no members and only the global POST runs.
async fn create_per_member<C: LxdApi, S: SnapApply>(
    ctx: &Ctx<'_, C, S>,
    reqs: Vec<(String, Value)>,
) -> Result<(), StepError> {
    for (path, body) in reqs {
        ctx.call(Method::Post, &path, Some(body), None).await?;
    }
    Ok(())
}

/// The global part with a PUT of global keys, then per-member keys with `?target=`.
async fn update_global_and_members<C: LxdApi, S: SnapApply>(
    ctx: &Ctx<'_, C, S>,
    base: &str,
    pq: &str,
    description: &str,
    config: &ConfigMap,
    member_config: &std::collections::BTreeMap<String, ConfigMap>,
    member_keys: &[&str],
) -> Result<(), StepError> {
    let path = rq::with_query(base, &[pq.to_string()]);
    ctx.get_put(&path, |live| rq::global_put(description, config, live, member_keys)).await?;
    for (m, keys) in member_config {
        let path = rq::with_query(base, &[pq.to_string(), format!("target={}", rq::enc(m))]);
        let (live, etag) = ctx.api.get(&path).await.map_err(e)?;
        let mut cfg = live.get("config").cloned().unwrap_or(json!({}));
        if let Some(obj) = cfg.as_object_mut() {
            obj.retain(|k, _| member_keys.contains(&k.as_str()));
            for (k, v) in keys {
                obj.insert(k.clone(), json!(v));
            }
        }
        ctx.call(Method::Patch, &path, Some(json!({ "config": cfg })), etag).await?;
    }
    Ok(())
}

async fn instance_state<C: LxdApi, S: SnapApply>(
    ctx: &Ctx<'_, C, S>,
    project: &str,
    name: &str,
    action: &str,
) -> Result<(), StepError> {
    let path = rq::instance_state_path(project, name);
    let timeout = ctx.opts.stop_timeout;
    match ctx.call(Method::Put, &path, Some(rq::instance_state(action, timeout, false)), None).await {
        Ok(_) => Ok(()),
        Err(first) if action != "start" => {
            // A graceful stop that timed out: force it, and say so.
            ctx.call(Method::Put, &path, Some(rq::instance_state(action, timeout, true)), None)
                .await
                .map(|_| ())
                .map_err(|e| format!("{}; forcing it failed too: {}", first.message, e.message).into())
        }
        Err(e) => Err(e),
    }
}

async fn create_image<C: LxdApi, S: SnapApply>(ctx: &Ctx<'_, C, S>, step: &Step) -> Result<(), StepError> {
    let img: Image = want(step)?;
    let project = img.project.clone();
    let pq = rq::project_query(&project);
    let src = img.source.clone().ok_or("an image needs a `source`")?;
    let fingerprint = if let Some(file) = &src.file {
        let path = ctx.opts.repo_root.join(file);
        let r =
            ctx.api.upload_image(&rq::with_query("/1.0/images", &[pq.clone()]), path, img.public).await.map_err(e)?;
        let meta = ctx.api.wait(r).await.map_err(e)?;
        let fp =
            meta.get("fingerprint").and_then(Value::as_str).ok_or("the upload returned no fingerprint")?.to_string();
        // Uploads carry no aliases or extra properties: set them now.
        let path = rq::with_query(&format!("/1.0/images/{}", rq::enc(&fp)), &[pq.clone()]);
        ctx.get_put(&path, |live| rq::image_put(&img, live, ctx.cluster)).await?;
        let (p, body) =
            rq::alias_create(&project, &ImageAlias { name: img.name.clone(), description: String::new() }, &fp);
        ctx.call(Method::Post, &p, Some(body), None).await?;
        fp
    } else {
        let (path, body) = rq::image_pull(&img, ctx.cluster).ok_or("an image pull needs `source.server`")?;
        let meta = ctx.call(Method::Post, &path, Some(body), None).await?;
        meta.get("fingerprint").and_then(Value::as_str).map(str::to_string).unwrap_or_default()
    };
    let fingerprint = if fingerprint.is_empty() {
        // Pulls report the fingerprint in the operation metadata; look it up by alias otherwise.
        let (alias, _) = ctx
            .api
            .get(&rq::with_query(&format!("/1.0/images/aliases/{}", rq::enc(&img.name)), &[pq.clone()]))
            .await
            .map_err(e)?;
        alias.get("target").and_then(Value::as_str).unwrap_or_default().to_string()
    } else {
        fingerprint
    };
    for a in &img.aliases {
        let (p, body) = rq::alias_create(&project, a, &fingerprint);
        ctx.call(Method::Post, &p, Some(body), None).await?;
    }
    Ok(())
}

async fn update_image<C: LxdApi, S: SnapApply>(ctx: &Ctx<'_, C, S>, step: &Step) -> Result<(), StepError> {
    let img: Image = want(step)?;
    let live: Image = live_of(step)?;
    let pq = rq::project_query(&img.project);
    let fp = live.fingerprint.clone().ok_or("the live image has no fingerprint")?;
    if step.action == Action::Refresh {
        // A pinned fingerprint changed: pull the pinned image, then move the aliases to it.
        let (path, body) = rq::image_pull(&img, ctx.cluster).ok_or("a refresh needs `source.server`")?;
        let mut body = body;
        body["aliases"] = json!([]);
        ctx.call(Method::Post, &path, Some(body), None).await?;
        let new_fp = img.fingerprint.clone().unwrap_or_default();
        for name in std::iter::once(img.name.clone()).chain(img.aliases.iter().map(|a| a.name.clone())) {
            let p = rq::with_query(&format!("/1.0/images/aliases/{}", rq::enc(&name)), &[pq.clone()]);
            ctx.get_put(
                &p,
                |live| json!({"target": new_fp, "description": live.get("description").cloned().unwrap_or(json!(""))}),
            )
            .await?;
        }
        return Ok(());
    }
    let path = rq::with_query(&format!("/1.0/images/{}", rq::enc(&fp)), &[pq.clone()]);
    ctx.get_put(&path, |l| rq::image_put(&img, l, ctx.cluster)).await?;
    // Aliases: add the missing ones (removing aliases the fleet dropped is a prune matter).
    let have: Vec<String> =
        std::iter::once(live.name.clone()).chain(live.aliases.iter().map(|a| a.name.clone())).collect();
    for a in std::iter::once(ImageAlias { name: img.name.clone(), description: String::new() })
        .chain(img.aliases.iter().cloned())
    {
        if !have.contains(&a.name) {
            let (p, body) = rq::alias_create(&img.project, &a, &fp);
            ctx.call(Method::Post, &p, Some(body), None).await?;
        }
    }
    Ok(())
}

/// Joins a new server: a join token from the cluster, then `PUT /1.0/cluster` on the
/// new server (which must already trust our client certificate), then the member's
/// own fields.
async fn join_member<C: LxdApi, S: SnapApply>(ctx: &Ctx<'_, C, S>, step: &Step) -> Result<(), StepError> {
    let desired = step.desired.clone().ok_or("no desired member")?;
    let m: Member =
        serde_json::from_value(desired.get("member").cloned().unwrap_or_default()).map_err(|e| e.to_string())?;
    let address = m.address.clone().ok_or("the member has no `address`")?;
    let fingerprint = m.join_fingerprint.clone().ok_or(
        "the member has no `join_fingerprint` (the new server's own certificate fingerprint, to pin it while joining)",
    )?;
    // 1. The new server, pinned to its own certificate.
    let new = ctx.api.connect_to(&format!("https://{address}"), &fingerprint).await.map_err(e)?;
    // 2. A join token for that name (an operation that stays running until used).
    let op = ctx
        .api
        .request(Method::Post, "/1.0/cluster/members", Some(json!({"server_name": m.name})), None)
        .await
        .map_err(e)?;
    let meta = op.metadata.get("metadata").cloned().unwrap_or_else(|| op.metadata.clone());
    let token_json = json!({
        "server_name": meta.get("serverName").cloned().unwrap_or(json!(m.name)),
        "fingerprint": meta.get("fingerprint").cloned().unwrap_or_default(),
        "addresses": meta.get("addresses").cloned().unwrap_or(json!([])),
        "secret": meta.get("secret").cloned().unwrap_or_default(),
        "expires_at": meta.get("expiresAt").cloned().unwrap_or(json!("0001-01-01T00:00:00Z")),
    });
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(token_json.to_string());
    // 3. What the cluster asks of joining members, filled from the fleet.
    let (cinfo, _) = ctx.api.get("/1.0/cluster").await.map_err(e)?;
    let given: Vec<Value> = desired.get("member_config").and_then(Value::as_array).cloned().unwrap_or_default();
    let member_config: Vec<Value> = cinfo
        .get("member_config")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| {
                    let v = given
                        .iter()
                        .find(|g| {
                            g.get("entity") == t.get("entity")
                                && g.get("name") == t.get("name")
                                && g.get("key") == t.get("key")
                        })
                        .and_then(|g| g.get("value").cloned())
                        .unwrap_or(json!(""));
                    json!({"entity": t.get("entity"), "name": t.get("name"), "key": t.get("key"), "value": v})
                })
                .collect()
        })
        .unwrap_or_default();
    let (server, _) = ctx.api.get("/1.0").await.map_err(e)?;
    let cert = server
        .pointer("/environment/certificate")
        .and_then(Value::as_str)
        .ok_or("the cluster did not return its certificate")?;
    // 4. The join itself, sent to the new server.
    let body = json!({
        "server_name": m.name,
        "enabled": true,
        "cluster_address": ctx.api.cluster_address(),
        "cluster_certificate": cert,
        "server_address": address,
        "cluster_password": token,
        "member_config": member_config,
    });
    let r = new.request(Method::Put, "/1.0/cluster", Some(body), None).await.map_err(e)?;
    new.wait(r).await.map_err(|err| format!("joining failed on the new server: {}", e(err).message))?;
    // 5. The member's own fields.
    ctx.get_put(&rq::member_path(&m.name), |live| rq::member_put(&m, live)).await?;
    if !m.server_config.is_empty() {
        let path = format!("/1.0?target={}", rq::enc(&m.name));
        ctx.call(Method::Patch, &path, Some(json!({"config": m.server_config})), None).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_patches_set_changed_and_clear_removed_keys() {
        let want = json!({"a": "1", "b": "2"});
        let live = json!({"a": "1", "b": "3", "c": "x"});
        assert_eq!(config_patch(&want, &live), json!({"b": "2", "c": ""}));
    }

    #[test]
    fn reports_count_and_render() {
        let r = ApplyReport {
            cluster: "lab".into(),
            steps: vec![
                StepReport {
                    id: "a".into(),
                    object: "Project/web".into(),
                    action: Action::Create,
                    outcome: Outcome::Ok,
                    duration_ms: 5,
                    conflict: false,
                },
                StepReport {
                    id: "b".into(),
                    object: "Instance/web/w1".into(),
                    action: Action::Create,
                    outcome: Outcome::Failed("create Instance/web/w1: boom".into()),
                    duration_ms: 7,
                    conflict: true,
                },
                StepReport {
                    id: "c".into(),
                    object: "Instance/web/w1".into(),
                    action: Action::Start,
                    outcome: Outcome::Skipped("dependency".into()),
                    duration_ms: 0,
                    conflict: false,
                },
            ],
            duration_ms: 1200,
        };
        assert_eq!(r.counts(), (1, 1, 1));
        assert!(!r.succeeded());
        let text = r.render_text();
        assert!(text.contains("FAILED  create Instance/web/w1 (7 ms): boom"), "{text}");
        assert!(text.ends_with("Apply to cluster lab: 1 ok, 1 failed, 1 skipped in 1.2 s\n"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["steps"][1]["status"], "failed");
        assert_eq!(json["steps"][1]["detail"], "create Instance/web/w1: boom");
        assert_eq!(r.steps[1].failure(), Some("boom"));
        assert_eq!(r.steps[0].failure(), None);
        assert_eq!(json["steps"][1]["conflict"], true);
        assert!(json["steps"][0].get("conflict").is_none(), "{json}");
        assert_eq!(r.conflicts().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}
