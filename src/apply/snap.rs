//! Snap settings of LXD on each member, read and applied through snapd.
//!
//! Owns: reaching each member's snapd as the runtime configuration says (local
//! socket or SSH), reading the live `SnapSettings` the planner compares (channel,
//! the keys the fleet names, pending keys), and applying one member's step: a
//! channel refresh (never a downgrade), then the config keys, recording keys that
//! need a daemon reload or a reboot as pending (a refresh to a new revision restarts
//! the daemon, so it clears the reload-pending ones). After a channel change it waits
//! until LXD reports the member Online again, so a roll stops at the first member
//! that does not come back. Must not: decide what to change (the planner did).

use super::executor::SnapApply;
use crate::lxd::LxdClient;
use crate::model::{ConfigMap, SnapSettings};
use crate::serve::config::SnapdEndpoint;
use crate::snap::client::{conf_value_text, SnapdClient};
use crate::snap::pending::PendingStore;
use crate::snap::policy::Needs;
use crate::snap::policy::{effect_of, is_downgrade, normalize_channel, KeyEffect};
use crate::snap::transport::{SshTarget, Transport};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::Mutex;

const CHANGE_TIMEOUT: Duration = Duration::from_secs(1800);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(600);

fn transport(e: &SnapdEndpoint) -> Transport {
    match e {
        SnapdEndpoint::Socket { path } => Transport::Local { socket: path.clone() },
        SnapdEndpoint::Ssh { host, port, user, identity_file, known_hosts } => {
            let mut t = SshTarget::new(host.clone(), user.clone());
            t.port = *port;
            t.identity_file = Some(identity_file.clone());
            t.known_hosts = Some(known_hosts.clone());
            Transport::Ssh(t)
        }
    }
}

/// Which snap keys to read: the ones the fleet names per member, or every key
/// (importing an existing cluster, where nothing is named yet).
#[derive(Debug, Clone)]
pub enum SnapKeys {
    Named(BTreeMap<String, Vec<String>>),
    Everything,
}

/// snapd access for the members of one cluster.
pub struct SnapdFleet {
    endpoints: BTreeMap<String, SnapdEndpoint>,
    pending: Mutex<PendingStore>,
    /// Used to wait for a member to be Online again after a refresh.
    lxd: Option<LxdClient>,
}

impl SnapdFleet {
    /// `pending_file` keeps keys written but not yet in effect, across runs.
    pub fn new(
        endpoints: BTreeMap<String, SnapdEndpoint>,
        pending_file: PathBuf,
        lxd: Option<LxdClient>,
    ) -> Result<SnapdFleet, String> {
        let pending = PendingStore::load(&pending_file).map_err(|e| e.to_string())?;
        Ok(SnapdFleet { endpoints, pending: Mutex::new(pending), lxd })
    }

