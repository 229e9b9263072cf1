//! Outbound: keep-alive connections to targets, HTTP/1.1 or HTTP/2 (prior knowledge),
//! in clear text or TLS. Requests without a body to clear-text HTTP/1.1 targets (most
//! traffic) take the lean client of `upstream/h1.rs`; the others take hyper's.
//!
//! Each [`Target`] carries its own [`Pool`], so taking a connection is a pop from that
//! target's idle list (no shared map keyed by address, no hashing per request), and the
//! pool survives reloads along with the target. An HTTP/1.1 connection idle for the
//! group's `idle_timeout`, or closed by its target, is closed by [`Pool::sweep`] (once
//! a second) or when next found, rather than reused. HTTP/2 requests
//! share a target's connections up to the streams the target allows on each. A
//! [`Client`] holds only a target group's connection settings.

mod goaway;
mod h1;
mod tls;

pub use h1::{Heads, RawHead};
pub use tls::Conn;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;

use crate::listener::idle::RequestBody;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{self, GroupProtocol, ProtocolVersion, UpstreamTls};
use crate::target::Target;
use goaway::{ConnState, Http2Body, Replay, Watched};

/// Idle HTTP/1.1 connections kept per target; more are closed when released.
const MAX_IDLE_PER_TARGET: usize = 256;

/// Streams a new HTTP/2 connection carries until the target's first `SETTINGS` say how
/// many it allows (RFC 9113 recommends servers allow at least 100).
const INITIAL_MAX_STREAMS: usize = 100;

/// Times an HTTP/2 request goes out when targets close connections under it without
/// processing it (each time on another connection).
const HTTP2_ATTEMPTS: usize = 3;

