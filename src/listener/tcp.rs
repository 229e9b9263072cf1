//! L4 listeners, as NLB's: `tcp` forwards each connection's bytes to a target,
//! `tls` terminates TLS first, `tls_passthrough` reads the TLS client hello's server
//! name (SNI) to route and leaves TLS to the target.
//!
//! A target is picked per connection by the group's balancer (least outstanding
//! requests counts open connections here); a connect failure or timeout moves on to
//! another target. Clear-text streams on both sides move with `splice(2)` through a
//! pipe, never entering user space; TLS streams are copied through buffers. Each
//! direction ends on its own (half-close: EOF from one side becomes a write shutdown
//! towards the other), and a connection with no bytes moving for the listener's idle
//! timeout is closed.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::idle::{watch_idle, Activity, IdleStream};
use super::tls::Terminator;
use crate::config::Protocol;
use crate::metrics::Metrics;
use crate::routing::{Action, Request, Routes};
use crate::target::InFlight;
use crate::upstream::Conn;

/// Targets tried for one connection before giving up on it.
const MAX_ATTEMPTS: usize = 3;
/// Buffer size of each direction when the bytes cannot be spliced.
const COPY_BUFFER: usize = 64 * 1024;

/// What every connection of one L4 listener shares.
#[derive(Debug)]
struct Listener {
    metrics: Arc<Metrics>,
    routes: Routes,
    index: usize,
    protocol: Protocol,
    tls: Option<Arc<Terminator>>,
}

/// Serves an L4 listener until `stop` fires, then waits for its open connections to
/// end (the caller bounds that wait and drops this future, closing them).
pub async fn serve(
    metrics: Arc<Metrics>,
    socket: TcpListener,
    routes: Routes,
    index: usize,
    protocol: Protocol,
    tls: Option<Arc<Terminator>>,
    stop: CancellationToken,
) {
    let shared = Arc::new(Listener {
        metrics,
        routes,
        index,
        protocol,
        tls,
    });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = super::accept(&socket) => accepted,
            () = stop.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        super::tune(&stream);
        let counters = shared.metrics.listener(index);
        counters.new_connections.fetch_add(1, Ordering::Relaxed);
        counters.active_connections.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let _open = super::http::OpenConnection::new(Arc::clone(&shared.metrics), index);
            if let Err(e) = shared.connection(stream, client).await {
                tracing::debug!(%client, error = %e, "L4 connection ended with an error");
            }
        });
    }
    drop(socket);
    while connections.join_next().await.is_some() {}
}

