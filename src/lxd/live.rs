//! The live reader: one cluster's state, read with list calls.
//!
//! Owns: which LXD endpoints to read (and in what order) to fill `LiveState`:
//! `recursion=1` lists, `all-projects=true` where LXD 5.0 honours it (instances),
//! per-project lists where it does not (profiles, images, networks), and `?target=`
//! reads for member-local values. The number of requests depends on members,
//! projects, pools and networks — never on the number of instances. Must not:
//! decide anything (that is the planner) or write.
//!
//! A part that cannot be read (an offline member's local config) is recorded in
//! `LiveState.incomplete` instead of failing the whole read, so the planner never
//! infers deletions from missing data.

use super::convert;
use crate::model::*;
use futures_util::future::try_join_all;
use serde_json::Value;
use std::future::Future;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the reader needs from a client: `GET path` → (metadata, ETag).
pub trait LxdRead: Sync {
    fn get_json(&self, path: &str) -> impl Future<Output = Result<(Value, Option<String>), BoxError>> + Send;
}

/// A failed read, with the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("reading live state of cluster `{cluster}`: {step}: {source}")]
pub struct ReadError {
    pub cluster: String,
    pub step: String,
    #[source]
    pub source: BoxError,
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn feature(p: &Project, key: &str, default: bool) -> bool {
    match p.config.get(key).map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        _ => default,
    }
}

/// Reads everything the fleet models from the cluster behind `client`.
pub async fn read_cluster<C: LxdRead>(client: &C, cluster: &str) -> Result<LiveState, ReadError> {
    let err = |step: &str| {
        let step = step.to_string();
        let cluster = cluster.to_string();
        move |source: BoxError| ReadError { cluster: cluster.clone(), step: step.clone(), source }
    };
    let mut live = LiveState { cluster: cluster.to_string(), ..Default::default() };

    let (server, cluster_info, projects, pools, certs, instances) = tokio::try_join!(
        async { client.get_json("/1.0").await.map_err(err("GET /1.0")) },
        async { client.get_json("/1.0/cluster").await.map_err(err("GET /1.0/cluster")) },
        async { client.get_json("/1.0/projects?recursion=1").await.map_err(err("list projects")) },
        async { client.get_json("/1.0/storage-pools?recursion=1").await.map_err(err("list storage pools")) },
        async { client.get_json("/1.0/certificates?recursion=1").await.map_err(err("list certificates")) },
        async { client.get_json("/1.0/instances?recursion=1&all-projects=true").await.map_err(err("list instances")) },
    )?;
    live.objects.server_config = convert::server_config(&server.0);
    if let Some(etag) = server.1 {
        live.etags.insert("Server".into(), etag);
    }
    let clustered = cluster_info.0.get("enabled").and_then(Value::as_bool).unwrap_or(false);

    for p in list(&projects.0) {
        let p = convert::project(p);
        live.objects.projects.insert(p.name.clone(), p);
    }
    for p in list(&pools.0) {
        let p = convert::storage_pool(p);
        live.objects.storage_pools.insert(p.name.clone(), p);
    }
    for c in list(&certs.0) {
        let c = convert::certificate(c);
        live.objects.certificates.insert(c.name.clone(), c);
    }
    for i in list(&instances.0) {
        let i = convert::instance(i);
        live.objects.instances.insert(pkey(&i.project, &i.name), i);
    }

    // Per-project lists: LXD 5.0 ignores all-projects on these. A project without
    // features.X shares the default project's objects, so it is not listed again.
    let projects: Vec<Project> = live.objects.projects.values().cloned().collect();
    let profile_projects: Vec<&str> = projects
        .iter()
        .filter(|p| p.name == "default" || feature(p, "features.profiles", true))
        .map(|p| p.name.as_str())
        .collect();
    let image_projects: Vec<&str> = projects
        .iter()
        .filter(|p| p.name == "default" || feature(p, "features.images", true))
        .map(|p| p.name.as_str())
        .collect();
    let network_projects: Vec<&str> = projects
        .iter()
        .filter(|p| p.name == "default" || feature(p, "features.networks", false))
        .map(|p| p.name.as_str())
        .collect();

    let profiles = try_join_all(profile_projects.iter().map(|p| async move {
        client
            .get_json(&format!("/1.0/profiles?recursion=1&project={}", enc(p)))
            .await
            .map(|v| (p.to_string(), v.0))
            .map_err(err(&format!("list profiles of project {p}")))
    }));
    let images = try_join_all(image_projects.iter().map(|p| async move {
        client
            .get_json(&format!("/1.0/images?recursion=1&project={}", enc(p)))
            .await
            .map(|v| (p.to_string(), v.0))
            .map_err(err(&format!("list images of project {p}")))
    }));
    let networks = try_join_all(network_projects.iter().map(|p| async move {
        client
            .get_json(&format!("/1.0/networks?recursion=1&project={}", enc(p)))
            .await
            .map(|v| (p.to_string(), v.0))
            .map_err(err(&format!("list networks of project {p}")))
    }));
    // Members and groups in the same round: a cluster's read is one round shorter.
    let membership = async {
        if !clustered {
            return Ok(None);
        }
        tokio::try_join!(
            async { client.get_json("/1.0/cluster/members?recursion=1").await.map_err(err("list members")) },
            async { client.get_json("/1.0/cluster/groups?recursion=1").await.map_err(err("list cluster groups")) },
        )
        .map(|(m, g)| Some((m.0, g.0)))
    };
    let (profiles, images, networks, membership) = tokio::try_join!(profiles, images, networks, membership)?;
    for (project, v) in profiles {
        for p in list(&v) {
            let p = convert::profile(p, &project);
            live.objects.profiles.insert(pkey(&p.project, &p.name), p);
        }
    }
    for (project, v) in images {
        for i in list(&v) {
            for img in convert::images(i, &project) {
                live.objects.images.insert(pkey(&img.project, &img.name), img);
            }
        }
    }
    for (project, v) in networks {
        for n in list(&v) {
            if n.get("managed").and_then(Value::as_bool) != Some(true) {
                continue; // host interfaces, different on every member
            }
            let n = convert::network(n, &project);
            live.objects.networks.insert(pkey(&n.project, &n.name), n);
        }
    }

    if let Some((members, groups)) = membership {
        read_members(client, cluster, &mut live, &members, &groups).await?;
    }
    name_instance_images(&mut live.objects);
    Ok(live)
}