/// A target group's connection settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    version: ProtocolVersion,
    connect_timeout: Duration,
    /// Idle HTTP/1.1 connections are not reused after this long.
    idle_timeout: Duration,
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
    /// The same, on the lean HTTP/1.1 path.
    #[error("target failed the request")]
    Lean(#[source] h1::Error),
    /// hyper's HTTP/1.1 client read a response that a client could read otherwise, or
    /// a `101` to a request that asked for no upgrade.
    #[error("target sent an ambiguous response")]
    Ambiguous(#[source] h1::Error),
    /// Opening the HTTP/2 connection this request waited for failed so.
    #[error(transparent)]
    Shared(Arc<Error>),
}

impl Error {
    /// Whether no connection to the target could be made at all.
    pub fn is_connect(&self) -> bool {
        match self {
            Error::Connect(_) | Error::ConnectTimeout | Error::Tls(_) | Error::Handshake(_) => true,
            Error::Shared(e) => e.is_connect(),
            Error::Request(_) | Error::Lean(_) | Error::Ambiguous(_) => false,
        }
    }
}

/// Open connections to one target.
#[derive(Debug, Default)]
pub struct Pool {
    /// Idle connections of hyper's HTTP/1.1 client, the last released on top.
    http1: Mutex<Vec<Idle<http1::SendRequest<RequestBody>>>>,
    http2: Mutex<Http2Pool>,
    /// Idle connections of the lean HTTP/1.1 path, the last released on top.
    lean: Mutex<Vec<Idle<h1::Conn>>>,
}

/// An idle HTTP/1.1 connection, and since when.
#[derive(Debug)]
struct Idle<C> {
    conn: C,
    since: Instant,
}

/// The most recently released of `idle`, unless it has been idle for `max` or longer.
/// Connections idle that long are let go (closed), as a target may be about to close
/// them itself, racing the next request; the oldest are looked at too, so that those
/// a burst left behind do not linger while later requests keep taking the newest.
fn take_idle<C>(idle: &Mutex<Vec<Idle<C>>>, max: Duration) -> Option<C> {
    let now = Instant::now();
    let mut idle = lock(idle);
    // Released in order, so the expired ones are at the bottom.
    let expired = |c: &Idle<C>| now.saturating_duration_since(c.since) >= max;
    if !idle.first().is_some_and(expired) {
        return idle.pop().map(|c| c.conn);
    }
    let expired = idle.partition_point(expired);
    let gone: Vec<Idle<C>> = idle.drain(..expired).collect();
    let fresh = idle.pop().map(|c| c.conn);
    drop(idle);
    drop(gone);
    fresh
}

/// A pool's lock (an idle list, the HTTP/2 connections); a panic elsewhere leaves
/// what it guards consistent.
fn lock<T>(list: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    list.lock().unwrap_or_else(|p| p.into_inner())
}

fn release_idle<C>(idle: &Mutex<Vec<Idle<C>>>, conn: C) {
    let mut idle = lock(idle);
    if idle.len() < MAX_IDLE_PER_TARGET {
        // Read under the lock, so that the list stays in release order.
        let since = Instant::now();
        idle.push(Idle { conn, since });
    }
}

impl Pool {
    fn take_http1(&self, max_idle: Duration) -> Option<http1::SendRequest<RequestBody>> {
        take_idle(&self.http1, max_idle)
    }

    fn take_lean(&self, max_idle: Duration) -> Option<h1::Conn> {
        take_idle(&self.lean, max_idle)
    }

    fn release_lean(&self, conn: h1::Conn) {
        release_idle(&self.lean, conn);
    }

    /// Closes the idle connections that can no longer serve a request, or need not:
    /// HTTP/1.1 ones idle for `max_idle` or longer or closed by the target (a lean
    /// connection that read an EOF or stray bytes; a hyper connection whose task
    /// ended), and HTTP/2 ones that took no stream and had none open for `max_idle`,
    /// as seen from one sweep to the next. Without this, a target that closes idle
    /// connections leaves them in `CLOSE_WAIT` here until a request happens to take
    /// them, which a quiet target may never see, and an idle HTTP/2 connection stays
    /// open for good (its pings keep it alive).
    pub fn sweep(&self, max_idle: Duration) {
        let now = Instant::now();
        let expired = |since: Instant| now.saturating_duration_since(since) >= max_idle;
        // Collected under the lock, closed outside it.
        let lean: Vec<Idle<h1::Conn>> = lock(&self.lean)
            .extract_if(.., |c| expired(c.since) || !c.conn.is_usable())
            .collect();
        let http1: Vec<Idle<http1::SendRequest<RequestBody>>> = lock(&self.http1)
            .extract_if(.., |c| expired(c.since) || c.conn.is_closed())
            .collect();
        let http2: Vec<Http2Conn> = lock(&self.http2)
            .conns
            .extract_if(.., |c| {
                if c.taken != c.quiet.0 || c.state.streams.load(Ordering::Relaxed) > 0 {
                    c.quiet = (c.taken, now);
                    return false;
                }
                expired(c.quiet.1)
            })
            .collect();
        drop((lean, http1, http2));
    }

    /// Idle HTTP/1.1 connections.
    pub fn idle(&self) -> usize {
        lock(&self.http1).len() + lock(&self.lean).len()
    }

    /// A stream on the first open HTTP/2 connection with room for one more under the
    /// target's `SETTINGS_MAX_CONCURRENT_STREAMS`. Connections left with no streams
    /// while this one has room are let go: they close once their last request ends.
    /// When every connection is full (or there is none), a wait for the connection
    /// being opened if it will have room, else the task of opening one.
    fn take_http2(&self) -> Taken<'_> {
        let mut pool = lock(&self.http2);
        pool.conns
            .retain(|c| !c.sender.is_closed() && !c.state.is_going_away());
        if let Some(chosen) = pool.conns.iter().position(Http2Conn::has_room) {
            let stream = pool.conns[chosen].stream();
            // Streams are only taken under this lock, so a connection seen empty here
            // stays empty until it is let go.
            pool.conns
                .retain(|c| c.state.streams.load(Ordering::Relaxed) > 0);
            return Taken::Stream(stream);
        }
        if let Some(opening) = pool.opening.as_mut() {
            // The opener takes one of the new connection's first streams.
            if opening.waiting < INITIAL_MAX_STREAMS - 1 {
                opening.waiting += 1;
                return Taken::Wait(opening.done.clone());
            }
        }
        // None is being opened, or the one being opened is spoken for: the next
        // requests wait for this one.
        let (wake, done) = watch::channel(None);
        pool.opening = Some(Opening {
            done: done.clone(),
            waiting: 0,
        });
        Taken::Open(Opener {
            pool: self,
            done,
            wake,
        })
    }

    /// Adds a newly opened HTTP/2 connection, with a stream on it for the request
    /// that opened it.
    fn add_http2(&self, mut conn: Http2Conn) -> (http2::SendRequest<Http2Body>, Stream) {
        let stream = conn.stream();
        lock(&self.http2).conns.push(conn);
        stream
    }
}

