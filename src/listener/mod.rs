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

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long a new connection may take to send its PROXY header or finish its TLS
/// handshake (or, on a passthrough listener, its client hello).
pub(crate) const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many established connections the kernel may queue for a listener before it
/// accepts them. The kernel caps it at `net.core.somaxconn` (4096 by default since
/// Linux 5.4), so this asks for as many as the host allows. The 128 that the standard
/// library and tokio ask for is too few for a load balancer: while its workers are
/// busy, a burst of new connections beyond it has its SYNs dropped, and each of those
/// clients waits a second before trying again.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds a listening socket (with `SO_REUSEADDR`, as tokio's `bind` does) with
/// [`LISTEN_BACKLOG`].
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

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
