//! Facts about LXD names and config keys that both validation and planning need.
//!
//! Owns: which server keys are member-local, which keys LXD writes itself, and what
//! a valid object name looks like. Must not: hold policy or do IO.

/// Server config keys that belong to one member (`PATCH /1.0?target=<member>`), per
/// LXD 5.0 `lxd/cluster/config` and the API reference.
pub const MEMBER_LOCAL_SERVER_KEYS: &[&str] = &[
    "core.https_address",
    "cluster.https_address",
    "core.bgp_address",
    "core.bgp_routerid",
    "core.debug_address",
    "core.dns_address",
    "core.metrics_address",
    "maas.machine",
    "storage.backups_volume",
    "storage.images_volume",
];

pub fn is_member_local_server_key(key: &str) -> bool {
    MEMBER_LOCAL_SERVER_KEYS.contains(&key)
}

/// Keys LXD writes on instances itself and that a fleet must never set or diff.
pub fn is_lxd_managed_instance_key(key: &str) -> bool {
    key.starts_with("volatile.") || key.starts_with("image.")
}

/// Storage pool keys that are per member in a cluster.
pub const POOL_MEMBER_KEYS: &[&str] = &["source", "size", "zfs.pool_name", "lvm.thinpool_name", "lvm.vg_name"];

/// Network keys that are per member in a cluster.
pub const NETWORK_MEMBER_KEYS: &[&str] = &["bridge.external_interfaces", "parent"];

/// Instance config keys that LXD cannot change on a running instance: the change
/// is stored but only takes effect at the next start, so a restart is needed.
pub fn instance_key_needs_restart(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "security.privileged",
        "security.nesting",
        "security.idmap.isolated",
        "security.idmap.base",
        "security.idmap.size",
        "raw.idmap",
        "raw.lxc",
        "raw.apparmor",
        "raw.seccomp",
        "linux.kernel_modules",
        "boot.autostart.priority",
        "security.syscalls.intercept.mknod",
        "security.syscalls.intercept.setxattr",
        "security.syscalls.intercept.mount",
        "limits.memory.hugepages",
    ];
    EXACT.contains(&key) || key.starts_with("security.syscalls.deny") || key.starts_with("security.syscalls.allow")
}

/// LXD's own rule for object names (instances, profiles, projects, members ...): 1–63
/// characters of ASCII letters, digits and `-`, not starting with a digit or `-`, not
/// ending with `-`.
pub fn is_valid_lxd_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1] != b'-'
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_lxd_rules() {
        assert!(is_valid_lxd_name("web-1"));
        assert!(!is_valid_lxd_name("1web"));
        assert!(!is_valid_lxd_name("web-"));
        assert!(!is_valid_lxd_name("web_1"));
        assert!(!is_valid_lxd_name(""));
        assert!(!is_valid_lxd_name(&"a".repeat(64)));
    }

    #[test]
    fn member_local_keys_are_known() {
        assert!(is_member_local_server_key("core.https_address"));
        assert!(!is_member_local_server_key("images.auto_update_interval"));
    }
}
