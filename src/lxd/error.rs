//! Errors of the LXD client.
//!
//! Owns: `LxdError`, the one error type every call in `lxd` returns, and the
//! wording operators read. Each request error names the method, the path and LXD's
//! own message verbatim (LXD's status codes are unreliable, its text is not).
//! Must not: carry or print key material, tokens or request bodies; decide policy
//! (whether to retry a write, whether to re-read) beyond exposing what happened.

use std::error::Error as StdError;
use std::time::Duration;

/// A boxed, sendable error used as the cause of connection failures.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

pub type Result<T, E = LxdError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum LxdError {
    /// The endpoint could not be reached: nothing was sent to LXD (refused,
    /// unreachable, connect timeout, TLS handshake failure other than the pin).
    #[error("cannot connect to LXD at {endpoint}: {}", error_chain(source.as_ref()))]
    Connect {
        endpoint: String,
        #[source]
        source: BoxError,
    },

    /// Every endpoint of the cluster was tried and none could be reached.
    #[error("none of the LXD endpoints could be reached: {}", render_attempts(attempts))]
    AllEndpointsFailed {
        /// `(endpoint, why)` in the order they were tried.
        attempts: Vec<(String, String)>,
    },

    /// The server presented a certificate other than the pinned one. Final: the
    /// client never fails over to another endpoint on this.
    #[error("server certificate fingerprint {got} does not match the pinned {expected} for {endpoint}")]
    FingerprintMismatch { endpoint: String, expected: String, got: String },

    /// LXD does not trust the client certificate.
    #[error(
        "the LXD server at {endpoint} does not trust this client certificate ({method} {path}: not authorized); \
         run `lxd-gitops login` to add it to the server's trust store"
    )]
    Untrusted { endpoint: String, method: String, path: String },

    /// LXD answered with its error envelope. `message` is LXD's text, verbatim.
    #[error("LXD refused {method} {path} (HTTP {status}): {message}")]
    Api { method: String, path: String, status: u16, message: String },

    /// A background operation finished without success.
    #[error("LXD operation {id} ({description}) failed: {err}")]
    Operation { id: String, description: String, err: String },

    /// The operation finished and LXD forgot it (about 5 s after completion)
    /// before it could be waited on: its outcome is unknown.
    #[error(
        "LXD operation {id} ({description}) vanished before it could be waited on; \
         its outcome is unknown: re-read the object it changed"
    )]
    OperationVanished { id: String, description: String },

    /// 412: the object changed since its ETag was read. Callers re-read it.
    #[error("{method} {path}: the object changed since it was read (LXD: {message}); re-read it and retry")]
    PreconditionFailed { method: String, path: String, message: String },

    #[error("{method} {path}: not found (LXD: {message})")]
    NotFound { method: String, path: String, message: String },

    /// LXD's answer could not be decoded into the expected shape. The message
    /// keeps field names but never the values it quotes (they could be secrets).
    #[error("cannot decode LXD's answer to {method} {path}: {}", redact_quoted(&source.to_string()))]
    Decode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// The request body could not be serialized.
    #[error("cannot encode the body of {method} {path}: {}", redact_quoted(&source.to_string()))]
    Encode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// LXD answered something that is not the LXD protocol (no envelope, an
    /// unexpected response type, a missing operation URL).
    #[error("unexpected answer from LXD to {method} {path}: {message}")]
    Protocol { method: String, path: String, message: String },

    /// A request or a wait did not finish in time. For a write, whether it took
    /// effect is unknown.
    #[error("{what} did not finish within {}", humantime::format_duration(*after))]
    Timeout { what: String, after: Duration },

    /// A request reached (or may have reached) the server and then failed
    /// without an answer (connection reset, broken body).
    #[error("{method} {path} against {endpoint} failed after it was sent: {}", error_chain(source.as_ref()))]
    Transport {
        endpoint: String,
        method: String,
        path: String,
        #[source]
        source: BoxError,
    },

    /// Local IO (reading an upload file, ...).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// Certificate or key text that cannot be used. Never quotes the text.
    #[error("{what}: {message}")]
    Credentials { what: String, message: String },

    /// An endpoint, fingerprint, header or path the client cannot use.
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },
}

impl LxdError {
    /// Whether the failure means "this endpoint could not be reached", the one
    /// case where connecting moves on to the next endpoint.
    pub fn is_connect_failure(&self) -> bool {
        matches!(self, LxdError::Connect { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, LxdError::NotFound { .. })
    }

    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, LxdError::PreconditionFailed { .. })
    }
}

/// `a: b: c` from an error and its sources, skipping repeats (reqwest and hyper
/// often repeat the inner message in the outer one).
pub(crate) fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

fn render_attempts(attempts: &[(String, String)]) -> String {
    if attempts.is_empty() {
        return "no endpoint is configured".to_string();
    }
    attempts.iter().map(|(e, why)| format!("{e} ({why})")).collect::<Vec<_>>().join("; ")
}

/// Replaces every `"..."` in a message by `"…"`. serde_json quotes offending
/// values that way (field names use backticks), and a value may be a secret.
pub(crate) fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_message_is_the_documented_one() {
        let e = LxdError::FingerprintMismatch {
            endpoint: "https://10.0.0.1:8443".into(),
            expected: "aa".into(),
            got: "bb".into(),
        };
        assert_eq!(
            e.to_string(),
            "server certificate fingerprint bb does not match the pinned aa for https://10.0.0.1:8443"
        );
    }

    #[test]
    fn api_errors_name_method_path_and_lxd_text() {
        let e = LxdError::Api {
            method: "PUT".into(),
            path: "/1.0/profiles/p".into(),
            status: 500,
            message: "Invalid config: Unknown configuration key: bogus.key".into(),
        };
        let s = e.to_string();
        assert!(s.contains("PUT /1.0/profiles/p"), "{s}");
        assert!(s.contains("Invalid config: Unknown configuration key: bogus.key"), "{s}");
    }

    #[test]
    fn untrusted_tells_the_operator_what_to_run() {
        let e = LxdError::Untrusted { endpoint: "e".into(), method: "GET".into(), path: "/1.0/profiles".into() };
        assert!(e.to_string().contains("lxd-gitops login"));
    }

    #[test]
    fn decode_errors_do_not_repeat_values() {
        let err = serde_json::from_str::<u64>("\"s3cr3t-token\"").unwrap_err();
        let e = LxdError::Decode { method: "GET".into(), path: "/1.0/operations/x".into(), source: err };
        let s = e.to_string();
        assert!(!s.contains("s3cr3t"), "{s}");
        assert!(s.contains("invalid type"), "{s}");
    }

    #[test]
    fn error_chain_skips_repeated_messages() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = LxdError::Io { context: "connect".into(), source: inner };
        assert_eq!(error_chain(&outer), "connect: Connection refused");
    }

    #[test]
    fn no_endpoints_reads_well() {
        let e = LxdError::AllEndpointsFailed { attempts: vec![] };
        assert!(e.to_string().ends_with("no endpoint is configured"));
    }
}
