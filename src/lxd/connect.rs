//! Connecting to a cluster the fleet describes.
//!
//! Owns: turning a `ClusterSpec` (endpoints, pinned fingerprint, credentials name)
//! and the credentials folder into a connected, pinned `LxdClient` plus the client
//! identity it used (the executor needs it to reach a member being joined). Must
//! not: read the fleet or hold policy.

use super::identity::{credentials_dir, ClientIdentity};
use super::{ConnectOptions, LxdClient, LxdError};
use crate::model::ClusterSpec;
use std::path::{Path, PathBuf};

/// A connected cluster and the identity used for it. Key material stays in memory
/// only; `Debug` does not show it.
#[derive(Clone)]
pub struct ClusterConnection {
    pub client: LxdClient,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConnection").field("client", &self.client).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cluster `{cluster}`: {source}")]
    Identity { cluster: String, source: super::identity::IdentityError },
    #[error("cluster `{cluster}`: {source}")]
    Lxd { cluster: String, source: LxdError },
}

/// Connects to `spec`, trying its endpoints in order, pinned to its fingerprint.
pub async fn connect_cluster(spec: &ClusterSpec, creds: Option<&Path>) -> Result<ClusterConnection, ConnectError> {
    let dir: PathBuf = creds.map(Path::to_path_buf).unwrap_or_else(credentials_dir);
    let id = ClientIdentity::at(&dir, &spec.credentials);
    let (cert_pem, key_pem) =
        id.load(&spec.credentials).map_err(|source| ConnectError::Identity { cluster: spec.name.clone(), source })?;
    let client = LxdClient::connect(&spec.endpoints, &spec.fingerprint, &cert_pem, &key_pem, ConnectOptions::default())
        .await
        .map_err(|source| ConnectError::Lxd { cluster: spec.name.clone(), source })?;
    Ok(ClusterConnection { client, cert_pem, key_pem })
}
