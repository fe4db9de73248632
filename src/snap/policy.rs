//! What a snap setting costs to take effect, and which way a channel change goes.
//!
//! Owns: the table of LXD snap key prefixes and what each needs after `snap set`
//! (nothing, a daemon reload, a host reboot), and the ordering of snap channels
//! (`5.0/stable` < `5.21/stable` < `6.1/stable` < `latest/stable`).
//! Must not: do IO, read a clock, or decide *when* to reload or reboot: it only says
//! what a key needs, so the planner can order steps and the executor can record
//! pending keys. A reboot is never forced by anything in this crate.
//!
//! Source of the table: canonical/lxd-pkg-snap (`snapcraft/commands/daemon.start`
//! reads `$SNAP_COMMON/config` only at daemon start; LXCFS flags only when LXCFS
//! itself starts fresh), see `lxd-api.md` section 9.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// What writing a snap key needs before the new value is in effect. Ordered from
/// cheapest to most disruptive, so `max` over several keys gives what a whole
/// change set needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyEffect {
    /// The configure hook applies it (or nothing reads it later).
    Immediate,
    /// `snap restart --reload lxd` (keeps instances running).
    ReloadNeeded,
    /// Only a fresh LXCFS reads it, which in practice means a host reboot.
    RebootNeeded,
}

/// What a pending key is waiting for; `KeyEffect` without the `Immediate` case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Needs {
    Reload,
    Reboot,
}

impl KeyEffect {
    /// What a key with this effect waits for after it is written, if anything.
    pub fn needs(self) -> Option<Needs> {
        match self {
            KeyEffect::Immediate => None,
            KeyEffect::ReloadNeeded => Some(Needs::Reload),
            KeyEffect::RebootNeeded => Some(Needs::Reboot),
        }
    }
}

impl fmt::Display for KeyEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyEffect::Immediate => "immediate",
            KeyEffect::ReloadNeeded => "needs `snap restart --reload lxd`",
            KeyEffect::RebootNeeded => "needs a host reboot",
        })
    }
}

impl fmt::Display for Needs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Needs::Reload => "reload",
            Needs::Reboot => "reboot",
        })
    }
}

/// Key prefixes read by `daemon.start` when the LXD daemon (re)starts.
const RELOAD_PREFIXES: [&str; 8] = ["daemon", "ceph", "lvm", "openvswitch", "ovn", "criu", "shiftfs", "ui"];
/// Key prefixes read only when LXCFS starts fresh.
const REBOOT_PREFIXES: [&str; 1] = ["lxcfs"];

/// What writing `key` (e.g. `daemon.debug`) needs before it is in effect.
pub fn effect_of(key: &str) -> KeyEffect {
    let top = key.split('.').next().unwrap_or(key);
    if REBOOT_PREFIXES.contains(&top) {
        KeyEffect::RebootNeeded
    } else if RELOAD_PREFIXES.contains(&top) {
        KeyEffect::ReloadNeeded
    } else {
        KeyEffect::Immediate
    }
}

/// What a set of keys needs as a whole: the most disruptive of their effects.
pub fn effect_of_all<'a>(keys: impl IntoIterator<Item = &'a str>) -> KeyEffect {
    keys.into_iter().map(effect_of).max().unwrap_or(KeyEffect::Immediate)
}

// ---------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------

/// The risk levels of a snap channel, in snapd's order of stability.
const RISKS: [&str; 4] = ["stable", "candidate", "beta", "edge"];

/// A snap channel split into track, risk and optional branch, with snapd's
/// defaults filled in: `stable` is `latest/stable`, `5.21` is `5.21/stable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub track: String,
    pub risk: String,
    pub branch: Option<String>,
}