impl Listener {
    async fn connection(&self, mut stream: TcpStream, client: SocketAddr) -> io::Result<()> {
        let (idle_timeout, accept_proxy, counting) = {
            let table = self.routes.load();
            let settings = table.listener(self.index);
            (
                settings.idle_timeout,
                settings.accept_proxy_protocol,
                table.metrics_enabled,
            )
        };
        let mut addrs = super::proxy_protocol::Addresses {
            source: client,
            destination: stream.local_addr()?,
        };
        if accept_proxy {
            if let Some(given) =
                super::proxy_protocol::read_header(&mut stream, super::PREAMBLE_TIMEOUT).await?
            {
                addrs = given;
            }
        }
        let activity = Activity::new(counting.then(|| (Arc::clone(&self.metrics), self.index)));
        match self.protocol {
            Protocol::Tls => {
                let Some(tls) = &self.tls else {
                    return Err(io::Error::other("tls listener without certificates"));
                };
                let handshake = tls
                    .acceptor()
                    .accept(IdleStream::new(stream, Arc::clone(&activity)));
                let stream = tokio::time::timeout(super::PREAMBLE_TIMEOUT, handshake)
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                let (target, _in_flight) = self.connect(None, addrs).await?;
                copy(stream, target, &activity, idle_timeout).await
            }
            Protocol::TlsPassthrough => {
                let (hello, server_name) =
                    tokio::time::timeout(super::PREAMBLE_TIMEOUT, read_client_hello(&mut stream))
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "no TLS client hello in time")
                        })??;
                let (mut target, _in_flight) = self.connect(server_name.as_deref(), addrs).await?;
                target.write_all(&hello).await?;
                activity.touch(hello.len());
                relay(stream, target, &activity, idle_timeout).await
            }
            _ => {
                let (target, _in_flight) = self.connect(None, addrs).await?;
                relay(stream, target, &activity, idle_timeout).await
            }
        }
    }

    /// Connects to a target of the group the listener's rules pick (by server name on
    /// passthrough listeners), trying others when one cannot be reached, and sends the
    /// PROXY header first when the group wants one.
    async fn connect(
        &self,
        server_name: Option<&str>,
        addrs: super::proxy_protocol::Addresses,
    ) -> io::Result<(Conn, InFlight)> {
        let table = self.routes.load_full();
        let headers = HeaderMap::new();
        let request = Request {
            host: server_name,
            path: "/",
            query: None,
            method: &Method::GET,
            headers: &headers,
            source_ip: addrs.source.ip(),
        };
        let Action::Forward(forward) = table.listener(self.index).route(&request).0 else {
            return Err(io::Error::other("the listener's action does not forward"));
        };
        let (group, _) = forward.pick_group(&headers);
        let mut tried: SmallVec<[SocketAddr; MAX_ATTEMPTS]> = SmallVec::new();
        let mut last_error = None;
        while tried.len() < MAX_ATTEMPTS {
            let Some(target) = group.balancer.pick_avoiding(&tried) else {
                break;
            };
            tried.push(target.addr);
            let in_flight = target.begin();
            match group.upstream.connect(target.addr).await {
                Ok(mut conn) => {
                    if group.config.proxy_protocol_v2 {
                        let header =
                            super::proxy_protocol::v2_header(addrs.source, addrs.destination);
                        conn.write_all(&header).await?;
                    }
                    return Ok((conn, in_flight));
                }
                Err(e) => {
                    target
                        .counters
                        .connection_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(target = %target.addr, error = %e, "cannot reach target; trying another");
                    last_error = Some(e);
                }
            }
        }
        Err(match last_error {
            Some(e) => io::Error::new(io::ErrorKind::ConnectionRefused, e),
            None => io::Error::other(format!(
                "target group {:?} has no target to connect to",
                group.config.name
            )),
        })
    }
}

/// Moves bytes both ways between a client and a target until both directions have
/// ended or nothing moved for `idle_timeout`: spliced when both are clear TCP.
async fn relay(
    client: TcpStream,
    target: Conn,
    activity: &Arc<Activity>,
    idle_timeout: Duration,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let target = match target {
        Conn::Plain(target) => match splice::Pipes::new() {
            Ok(pipes) => {
                return tokio::select! {
                    moved = pipes.relay(&client, &target, activity) => moved,
                    () = watch_idle(activity, idle_timeout) => Ok(()),
                };
            }
            Err(e) => {
                tracing::debug!(error = %e, "no pipe for splice; copying through buffers");
                Conn::Plain(target)
            }
        },
        tls => tls,
    };
    let client = IdleStream::new(client, Arc::clone(activity));
    copy(client, target, activity, idle_timeout).await
}

/// Copies both ways through buffers (TLS on either side), with half-close.
async fn copy<C, T>(
    mut client: C,
    mut target: T,
    activity: &Activity,
    idle_timeout: Duration,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        moved = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut target, COPY_BUFFER, COPY_BUFFER) => moved.map(|_| ()),
        () = watch_idle(activity, idle_timeout) => Ok(()),
    }
}

