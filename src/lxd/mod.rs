//! The live side: a typed client for LXD's REST API, and reading what is there.
//!
//! Owns: talking to LXD (TLS pinning, HTTPS and unix socket transports,
//! envelopes, operations, ETags, retries), converting LXD's JSON to the model
//! (`convert`), reading a cluster's live state (`live`) and the client identity
//! (`identity`). Must not: know the
//! fleet, plan changes or decide policy; callers (the live reader, the executor)
//! build paths with `ApiPath`, send objects shaped like `model`, and decide what
//! an error means for them.
//!
//! Files: `tls` (pinning, client identity), `transport` (one request over HTTPS or
//! the unix socket), `client` (`LxdClient`: failover, retries, operations), `api`
//! (pure wire types), `retry` (pure retry policy), `error` (`LxdError`).

mod api;
mod client;
pub mod connect;
pub mod convert;
mod error;
pub mod identity;
pub mod live;
mod retry;
mod tls;
mod transport;

pub use api::{
    append_query, encode_component, status_code, ApiPath, AuthStatus, ETag, Envelope, Method, Operation,
    OperationState, Outcome, ResponseType, ServerInfo, SyncResponse,
};
pub use client::{ConnectOptions, LxdClient, LxdRequest, TrustRequirement};
pub use error::{BoxError, LxdError, Result};
pub use retry::RetryPolicy;
pub use tls::{fingerprint_of_der, fingerprint_of_pem, normalize_fingerprint, ClientIdentity};
pub use transport::{Endpoint, RawResponse, RequestBody};
