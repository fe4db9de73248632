//! Verifying that a commit is signed by a trusted key.
//!
//! Owns: extracting a commit's signature and signed payload with git2 and checking
//! them with the tools git itself uses: `ssh-keygen -Y verify` against an
//! `allowed_signers` file (namespace `git`), or `gpgv` against a keyring file.
//! Must not: trust git's own configuration, the user's keyrings or agents; fetch
//! keys from anywhere. An unsigned, unknown or bad signature is an error that
//! names the commit and the reason.

use super::GitError;
use git2::{Oid, Repository};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Which signatures a revision must carry before it is used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SignaturePolicy {
    /// Any head is used (signatures are not looked at).
    #[default]
    None,
    /// The head must carry an SSH signature by a key in this `allowed_signers` file
    /// (the format `git config gpg.ssh.allowedSignersFile` uses).
    Ssh { allowed_signers_file: PathBuf },
    /// The head must carry an OpenPGP signature by a key in this keyring (a binary
    /// keyring, as written by `gpg --export > trusted.gpg`).
    Gpg { keyring_file: PathBuf },
}

/// Who signed a verified commit, for logs and the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer(pub String);

/// Checks `commit` against `policy`. `Ok(None)` when the policy asks for nothing.
pub fn verify_commit(repo: &Repository, commit: Oid, policy: &SignaturePolicy) -> Result<Option<Signer>, GitError> {
    if *policy == SignaturePolicy::None {
        return Ok(None);
    }
    let refuse = |reason: String| GitError::Signature { commit: commit.to_string(), reason };
    let (sig, payload) = match repo.extract_signature(&commit, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(refuse("the commit is not signed".into())),
        Err(e) => return Err(refuse(format!("reading its signature: {}", e.message()))),
    };
    let sig = sig.as_str().unwrap_or_default().to_string();
    let payload: &[u8] = &payload;
    match policy {
        SignaturePolicy::None => Ok(None),
        SignaturePolicy::Ssh { allowed_signers_file } => {
            if !sig.contains("BEGIN SSH SIGNATURE") {
                return Err(refuse("the commit carries a signature that is not an SSH signature".into()));
            }
            verify_ssh(&sig, payload, allowed_signers_file).map(|s| Some(Signer(s))).map_err(refuse)
        }
        SignaturePolicy::Gpg { keyring_file } => {
            if !sig.contains("BEGIN PGP SIGNATURE") {
                return Err(refuse("the commit carries a signature that is not an OpenPGP signature".into()));
            }
            verify_gpg(&sig, payload, keyring_file).map(|s| Some(Signer(s))).map_err(refuse)
        }
    }
}

/// The principals an `allowed_signers` file names literally (patterns such as
/// `*@example.com` cannot be passed to `-I` and are found by `find-principals`).
pub(crate) fn literal_principals(allowed_signers: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in allowed_signers.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        for p in first.split(',') {
            let p = p.trim_matches('"');
            if !p.is_empty() && !p.contains(['*', '?', '!']) && !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        }
    }
    out
}

fn verify_ssh(sig: &str, payload: &[u8], allowed_signers: &Path) -> Result<String, String> {
    let allowed_text =
        std::fs::read_to_string(allowed_signers).map_err(|e| format!("reading {}: {e}", allowed_signers.display()))?;
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let sig_file = dir.path().join("commit.sig");
    std::fs::write(&sig_file, sig).map_err(|e| format!("writing the signature: {e}"))?;

    // Principals whose keys match the signature first, then every literal one.
    let mut candidates = Vec::new();
    if let Ok(out) = Command::new("ssh-keygen")
        .args(["-Y", "find-principals", "-s"])
        .arg(&sig_file)
        .arg("-f")
        .arg(allowed_signers)
        .stdin(Stdio::null())
        .output()
    {
        if out.status.success() {
            candidates.extend(
                String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()),
            );
        }
    }
    for p in literal_principals(&allowed_text) {
        if !candidates.contains(&p) {
            candidates.push(p);
        }
    }
    if candidates.is_empty() {
        return Err(format!("{} names no principals", allowed_signers.display()));
    }
    let mut last_error = String::new();
    for principal in &candidates {
        let mut child = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "git", "-f"])
            .arg(allowed_signers)
            .arg("-I")
            .arg(principal)
            .arg("-s")
            .arg(&sig_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running ssh-keygen -Y verify: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(payload).map_err(|e| format!("feeding ssh-keygen: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("waiting for ssh-keygen: {e}"))?;
        if out.status.success() {
            return Ok(principal.clone());
        }
        last_error = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    Err(format!("no key in {} verifies its SSH signature ({last_error})", allowed_signers.display()))
}

fn verify_gpg(sig: &str, payload: &[u8], keyring: &Path) -> Result<String, String> {
    let keyring = std::path::absolute(keyring).map_err(|e| format!("resolving {}: {e}", keyring.display()))?;
    if !keyring.is_file() {
        return Err(format!("keyring {} does not exist", keyring.display()));
    }
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let sig_file = dir.path().join("commit.sig");
    let data_file = dir.path().join("commit.payload");
    std::fs::write(&sig_file, sig).map_err(|e| format!("writing the signature: {e}"))?;
    std::fs::write(&data_file, payload).map_err(|e| format!("writing the payload: {e}"))?;
    // A private home keeps the operator's own keyrings and trust settings out of it.
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(dir.path())
        .arg("--status-fd")
        .arg("1")
        .arg("--keyring")
        .arg(&keyring)
        .arg(&sig_file)
        .arg(&data_file)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running gpgv: {e}"))?;
    let status = String::from_utf8_lossy(&out.stdout);
    let valid = status
        .lines()
        .find_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string);
    match (out.status.success(), valid) {
        (true, Some(fpr)) => Ok(fpr),
        _ => Err(format!(
            "no key in {} verifies its OpenPGP signature ({})",
            keyring.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_principals_skip_patterns_and_comments() {
        let text = "# ops\nalice@example.com ssh-ed25519 AAAA\n\"bob@example.com,carol@example.com\" namespaces=\"git\" ssh-ed25519 BBBB\n*@example.org ssh-ed25519 CCCC\n\nalice@example.com ssh-rsa DDDD\n";
        assert_eq!(literal_principals(text), vec!["alice@example.com", "bob@example.com", "carol@example.com"]);
    }
}
