//! A lean HTTP/1.1 server for the common request: a head without a body (no
//! `Content-Length`, no `Transfer-Encoding`), no upgrade, no `Expect`, no `TE`. The head
//! is parsed with httparse straight from the connection's buffer, the request handed to
//! [`Proxy::handle`], and the response head written together with the first body chunk.
//! No dispatcher state machine, no per-connection channel: the connection's own task
//! does it all.
//!
//! Anything else — a request with a body, an upgrade, HTTP/1.0, an HTTP/2 preface, a
//! head that does not parse or exceeds the buffer — hands the connection to hyper with
//! the bytes read so far ([`Prefixed`]), and hyper serves it from that request on:
//! its parser gives the same 400 / 414 / 431 answers as before, and the desync
//! classification, limits and routing are the same code on both paths.
//!
//! A target's response fields are written as the target sent them, hop-by-hop ones
//! left out ([`Heads::Raw`]), with no `HeaderMap` in between; what the proxy adds and
//! its own responses come from the `HeaderMap`, in lower case. Framing follows what
//! hyper wrote: the target's `Content-Length` kept, else one from the body's exact
//! size, else chunked; no body after HEAD, 1xx, 204 and 304; a `Date` when the
//! response has none; `Connection: close` when the client asked for it or the listener
//! is draining, and then the connection ends (over TLS, the answer's last bytes and the
//! `close_notify` in one write). While a request is in flight the connection is still
//! read, so a client that goes away cancels its request.

use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use super::idle::{Activity, RequestBody};
use super::mtls::ClientCertHeaders;
use crate::proxy::headers::{has_token, push_decimal};
use crate::proxy::{Body, Forwarded, Proxy};
use crate::upstream::{Heads, RawHead};

/// Header slots parsed on the stack; a head with more goes to hyper, which applies the
/// listener's own limit.
const SLOTS: usize = 128;
/// Spare room the read buffer keeps before each read.
const READ_SPARE: usize = 4096;
/// Read size, as hyper's initial buffer; a head still incomplete after a read grows
/// the buffer by this much.
const READ_INITIAL: usize = 8192;
/// The read buffer a request gets when its first bytes arrive, if they fit (most heads
/// do): the allocator serves this size from its fastest path, and the buffer is given
/// back when the connection next waits.
const READ_FIRST: usize = 1024;
/// Initial size of the buffer a response head is written into.
const OUT_INITIAL: usize = 512;
/// Body chunks up to this size are copied behind the head and written in one call.
const COALESCE: usize = 4096;

/// What a connection needs from its listener.
pub(crate) struct Lean<'a> {
    pub proxy: &'a Proxy,
    pub activity: &'a Arc<Activity>,
    pub client: &'a Forwarded,
    pub client_cert: Option<&'a ClientCertHeaders>,
    /// hyper's buffer limit for the listener: a head that does not fit goes to hyper,
    /// which answers 431.
    pub max_head: usize,
    /// Fires when the listener drains: the connection ends after its current response.
    pub drain: &'a Arc<Drain>,
    /// Elapses at the listener's `client_keep_alive`: the connection ends after the
    /// response in progress then (registered with the timer, so that `is_elapsed`
    /// tells; not polled on every request).
    pub aged: Pin<&'a mut tokio::time::Sleep>,
}

/// A listener's drain signal for its lean connections. Checking it is one atomic load;
/// a connection waiting for its next request registers its task once, not on every
/// poll (a `CancellationToken` or `Notified` takes a lock each time they are polled).
#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    notify: Arc<Notify>,
}

impl Drain {
    /// Tells every connection to end after its current response.
    pub(crate) fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Resolves once draining starts; meant to be polled by one task only.
    pub(crate) fn signal(self: &Arc<Self>) -> DrainSignal {
        DrainSignal {
            drain: Arc::clone(self),
            notified: None,
        }
    }
}

pub(crate) struct DrainSignal {
    drain: Arc<Drain>,
    /// Registered with the task's waker on the first poll. A task's waker stays valid
    /// for as long as the task lives, so later polls only load the flag.
    notified: Option<Pin<Box<OwnedNotified>>>,
}

