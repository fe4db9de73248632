//! The last revision that validated and applied, per cluster, kept across restarts.
//!
//! Owns: one small JSON state file (`<state_dir>/last-good.json`) mapping cluster
//! name to commit and time, written atomically (temporary file, then rename). Must
//! not: decide validity (the caller records a revision only after it validated and
//! applied), hold anything secret.
//!
//! Why it matters: when the head of the branch does not validate, nothing of it is
//! applied and drift correction keeps using the revision recorded here.

use super::GitError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoodRevision {
    pub commit: String,
    pub applied_at: DateTime<Utc>,
}

/// Last good revisions, loaded from and saved to one file.
#[derive(Debug)]
pub struct LastGood {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, GoodRevision>>,
}

impl LastGood {
    /// Loads `path` (a missing file means "nothing applied yet").
    pub fn load(path: impl Into<PathBuf>) -> Result<LastGood, GitError> {
        let path = path.into();
        let entries = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| GitError::Config(format!("{}: not a last-good state file: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(GitError::io("reading the last-good state", &path)(e)),
        };
        Ok(LastGood { path, entries: Mutex::new(entries) })
    }

    pub fn get(&self, cluster: &str) -> Option<GoodRevision> {
        self.entries.lock().unwrap().get(cluster).cloned()
    }

    pub fn all(&self) -> BTreeMap<String, GoodRevision> {
        self.entries.lock().unwrap().clone()
    }

    /// Records `commit` as the last good revision of `cluster` and saves the file.
    pub fn record(&self, cluster: &str, commit: &str, at: DateTime<Utc>) -> Result<(), GitError> {
        let mut entries = self.entries.lock().unwrap();
        entries.insert(cluster.to_string(), GoodRevision { commit: commit.to_string(), applied_at: at });
        write_atomically(&self.path, &serde_json::to_vec_pretty(&*entries).unwrap_or_default())
    }
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), GitError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(GitError::io("creating the state directory", dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(GitError::io("creating a temporary state file", dir))?;
    use std::io::Write;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(GitError::io("writing the state file", path))?;
    tmp.persist(path).map_err(|e| GitError::io("replacing the state file", path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn records_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/last-good.json");
        let lg = LastGood::load(&path).unwrap();
        assert_eq!(lg.get("lab"), None);
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        lg.record("lab", "abc123", t).unwrap();
        lg.record("prod", "def456", t).unwrap();
        lg.record("lab", "0a0b0c", t).unwrap();
        let again = LastGood::load(&path).unwrap();
        assert_eq!(again.get("lab").unwrap().commit, "0a0b0c");
        assert_eq!(again.all().len(), 2);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last-good.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(LastGood::load(&path).is_err());
    }
}