/// Names the image each instance was created from by an alias of it (the first,
/// sorted), when that image is still in the project the instance takes images from.
fn name_instance_images(objects: &mut ClusterObjects) {
    let mut by_fp: std::collections::HashMap<(String, String), String> = std::collections::HashMap::new();
    for img in objects.images.values() {
        if let Some(fp) = &img.fingerprint {
            let key = (img.project.clone(), fp.clone());
            let e = by_fp.entry(key).or_insert_with(|| img.name.clone());
            if img.name < *e {
                *e = img.name.clone();
            }
        }
    }
    let image_project: std::collections::HashMap<String, String> = objects
        .projects
        .values()
        .map(|p| {
            let own = p.name == "default" || feature(p, "features.images", true);
            (p.name.clone(), if own { p.name.clone() } else { "default".to_string() })
        })
        .collect();
    for i in objects.instances.values_mut() {
        let Some(fp) = &i.base_image else { continue };
        let project = image_project.get(&i.project).cloned().unwrap_or_else(|| i.project.clone());
        i.image = by_fp.get(&(project, fp.clone())).cloned();
    }
}

/// Members and groups (as listed), and every per-member value: member-local server
/// config and the member-specific keys of pools and networks.
async fn read_members<C: LxdRead>(
    client: &C,
    cluster: &str,
    live: &mut LiveState,
    members: &Value,
    groups: &Value,
) -> Result<(), ReadError> {
    let err = |step: String| {
        let cluster = cluster.to_string();
        move |source: BoxError| ReadError { cluster: cluster.clone(), step: step.clone(), source }
    };
    for g in list(groups) {
        let g = convert::group(g);
        live.objects.groups.insert(g.name.clone(), g);
    }
    for m in list(members) {
        let m = convert::member(m);
        live.objects.members.insert(m.name.clone(), m);
    }

    // Per-member reads. An offline member cannot answer: record the gap.
    let online: Vec<String> = live
        .objects
        .members
        .values()
        .filter(|m| m.status.as_deref() != Some("Offline"))
        .map(|m| m.name.clone())
        .collect();
    for m in live.objects.members.values().filter(|m| m.status.as_deref() == Some("Offline")) {
        for kind in [Kind::Member, Kind::StoragePool, Kind::Network, Kind::Instance] {
            live.incomplete.push(Incomplete { kind, reason: format!("member `{}` is offline", m.name) });
        }
    }
    let pools: Vec<String> = live.objects.storage_pools.keys().cloned().collect();
    let networks: Vec<(String, String)> =
        live.objects.networks.values().map(|n| (n.project.clone(), n.name.clone())).collect();

    let server_reads = try_join_all(online.iter().map(|m| {
        let e = err(format!("read member-local server config of {m}"));
        async move { client.get_json(&format!("/1.0?target={}", enc(m))).await.map(|v| (m.clone(), v)).map_err(e) }
    }));
    let pool_reads = try_join_all(online.iter().flat_map(|m| pools.iter().map(move |p| (m, p))).map(|(m, p)| {
        let e = err(format!("read storage pool {p} on member {m}"));
        async move {
            client
                .get_json(&format!("/1.0/storage-pools/{}?target={}", enc(p), enc(m)))
                .await
                .map(|v| (m.clone(), p.clone(), v.0))
                .map_err(e)
        }
    }));
    let net_reads =
        try_join_all(online.iter().flat_map(|m| networks.iter().map(move |n| (m, n))).map(|(m, (proj, n))| {
            let e = err(format!("read network {proj}/{n} on member {m}"));
            async move {
                client
                    .get_json(&format!("/1.0/networks/{}?project={}&target={}", enc(n), enc(proj), enc(m)))
                    .await
                    .map(|v| (m.clone(), pkey(proj, n), v.0))
                    .map_err(e)
            }
        }));
    let (servers, pool_vals, net_vals) = tokio::try_join!(server_reads, pool_reads, net_reads)?;
    for (m, (v, etag)) in servers {
        if let Some(member) = live.objects.members.get_mut(&m) {
            member.server_config = convert::member_server_config(&v);
        }
        if let Some(etag) = etag {
            live.etags.insert(format!("Server/{m}"), etag);
        }
    }
    for (m, p, v) in pool_vals {
        let cfg = convert::config(v.get("config"));
        if let Some(pool) = live.objects.storage_pools.get_mut(&p) {
            let local: ConfigMap =
                cfg.into_iter().filter(|(k, _)| crate::model::names::POOL_MEMBER_KEYS.contains(&k.as_str())).collect();
            if !local.is_empty() {
                pool.member_config.insert(m, local);
            }
        }
    }
    for (m, key, v) in net_vals {
        let cfg = convert::config(v.get("config"));
        if let Some(net) = live.objects.networks.get_mut(&key) {
            let local: ConfigMap = cfg
                .into_iter()
                .filter(|(k, _)| crate::model::names::NETWORK_MEMBER_KEYS.contains(&k.as_str()))
                .collect();
            if !local.is_empty() {
                net.member_config.insert(m, local);
            }
        }
    }
    Ok(())
}

impl LxdRead for super::LxdClient {
    async fn get_json(&self, path: &str) -> Result<(Value, Option<String>), BoxError> {
        let (v, etag) = self.get::<Value>(path).await.map_err(|e| Box::new(e) as BoxError)?;
        Ok((v, etag.map(|e| e.as_str().to_string())))
    }
}
