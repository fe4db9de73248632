//! Fuzz target: arbitrary bytes through the fleet loader exactly as `lxd-gitops
//! validate` runs it (`fleet::load_and_validate` on a folder: file walk, UTF-8,
//! YAML with positions, JSON Schema, loading into the model, semantic checks).
//!
//! Input layout: the first byte is a mode, the rest is split on NUL bytes into up
//! to `FILES.len()` files written to a scratch repository. NUL is never valid in
//! YAML, so no interesting file content is lost to the separator; several files in
//! several folders exercise cross-file references, duplicates across files and
//! `certificate_file` lookups. Mode bit 0 adds a fixed valid `Cluster` (so inputs
//! that only declare objects reach the reference checks); bit 1 adds a valid
//! `ci.crt` beside the trust documents unless the input brings its own. The seeds
//! (fuzz/seeds/fleet_loader) are cases of tests/corpus and parts of
//! examples/fleet-repo in this layout, mode `0` or `1`.
//!
//! Invariants: never panics; `Ok` only for a fleet with a cluster; an `Err` holds
//! at least one diagnostic, and every diagnostic names a file of the repository
//! (or `.` for the whole repository) with line and column >= 1, a line inside that
//! file (at most one past its last line; lines as YAML counts them, so a lone CR
//! ends a line too), and a message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where each chunk of the input goes, in order. Index 4 is not YAML: the loader
/// only reads it when a Certificate names it in `certificate_file`.
const FILES: [&str; 6] = [
    "clusters/lab/a.yaml",
    "clusters/lab/projects/web/b.yaml",
    "clusters/lab/members/c.yaml",
    "clusters/lab/trust/d.yaml",
    "clusters/lab/trust/ci.crt",
    "other/e.yml",
];

const CLUSTER_FILE: &str = "clusters/lab/cluster.yaml";
const CLUSTER: &str = "kind: Cluster\nname: lab\nendpoints: [\"https://127.0.0.1:8443\"]\nfingerprint: \"0000000000000000000000000000000000000000000000000000000000000000\"\ncredentials: lab\n";
const CERT: &str = include_str!("../../tests/corpus/valid-minimal/clusters/lab/trust/ci.crt");

/// One scratch repository per fuzzing process, on tmpfs when there is one. It is
/// removed after each input; a crash leaves it behind, so at start the folders of
/// processes that are gone (and a stale one with this process id) are removed.
fn scratch() -> &'static Path {
    const PREFIX: &str = "lxd-gitops-fuzz-fleet-";
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    })
}

/// Lines as YAML counts them: LF, CRLF and a lone CR each end one.
fn yaml_lines(bytes: &[u8]) -> usize {
    let breaks = bytes.iter().enumerate().filter(|(i, b)| match b {
        b'\n' => true,
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        _ => false,
    });
    breaks.count() + 1
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("relative path has a parent")).expect("scratch folder");
    std::fs::write(&path, bytes).expect("scratch file");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let root = scratch();
    std::fs::create_dir_all(root).expect("scratch repository");

    let mut written: Vec<(&str, &[u8])> = Vec::new();
    for (rel, chunk) in FILES.iter().zip(rest.split(|b| *b == 0)) {
        write(root, rel, chunk);
        written.push((rel, chunk));
    }
    if mode & 1 != 0 {
        write(root, CLUSTER_FILE, CLUSTER.as_bytes());
        written.push((CLUSTER_FILE, CLUSTER.as_bytes()));
    }
    if mode & 2 != 0 && !written.iter().any(|(rel, _)| rel.ends_with(".crt")) {
        write(root, FILES[4], CERT.as_bytes());
        written.push((FILES[4], CERT.as_bytes()));
    }

    let result = lxd_gitops_fuzz::fleet::load_and_validate(root);
    std::fs::remove_dir_all(root).expect("scratch repository removed");
    match result {
        Ok(fleet) => assert!(!fleet.desired.clusters.is_empty(), "a valid fleet without a cluster"),
        Err(diags) => {
            assert!(!diags.is_empty(), "Err without a diagnostic");
            for d in &diags {
                assert!(d.line >= 1 && d.column >= 1, "position {}:{} in {d}", d.line, d.column);
                assert!(!d.message.is_empty(), "empty message in {d:?}");
                if d.file == "." {
                    continue;
                }
                let Some((_, bytes)) = written.iter().find(|(rel, _)| *rel == d.file) else {
                    panic!("diagnostic names a file that is not in the repository: {d}");
                };
                let lines = yaml_lines(bytes);
                assert!(d.line <= lines + 1, "line {} of a {lines}-line file in {d}", d.line);
            }
        }
    }
});