/// A target's HTTP/2 connections.
#[derive(Debug, Default)]
struct Http2Pool {
    /// Open connections, in the order they were opened.
    conns: Vec<Http2Conn>,
    /// The connection being opened, which requests finding no room wait for.
    opening: Option<Opening>,
}

/// A connection being opened: its `done` closes when the connection is in the pool or
/// opening it was given up, after holding the error when opening it failed.
#[derive(Debug)]
struct Opening {
    done: watch::Receiver<Failed>,
    /// Requests waiting for it.
    waiting: usize,
}

/// Why the connection being opened is not: set when opening it failed.
type Failed = Option<Arc<Error>>;

/// What a request finds in a target's HTTP/2 pool.
enum Taken<'a> {
    /// A stream on an open connection.
    Stream((http2::SendRequest<Http2Body>, Stream)),
    /// Nothing yet: wait until this closes, then fail as it failed, or look again.
    Wait(watch::Receiver<Failed>),
    /// The task of opening a connection.
    Open(Opener<'a>),
}

/// Held by the request opening an HTTP/2 connection; dropped (the connection added to
/// the pool, or opening it failed, or the request went away), it wakes the requests
/// waiting for it. They fail with the opener's error if it failed (one connect timeout
/// for them all, not one after another), else look again.
struct Opener<'a> {
    pool: &'a Pool,
    done: watch::Receiver<Failed>,
    wake: watch::Sender<Failed>,
}

impl Opener<'_> {
    /// Opening the connection failed with `e`: the waiting requests fail so too.
    fn failed(self, e: Error) -> Error {
        let e = Arc::new(e);
        self.wake.send_replace(Some(Arc::clone(&e)));
        Error::Shared(e)
    }
}

impl Drop for Opener<'_> {
    fn drop(&mut self) {
        let mut pool = lock(&self.pool.http2);
        if pool
            .opening
            .as_ref()
            .is_some_and(|o| o.done.same_channel(&self.done))
        {
            pool.opening = None;
        }
        // `wake` drops after this, waking the waiters.
    }
}

/// An HTTP/2 connection to a target, with its streams counted against the limit the
/// target sets.
#[derive(Debug)]
struct Http2Conn {
    sender: http2::SendRequest<Http2Body>,
    state: Arc<ConnState>,
    /// Streams taken on it so far (counted under the pool's lock).
    taken: u64,
    /// `taken` as the idle sweep last saw it, and since when it has been so with no
    /// stream open.
    quiet: (u64, Instant),
}

impl Http2Conn {
    fn has_room(&self) -> bool {
        let state = &self.state;
        state.streams.load(Ordering::Relaxed) < state.max_streams.load(Ordering::Relaxed)
            && !state.is_going_away()
    }

    fn stream(&mut self) -> (http2::SendRequest<Http2Body>, Stream) {
        self.taken += 1;
        self.state.streams.fetch_add(1, Ordering::Relaxed);
        (self.sender.clone(), Stream(Arc::clone(&self.state)))
    }
}

