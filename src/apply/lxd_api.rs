//! The executor's view of LXD, implemented by the real client.
//!
//! Owns: mapping `LxdApi` calls to `LxdClient` requests and `LxdError`s to the
//! executor's `ApiError` (412 and 404 told apart). Must not: decide anything.

use super::executor::{ApiError, LxdApi, Method, Response};
use crate::lxd::connect::ClusterConnection;
use crate::lxd::{self, ConnectOptions, ETag, LxdClient, LxdError, LxdRequest, Outcome};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// How long one LXD operation (an image download, an evacuation) may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(1800);

fn api_err(e: LxdError) -> ApiError {
    ApiError {
        precondition_failed: matches!(e, LxdError::PreconditionFailed { .. }),
        not_found: matches!(e, LxdError::NotFound { .. }),
        message: e.to_string(),
    }
}

fn response(o: Outcome) -> Response {
    match o {
        Outcome::Sync(s) => Response { metadata: s.metadata, operation: None },
        Outcome::Async(op) => Response { metadata: op.state.metadata.clone(), operation: Some(op) },
    }
}

impl LxdApi for ClusterConnection {
    async fn get(&self, path: &str) -> Result<(Value, Option<String>), ApiError> {
        let (v, etag) = self.client.get::<Value>(path).await.map_err(api_err)?;
        Ok((v, etag.map(|e| e.as_str().to_string())))
    }

    async fn request(
        &self,
        m: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<String>,
    ) -> Result<Response, ApiError> {
        let mut req = LxdRequest::new(m, path);
        if let Some(b) = &body {
            req = req.json(b).map_err(api_err)?;
        }
        let etag = if_match.map(ETag::new);
        req = req.if_match(etag.as_ref());
        self.client.execute(req).await.map(response).map_err(api_err)
    }

    async fn wait(&self, r: Response) -> Result<Value, ApiError> {
        match r.operation {
            None => Ok(r.metadata),
            Some(op) => self.client.wait_operation(&op, OPERATION_TIMEOUT).await.map(|s| s.metadata).map_err(api_err),
        }
    }

    async fn upload_image(&self, path: &str, file: PathBuf, public: bool) -> Result<Response, ApiError> {
        let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "image.tar.gz".into());
        let req = LxdRequest::new(lxd::Method::Post, path)
            .file(file, "application/octet-stream")
            .header("X-LXD-filename", &name)
            .header("X-LXD-public", if public { "true" } else { "false" })
            .timeout(OPERATION_TIMEOUT);
        self.client.execute(req).await.map(response).map_err(api_err)
    }

    async fn connect_to(&self, endpoint: &str, fingerprint: &str) -> Result<Self, ApiError> {
        let client = LxdClient::connect(
            &[endpoint.to_string()],
            fingerprint,
            &self.cert_pem,
            &self.key_pem,
            ConnectOptions::default(),
        )
        .await
        .map_err(api_err)?;
        Ok(ClusterConnection { client, cert_pem: self.cert_pem.clone(), key_pem: self.key_pem.clone() })
    }

    fn cluster_address(&self) -> String {
        self.client.endpoint().trim_start_matches("https://").trim_end_matches('/').to_string()
    }
}
