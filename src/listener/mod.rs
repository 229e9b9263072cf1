//! Inbound: accept loops that hand each connection to its protocol's server.
//!
//! Listeners are bound once at start (reloads never rebind sockets); each serves until
//! its stop token fires, then drains its connections.

mod h1;
pub mod http;
pub(crate) mod idle;
mod mtls;
pub mod proxy_protocol;
pub mod tcp;
pub mod tls;

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long a new connection may take to send its PROXY header or finish its TLS
/// handshake (or, on a passthrough listener, its client hello).
pub(crate) const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

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