impl Future for DrainSignal {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.drain.is_draining() {
            return Poll::Ready(());
        }
        if this.notified.is_none() {
            let mut notified = Box::pin(Arc::clone(&this.drain.notify).notified_owned());
            // Enabled before the flag is looked at again: a `start` in between is seen
            // by one or the other.
            notified.as_mut().enable();
            if this.drain.is_draining() || notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            this.notified = Some(notified);
        }
        Poll::Pending
    }
}

/// A client connection as the lean server writes to it.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin {
    /// Takes the start of `bytes`, the connection's last, to go out with what closes it
    /// on the next `shutdown`; returns how many it took (the caller writes the rest,
    /// then shuts down). A TLS stream encrypts them into records ahead of its
    /// `close_notify`, so the end of the answer and the alert leave in one write and
    /// one segment, with the FIN right behind.
    fn take_last(&mut self, bytes: &[u8]) -> usize {
        let _ = bytes;
        0
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientStream for super::idle::IdleStream<S> {}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientStream for tokio_rustls::server::TlsStream<S> {
    fn take_last(&mut self, bytes: &[u8]) -> usize {
        // Only into an empty send buffer: what rustls holds back would go out after
        // these bytes otherwise. rustls takes what fits its buffer limit.
        let (_, tls) = self.get_mut();
        if tls.wants_write() {
            return 0;
        }
        io::Write::write(&mut tls.writer(), bytes).unwrap_or(0)
    }
}

/// Serves requests on `io` until the connection ends (`None`) or a request needs
/// hyper: then the stream comes back with the bytes already read in front.
pub(crate) async fn serve<S>(mut io: S, lean: Lean<'_>) -> Option<Prefixed<S>>
where
    S: ClientStream,
{
    // Allocated when a request's first bytes arrive (see `read_head`).
    let mut buf = BytesMut::new();
    let mut out = Vec::with_capacity(OUT_INITIAL);
    let mut drained = lean.drain.signal();
    loop {
        let parsed = loop {
            if !buf.is_empty() {
                match parse(&mut buf, lean.max_head) {
                    Parse::Request(req) => break req,
                    Parse::Partial => {}
                    Parse::Hyper => return Some(Prefixed::new(buf.freeze(), io)),
                }
            }
            let read = tokio::select! {
                biased;
                read = read_head(&mut io, &mut buf, &mut out) => read,
                () = &mut drained => return None,
            };
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        // Boxed: an answer's state (the request in flight, the target's response) is
        // kilobytes, and in the connection's task it would stay allocated for as long as
        // the connection is open, idle or not. One allocation per request instead.
        if !Box::pin(answer(&mut io, &mut buf, &mut out, &lean, parsed)).await {
            return None;
        }
    }
}

/// Forwards one request, reading the connection meanwhile, and writes the answer;
/// `false` when the connection is to end.
async fn answer<S>(
    io: &mut S,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    lean: &Lean<'_>,
    parsed: Parsed,
) -> bool
where
    S: ClientStream,
{
    let Parsed {
        mut request,
        close: client_close,
    } = parsed;
    if let Some(client_cert) = lean.client_cert {
        client_cert.apply(request.headers_mut());
    }
    let head_request = request.method() == Method::HEAD;
    lean.activity.request_started_without_body();
    // While the request is in flight the connection is still read, as hyper does:
    // a client that closes (or resets) cancels its request, and bytes arriving
    // are the next request's, kept in the buffer.
    let handled = lean.proxy.handle(lean.client, request, Heads::Raw);
    tokio::pin!(handled);
    let mut resp = loop {
        if buf.capacity() == buf.len() {
            // Any room will do: this read only looks out for the client going away
            // and keeps what it pipelines.
            buf.reserve(READ_FIRST);
        }
        tokio::select! {
            biased;
            resp = &mut handled => break resp,
            read = io.read_buf(buf), if buf.len() < lean.max_head => {
                if !matches!(read, Ok(n) if n > 0) {
                    lean.activity.request_ended();
                    tracing::debug!(client = %lean.client.addr, "client closed the connection before the answer");
                    return false;
                }
            }
        }
    };
    lean.activity.request_ended();
    if let Body::Target(body, tail) = resp.body_mut() {
        if !body.is_end_stream() {
            tail.open = Some(lean.activity.response_streaming());
        }
    }
    let close = client_close || lean.drain.is_draining() || lean.aged.is_elapsed();
    match write_response(io, out, resp, head_request, close).await {
        Ok(keep) => keep,
        Err(e) => {
            tracing::debug!(client = %lean.client.addr, error = %e, "client connection ended while answering");
            false
        }
    }
}

/// Reads more of a request head into `buf`.
///
/// With nothing buffered (between requests), the read goes to the stack, and only the
/// bytes that arrive are copied into `buf` (allocated then if it has been given back).
/// If the connection has to wait instead, it first gives back its read buffer and the
/// part of `out` beyond its initial size: an idle keep-alive connection then holds no
/// buffers while it waits (nor do nginx's).
async fn read_head<S>(io: &mut S, buf: &mut BytesMut, out: &mut Vec<u8>) -> io::Result<usize>
where
    S: AsyncRead + Unpin,
{
    if !buf.is_empty() {
        make_room(buf);
        return io.read_buf(buf).await;
    }
    std::future::poll_fn(|cx| {
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_INITIAL];
        let mut read = ReadBuf::uninit(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let bytes = read.filled();
                if buf.capacity() < bytes.len() {
                    // Given back (or too small): a buffer for this request.
                    *buf = BytesMut::with_capacity(bytes.len().max(READ_FIRST));
                }
                buf.extend_from_slice(bytes);
                Poll::Ready(Ok(bytes.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if buf.capacity() > 0 {
                    *buf = BytesMut::new();
                }
                if out.capacity() > OUT_INITIAL {
                    *out = Vec::with_capacity(OUT_INITIAL);
                }
                Poll::Pending
            }
        }
    })
    .await
}

/// Keeps room in the read buffer for the next read (a read into a full buffer would
/// return 0 bytes, which reads as the end of the connection).
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_SPARE {
        buf.reserve(READ_INITIAL);
    }
}

struct Parsed {
    request: Request<RequestBody>,
    /// The client asked to close the connection after this request.
    close: bool,
}

// Returned by value once per request: boxing the request would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Parse {
    /// A whole head of a request this path serves; its bytes are consumed.
    Request(Parsed),
    /// Not a whole head yet.
    Partial,
    /// hyper's to serve (nothing consumed).
    Hyper,
}

fn parse(buf: &mut BytesMut, max_head: usize) -> Parse {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; SLOTS];
    let mut head = httparse::Request::new(&mut []);
    let len = match head.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parse::Partial,
        // Too large, malformed, or too many headers: hyper answers it.
        Ok(httparse::Status::Partial) | Err(_) => return Parse::Hyper,
    };
    if head.version != Some(1) {
        return Parse::Hyper; // HTTP/1.0: its keep-alive rules are hyper's
    }
    let Some(method) = head
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Parse::Hyper;
    };
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let Some(target) = head.path.map(|p| span(p.as_bytes())) else {
        return Parse::Hyper;
    };
    let mut close = false;
    let mut spans: smallvec::SmallVec<[(Span, Span); 24]> =
        smallvec::SmallVec::with_capacity(head.headers.len());
    for h in head.headers.iter() {
        let name = h.name.as_bytes();
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        // By length first: most names are compared with none of these.
        match name.len() {
            2 if is(b"te") => return Parse::Hyper,
            6 if is(b"expect") => return Parse::Hyper,
            7 if is(b"upgrade") => return Parse::Hyper,
            14 if is(b"content-length") => return Parse::Hyper,
            17 if is(b"transfer-encoding") => return Parse::Hyper,
            10 if is(b"connection") => close |= has_token(h.value, "close"),
            _ => {}
        }
        spans.push((span(name), span(h.value)));
    }
    let bytes = buf.split_to(len).freeze();
    let slice = |(at, len): (usize, usize)| bytes.slice(at..at + len);
    // hyper answers what does not convert (400): it gets the head back.
    let give_back = |buf: &mut BytesMut| {
        let mut whole = BytesMut::from(&bytes[..]);
        whole.unsplit(std::mem::take(buf));
        *buf = whole;
        Parse::Hyper
    };
    let Ok(uri) = Uri::from_maybe_shared(slice(target)) else {
        return give_back(buf);
    };
    // Room for the forwarding headers the proxy adds, so the map does not grow.
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    for (name, value) in spans {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&bytes[name.0..name.0 + name.1]),
            HeaderValue::from_maybe_shared(slice(value)),
        ) else {
            return give_back(buf); // httparse checked both already
        };
        headers.append(name, value);
    }
    let mut request = Request::new(RequestBody::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parse::Request(Parsed { request, close })
}