/// A request counted against its HTTP/2 connection's streams until dropped.
#[derive(Debug)]
struct Stream(Arc<ConnState>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A target's response body: from hyper's client, or from the lean HTTP/1.1 path.
#[derive(Debug)]
pub enum ResponseBody {
    /// hyper's.
    Hyper(Incoming),
    /// The lean path's.
    Lean(h1::Body),
}

impl ResponseBody {
    /// The response's fields as received ([`Heads::Raw`] on the lean path).
    pub fn raw_head(&self) -> Option<&RawHead> {
        match self {
            ResponseBody::Lean(b) => b.raw_head(),
            ResponseBody::Hyper(_) => None,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::Lean(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Hyper(b) => b.is_end_stream(),
            ResponseBody::Lean(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResponseBody::Hyper(b) => b.size_hint(),
            ResponseBody::Lean(b) => b.size_hint(),
        }
    }
}

/// What a response holds of its target connection until its body has been read to
/// its end: an HTTP/1.1 connection, to hand back to its target's pool (dropped instead,
/// as when the body broke off, the connection closes), or a stream of a shared HTTP/2
/// connection, counted until then.
#[derive(Debug)]
pub struct Reusable(Held);

#[derive(Debug)]
enum Held {
    Http1 {
        sender: http1::SendRequest<RequestBody>,
        target: Arc<Target>,
    },
    /// Held for its count, which it gives back when dropped.
    Http2 { _stream: Stream },
}

impl Reusable {
    /// Returns the connection to the pool, or frees the stream.
    pub fn release(self) {
        let Held::Http1 { sender, target } = self.0 else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        release_idle(&target.pool.http1, sender);
    }
}

impl Client {
    /// A client with `group`'s protocol version, timeouts and TLS settings.
    pub fn new(group: &config::TargetGroup) -> Self {
        Self {
            version: group.protocol_version,
            connect_timeout: group.connect_timeout,
            idle_timeout: group.idle_timeout,
            protocol: group.protocol,
            tls_config: group.tls.clone(),
            tls: tls::Settings::of(group),
        }
    }

    /// Whether this client already has `group`'s connection settings.
    pub fn serves(&self, group: &config::TargetGroup) -> bool {
        self.version == group.protocol_version
            && self.connect_timeout == group.connect_timeout
            && self.idle_timeout == group.idle_timeout
            && self.protocol == group.protocol
            && self.tls_config == group.tls
    }

    /// The HTTP version requests to targets must carry.
    pub fn version(&self) -> http::Version {
        if self.version.is_http2() {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        }
    }

    /// The `:scheme` of HTTP/2 requests: `https` over TLS, else `http`.
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// Sends `req` to `target` on a pooled connection (or a new one). HTTP/1.1 requests
    /// need an origin-form URI, HTTP/2 ones an absolute URI. For HTTP/1.1 on hyper's
    /// client the connection comes back as a [`Reusable`], to release when the
    /// response body is done; the lean path's body releases its own. `upgrade`: the
    /// request asks for a protocol upgrade (hyper's client carries those). `heads`:
    /// how the lean path hands over the response's fields (hyper's always fill the
    /// `HeaderMap`).
    pub async fn send(
        &self,
        target: &Arc<Target>,
        req: Request<RequestBody>,
        upgrade: bool,
        heads: Heads,
    ) -> Result<(Response<ResponseBody>, Option<Reusable>), Error> {
        use http_body::Body as _;
        let hyper = |(resp, reuse): (Response<Incoming>, Option<Reusable>)| {
            (resp.map(ResponseBody::Hyper), reuse)
        };
        match self.version {
            ProtocolVersion::Http1
                if self.tls.is_none() && !upgrade && req.body().is_end_stream() =>
            {
                self.send_lean(target, req, heads).await.map(|r| (r, None))
            }
            ProtocolVersion::Http1 => self.send_http1(target, req, upgrade).await.map(hyper),
            ProtocolVersion::Http2 | ProtocolVersion::Grpc => {
                self.send_http2(target, req).await.map(hyper)
            }
        }
    }

    /// The lean path (no request body, clear text): a pooled connection if one is
    /// still open, else a new one. A pooled connection that closes before answering
    /// (the target's keep-alive timeout raced the request) is replaced, for methods
    /// that may be repeated.
    async fn send_lean(
        &self,
        target: &Arc<Target>,
        req: Request<RequestBody>,
        heads: Heads,
    ) -> Result<Response<ResponseBody>, Error> {
        let repeatable = h1::retryable(req.method());
        while let Some(conn) = target.pool.take_lean(self.idle_timeout) {
            if !conn.is_usable() {
                continue;
            }
            match h1::send(conn, &req, target, heads).await {
                Ok(resp) => return Ok(resp.map(ResponseBody::Lean)),
                Err(h1::Error::Closed) if repeatable => continue,
                Err(e) => return Err(Error::Lean(e)),
            }
        }
        let Conn::Plain(stream) = self.connect(target.addr).await? else {
            return Err(Error::Tls(io::Error::other(
                "the lean path is for clear-text targets",
            )));
        };
        h1::send(h1::Conn::new(stream), &req, target, heads)
            .await
            .map(|resp| resp.map(ResponseBody::Lean))
            .map_err(Error::Lean)
    }

    /// hyper's HTTP/1.1 client, for requests with a body, upgrades and TLS targets.
    /// Responses are held to the lean path's rules ([`h1::check_framing`]).
    async fn send_http1(
        &self,
        target: &Arc<Target>,
        mut req: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, Option<Reusable>), Error> {
        let head_request = req.method() == http::Method::HEAD;
        // Not a wrapper future around the sending: each level of nesting makes every
        // request's future larger, and it is moved on every request.
        let checked = |resp: Response<Incoming>, sender| {
            let status = resp.status();
            let refused = if status == http::StatusCode::SWITCHING_PROTOCOLS {
                (!upgrade).then_some(h1::Error::Invalid(
                    "101 to a request that asked for no upgrade",
                ))
            } else {
                h1::check_framing(status, head_request, resp.headers()).err()
            };
            match refused {
                // The connection goes with `sender`: its response was not read.
                Some(e) => Err(Error::Ambiguous(e)),
                None => Ok((
                    resp,
                    Some(Reusable(Held::Http1 {
                        sender,
                        target: Arc::clone(target),
                    })),
                )),
            }
        };
        while let Some(mut sender) = target.pool.take_http1(self.idle_timeout) {
            // A connection the target closed while idle fails here, before the request
            // is handed over; the request then goes out on the next one.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return checked(resp, sender),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(Error::Request(e.into_error())),
                },
            }
        }
        let mut sender = Box::pin(self.open_http1(target)).await?;
        let resp = sender.send_request(req).await.map_err(Error::Request)?;
        checked(resp, sender)
    }

    /// HTTP/2 requests share a target's connections, each carrying as many as the
    /// target's `SETTINGS_MAX_CONCURRENT_STREAMS` allows; another connection opens when
    /// all are full, rather than requests waiting for a stream (long-lived gRPC streams
    /// from many clients would otherwise wait for good).
    ///
    /// A target closing a connection gracefully (a GOAWAY: nginx after
    /// `keepalive_requests`, a gRPC server's maximum connection age, a restart) leaves
    /// requests unprocessed, and they go out again on another connection, as HTTP/2
    /// clients do (RFC 9113 §8.7), up to [`HTTP2_ATTEMPTS`] times in all:
    /// - requests hyper had not started: it hands them back untouched;
    /// - requests the target refused, or whose streams were beyond the last its GOAWAY
    ///   would process, whatever their method;
    /// - requests of a method that may be repeated that failed otherwise on a
    ///   connection after its GOAWAY: h2 may have opened their streams after the
    ///   GOAWAY, which the target then ignored until it closed.
    ///
    /// A copy of the head is kept for that, and the body's first 64 KiB until the
    /// target answers (references to the received buffers; [`Replay`]). A request
    /// whose body outgrew that before the target answered is not sent again.
    async fn send_http2(
        &self,
        target: &Arc<Target>,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Reusable>), Error> {
        let (head, body) = req.into_parts();
        let (replay, mut body) = Replay::new(body);
        let mut attempt = 1;
        loop {
            let last = attempt == HTTP2_ATTEMPTS;
            attempt += 1;
            let (mut sender, stream) = self.http2_stream(target).await?;
            if let Err(e) = sender.ready().await {
                if last {
                    return Err(Error::Request(e));
                }
                continue;
            }
            let e = match sender
                .try_send_request(Request::from_parts(head.clone(), body))
                .await
            {
                Ok(resp) => {
                    replay.seal();
                    return Ok((resp, Some(Reusable(Held::Http2 { _stream: stream }))));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !last => {
                        body = unsent.into_body();
                        continue;
                    }
                    _ => e.into_error(),
                },
            };
            let again = !last
                && (goaway::unprocessed(&e)
                    || (stream.0.is_going_away() && h1::retryable(&head.method)));
            match replay.again().filter(|_| again) {
                Some(next) => body = next,
                None => return Err(Error::Request(e)),
            }
            tracing::debug!(error = %e, target = %target.addr, "sending again a request the target did not process");
        }
    }

    /// A stream on one of the target's HTTP/2 connections, or on a new one when all
    /// are full or there is none. Requests that find none with room while one is being
    /// opened wait for it (as many as it will carry) rather than each opening their
    /// own: a burst to a cold target opens one connection, not one per request.
    async fn http2_stream(
        &self,
        target: &Arc<Target>,
    ) -> Result<(http2::SendRequest<Http2Body>, Stream), Error> {
        loop {
            match target.pool.take_http2() {
                Taken::Stream(stream) => return Ok(stream),
                Taken::Wait(mut done) => {
                    // Resolves once the opener is gone; an error then is the channel's.
                    while done.changed().await.is_ok() {}
                    if let Some(e) = done.borrow().as_ref() {
                        return Err(Error::Shared(Arc::clone(e)));
                    }
                }
                Taken::Open(opener) => match Box::pin(self.open_http2(target)).await {
                    Ok(conn) => {
                        let stream = target.pool.add_http2(conn);
                        drop(opener);
                        return Ok(stream);
                    }
                    Err(e) => return Err(opener.failed(e)),
                },
            }
        }
    }

    // Opening a connection is boxed by the callers: its handshake state is large, and
    // every request future would otherwise carry (and move) it, pooled or not.

    /// A new HTTP/1.1 connection to `target`, driven by its own task.
    async fn open_http1(&self, target: &Target) -> Result<http1::SendRequest<RequestBody>, Error> {
        let io = TokioIo::new(self.connect(target.addr).await?);
        // The lean path's limit on a response's fields (hyper's own is 100).
        let (sender, conn) = http1::Builder::new()
            .max_headers(h1::MAX_HEADERS)
            .handshake(io)
            .await
            .map_err(Error::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "target connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A new HTTP/2 connection to `target`, driven by its own task, which also keeps
    /// the connection's stream limit up to date as the target's `SETTINGS` arrive.
    async fn open_http2(&self, target: &Target) -> Result<Http2Conn, Error> {
        let state = Arc::new(ConnState::new(INITIAL_MAX_STREAMS));
        let io = Watched::new(self.connect(target.addr).await?, Arc::clone(&state));
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
            .handshake(TokioIo::new(io))
            .await
            .map_err(Error::Handshake)?;
        state
            .max_streams
            .store(conn.current_max_send_streams(), Ordering::Relaxed);
        let seen = Arc::clone(&state);
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = std::future::poll_fn(|cx| {
                let polled = std::future::Future::poll(conn.as_mut(), cx);
                seen.max_streams
                    .store(conn.current_max_send_streams(), Ordering::Relaxed);
                polled
            })
            .await;
            if let Err(e) = ended {
                tracing::debug!(error = %e, "target connection ended with an error");
            }
        });
        Ok(Http2Conn {
            sender,
            state,
            taken: 0,
            quiet: (0, Instant::now()),
        })
    }

    /// Opens a connection to `addr`, TLS for `https` and `tls` groups; the TCP connect
    /// and the TLS handshake together get the group's connect timeout.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Conn, Error> {
        let connect = async {
            let stream = TcpStream::connect(addr).await.map_err(Error::Connect)?;
            crate::listener::tune(&stream);
            match &self.tls {
                None => Ok(Conn::Plain(stream)),
                Some(tls) => tls.handshake(addr, stream).await.map_err(Error::Tls),
            }
        };
        // Boxed: a TLS handshake's state is kilobytes, and every request future that
        // may connect would carry (and move) it even when a pooled connection serves.
        tokio::time::timeout(self.connect_timeout, Box::pin(connect))
            .await
            .map_err(|_| Error::ConnectTimeout)?
    }
}