/// Reads a TLS client hello whole and returns its bytes (to replay to the target) and
/// its server name.
async fn read_client_hello(stream: &mut TcpStream) -> io::Result<(Vec<u8>, Option<String>)> {
    const MAX_HELLO: usize = 64 * 1024;
    let mut acceptor = rustls::server::Acceptor::default();
    let mut hello = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        hello.extend_from_slice(&chunk[..n]);
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "client hello too large",
                ));
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let name = accepted.client_hello().server_name().map(str::to_owned);
                return Ok((hello, name));
            }
            Ok(None) if hello.len() < MAX_HELLO => {}
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "client hello too large",
                ))
            }
            Err((e, _)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

#[cfg(target_os = "linux")]
mod splice {
    //! Zero-copy relaying: socket → pipe → socket with `splice(2)`, one pipe per
    //! direction. Readiness comes from tokio; the syscalls are non-blocking.

    use std::io;
    use std::os::fd::OwnedFd;

    use rustix::net::Shutdown;
    use rustix::pipe::{PipeFlags, SpliceFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::Activity;

    /// Pipe capacity asked for. Measured with iperf3 on loopback (benches/l4_tls.sh):
    /// 64 KiB (the default) 14-16 Gbit/s, 256 KiB 18-19, 1 MiB 17.
    const PIPE_SIZE: usize = 256 * 1024;

    /// One pipe per direction.
    pub(super) struct Pipes {
        up: Pipe,
        down: Pipe,
    }

    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        size: usize,
    }

    impl Pipe {
        fn new() -> io::Result<Self> {
            let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            // A smaller pipe still works; only the move size changes.
            let size = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE)
                .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))
                .unwrap_or(64 * 1024);
            Ok(Self { read, write, size })
        }
    }

    impl Pipes {
        pub(super) fn new() -> io::Result<Self> {
            Ok(Self {
                up: Pipe::new()?,
                down: Pipe::new()?,
            })
        }

        /// Relays until both directions have ended; an error in either ends both.
        pub(super) async fn relay(
            &self,
            client: &TcpStream,
            target: &TcpStream,
            activity: &Activity,
        ) -> io::Result<()> {
            tokio::try_join!(
                one_way(client, target, &self.up, activity),
                one_way(target, client, &self.down, activity),
            )
            .map(|_| ())
        }
    }

    /// Moves bytes from `from` to `to` until `from` ends, then shuts `to` for writing.
    ///
    /// Reading and writing overlap: while the pipe has room, bytes keep coming in from
    /// `from` even as earlier ones wait for `to`. A read that would block is taken as
    /// "nothing to read" only when the pipe is empty (a pipe can run out of slots
    /// before bytes); otherwise the loop waits for `to` to drain it.
    async fn one_way(
        from: &TcpStream,
        to: &TcpStream,
        pipe: &Pipe,
        activity: &Activity,
    ) -> io::Result<()> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        let mut in_pipe = 0;
        let mut ended = false;
        loop {
            let mut moved = false;
            if !ended && in_pipe < pipe.size {
                let room = pipe.size - in_pipe;
                let read = if in_pipe == 0 {
                    // Would block here can only mean `from` has nothing: let tokio
                    // clear its readiness.
                    from.try_io(Interest::READABLE, || {
                        Ok(rustix::pipe::splice(
                            from,
                            None,
                            &pipe.write,
                            None,
                            room,
                            flags,
                        )?)
                    })
                } else {
                    rustix::pipe::splice(from, None, &pipe.write, None, room, flags)
                        .map_err(io::Error::from)
                };
                match read {
                    Ok(0) => ended = true,
                    Ok(n) => {
                        in_pipe += n;
                        activity.touch(n);
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if in_pipe > 0 {
                match to.try_io(Interest::WRITABLE, || {
                    Ok(rustix::pipe::splice(
                        &pipe.read, None, to, None, in_pipe, flags,
                    )?)
                }) {
                    Ok(n) => {
                        in_pipe -= n;
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if ended && in_pipe == 0 {
                // Half-close: the peer may still send the other way. A socket already
                // gone returns ENOTCONN here, which changes nothing.
                let _ = rustix::net::shutdown(to, Shutdown::Write);
                return Ok(());
            }
            if !moved {
                if in_pipe > 0 {
                    to.writable().await?;
                } else {
                    from.readable().await?;
                }
            }
        }
    }
}
