//! Inbound: accept loops that hand each connection to its protocol's server.
//!
//! Listeners are bound once at start (reloads never rebind sockets); each serves until
//! its stop token fires, then drains its connections.

pub mod http;
pub(crate) mod idle;

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Accepts the next connection; on errors such as EMFILE it waits instead of spinning.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                // Out of file descriptors (or a similar resource error): accepting again
                // at once would fail the same way and burn a core. hyper 0.14's server
                // made the same choice of a 1 s pause.
                tracing::error!(error = %e, "accept failed; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
