//! Deferred accept (`TCP_DEFER_ACCEPT`) for listeners whose clients speak first.
//!
//! The kernel hands such a listener a connection only once its first bytes (an HTTP
//! request, a TLS client hello, a PROXY header) have arrived, so accepting it and
//! reading them take one wake-up of the proxy instead of two, and a connection that
//! never sends anything is not accepted until the kernel's hold ends. With `wrk`
//! opening a new TLS connection per request (`PARTS=tls benches/l4_tls.sh`, see
//! benches/README.md), the proxy's core took a median of 1.67 wake-up interrupts per
//! connection instead of 2.15.
//!
//! Neither socket2 nor rustix wraps this option, so this module is the crate's one use
//! of `unsafe`: a single `setsockopt` call on a socket it borrows.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

use tokio::net::TcpListener;

/// How long a silent connection is held back, in seconds. The kernel turns it into a
/// count of SYN-ACK retransmissions: one here, so a client that really waits for the
/// server to speak first is accepted after that first retransmission (about 1 s,
/// the same as nginx's `deferred` and HAProxy's `defer-accept`), and served as usual.
const HOLD_SECS: libc::c_int = 1;

/// Asks the kernel to accept connections on `listener` only once data has arrived
/// (or [`HOLD_SECS`] have passed). Only for protocols where the client speaks first.
pub(crate) fn wait_for_data(listener: &TcpListener) -> io::Result<()> {
    let value = HOLD_SECS;
    // SAFETY: the descriptor is open for as long as `listener` is borrowed; the option
    // value is a live `c_int` and its exact size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn a_connection_is_accepted_once_its_first_bytes_arrive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        wait_for_data(&listener).expect("option set");
        let mut client = TcpStream::connect(listener.local_addr().expect("an address"))
            .await
            .expect("connected");
        // Connected from the client's side, but held back from the listener while silent
        // (the kernel's hold ends with a SYN-ACK retransmission, after about a second).
        let early = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(early.is_err(), "a silent connection was accepted");
        client.write_all(b"GET / HTTP/1.1\r\n").await.expect("sent");
        let (mut accepted, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accepted once data arrived")
            .expect("accepted");
        let mut first = [0u8; 3];
        accepted.read_exact(&mut first).await.expect("read");
        assert_eq!(&first, b"GET", "the first bytes are there to read at once");
    }

    #[tokio::test]
    async fn a_silent_connection_is_accepted_after_the_hold() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        wait_for_data(&listener).expect("option set");
        let _client = TcpStream::connect(listener.local_addr().expect("an address"))
            .await
            .expect("connected");
        tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("a client that waits for the server is still served")
            .expect("accepted");
    }
}
