//! `lxd-gitops validate` through the real binary: the example fleet is valid, and
//! every broken repository under `tests/corpus/` gives exactly the diagnostics its
//! `expected.txt` lists (file:line:column and a message fragment), with exit 1.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lxd-gitops"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn example_fleet_repo_is_valid() {
    let out = bin().arg("validate").arg(root().join("examples/fleet-repo")).output().unwrap();
    assert!(
        out.status.success(),
        "validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

/// One expected diagnostic: `file:line:column: fragment`.
#[derive(Debug)]
struct Expect {
    file: String,
    line: usize,
    column: usize,
    fragment: String,
}

fn parse_expected(path: &Path) -> Vec<Expect> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(4, ':');
            let file = parts.next().unwrap().to_string();
            let line = parts.next().unwrap().trim().parse().unwrap_or_else(|_| panic!("bad line in {l}"));
            let column = parts.next().unwrap().trim().parse().unwrap_or_else(|_| panic!("bad column in {l}"));
            let fragment = parts.next().unwrap_or("").trim().to_lowercase();
            Expect { file, line, column, fragment }
        })
        .collect()
}

#[test]
fn every_broken_repo_gives_its_expected_diagnostics() {
    let corpus = root().join("tests/corpus");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.txt").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "corpus has only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let expected = parse_expected(&case.join("expected.txt"));
        let out = bin().args(["validate", "--format", "json"]).arg(case).output().unwrap();
        if expected.is_empty() {
            // The control case: a valid repository.
            if out.status.code() != Some(0) {
                failures.push(format!(
                    "{name}: exit {:?}, expected 0: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
            continue;
        }
        if out.status.code() != Some(1) {
            failures.push(format!("{name}: exit {:?}, expected 1", out.status.code()));
            continue;
        }
        let got: Vec<serde_json::Value> = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: output is not JSON: {e}"));
                continue;
            }
        };
        let matches = |d: &serde_json::Value, e: &Expect| {
            d["file"] == e.file.as_str()
                && d["line"] == e.line
                && d["column"] == e.column
                && d["message"].as_str().unwrap_or("").to_lowercase().contains(&e.fragment)
        };
        // Every expected line is found ...
        for e in &expected {
            if !got.iter().any(|d| matches(d, e)) {
                let all = serde_json::Value::from(got.clone());
                failures.push(format!("{name}: missing {}:{}:{}: {} in {all:#}", e.file, e.line, e.column, e.fragment));
            }
        }
        // ... and every diagnostic is expected (one line may match several).
        for d in &got {
            if !expected.iter().any(|e| matches(d, e)) {
                failures.push(format!("{name}: unexpected diagnostic {d}"));
            }
        }
        // The text form carries the same problems, as file:line:column lines.
        let text = bin().arg("validate").arg(case).output().unwrap();
        let stderr = String::from_utf8_lossy(&text.stderr);
        for e in &expected {
            if !stderr.contains(&format!("{}:{}:{}: ", e.file, e.line, e.column)) {
                failures.push(format!("{name}: text output lacks {}:{}:{}", e.file, e.line, e.column));
            }
        }
    }
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_missing_path_is_an_error_not_a_panic() {
    let out = bin().args(["validate", "/nonexistent/fleet"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