/// Where a piece of the head lies in the buffer: offset and length.
type Span = (usize, usize);

/// Writes `resp`; `Ok(true)` when the connection stays open for the next request, else
/// the connection's sending side is shut down.
async fn write_response<S>(
    io: &mut S,
    out: &mut Vec<u8>,
    resp: Response<Body>,
    head_request: bool,
    mut close: bool,
) -> io::Result<bool>
where
    S: ClientStream,
{
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let headers = &parts.headers;
    close |= headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), "close"));
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A target's fields as received (hop-by-hop ones left out), then what the proxy
    // added; or all of them from the map.
    let raw = body.raw_head();
    if let Some(raw) = raw {
        raw.write_end_to_end(out);
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut chunked = false;
    let framed = raw.is_some_and(RawHead::has_content_length)
        || headers.contains_key(header::CONTENT_LENGTH)
        || status.is_informational()
        || status == StatusCode::NO_CONTENT;
    let dated = raw.is_some_and(RawHead::has_date) || headers.contains_key(header::DATE);
    if !framed {
        match body.size_hint().exact() {
            Some(len) if status != StatusCode::NOT_MODIFIED => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, len);
                out.extend_from_slice(b"\r\n");
            }
            Some(_) => {}
            None if bodiless => {}
            None => {
                chunked = true;
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
        }
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date::push_now(out);
        out.extend_from_slice(b"\r\n");
    }
    if close && !headers.contains_key(header::CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");

    if bodiless || body.is_end_stream() {
        return finish(io, out, close).await;
    }
    // The head goes out with the first chunk (and, if that is all, the chunked
    // terminator); then each chunk as it comes. Small pieces are gathered into `out`:
    // a buffer held across the writes would make this future kilobytes larger, and it
    // is moved on every request.
    let mut head_sent = false;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers: hyper drops them too unless asked for
            },
        };
        if data.is_empty() {
            continue;
        }
        let mut size = [0u8; 18];
        let size = if chunked {
            chunk_size(&mut size, data.len())
        } else {
            &[][..]
        };
        let crlf: &[u8] = if chunked { b"\r\n" } else { b"" };
        let last = body.is_end_stream();
        if head_sent {
            write_all(io, &mut [size, &data, crlf]).await?;
        } else if data.len() <= COALESCE || !io.is_write_vectored() {
            out.extend_from_slice(size);
            out.extend_from_slice(&data);
            out.extend_from_slice(crlf);
            if last {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                return finish(io, out, close).await;
            }
            io.write_all(out).await?;
        } else {
            write_all(io, &mut [out, size, &data, crlf]).await?;
        }
        head_sent = true;
        if last {
            break;
        }
    }
    if !head_sent {
        io.write_all(out).await?;
    }
    let terminator: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
    finish(io, terminator, close).await
}

