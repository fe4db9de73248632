//! Trigger sources that are not HTTP: the poll timer, the development file watch
//! and Unix signals.
//!
//! Owns: turning time, file changes and SIGHUP into calls on the `Reconciler`, and
//! SIGTERM/SIGINT into a shutdown future. Must not: run anything itself, or decide
//! what a run does; debounce is here because a save in an editor is many events.

use super::reconciler::{Reconcile, Reconciler};
use crate::run::Trigger;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Quiet time after the last file event before a watch-triggered run starts.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(300);

/// Polls the source every `interval` (the first poll is one interval after start:
/// the startup run already refreshed).
pub fn spawn_poller<R: Reconcile>(r: Reconciler<R>, interval: Duration) {
    tokio::spawn(async move {
        let mut stop = r.stop_signal();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if r.poll().is_err() {
                        return;
                    }
                }
                _ = stop.stopped() => return,
            }
        }
    });
}

/// Watches `dir` recursively and runs every cluster once changes settle.
pub fn spawn_watcher<R: Reconcile>(r: Reconciler<R>, dir: PathBuf, debounce: Duration) -> notify::Result<()> {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if ev.kind.is_access() => {}
        Ok(_) => {
            let _ = tx.send(());
        }
        Err(e) => tracing::warn!(error = %e, "file watch error"),
    })?;
    watcher.watch(&dir, RecursiveMode::Recursive)?;
    tracing::info!(dir = %dir.display(), "watching for changes (development mode)");
    tokio::spawn(async move {
        let _watcher = watcher; // dropping it ends the watch
        let mut stop = r.stop_signal();
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = stop.stopped() => return,
            }
            // Wait until no event arrived for `debounce`.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if r.trigger_all(Trigger::Watch).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// SIGHUP runs every cluster.
pub fn spawn_sighup<R: Reconcile>(r: Reconciler<R>) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut stop = r.stop_signal();
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: running every cluster");
                    if r.trigger_all(Trigger::Signal).is_err() {
                        return;
                    }
                }
                _ = stop.stopped() => return,
            }
        }
    });
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn termination() -> std::io::Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