impl Channel {
    /// Parses `track/risk[/branch]`, `track` or `risk` the way `snap refresh
    /// --channel` reads them. Returns `None` for an empty or malformed channel.
    pub fn parse(s: &str) -> Option<Channel> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let (track, risk, branch) = match parts.as_slice() {
            [one] if RISKS.contains(one) => ("latest", *one, None),
            [one] => (*one, "stable", None),
            [t, r] if RISKS.contains(r) => (*t, *r, None),
            // `risk/branch` with the default track
            [r, b] if RISKS.contains(r) => ("latest", *r, Some(*b)),
            [t, r, b] if RISKS.contains(r) => (*t, *r, Some(*b)),
            _ => return None,
        };
        Some(Channel { track: track.to_string(), risk: risk.to_string(), branch: branch.map(str::to_string) })
    }

    /// Compares the tracks as versions; `None` when a track is not a dotted number
    /// (nor `latest`), so nothing can be said about the direction.
    pub fn compare_track(&self, other: &Channel) -> Option<Ordering> {
        compare_tracks(&self.track, &other.track)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.track, self.risk)?;
        if let Some(b) = &self.branch {
            write!(f, "/{b}")?;
        }
        Ok(())
    }
}

/// Normalizes a channel as snapd reports it in `tracking-channel`
/// (`stable` → `latest/stable`, `5.21` → `5.21/stable`); unparsable input is
/// returned unchanged.
pub fn normalize_channel(s: &str) -> String {
    Channel::parse(s).map_or_else(|| s.to_string(), |c| c.to_string())
}

/// Track ordering: dotted numbers compared numerically (`5.0` < `5.21` < `6.1`),
/// `latest` above every numbered track. `None` for anything else.
pub fn compare_tracks(a: &str, b: &str) -> Option<Ordering> {
    match (track_key(a)?, track_key(b)?) {
        (TrackKey::Latest, TrackKey::Latest) => Some(Ordering::Equal),
        (TrackKey::Latest, TrackKey::Version(_)) => Some(Ordering::Greater),
        (TrackKey::Version(_), TrackKey::Latest) => Some(Ordering::Less),
        (TrackKey::Version(x), TrackKey::Version(y)) => Some(compare_versions(&x, &y)),
    }
}

enum TrackKey {
    Latest,
    Version(Vec<u64>),
}

fn track_key(track: &str) -> Option<TrackKey> {
    if track == "latest" {
        return Some(TrackKey::Latest);
    }
    track.split('.').map(|p| p.parse::<u64>().ok()).collect::<Option<Vec<u64>>>().map(TrackKey::Version)
}

/// `5.0` == `5.0.0`: missing components count as zero.
fn compare_versions(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| a.get(i).copied().unwrap_or(0).cmp(&b.get(i).copied().unwrap_or(0)))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

/// Which way a channel change goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelMove {
    /// Same channel after normalization.
    Same,
    /// Same track, another risk or branch (no version change implied).
    Sideways,
    /// To a higher track.
    Upgrade,
    /// To a lower track: LXD cannot start on an older database schema.
    Downgrade,
    /// A channel or track that cannot be ordered (not a dotted number nor `latest`).
    Unknown,
}

/// Classifies the move from channel `from` to channel `to`.
pub fn channel_move(from: &str, to: &str) -> ChannelMove {
    let (Some(a), Some(b)) = (Channel::parse(from), Channel::parse(to)) else {
        return ChannelMove::Unknown;
    };
    if a == b {
        return ChannelMove::Same;
    }
    match a.compare_track(&b) {
        // Same track, or `5.0` and `5.0.0` (spelled differently, equal versions):
        // not a version change either way.
        Some(Ordering::Equal) => ChannelMove::Sideways,
        Some(Ordering::Less) => ChannelMove::Upgrade,
        Some(Ordering::Greater) => ChannelMove::Downgrade,
        None => ChannelMove::Unknown,
    }
}