/// Writes the answer's last bytes and flushes: `Ok(true)`, the connection stays open.
/// With `close`, the bytes go out with what closes the connection
/// ([`ClientStream::take_last`]) and its sending side is shut down: `Ok(false)`.
async fn finish<S: ClientStream>(io: &mut S, bytes: &[u8], close: bool) -> io::Result<bool> {
    if !close {
        io.write_all(bytes).await?;
        io.flush().await?;
        return Ok(true);
    }
    let taken = io.take_last(bytes);
    io.write_all(&bytes[taken..]).await?;
    io.shutdown().await?;
    Ok(false)
}

/// Writes every byte of `parts`: with one `writev` where the stream takes them,
/// else part by part.
async fn write_all<S>(io: &mut S, parts: &mut [&[u8]]) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if !io.is_write_vectored() {
        for part in parts.iter() {
            io.write_all(part).await?;
        }
        return Ok(());
    }
    let mut parts = &mut parts[..];
    loop {
        while parts.first().is_some_and(|p| p.is_empty()) {
            parts = &mut parts[1..];
        }
        if parts.is_empty() {
            return Ok(());
        }
        let slices: smallvec::SmallVec<[IoSlice<'_>; 4]> =
            parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut written = io.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while let Some(first) = parts.first_mut() {
            if written < first.len() {
                *first = &first[written..];
                break;
            }
            written -= first.len();
            parts = &mut parts[1..];
        }
    }
}

