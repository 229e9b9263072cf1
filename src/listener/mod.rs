//! Inbound: accept loops that hand each connection to its protocol's server.
//!
//! Listeners are bound once at start (reloads never rebind sockets); each serves until
//! its stop token fires, then drains its connections.

#[cfg(target_os = "linux")]
mod defer;
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

/// Bytes a connection leaves unsent in its socket's send queue before writes wait
/// (`TCP_NOTSENT_LOWAT`); the rest wait in the proxy's pipe or buffer, and in the
/// peer's socket behind them. A full send queue is sent by whichever CPU processes
/// the ACK that opens the window (on loopback, the receiver's), while the proxy sends
/// from its own: packets of one flow leave from two CPUs, arrive out of order, and
/// the sender takes the reordering for loss. Measured on loopback (benches/README.md):
/// iperf3 through the tcp listener went from 7.9-10.6 Gbit/s with about 110 spurious
/// retransmissions per GB to 12.4-12.9 with 11-14 (16 KiB and 128 KiB alike); a 2 GB
/// download through the http listener from 4.2-7.9 Gbit/s to 6.5-6.9, with at most 6
/// retransmissions instead of up to 208. 128 KiB still covers a 25 Gbit/s link for
/// 40 µs while the proxy is woken to refill it.
const UNSENT_LIMIT: u32 = 128 * 1024;

/// Options for every proxied connection, client or target side: no Nagle delay, and
/// at most [`UNSENT_LIMIT`] bytes queued unsent. A failure only costs speed.
pub(crate) fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT_LIMIT) {
        tracing::debug!(error = %e, "cannot limit unsent bytes (TCP_NOTSENT_LOWAT)");
    }
}

/// Binds a listening socket (with `SO_REUSEADDR`, as tokio's `bind` does) with
/// [`LISTEN_BACKLOG`]. With `client_speaks_first` (HTTP, TLS, a PROXY header), the
/// kernel holds each connection back until its first bytes arrive (Linux's deferred
/// accept), so accepting and reading them take one wake-up of the proxy, not two.
pub(crate) fn bind(addr: SocketAddr, client_speaks_first: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    #[cfg(target_os = "linux")]
    if client_speaks_first {
        if let Err(e) = defer::wait_for_data(&listener) {
            tracing::debug!(%addr, error = %e, "cannot defer accepts (TCP_DEFER_ACCEPT)");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = client_speaks_first;
    Ok(listener)
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn proxied_sockets_leave_at_most_the_limit_unsent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let addr = listener.local_addr().expect("an address");
        let (outbound, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (outbound, (accepted, _)) = (outbound.expect("connected"), accepted.expect("accepted"));
        for stream in [&outbound, &accepted] {
            tune(stream);
            let lowat = socket2::SockRef::from(stream)
                .tcp_notsent_lowat()
                .expect("readable");
            assert_eq!(lowat, UNSENT_LIMIT);
            assert!(stream.nodelay().expect("readable"), "Nagle is off");
        }
    }
}
