//! The daemon's HTTP endpoints (axum).
//!
//! Owns: routes and status codes: `POST /hooks/{github|gitlab|gitea|generic}`,
//! `POST /reconcile[?cluster=x]`, `POST /clusters/{name}/suspend|resume`,
//! `GET /healthz`, `/readyz`, `/status`, `/metrics`; the optional admin token on
//! the POST endpoints other than webhooks. Must not: run reconciles (it only
//! triggers the `Reconciler`), wait for runs, echo or log secrets or received
//! signatures. An unauthenticated webhook gets a 401 with a short body and queues
//! nothing.

use super::config::Secret;
use super::metrics::CONTENT_TYPE;
use super::reconciler::{Reconcile, Reconciler, TriggerError};
use super::webhook::{self, Provider, WebhookEvent, MAX_BODY_BYTES};
use crate::run::Trigger;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What the endpoints need besides the loop.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Configured webhook secrets; a provider without one answers 404.
    pub webhooks: BTreeMap<Provider, Secret>,
    /// The watched branch: pushes to other refs are acknowledged and ignored.
    pub branch: String,
    /// When set, `POST /reconcile` and `/clusters/...` need `Authorization: Bearer <token>`.
    pub admin_token: Option<Secret>,
}

struct App<R: Reconcile> {
    reconciler: Reconciler<R>,
    options: HttpOptions,
}

/// The router, ready for `axum::serve`.
pub fn router<R: Reconcile>(reconciler: Reconciler<R>, options: HttpOptions) -> Router {
    let app = Arc::new(App { reconciler, options });
    Router::new()
        .route("/hooks/{provider}", post(hook::<R>))
        .route("/reconcile", post(reconcile::<R>))
        .route("/clusters/{name}/suspend", post(suspend::<R>))
        .route("/clusters/{name}/resume", post(resume::<R>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<R>))
        .route("/status", get(status::<R>))
        .route("/metrics", get(metrics::<R>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    let mut b = body.into();
    b.push('\n');
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], b).into_response()
}

async fn hook<R: Reconcile>(
    State(app): State<Arc<App<R>>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(provider) = Provider::parse(&provider) else {
        return text(StatusCode::NOT_FOUND, "unknown webhook provider");
    };
    let name = provider.as_str();
    let Some(secret) = app.options.webhooks.get(&provider) else {
        return text(StatusCode::NOT_FOUND, format!("webhook `{name}` is not configured"));
    };
    let metrics = app.reconciler.metrics();
    let event = match webhook::verify(provider, &headers, &body, secret.expose()) {
        Ok(ev) => ev,
        Err(e) => {
            let code = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let result = if code == StatusCode::UNAUTHORIZED { "unauthorized" } else { "bad-request" };
            metrics.webhook(name, result);
            tracing::warn!(provider = name, reason = %e, "webhook refused");
            return text(code, e.to_string());
        }
    };
    let push = match event {
        WebhookEvent::Ping => {
            metrics.webhook(name, "ignored");
            return text(StatusCode::OK, "pong");
        }
        WebhookEvent::Other(ev) => {
            metrics.webhook(name, "ignored");
            return text(StatusCode::ACCEPTED, format!("ignored: event {ev}"));
        }
        WebhookEvent::Push(p) => p,
    };
    if push.branch() != Some(app.options.branch.as_str()) {
        metrics.webhook(name, "ignored");
        return text(StatusCode::ACCEPTED, format!("ignored: ref {}", push.git_ref));
    }
    if push.is_deletion() {
        metrics.webhook(name, "ignored");
        return text(StatusCode::ACCEPTED, "ignored: branch deleted");
    }
    let trigger = Trigger::Webhook { provider: name.to_string(), revision: push.after.clone() };
    match app.reconciler.trigger_all(trigger) {
        Ok(()) => {
            metrics.webhook(name, "accepted");
            tracing::info!(provider = name, revision = %push.after, "webhook: push accepted");
            text(StatusCode::ACCEPTED, format!("queued {}", push.after))
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Checks the admin token when one is configured (constant time, length hidden).
/// The 401 to answer with, if the request lacks it.
fn unauthorized<R: Reconcile>(app: &App<R>, headers: &HeaderMap) -> Option<Response> {
    let token = app.options.admin_token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok = Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(token.expose()));
    if bool::from(ok) && !given.is_empty() {
        None
    } else {
        Some(text(StatusCode::UNAUTHORIZED, "admin token required"))
    }
}

fn trigger_error(e: TriggerError) -> Response {
    let code = match e {
        TriggerError::UnknownCluster(_) => StatusCode::NOT_FOUND,
        TriggerError::Suspended(_) => StatusCode::CONFLICT,
        TriggerError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(code, e.to_string())
}

#[derive(Deserialize)]
struct ReconcileQuery {
    cluster: Option<String>,
}

async fn reconcile<R: Reconcile>(
    State(app): State<Arc<App<R>>>,
    Query(q): Query<ReconcileQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match q.cluster {
        Some(cluster) => match app.reconciler.trigger(&cluster, Trigger::Manual) {
            Ok(how) => {
                (StatusCode::ACCEPTED, Json(serde_json::json!({"cluster": cluster, "queued": how}))).into_response()
            }
            Err(e) => trigger_error(e),
        },
        None => match app.reconciler.trigger_all(Trigger::Manual) {
            Ok(()) => {
                (StatusCode::ACCEPTED, Json(serde_json::json!({"cluster": "*", "queued": "all"}))).into_response()
            }
            Err(e) => trigger_error(e),
        },
    }
}

async fn suspend<R: Reconcile>(
    State(app): State<Arc<App<R>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match app.reconciler.suspend(&name) {
        Ok(()) => text(StatusCode::OK, format!("suspended {name}")),
        Err(e) => trigger_error(e),
    }
}

async fn resume<R: Reconcile>(
    State(app): State<Arc<App<R>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match app.reconciler.resume(&name) {
        Ok(_) => text(StatusCode::OK, format!("resumed {name}")),
        Err(e) => trigger_error(e),
    }
}

async fn readyz<R: Reconcile>(State(app): State<Arc<App<R>>>) -> Response {
    match app.reconciler.readiness() {
        Ok(()) => text(StatusCode::OK, "ready"),
        Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn status<R: Reconcile>(State(app): State<Arc<App<R>>>) -> Response {
    Json(app.reconciler.status()).into_response()
}

async fn metrics<R: Reconcile>(State(app): State<Arc<App<R>>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.reconciler.metrics().encode()).into_response()
}
