//! The daemon (`lxd-gitops serve`): triggers in, single-flight runs, HTTP out.
//!
//! Owns: wiring the pieces together: the runtime `config`, the `reconciler` loop
//! and its `Reconcile` seam, trigger sources (`triggers`: poll, file watch,
//! signals; `http`: webhooks and manual runs), pure helpers (`webhook` signature
//! checks, `schedule` windows and drift ticks), `metrics`, logging setup and
//! graceful shutdown. Must not: implement a run (fleet loading, LXD, planning,
//! applying and auditing are the integrator's `Reconcile` implementation), or
//! print a secret.
//!
//! Plugging the pipeline in:
//!
//! ```ignore
//! struct Pipeline { source: GitSource, last_good: LastGood, audit: AuditWriter, /* lxd, ... */ }
//! impl Reconcile for Pipeline {
//!     async fn refresh(&self) -> Result<FleetHead, RefreshError> { /* sync, validate, schedules */ }
//!     async fn reconcile(&self, cluster: &str, ctx: RunContext) -> RunReport { /* plan, apply, audit */ }
//! }
//! let config = Config::load(path)?;
//! init_logging(config.log_format);
//! Daemon::bind(&config, Pipeline { .. }).await?.serve().await?;
//! ```

pub mod config;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod reconciler;
pub mod schedule;
pub mod triggers;
pub mod webhook;

pub use config::{Config, LogFormat, Secret};
pub use reconciler::{ApplyGate, FleetHead, LoopOptions, Reconcile, Reconciler, RefreshError, RunContext, StopSignal};
pub use schedule::{ClusterSchedule, SyncWindows};

use crate::run::Trigger;
use std::future::Future;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("watching {dir}: {source}")]
    Watch {
        dir: String,
        #[source]
        source: notify::Error,
    },
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
}

/// Sets up `tracing` output: text or one JSON object per line. `RUST_LOG` filters
/// (default `info`). Safe to call twice (the second call does nothing).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A bound, not yet serving daemon.
pub struct Daemon<R: Reconcile> {
    reconciler: Reconciler<R>,
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

impl<R: Reconcile> Daemon<R> {
    /// Starts the loop and its trigger sources and binds the HTTP listener. The
    /// startup run (refresh, then every cluster) is queued at once.
    pub async fn bind(config: &Config, pipeline: R) -> Result<Daemon<R>, ServeError> {
        let options = LoopOptions {
            suspended: config.clusters.iter().filter(|(_, c)| c.suspended).map(|(n, _)| n.clone()).collect(),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Listen { addr: config.listen, source })?;
        if !config.listen.ip().is_loopback() && config.admin_token.is_none() {
            tracing::warn!(listen = %config.listen, "listening beyond loopback without admin_token_file: anyone who can connect may trigger runs and suspend clusters");
        }
        let reconciler = Reconciler::start(pipeline, options);
        triggers::spawn_sighup(reconciler.clone()).map_err(ServeError::Signals)?;
        if config.repo.is_some() {
            triggers::spawn_poller(reconciler.clone(), config.poll_interval);
        }
        if let Some(dir) = &config.watch_dir {
            triggers::spawn_watcher(reconciler.clone(), dir.clone(), triggers::WATCH_DEBOUNCE)
                .map_err(|source| ServeError::Watch { dir: dir.display().to_string(), source })?;
        }
        let router = http::router(
            reconciler.clone(),
            http::HttpOptions {
                webhooks: config.webhooks.clone(),
                branch: config.repo.as_ref().map(|r| r.branch.clone()).unwrap_or_else(|| "main".into()),
                admin_token: config.admin_token.clone(),
            },
        );
        let _ = reconciler.trigger_all(Trigger::Startup);
        Ok(Daemon { reconciler, listener, router })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn reconciler(&self) -> &Reconciler<R> {
        &self.reconciler
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn serve(self) -> Result<(), ServeError> {
        let term = triggers::termination();
        self.serve_until(async move {
            match term.await {
                Ok(sig) => tracing::info!(signal = sig, "stopping"),
                Err(e) => tracing::error!(error = %e, "cannot wait for signals"),
            }
        })
        .await
    }

    /// Serves until `shutdown` resolves; then refuses new triggers (HTTP keeps
    /// answering health and status), waits for runs in flight to finish their step
    /// and return, and stops the HTTP server.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            let _ = http_stopped.await;
        });
        let server = tokio::spawn(async move { server.await });
        shutdown.await;
        self.reconciler.shutdown().await;
        let _ = http_stop.send(());
        match server.await {
            Ok(r) => r.map_err(ServeError::Http),
            Err(e) => Err(ServeError::Http(std::io::Error::other(e))),
        }
    }
}
