//! Idle tracking for client connections: a stream wrapper that flags when bytes move,
//! plus a count of requests in flight on the connection. A connection is idle when
//! nothing moved for the idle timeout and no request is waiting on a target (that wait
//! is bounded by the target group's response timeout instead).
//!
//! Reads and writes only set a flag: reading the clock on every one of them cost about
//! 2% of CPU under load. The watchdog looks every half timeout and declares the
//! connection idle after two quiet looks, so it closes between 1 and 1.5 timeouts after
//! the last byte.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Metrics;

/// Shared between the stream wrapper, the request service and the idle watchdog.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Set on every read or write; cleared by the watchdog.
    moved: AtomicBool,
    pub(crate) requests: AtomicUsize,
    /// Request bodies not yet read to their end: bytes arriving belong to them.
    bodies: AtomicUsize,
    /// Response bodies still being sent: a request pipelined behind one waits its turn
    /// with its head unread, and that wait is not the client's doing.
    responses: AtomicUsize,
    /// Bytes were read since a request last started or ended, or a body ended: a
    /// request head may be arriving (HTTP/1 only).
    head: AtomicBool,
    /// The connection speaks HTTP/2 (no request heads to time).
    http2: AtomicBool,
    /// The listener's processed-bytes counter, when metrics are on.
    bytes: Option<(Arc<Metrics>, usize)>,
}

impl Activity {
    /// Activity of a connection of listener `index`, counting bytes into `metrics`.
    pub(crate) fn new(metrics: Option<(Arc<Metrics>, usize)>) -> Arc<Self> {
        Arc::new(Self {
            moved: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            bodies: AtomicUsize::new(0),
            responses: AtomicUsize::new(0),
            head: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            bytes: metrics,
        })
    }

    pub(crate) fn touch(&self, bytes: usize) {
        // A plain store, not a read-modify-write: it is on every read and write.
        self.moved.store(true, Ordering::Relaxed);
        if let Some((metrics, index)) = &self.bytes {
            let counter = &metrics.listener(*index).processed_bytes;
            counter.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// Counts a request in flight from now (its head has arrived whole); its body
    /// comes back wrapped, to count as open until read to its end.
    pub(crate) fn request_started(
        self: &Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Request<RequestBody> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head.store(false, Ordering::Relaxed);
        if req.version() == hyper::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        req.map(|body| {
            let open = (!http_body::Body::is_end_stream(&body)).then(|| {
                self.bodies.fetch_add(1, Ordering::Relaxed);
                Arc::clone(self)
            });
            RequestBody {
                inner: Some(body),
                open,
            }
        })
    }

    /// Counts a request without a body in flight from now (its head has arrived whole).
    pub(crate) fn request_started_without_body(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head.store(false, Ordering::Relaxed);
    }

    /// Counts the request as answered (its response may still be streaming).
    pub(crate) fn request_ended(&self) {
        self.requests.fetch_sub(1, Ordering::Relaxed);
        self.head.store(false, Ordering::Relaxed);
    }

    /// Counts a response body as being sent until the returned guard drops.
    pub(crate) fn response_streaming(self: &Arc<Self>) -> OpenResponse {
        self.responses.fetch_add(1, Ordering::Relaxed);
        OpenResponse(Arc::clone(self))
    }

    /// Whether a request head has been arriving with no request in flight, no request
    /// body still coming and no response still being sent.
    fn head_pending(&self) -> bool {
        self.head.load(Ordering::Relaxed)
            && self.requests.load(Ordering::Relaxed) == 0
            && self.bodies.load(Ordering::Relaxed) == 0
            && self.responses.load(Ordering::Relaxed) == 0
            && !self.http2.load(Ordering::Relaxed)
    }

    /// Whether anything happened since the last look (and forget it).
    fn busy_since_last_look(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed) || self.requests.load(Ordering::Relaxed) > 0
    }
}

/// A response body being sent on an HTTP/1 connection (see [`Activity::response_streaming`]).
#[derive(Debug)]
pub struct OpenResponse(Arc<Activity>);

impl Drop for OpenResponse {
    fn drop(&mut self) {
        self.0.responses.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records activity on every successful read or write.
#[derive(Debug)]
pub(crate) struct IdleStream<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> IdleStream<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = buf.filled().len() - before;
            this.activity.touch(n);
            if n > 0 {
                this.activity.head.store(true, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.activity.touch(n);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            this.activity.touch(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A client request's body. Until it has been read to its end (or dropped), bytes
/// arriving on the connection are taken as body, not as the next request's head.
#[derive(Debug)]
pub struct RequestBody {
    /// `None`: a request that has no body (read by the lean HTTP/1 server).
    inner: Option<hyper::body::Incoming>,
    open: Option<Arc<Activity>>,
}

impl RequestBody {
    /// The body of a request that has none.
    pub(crate) fn empty() -> Self {
        Self {
            inner: None,
            open: None,
        }
    }

    fn close(&mut self) {
        if let Some(activity) = self.open.take() {
            activity.bodies.fetch_sub(1, Ordering::Relaxed);
            activity.head.store(false, Ordering::Relaxed);
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.close();
    }
}

impl http_body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.close();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Longest time a request head may take to arrive: hyper's and nginx's default
/// header timeout (30 s), or the idle timeout when shorter. Against clients that
/// trickle a head to hold connections open (slowloris).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// For HTTP connections: resolves once the connection has been idle for `timeout`, or
/// once an HTTP/1 request head has been arriving for `min(timeout, HEADER_TIMEOUT)`
/// without completing (each to 1.5 × its timeout). Timing heads with the flags the
/// stream sets anyway spares hyper's timer per request (about 5% of CPU).
pub(crate) async fn watch_http(activity: &Activity, timeout: Duration) {
    watch(activity, timeout, true).await;
}

/// Resolves once the connection has been idle for `timeout` (to 1.5 × `timeout`).
pub(crate) async fn watch_idle(activity: &Activity, timeout: Duration) {
    watch(activity, timeout, false).await;
}

/// The watchdog of both: it looks every half of the shorter timeout and declares a
/// condition after it held for a whole timeout's worth of looks.
async fn watch(activity: &Activity, timeout: Duration, heads: bool) {
    let header_timeout = if heads {
        timeout.min(HEADER_TIMEOUT)
    } else {
        timeout
    };
    let period = header_timeout / 2;
    // Quiet looks that make the idle timeout: two when both timeouts are equal.
    let idle_looks = if header_timeout == timeout {
        2
    } else {
        (timeout.as_secs_f64() / period.as_secs_f64()).ceil() as u32
    };
    let (mut quiet, mut pending) = (0, 0);
    loop {
        tokio::time::sleep(period).await;
        if activity.busy_since_last_look() {
            quiet = 0;
        } else {
            quiet += 1;
            if quiet >= idle_looks {
                return;
            }
        }
        if heads && activity.head_pending() {
            pending += 1;
            if pending >= 2 {
                tracing::debug!("closing a connection whose request head did not arrive in time");
                return;
            }
        } else {
            pending = 0;
        }
    }
}
