//! Outbound: keep-alive connections to targets, HTTP/1.1 or HTTP/2 (prior knowledge).
//!
//! Each [`Target`] carries its own [`Pool`], so taking a connection is a pop from that
//! target's idle list (no shared map keyed by address, no hashing per request), and the
//! pool survives reloads along with the target. A [`Client`] holds only a target group's
//! connection settings.

mod tls;

pub use tls::Conn;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::config::{self, GroupProtocol, ProtocolVersion, UpstreamTls};
use crate::target::Target;

/// Idle HTTP/1.1 connections kept per target; more are closed when released.
const MAX_IDLE_PER_TARGET: usize = 256;

/// A target group's connection settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    version: ProtocolVersion,
    connect_timeout: Duration,
    protocol: GroupProtocol,
    /// The group's TLS settings as configured (to tell whether a reload changed them).
    tls_config: UpstreamTls,
    tls: Option<tls::Settings>,
}

/// Why a request could not be carried to a target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection failed (refused, unreachable).
    #[error("cannot connect to target")]
    Connect(#[source] io::Error),
    /// The TCP connection did not open within the connect timeout.
    #[error("connecting to target timed out")]
    ConnectTimeout,
    /// The TLS handshake failed (certificate not trusted, wrong name, not TLS).
    #[error("TLS handshake with target failed")]
    Tls(#[source] io::Error),
    /// The HTTP handshake (HTTP/2 preface) failed.
    #[error("handshake with target failed")]
    Handshake(#[source] hyper::Error),
    /// The target reset the connection or answered with something that is not HTTP.
    #[error("target failed the request")]
    Request(#[source] hyper::Error),
}

impl Error {
    /// Whether no connection to the target could be made at all.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Error::Connect(_) | Error::ConnectTimeout | Error::Tls(_) | Error::Handshake(_)
        )
    }
}

/// Open connections to one target.
#[derive(Debug, Default)]
pub struct Pool {
    http1: Mutex<Vec<http1::SendRequest<Incoming>>>,
    http2: Mutex<Option<http2::SendRequest<Incoming>>>,
}

impl Pool {
    fn take_http1(&self) -> Option<http1::SendRequest<Incoming>> {
        self.http1.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Idle HTTP/1.1 connections.
    pub fn idle(&self) -> usize {
        self.http1.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// An HTTP/1.1 connection to hand back to its target's pool once the response body
/// has been read to its end; dropped instead, the connection closes.
#[derive(Debug)]
pub struct Reusable {
    sender: http1::SendRequest<Incoming>,
    target: Arc<Target>,
}

impl Reusable {
    /// Returns the connection to the pool.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self
            .target
            .pool
            .http1
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_PER_TARGET {
            idle.push(self.sender);
        }
    }
}

impl Client {
    /// A client with `group`'s protocol version and connect timeout.
    pub fn new(group: &config::TargetGroup) -> Self {
        Self {
            version: group.protocol_version,
            connect_timeout: group.connect_timeout,
            protocol: group.protocol,
            tls_config: group.tls.clone(),
            tls: tls::Settings::of(group),
        }
    }

    /// Whether this client already has `group`'s connection settings.
    pub fn serves(&self, group: &config::TargetGroup) -> bool {
        self.version == group.protocol_version
            && self.connect_timeout == group.connect_timeout
            && self.protocol == group.protocol
            && self.tls_config == group.tls
    }

    /// The HTTP version requests to targets must carry.
    pub fn version(&self) -> http::Version {
        match self.version {
            ProtocolVersion::Http1 => http::Version::HTTP_11,
            ProtocolVersion::Http2 => http::Version::HTTP_2,
        }
    }

    /// Sends `req` to `target` on a pooled connection (or a new one). HTTP/1.1 requests
    /// need an origin-form URI, HTTP/2 ones an absolute URI. For HTTP/1.1 the connection
    /// comes back as a [`Reusable`], to release when the response body is done.
    pub async fn send(
        &self,
        target: &Arc<Target>,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Option<Reusable>), Error> {
        match self.version {
            ProtocolVersion::Http1 => self.send_http1(target, req).await,
            ProtocolVersion::Http2 => self.send_http2(target, req).await.map(|r| (r, None)),
        }
    }

    async fn send_http1(
        &self,
        target: &Arc<Target>,
        mut req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Option<Reusable>), Error> {
        while let Some(mut sender) = target.pool.take_http1() {
            // A connection the target closed while idle fails here, before the request
            // is handed over; the request then goes out on the next one.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    return Ok((
                        resp,
                        Some(Reusable {
                            sender,
                            target: Arc::clone(target),
                        }),
                    ))
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(Error::Request(e.into_error())),
                },
            }
        }
        let io = TokioIo::new(self.connect(target.addr).await?);
        let (mut sender, conn) = http1::handshake(io).await.map_err(Error::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "target connection ended with an error");
            }
        });
        let resp = sender.send_request(req).await.map_err(Error::Request)?;
        Ok((
            resp,
            Some(Reusable {
                sender,
                target: Arc::clone(target),
            }),
        ))
    }

    async fn send_http2(
        &self,
        target: &Arc<Target>,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, Error> {
        let pooled = target
            .pool
            .http2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned();
        let mut sender = match pooled {
            Some(sender) => sender,
            None => {
                let io = TokioIo::new(self.connect(target.addr).await?);
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Duration::from_secs(30))
                    .handshake(io)
                    .await
                    .map_err(Error::Handshake)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "target connection ended with an error");
                    }
                });
                *target.pool.http2.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
                sender
            }
        };
        sender.ready().await.map_err(Error::Request)?;
        sender.send_request(req).await.map_err(Error::Request)
    }

    /// Opens a connection to `addr`, TLS for `https` and `tls` groups; the TCP connect
    /// and the TLS handshake together get the group's connect timeout.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Conn, Error> {
        let connect = async {
            let stream = TcpStream::connect(addr).await.map_err(Error::Connect)?;
            let _ = stream.set_nodelay(true); // a failure only costs latency
            match &self.tls {
                None => Ok(Conn::Plain(stream)),
                Some(tls) => tls.handshake(addr, stream).await.map_err(Error::Tls),
            }
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| Error::ConnectTimeout)?
    }
}
