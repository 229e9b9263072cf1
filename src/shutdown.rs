//! Process signals: SIGTERM and SIGINT stop the proxy (draining in-flight requests),
//! SIGHUP reloads the config, SIGUSR1 reopens the access log file (SIGHUP does too).

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::app::Reloader;

/// Watches signals: SIGHUP reloads the config and reopens the access log file;
/// SIGUSR1 (nginx's signal for log rotation) only reopens the file; SIGTERM or SIGINT
/// cancels `stop` (graceful drain); a second SIGTERM or SIGINT during the drain exits
/// the process at once.
pub async fn watch_signals(
    stop: CancellationToken,
    reloader: Arc<Reloader>,
    access_log: Option<AccessLog>,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let reopen = async || {
        if let Some(log) = &access_log {
            log.reopen().await;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                reopen().await;
                reloader.reload_and_log_off_thread().await;
            }
            _ = usr1.recv() => reopen().await,
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