/// `{len:x}\r\n` into `buf`.
fn chunk_size(buf: &mut [u8; 18], len: usize) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = 16;
    let mut n = len;
    loop {
        i -= 1;
        buf[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[i..]
}

/// A stream that yields `prefix` before reading from `inner`: hyper gets the bytes the
/// lean path read but did not serve.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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

/// The `Date` header's value (IMF-fixdate), formatted once per second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    const LEN: usize = 29; // "Sun, 06 Nov 1994 08:49:37 GMT"

    thread_local! {
        static CACHED: RefCell<(u64, [u8; LEN])> = const { RefCell::new((u64::MAX, [0; LEN])) };
    }

    pub(super) fn push_now(out: &mut Vec<u8>) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        CACHED.with_borrow_mut(|(at, text)| {
            if *at != secs {
                *text = format(secs);
                *at = secs;
            }
            out.extend_from_slice(text);
        });
    }

    pub(super) fn format(secs: u64) -> [u8; LEN] {
        const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let days = secs / 86_400;
        let (year, month, day) = crate::access_log::civil_from_days(days);
        let of_day = secs % 86_400;
        let two = |n: u64| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
        let mut text = [0u8; LEN];
        text[..3].copy_from_slice(DAYS[(days % 7) as usize]);
        text[3..5].copy_from_slice(b", ");
        text[5..7].copy_from_slice(&two(day));
        text[7] = b' ';
        text[8..11].copy_from_slice(MONTHS[(month - 1) as usize % 12]);
        text[11] = b' ';
        text[12..14].copy_from_slice(&two(year / 100));
        text[14..16].copy_from_slice(&two(year));
        text[16] = b' ';
        text[17..19].copy_from_slice(&two(of_day / 3600));
        text[19] = b':';
        text[20..22].copy_from_slice(&two(of_day / 60 % 60));
        text[22] = b':';
        text[23..25].copy_from_slice(&two(of_day % 60));
        text[25..].copy_from_slice(b" GMT");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> (Parse, BytesMut) {
        let mut buf = BytesMut::from(raw.as_bytes());
        let p = parse(&mut buf, 64 * 1024);
        (p, buf)
    }

    #[test]
    fn a_bodyless_request_is_parsed_and_consumed() {
        let (p, rest) = parsed(
            "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Mixed-Case: V\r\nConnection: keep-alive, Close\r\n\r\nGET /next",
        );
        let Parse::Request(Parsed { request, close }) = p else {
            panic!("not parsed");
        };
        assert!(close);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["x-mixed-case"], "V");
        assert_eq!(request.headers()["host"], "x");
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn requests_hyper_must_serve_are_left_whole() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET /\u{1} HTTP/1.1\r\n\r\n",
            // httparse takes it, `Uri` does not: hyper answers 400.
            "GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let (p, rest) = parsed(raw);
            assert!(matches!(p, Parse::Hyper), "{raw:?}");
            assert_eq!(&rest[..], raw.as_bytes(), "{raw:?}");
        }
    }

    #[test]
    fn a_partial_head_waits_until_it_exceeds_the_buffer() {
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nHost: x\r\n").0,
            Parse::Partial
        ));
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
        assert!(matches!(parse(&mut buf, 16), Parse::Hyper));
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size(&mut buf, 0x1a2b), b"1a2b\r\n");
        assert_eq!(chunk_size(&mut buf, 1), b"1\r\n");
        assert_eq!(chunk_size(&mut buf, usize::MAX), b"ffffffffffffffff\r\n");
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(&date::format(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&date::format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &date::format(1_798_675_200),
            b"Thu, 31 Dec 2026 00:00:00 GMT"
        );
        assert_eq!(&date::format(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
