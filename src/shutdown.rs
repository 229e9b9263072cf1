//! Process signals: SIGTERM and SIGINT stop the proxy (draining in-flight requests),
//! SIGHUP reloads the config.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::app::Reloader;

/// Watches signals: SIGHUP reloads; SIGTERM or SIGINT cancels `stop` (graceful drain);
/// a second SIGTERM or SIGINT during the drain exits the process at once.
pub async fn watch_signals(
    stop: CancellationToken,
    reloader: Arc<Reloader>,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reloader.reload_and_log_off_thread().await,
        }
    }
    tracing::info!("stop signal received; a second one exits at once");
    stop.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second stop signal: exiting without waiting for in-flight requests");
    std::process::exit(1);
}