/// True when moving from `from` to `to` lowers the track (`5.21/stable` →
/// `5.0/stable`, `latest/stable` → `6.1/stable`). Unknown tracks are not reported
/// as downgrades; callers that must be strict check `channel_move` for `Unknown`.
pub fn is_downgrade(from: &str, to: &str) -> bool {
    channel_move(from, to) == ChannelMove::Downgrade
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_effects_follow_the_prefix_table() {
        for k in [
            "daemon.debug",
            "daemon.user.group",
            "daemon.preseed",
            "ceph.builtin",
            "ceph.external",
            "lvm.external",
            "openvswitch.builtin",
            "openvswitch.external",
            "ovn.builtin",
            "criu.enable",
            "shiftfs.enable",
            "ui.enable",
        ] {
            assert_eq!(effect_of(k), KeyEffect::ReloadNeeded, "{k}");
        }
        for k in ["lxcfs.loadavg", "lxcfs.cfs", "lxcfs.pidfd", "lxcfs.debug"] {
            assert_eq!(effect_of(k), KeyEffect::RebootNeeded, "{k}");
        }
        for k in ["apparmor.unprivileged-restrictions-disable", "daemonx.debug", "uix", ""] {
            assert_eq!(effect_of(k), KeyEffect::Immediate, "{k}");
        }
    }

    #[test]
    fn strongest_effect_wins() {
        assert_eq!(effect_of_all([]), KeyEffect::Immediate);
        assert_eq!(effect_of_all(["apparmor.x", "daemon.debug"]), KeyEffect::ReloadNeeded);
        assert_eq!(effect_of_all(["lxcfs.cfs", "daemon.debug", "apparmor.x"]), KeyEffect::RebootNeeded);
        assert_eq!(KeyEffect::Immediate.needs(), None);
        assert_eq!(KeyEffect::ReloadNeeded.needs(), Some(Needs::Reload));
        assert_eq!(KeyEffect::RebootNeeded.needs(), Some(Needs::Reboot));
    }

    #[test]
    fn channels_parse_with_snapd_defaults() {
        assert_eq!(normalize_channel("stable"), "latest/stable");
        assert_eq!(normalize_channel("edge"), "latest/edge");
        assert_eq!(normalize_channel("5.21"), "5.21/stable");
        assert_eq!(normalize_channel("5.21/candidate"), "5.21/candidate");
        assert_eq!(normalize_channel("5.0/stable/hotfix"), "5.0/stable/hotfix");
        assert_eq!(normalize_channel("stable/hotfix"), "latest/stable/hotfix");
        assert_eq!(Channel::parse(""), None);
        assert_eq!(Channel::parse("5.0//"), None);
        assert_eq!(Channel::parse("5.0/nightly"), None);
        assert_eq!(Channel::parse("a/b/c/d"), None);
    }

    #[test]
    fn tracks_order_as_dotted_versions_with_latest_on_top() {
        use Ordering::*;
        assert_eq!(compare_tracks("5.0", "5.21"), Some(Less));
        assert_eq!(compare_tracks("5.21", "6.1"), Some(Less));
        assert_eq!(compare_tracks("5.9", "5.21"), Some(Less), "not lexicographic");
        assert_eq!(compare_tracks("6.1", "latest"), Some(Less));
        assert_eq!(compare_tracks("latest", "latest"), Some(Equal));
        assert_eq!(compare_tracks("5.0", "5.0.0"), Some(Equal));
        assert_eq!(compare_tracks("4.0", "foo"), None);
    }

    #[test]
    fn channel_moves() {
        assert_eq!(channel_move("5.0/stable", "5.0/stable"), ChannelMove::Same);
        assert_eq!(channel_move("5.21", "5.21/stable"), ChannelMove::Same);
        assert_eq!(channel_move("5.0/stable", "5.0/edge"), ChannelMove::Sideways);
        assert_eq!(channel_move("5.0/stable", "5.21/stable"), ChannelMove::Upgrade);
        assert_eq!(channel_move("5.21/stable", "latest/stable"), ChannelMove::Upgrade);
        assert_eq!(channel_move("5.21/stable", "5.0/stable"), ChannelMove::Downgrade);
        assert_eq!(channel_move("stable", "6.1/stable"), ChannelMove::Downgrade);
        assert_eq!(channel_move("5.0/stable", "weird/stable"), ChannelMove::Unknown);
        assert_eq!(channel_move("", "5.0/stable"), ChannelMove::Unknown);

        assert!(is_downgrade("5.21/stable", "5.0/stable"));
        assert!(is_downgrade("latest/stable", "6.1/stable"));
        assert!(is_downgrade("6.1/edge", "5.21/stable"));
        assert!(!is_downgrade("5.0/stable", "5.21/stable"));
        assert!(!is_downgrade("5.21/stable", "5.21/edge"));
        assert!(!is_downgrade("5.21/stable", "weird/stable"));
    }
}
