//! Pending snap settings: keys written to snapd but not yet in effect.
//!
//! Owns: the bookkeeping of which member has which snap keys waiting for a daemon
//! reload or a host reboot, and its small JSON state file. After the executor sets
//! a key whose `policy::effect_of` is not immediate, it records it here; after a
//! reload (or a reboot it observed) it clears what that satisfied. The live reader
//! reports these as `SnapSettings::pending`.
//! Must not: talk to snapd, decide to reload or reboot, or read a clock. All
//! operations are pure data in, data out; only `load` and `save` touch the disk.

use super::policy::Needs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The state file's format version; bumped on incompatible changes.
const FORMAT_VERSION: u32 = 1;

/// One key written to snapd whose new value is not in effect yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingKey {
    pub key: String,
    /// The value written; `None` when the key was unset.
    pub value: Option<String>,
    pub needs: Needs,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    /// Member name → its pending keys, sorted by key.
    members: BTreeMap<String, Vec<PendingKey>>,
}

/// Errors reading or writing the pending state file.
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("pending snap settings {path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("pending snap settings {path}: not valid JSON state: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("pending snap settings {path}: format version {found}, this build reads {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("pending snap settings {path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The pending keys of every member, bound to the file they are saved in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStore {
    path: PathBuf,
    members: BTreeMap<String, Vec<PendingKey>>,
}

impl PendingStore {
    /// Reads the state at `path`; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<PendingStore, PendingError> {
        let members = match std::fs::read(path) {
            Ok(bytes) => {
                let file: StateFile = serde_json::from_slice(&bytes)
                    .map_err(|source| PendingError::Parse { path: path.to_path_buf(), source })?;
                if file.version != FORMAT_VERSION {
                    return Err(PendingError::Version { path: path.to_path_buf(), found: file.version });
                }
                file.members
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(PendingError::Read { path: path.to_path_buf(), source }),
        };
        let mut store = PendingStore { path: path.to_path_buf(), members: BTreeMap::new() };
        // Re-insert through `record` so a hand-edited file ends up sorted and deduplicated.
        for (member, keys) in members {
            for k in keys {
                store.record(&member, &k.key, k.value, k.needs);
            }
        }
        Ok(store)
    }

    /// Writes the state next to its final place and renames it over, so a crash
    /// never leaves a half-written file.
    pub fn save(&self) -> Result<(), PendingError> {
        let err = |source| PendingError::Write { path: self.path.clone(), source };
        let file = StateFile { version: FORMAT_VERSION, members: self.members.clone() };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("plain data serializes");
        bytes.push(b'\n');
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(err)?;
        io::Write::write_all(&mut tmp, &bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        Ok(())
    }

    /// The file this store loads from and saves to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `key` of `member` as written with `value` (`None`: unset) and not in
    /// effect until `needs`. A key recorded again keeps only the latest value; what
    /// it waits for never weakens (a reboot-pending key stays reboot-pending).
    pub fn record(&mut self, member: &str, key: &str, value: Option<String>, needs: Needs) {
        let keys = self.members.entry(member.to_string()).or_default();
        match keys.binary_search_by(|k| k.key.as_str().cmp(key)) {
            Ok(i) => {
                keys[i].value = value;
                keys[i].needs = keys[i].needs.max(needs);
            }
            Err(i) => keys.insert(i, PendingKey { key: key.to_string(), value, needs }),
        }
    }

    /// Forgets `keys` of `member` (they are in effect, or were written again with an
    /// immediate effect). Unknown keys are ignored.
    pub fn clear(&mut self, member: &str, keys: &[&str]) {
        if let Some(list) = self.members.get_mut(member) {
            list.retain(|k| !keys.contains(&k.key.as_str()));
            if list.is_empty() {
                self.members.remove(member);
            }
        }
    }

    /// Forgets every key of `member` that `done` satisfies: a reload satisfies
    /// reload-pending keys, a reboot satisfies all of them. Returns what was cleared.
    pub fn clear_satisfied(&mut self, member: &str, done: Needs) -> Vec<PendingKey> {
        let Some(list) = self.members.get_mut(member) else {
            return Vec::new();
        };
        let (cleared, kept): (Vec<_>, Vec<_>) = std::mem::take(list).into_iter().partition(|k| k.needs <= done);
        if kept.is_empty() {
            self.members.remove(member);
        } else {
            *list = kept;
        }
        cleared
    }

    /// The pending keys of one member, sorted by key.
    pub fn member(&self, member: &str) -> &[PendingKey] {
        self.members.get(member).map_or(&[], Vec::as_slice)
    }

    /// Every member with pending keys, each list sorted by key.
    pub fn list(&self) -> BTreeMap<String, Vec<PendingKey>> {
        self.members.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> PendingStore {
        PendingStore::load(&dir.join("state/pending-snap.json")).unwrap()
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert!(s.list().is_empty());
        assert!(s.member("m1").is_empty());
    }

    #[test]
    fn record_sorts_replaces_and_never_weakens() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        s.record("m1", "lxcfs.cfs", Some("true".into()), Needs::Reboot);
        s.record("m1", "daemon.debug", Some("true".into()), Needs::Reload);
        s.record("m2", "criu.enable", None, Needs::Reload);
        s.record("m1", "lxcfs.cfs", Some("false".into()), Needs::Reload);
        assert_eq!(
            s.member("m1"),
            &[
                PendingKey { key: "daemon.debug".into(), value: Some("true".into()), needs: Needs::Reload },
                PendingKey { key: "lxcfs.cfs".into(), value: Some("false".into()), needs: Needs::Reboot },
            ]
        );
        assert_eq!(s.list().keys().collect::<Vec<_>>(), ["m1", "m2"]);
        assert_eq!(s.member("m2")[0].value, None);
    }

    #[test]
    fn clear_removes_keys_and_empty_members() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        s.record("m1", "daemon.debug", Some("true".into()), Needs::Reload);
        s.record("m1", "ui.enable", Some("true".into()), Needs::Reload);
        s.clear("m1", &["daemon.debug", "not.there"]);
        assert_eq!(s.member("m1").len(), 1);
        s.clear("m1", &["ui.enable"]);
        assert!(s.list().is_empty());
        s.clear("nobody", &["x"]);
    }

    #[test]
    fn reload_clears_reload_keys_and_reboot_clears_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        s.record("m1", "daemon.debug", Some("true".into()), Needs::Reload);
        s.record("m1", "lxcfs.cfs", Some("true".into()), Needs::Reboot);
        let cleared = s.clear_satisfied("m1", Needs::Reload);
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].key, "daemon.debug");
        assert_eq!(s.member("m1").len(), 1);
        let cleared = s.clear_satisfied("m1", Needs::Reboot);
        assert_eq!(cleared[0].key, "lxcfs.cfs");
        assert!(s.list().is_empty());
        assert!(s.clear_satisfied("m1", Needs::Reboot).is_empty());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        s.record("m1", "daemon.debug", Some("true".into()), Needs::Reload);
        s.record("m2", "lxcfs.loadavg", None, Needs::Reboot);
        s.save().unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        assert!(text.contains("\"needs\": \"reboot\""), "{text}");
        assert_eq!(store(dir.path()), s);
        // Saving an emptied store leaves a valid, empty file.
        s.clear("m1", &["daemon.debug"]);
        s.clear("m2", &["lxcfs.loadavg"]);
        s.save().unwrap();
        assert!(store(dir.path()).list().is_empty());
    }

    #[test]
    fn bad_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(&p, "{not json").unwrap();
        let e = PendingStore::load(&p).unwrap_err().to_string();
        assert!(e.contains("p.json") && e.contains("not valid JSON"), "{e}");
        std::fs::write(&p, r#"{"version":9,"members":{}}"#).unwrap();
        let e = PendingStore::load(&p).unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");
    }
}