    pub fn is_configured(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Live snap settings of every member with snapd access: the channel, the keys
    /// in `keys_of[member]`, and what is pending. Members without access are left out
    /// (the planner then has nothing to compare, and the step says why it skipped).
    pub async fn read(&self, keys_of: &SnapKeys) -> Result<BTreeMap<String, SnapSettings>, String> {
        let mut out = BTreeMap::new();
        let pending = self.pending.lock().await;
        for (member, endpoint) in &self.endpoints {
            let client = SnapdClient::connect(member, &transport(endpoint)).await.map_err(|e| e.to_string())?;
            let info = client.snap_info("lxd").await.map_err(|e| e.to_string())?;
            let conf = match keys_of {
                SnapKeys::Everything => {
                    crate::snap::client::flatten_conf(&client.get_conf("lxd", &[]).await.map_err(|e| e.to_string())?)
                }
                SnapKeys::Named(named) => {
                    let keys: Vec<&str> =
                        named.get(member).map(|k| k.iter().map(String::as_str).collect()).unwrap_or_default();
                    if keys.is_empty() {
                        BTreeMap::new()
                    } else {
                        client.get_conf("lxd", &keys).await.map_err(|e| e.to_string())?
                    }
                }
            };
            client.close().await;
            let config: ConfigMap = conf.iter().map(|(k, v)| (k.clone(), conf_value_text(v))).collect();
            let pending: ConfigMap =
                pending.member(member).iter().map(|p| (p.key.clone(), p.value.clone().unwrap_or_default())).collect();
            out.insert(
                member.clone(),
                SnapSettings {
                    member: member.clone(),
                    channel: info.tracking_channel.clone().or(info.channel.clone()),
                    config,
                    revision: Some(info.revision.clone()),
                    pending,
                },
            );
        }
        Ok(out)
    }

    /// What is pending, per member.
    pub async fn pending(&self) -> BTreeMap<String, ConfigMap> {
        let p = self.pending.lock().await;
        p.list()
            .into_iter()
            .map(|(m, keys)| (m, keys.into_iter().map(|k| (k.key, k.value.unwrap_or_default())).collect()))
            .collect()
    }

    async fn wait_online(&self, member: &str) -> Result<(), String> {
        let Some(lxd) = &self.lxd else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + ONLINE_TIMEOUT;
        let path = format!("/1.0/cluster/members/{}", crate::apply::requests::enc(member));
        loop {
            if let Ok((m, _)) = lxd.get::<serde_json::Value>(&path).await {
                if m.get("status").and_then(|s| s.as_str()) == Some("Online") {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "member `{member}` did not come back Online within {} s",
                    ONLINE_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

impl SnapApply for SnapdFleet {
    async fn apply(&self, member: &str, want: &SnapSettings, live: Option<&SnapSettings>) -> Result<String, String> {
        let endpoint = self.endpoints.get(member).ok_or_else(|| {
            format!("no snapd access is configured for member `{member}` (clusters.<name>.snapd in the runtime config)")
        })?;
        let client = SnapdClient::connect(member, &transport(endpoint)).await.map_err(|e| e.to_string())?;
        let mut done = Vec::new();
        if let Some(channel) = &want.channel {
            let info = client.snap_info("lxd").await.map_err(|e| e.to_string())?;
            let current = info.tracking_channel.clone().or(info.channel.clone()).unwrap_or_default();
            if normalize_channel(&current) != normalize_channel(channel) {
                if is_downgrade(&current, channel) {
                    return Err(format!("refusing to move LXD from {current} to {channel}: LXD cannot be downgraded"));
                }
                if let Some(id) = client.refresh("lxd", channel).await.map_err(|e| e.to_string())? {
                    client.wait_change(&id, CHANGE_TIMEOUT).await.map_err(|e| e.to_string())?;
                }
                // A new revision means snapd restarted the LXD daemon, which put the
                // reload-pending keys in effect (a channel switch on the same revision
                // restarts nothing; lxcfs.* still wait for a reboot).
                let after = client.snap_info("lxd").await.map_err(|e| e.to_string())?;
                if after.revision != info.revision {
                    let mut pending = self.pending.lock().await;
                    if !pending.clear_satisfied(member, Needs::Reload).is_empty() {
                        pending.save().map_err(|e| e.to_string())?;
                    }
                }
                self.wait_online(member).await?;
                done.push(format!("channel {current} → {channel}"));
            }
        }
        let have = live.map(|l| l.config.clone()).unwrap_or_default();
        let changed: BTreeMap<String, Option<String>> = want
            .config
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        if !changed.is_empty() {
            let id = client.set_conf("lxd", &changed).await.map_err(|e| e.to_string())?;
            client.wait_change(&id, CHANGE_TIMEOUT).await.map_err(|e| e.to_string())?;
            let mut pending = self.pending.lock().await;
            for (k, v) in &changed {
                match effect_of(k) {
                    KeyEffect::Immediate => {}
                    KeyEffect::ReloadNeeded => pending.record(member, k, v.clone(), Needs::Reload),
                    KeyEffect::RebootNeeded => pending.record(member, k, v.clone(), Needs::Reboot),
                }
            }
            pending.save().map_err(|e| e.to_string())?;
            done.push(format!("set {}", changed.keys().cloned().collect::<Vec<_>>().join(", ")));
        }
        client.close().await;
        Ok(done.join("; "))
    }
}
