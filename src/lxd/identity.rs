//! The reconciler's own client identity and LXD trust tokens.
//!
//! Owns: where a cluster's client key pair lives
//! (`<credentials dir>/<name>/client.{crt,key}`), creating it when missing (key
//! file mode 0600, never printed), and decoding the trust tokens `lxc config trust
//! add` prints (they carry the server fingerprint, which becomes the pin).
//! Must not: send anything over the network.

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Default credentials folder; `LXD_GITOPS_CREDENTIALS_DIR` overrides it.
pub const DEFAULT_CREDENTIALS_DIR: &str = "/etc/lxd-gitops/credentials";

pub fn credentials_dir() -> PathBuf {
    std::env::var_os("LXD_GITOPS_CREDENTIALS_DIR").map(PathBuf::from).unwrap_or_else(|| DEFAULT_CREDENTIALS_DIR.into())
}

/// The client key pair of one credentials entry.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("credentials `{name}` not found: {path} is missing (run `lxd-gitops login --cluster <name> --token <token>`, or put client.crt and client.key there)")]
    Missing { name: String, path: PathBuf },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("invalid trust token: {0}")]
    Token(String),
    #[error("cannot create a client certificate: {0}")]
    Generate(String),
}

impl ClientIdentity {
    pub fn at(dir: &Path, name: &str) -> ClientIdentity {
        let base = dir.join(name);
        ClientIdentity { cert_path: base.join("client.crt"), key_path: base.join("client.key") }
    }

    /// Reads the PEMs; a missing file is a clear error naming what to do.
    pub fn load(&self, name: &str) -> Result<(String, String), IdentityError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    IdentityError::Missing { name: name.to_string(), path: p.to_path_buf() }
                } else {
                    IdentityError::Io { path: p.to_path_buf(), message: e.to_string() }
                }
            })
        };
        Ok((read(&self.cert_path)?, read(&self.key_path)?))
    }

    /// Creates a key pair (ECDSA P-256, 10 years) unless both files exist.
    /// Returns true when it created one.
    pub fn ensure(&self, common_name: &str) -> Result<bool, IdentityError> {
        if self.cert_path.exists() && self.key_path.exists() {
            return Ok(false);
        }
        let io = |p: &Path, e: std::io::Error| IdentityError::Io { path: p.to_path_buf(), message: e.to_string() };
        let dir = self.key_path.parent().expect("key path has a folder");
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let key = rcgen::KeyPair::generate().map_err(|e| IdentityError::Generate(e.to_string()))?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| IdentityError::Generate(e.to_string()))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.self_signed(&key).map_err(|e| IdentityError::Generate(e.to_string()))?;
        write_private(&self.key_path, key.serialize_pem().as_bytes()).map_err(|e| io(&self.key_path, e))?;
        std::fs::write(&self.cert_path, cert.pem()).map_err(|e| io(&self.cert_path, e))?;
        Ok(true)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

/// A trust token as `lxc config trust add` prints it: base64 of JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct TrustToken {
    pub client_name: String,
    /// The server's certificate fingerprint: the pin.
    pub fingerprint: String,
    pub addresses: Vec<String>,
    /// Never logged: it is what makes the token worth anything.
    #[serde(skip_serializing)]
    pub secret: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

impl TrustToken {
    pub fn decode(token: &str) -> Result<TrustToken, IdentityError> {
        let t = token.trim();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
            .map_err(|_| IdentityError::Token("not base64".into()))?;
        serde_json::from_slice(&raw).map_err(|e| IdentityError::Token(format!("not an LXD trust token: {e}")))
    }
}

/// Lowercase hex SHA-256 of the DER inside a PEM certificate.
pub fn pem_fingerprint(pem: &str) -> Result<String, String> {
    crate::fleet::load::pem_fingerprint(pem)
}

/// Lowercase hex SHA-256 of DER bytes.
pub fn der_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_key_pair_once_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = ClientIdentity::at(dir.path(), "prod");
        assert!(id.ensure("lxd-gitops").unwrap());
        assert!(!id.ensure("lxd-gitops").unwrap());
        let mode = std::fs::metadata(&id.key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (cert, key) = id.load("prod").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert_eq!(pem_fingerprint(&cert).unwrap().len(), 64);
    }

    #[test]
    fn missing_credentials_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClientIdentity::at(dir.path(), "prod").load("prod").unwrap_err().to_string();
        assert!(err.contains("lxd-gitops login"), "{err}");
    }

    #[test]
    fn decodes_lxd_trust_tokens() {
        let json = r#"{"client_name":"ci","fingerprint":"abcd","addresses":["10.0.0.1:8443"],"secret":"s3cret","expires_at":"0001-01-01T00:00:00Z"}"#;
        let token = base64::engine::general_purpose::STANDARD.encode(json);
        let t = TrustToken::decode(&token).unwrap();
        assert_eq!(t.client_name, "ci");
        assert_eq!(t.addresses, vec!["10.0.0.1:8443"]);
        assert!(TrustToken::decode("nope!").is_err());
    }
}
