//! A lean HTTP/1.1 client for the common case: a request without a body (GET, HEAD,
//! DELETE…) to a clear-text target. The request head is written in one `write`, the
//! response head parsed with httparse straight from the connection's buffer, and the
//! body read by the request's own task — no connection task, no channel between them.
//! Requests with a body, upgrades and TLS targets take hyper's client instead.
//!
//! Framing follows RFC 9112 §6.3: no body after HEAD, 1xx, 204 and 304; chunked when
//! the last transfer coding is chunked; otherwise a single valid `Content-Length`;
//! otherwise the body runs to the end of the connection. Anything else is a bad
//! response (502). A connection goes back to its target's pool only once its
//! response body has been read exactly to its end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONNECTION;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::headers::{has_token, is_hop_by_hop};
use crate::target::Target;

/// Most headers a target's response head may have.
pub(super) const MAX_HEADERS: usize = 128;
/// Most bytes a target's response head may take.
const MAX_HEAD: usize = 64 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// An idle keep-alive connection to a target.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The request head being written, kept for the connection's next request.
    head: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            head: Vec::with_capacity(512),
        }
    }

    /// Whether the connection still looks usable: nothing arrived while it was idle
    /// (an EOF or stray bytes mean the target closed it or broke framing). Asks
    /// tokio's readiness first, so a quiet connection costs no system call.
    pub(crate) fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Why a request on this client failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed while the request was written or the head read.
    #[error("target connection failed: {0}")]
    Io(#[from] io::Error),
    /// The connection closed before any byte of a response.
    #[error("target closed the connection without answering")]
    Closed,
    /// The response head is not valid HTTP/1.
    #[error("invalid response from target: {0}")]
    Invalid(&'static str),
}

/// Whether a request may be sent again after its connection closed unanswered
/// (RFC 9110 §9.2.2: idempotent methods only).
pub(crate) fn retryable(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Sends `req` (whose body is empty) on `conn` and reads the response head; the
/// response body reads the rest from the connection and hands it back to `target`'s
/// pool at its end.
pub(crate) async fn send<B>(
    mut conn: Conn,
    req: &Request<B>,
    target: &Arc<Target>,
    heads: Heads,
) -> Result<Response<Body>, Error> {
    let mut head = std::mem::take(&mut conn.head);
    head.clear();
    encode(req, &mut head);
    // The request did not get through: the caller may send it again elsewhere.
    conn.stream
        .write_all(&head)
        .await
        .map_err(|_| Error::Closed)?;
    conn.head = head;
    let head_request = req.method() == Method::HEAD;
    let request_closes = closes(
        req.headers()
            .get_all(CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    loop {
        let (status, version, raw) = read_head(&mut conn).await?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Error::Invalid(
                    "101 to a request that did not ask to upgrade",
                ));
            }
            continue; // 100 Continue, 103 Early Hints: the final answer follows
        }
        let framing = framing(status, head_request, &raw)?;
        // A 204 has no body, whatever its fields say; one that announces a length may
        // send those bytes anyway, which the next response on this connection would
        // start with.
        let stray_body =
            status == StatusCode::NO_CONTENT && raw.values(Kind::ContentLength).any(|v| v != b"0");
        let reusable = !request_closes
            && version == Version::HTTP_11
            && !closes(raw.values(Kind::Connection))
            && !matches!(framing, Framing::Eof)
            && !stray_body;
        let (headers, raw) = match heads {
            Heads::Raw if raw.passes_through() => (HeaderMap::new(), Some(Box::new(raw))),
            _ => (raw.into_map()?, None),
        };
        let mut resp = Response::new(Body {
            conn: Some(conn),
            framing,
            reusable,
            target: Arc::clone(target),
            raw,
        });
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        return Ok(resp);
    }
}

/// How the caller takes the response's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heads {
    /// In the response's `HeaderMap`.
    Map,
    /// As received, in the body (`Body::raw_head`), when no field needs more than
    /// leaving out hop-by-hop ones; the `HeaderMap` then starts empty (for fields the
    /// proxy adds). Else in the `HeaderMap`, as with [`Heads::Map`].
    Raw,
}

/// Whether `Connection` values have the `close` token.
fn closes<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> bool {
    values.any(|v| has_token(v, "close"))
}

/// What the proxy needs to know of a response field, found once when the head is
/// parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Passed on as it is.
    EndToEnd,
    ContentLength,
    Date,
    Connection,
    TransferEncoding,
    /// Another field a proxy does not pass on (RFC 9110 §7.6.1).
    HopByHop,
}

impl Kind {
    fn of(name: &[u8]) -> Kind {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        // By length first: most names are compared with none or one of these.
        match name.len() {
            4 if is("date") => Kind::Date,
            10 if is("connection") => Kind::Connection,
            14 if is("content-length") => Kind::ContentLength,
            17 if is("transfer-encoding") => Kind::TransferEncoding,
            _ if is_hop_by_hop(name) => Kind::HopByHop,
            _ => Kind::EndToEnd,
        }
    }

    /// Whether a proxy passes such a field on.
    fn passed_on(self) -> bool {
        matches!(self, Kind::EndToEnd | Kind::ContentLength | Kind::Date)
    }
}

/// A response head as received: its bytes, and where each field's name and value lie
/// in them (values share these bytes once in a `HeaderMap`).
#[derive(Debug)]
pub struct RawHead {
    bytes: Bytes,
    fields: smallvec::SmallVec<[Field; 8]>,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
    kind: Kind,
}

impl RawHead {
    fn slice(&self, (at, len): (u32, u32)) -> &[u8] {
        &self.bytes[at as usize..(at + len) as usize]
    }

    /// The values of the fields of this kind, in order.
    fn values(&self, kind: Kind) -> impl Iterator<Item = &[u8]> + '_ {
        self.fields
            .iter()
            .filter(move |f| f.kind == kind)
            .map(|f| self.slice(f.value))
    }

    /// Whether the head has a `Content-Length`.
    pub fn has_content_length(&self) -> bool {
        self.fields.iter().any(|f| f.kind == Kind::ContentLength)
    }

    /// Whether the head has a `Date`.
    pub fn has_date(&self) -> bool {
        self.fields.iter().any(|f| f.kind == Kind::Date)
    }

    /// Whether passing the fields on takes no more than leaving out the hop-by-hop
    /// ones: `Connection` names nothing else (a field it names would have to go too).
    fn passes_through(&self) -> bool {
        self.values(Kind::Connection).all(|v| {
            v.split(|&b| b == b',').map(<[u8]>::trim_ascii).all(|t| {
                t.is_empty() || t.eq_ignore_ascii_case(b"close") || !Kind::of(t).passed_on()
            })
        })
    }

    /// Appends the end-to-end fields as `name: value` lines, as received.
    pub fn write_end_to_end(&self, out: &mut Vec<u8>) {
        for f in self.fields.iter().filter(|f| f.kind.passed_on()) {
            out.extend_from_slice(self.slice(f.name));
            out.extend_from_slice(b": ");
            out.extend_from_slice(self.slice(f.value));
            out.extend_from_slice(b"\r\n");
        }
    }

    /// All the fields in a `HeaderMap`. Their values share one copy of the head, not
    /// the connection's read buffer: an HTTP/2 client connection's HPACK table keeps
    /// values it indexes (see `headers::own_values`), and would keep that whole buffer.
    fn into_map(self) -> Result<HeaderMap, Error> {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        let head = Bytes::copy_from_slice(&self.bytes);
        for f in &self.fields {
            let name = HeaderName::from_bytes(self.slice(f.name))
                .map_err(|_| Error::Invalid("bad header name"))?;
            let (at, len) = (f.value.0 as usize, f.value.1 as usize);
            let value = HeaderValue::from_maybe_shared(head.slice(at..at + len))
                .map_err(|_| Error::Invalid("bad header value"))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// `METHOD target HTTP/1.1`, the headers, an empty line.
fn encode<B>(req: &Request<B>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads until a whole response head is buffered, and parses it.
async fn read_head(conn: &mut Conn) -> Result<(StatusCode, Version, RawHead), Error> {
    let mut first = true;
    loop {
        if !conn.buf.is_empty() {
            match parse_head(&mut conn.buf)? {
                Some(parsed) => return Ok(parsed),
                None if conn.buf.len() < MAX_HEAD => {}
                None => return Err(Error::Invalid("response head too large")),
            }
        }
        conn.buf.reserve(READ_CHUNK);
        let n = match conn.stream.read_buf(&mut conn.buf).await {
            Ok(n) => n,
            Err(_) if first && conn.buf.is_empty() => return Err(Error::Closed),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(if first && conn.buf.is_empty() {
                Error::Closed
            } else {
                Error::Invalid("connection closed inside the response head")
            });
        }
        first = false;
    }
}

/// Parses a whole response head off the front of `buf` (`None`: not whole yet).
fn parse_head(buf: &mut BytesMut) -> Result<Option<(StatusCode, Version, RawHead)>, Error> {
    // Left uninitialised: zeroing 128 slots (4 KiB) per response showed up in profiles.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Invalid("too many response headers"))
        }
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Invalid("bad status code"))?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    // Offsets, so the fields can share the head's bytes once frozen (heads are at most
    // MAX_HEAD bytes: the offsets fit in u32).
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
    let fields = parsed
        .headers
        .iter()
        .map(|h| Field {
            name: span(h.name.as_bytes()),
            value: span(h.value),
            kind: Kind::of(h.name.as_bytes()),
        })
        .collect();
    let bytes = buf.split_to(len).freeze();
    Ok(Some((status, version, RawHead { bytes, fields })))
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Until the target closes the connection.
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many data bytes of the current chunk are left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// How the body of a response is delimited (RFC 9112 §6.3). Framing that a client
/// could read otherwise than we do is refused (502), as nginx refuses it: the fields
/// pass on as received, so a `Content-Length` beside `Transfer-Encoding`, or a list or
/// repeat of `Content-Length`, would reach the client with a body framed otherwise;
/// and a transfer coding other than chunked would reach it unlabelled.
fn framing(status: StatusCode, head_request: bool, head: &RawHead) -> Result<Framing, Error> {
    framing_of(
        status,
        head_request,
        head.values(Kind::TransferEncoding),
        head.values(Kind::ContentLength),
    )
}

/// Refuses a response hyper's client read (requests with a body, TLS targets) by the
/// rules of [`framing`], which hyper's are laxer than: the client would get its
/// `Content-Length` as received, or its body without its transfer codings.
pub(crate) fn check_framing(
    status: StatusCode,
    head_request: bool,
    headers: &HeaderMap,
) -> Result<(), Error> {
    let values = |name| headers.get_all(name).into_iter().map(HeaderValue::as_bytes);
    framing_of(
        status,
        head_request,
        values(http::header::TRANSFER_ENCODING),
        values(http::header::CONTENT_LENGTH),
    )
    .map(drop)
}

fn framing_of<'a>(
    status: StatusCode,
    head_request: bool,
    transfer_encodings: impl Iterator<Item = &'a [u8]>,
    mut lengths: impl Iterator<Item = &'a [u8]>,
) -> Result<Framing, Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    let mut codings = transfer_encodings
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    if let Some(first) = codings.next() {
        if !first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some() {
            return Err(Error::Invalid("a transfer coding other than chunked"));
        }
        if lengths.next().is_some() {
            return Err(Error::Invalid("both Transfer-Encoding and Content-Length"));
        }
        return Ok(Framing::Chunked(Chunk::Size));
    }
    let Some(length) = lengths.next() else {
        return Ok(Framing::Eof);
    };
    if lengths.next().is_some() {
        return Err(Error::Invalid("more than one Content-Length"));
    }
    // 1*DIGIT: `u64::from_str` alone would take a sign.
    if length.is_empty() || !length.iter().all(u8::is_ascii_digit) {
        return Err(Error::Invalid("bad Content-Length"));
    }
    std::str::from_utf8(length)
        .ok()
        .and_then(|n| n.parse().ok())
        .map(Framing::Length)
        .ok_or(Error::Invalid("bad Content-Length"))
}

/// A response body read from the target connection by whoever polls it.
#[derive(Debug)]
pub struct Body {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    target: Arc<Target>,
    /// The response's fields as received ([`Heads::Raw`]); boxed, as the body is
    /// moved several times on its way to the client.
    raw: Option<Box<RawHead>>,
}

impl Body {
    /// The response's fields as received, when the caller asked for them so.
    pub(crate) fn raw_head(&self) -> Option<&RawHead> {
        self.raw.as_deref()
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Bytes past the end of the body would start the next response wrong.
            if self.reusable && conn.buf.is_empty() {
                self.target.pool.release_lean(conn);
            }
        }
        self.framing = Framing::Length(0);
    }

    /// Reads more from the connection into its buffer; 0 means EOF.
    fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        conn.buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf)
    }
}

fn broken(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing {
                Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if conn.buf.is_empty() {
                        let n = ready!(Self::poll_fill(conn, cx))?;
                        if n == 0 {
                            this.conn = None;
                            return Poll::Ready(Some(Err(broken("target closed inside the body"))));
                        }
                    }
                    let take = conn
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    let data = conn.buf.split_to(take).freeze();
                    this.framing = Framing::Length(left - take as u64);
                    if this.framing == Framing::Length(0) {
                        // The body is read whole: the connection can serve the next
                        // request now, before these last bytes reach the client.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Eof => {
                    if conn.buf.is_empty() {
                        let n = ready!(Self::poll_fill(conn, cx))?;
                        if n == 0 {
                            this.conn = None;
                            return Poll::Ready(None);
                        }
                    }
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) => match step_chunked(state, &mut conn.buf)? {
                    Step::Data(data, next) => {
                        this.framing = Framing::Chunked(next);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Step::Next(next) => this.framing = Framing::Chunked(next),
                    Step::Done => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Step::NeedMore => {
                        let n = ready!(Self::poll_fill(conn, cx))?;
                        if n == 0 {
                            this.conn = None;
                            return Poll::Ready(Some(Err(broken(
                                "target closed inside a chunked body",
                            ))));
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // An empty body is complete without being polled (hyper does not poll a body
        // that says it is empty): its connection can be reused.
        if self.conn.is_some() && self.framing == Framing::Length(0) {
            self.finish();
        }
    }
}

/// One step of chunked decoding over what is buffered.
#[derive(Debug, PartialEq)]
enum Step {
    /// Body bytes, and the state after them.
    Data(Bytes, Chunk),
    /// No bytes to hand out; continue in this state.
    Next(Chunk),
    /// The body (with its trailers) is complete.
    Done,
    /// The buffer holds too little to go on.
    NeedMore,
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

fn step_chunked(state: Chunk, buf: &mut BytesMut) -> io::Result<Step> {
    let line = |buf: &mut BytesMut| -> io::Result<Option<Bytes>> {
        match buf.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = buf.split_to(end + 1).freeze();
                Ok(Some(line.slice(
                    ..line.len() - 1 - usize::from(line.ends_with(b"\r\n")),
                )))
            }
            None if buf.len() > MAX_LINE => Err(broken("chunk line too long")),
            None => Ok(None),
        }
    };
    Ok(match state {
        Chunk::Size => {
            let Some(l) = line(buf)? else {
                return Ok(Step::NeedMore);
            };
            let digits = l.split(|&b| b == b';').next().unwrap_or(&[]);
            let text = std::str::from_utf8(digits).map_err(|_| broken("bad chunk size"))?;
            let size =
                u64::from_str_radix(text.trim(), 16).map_err(|_| broken("bad chunk size"))?;
            if size == 0 {
                Step::Next(Chunk::Trailers)
            } else {
                Step::Next(Chunk::Data(size))
            }
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let data = buf.split_to(take).freeze();
            let left = left - take as u64;
            Step::Data(
                data,
                if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                },
            )
        }
        Chunk::DataEnd => {
            if buf.len() < 2 && !buf.starts_with(b"\n") {
                return Ok(Step::NeedMore);
            }
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
            } else if buf.starts_with(b"\n") {
                buf.advance(1);
            } else {
                return Err(broken("chunk data not followed by CRLF"));
            }
            Step::Next(Chunk::Size)
        }
        Chunk::Trailers => {
            // Trailers are dropped: only the body is forwarded.
            let Some(l) = line(buf)? else {
                return Ok(Step::NeedMore);
            };
            if l.is_empty() {
                Step::Done
            } else {
                Step::Next(Chunk::Trailers)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn decode(input: &[u8], split_at: usize) -> Result<Vec<u8>, io::Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut state = Chunk::Size;
        let mut rest = input;
        loop {
            match step_chunked(state, &mut buf)? {
                Step::Data(d, next) => {
                    out.extend_from_slice(&d);
                    state = next;
                }
                Step::Next(next) => state = next,
                Step::Done => return Ok(out),
                Step::NeedMore => {
                    assert!(!rest.is_empty(), "input ended early");
                    let n = rest.len().min(split_at);
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_reads() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for split in [1, 2, 3, 7, 64] {
            assert_eq!(
                decode(input, split).unwrap(),
                b"hello, world",
                "reads of {split}"
            );
        }
        assert_eq!(decode(b"3\nabc\n0\n\n", 2).unwrap(), b"abc", "bare LF");
        assert!(decode(b"zz\r\n", 8).is_err());
        assert!(decode(b"3\r\nabcX\r\n", 8).is_err());
    }

    fn headers(pairs: &[(&str, &str)]) -> RawHead {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        for (k, v) in pairs {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        parse_head(&mut BytesMut::from(text.as_bytes()))
            .unwrap()
            .unwrap()
            .2
    }

    #[test]
    fn fields_pass_through_without_hop_by_hop_ones() {
        let head = headers(&[
            ("Server", "nginx"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("X-Backend", "b1"),
            ("Set-Cookie", "a=1"),
        ]);
        assert!(head.passes_through());
        let mut out = Vec::new();
        head.write_end_to_end(&mut out);
        assert_eq!(
            out,
            b"Server: nginx\r\nX-Backend: b1\r\nSet-Cookie: a=1\r\n"
        );
        assert!(!head.has_content_length() && !head.has_date());
        let sized = headers(&[
            ("Date", "Sat, 28 Nov 2026 01:00:00 GMT"),
            ("content-LENGTH", "1"),
        ]);
        assert!(sized.has_content_length() && sized.has_date());
        let map = head.into_map().unwrap();
        assert_eq!(map.len(), 6);
        assert_eq!(map["x-backend"], "b1");
        // A field named by `Connection` must go too: that takes the HeaderMap path.
        assert!(!headers(&[("Connection", "close, X-Secret"), ("X-Secret", "1")]).passes_through());
        assert!(headers(&[("Connection", "Close, Keep-Alive, TE")]).passes_through());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = StatusCode::OK;
        assert_eq!(
            framing(ok, true, &headers(&[("content-length", "5")])).unwrap(),
            Framing::Length(0)
        );
        assert_eq!(
            framing(StatusCode::NO_CONTENT, false, &headers(&[])).unwrap(),
            Framing::Length(0)
        );
        assert_eq!(
            framing(ok, false, &headers(&[("content-length", "5")])).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            framing(ok, false, &headers(&[("transfer-encoding", "Chunked")])).unwrap(),
            Framing::Chunked(Chunk::Size)
        );
        for refused in [
            &[("content-length", "5, 5")][..],
            &[("content-length", "5"), ("content-length", "5")],
            &[("content-length", "5, 6")],
            &[("content-length", "-1")],
            &[("content-length", "+5")],
            &[("content-length", "")],
            &[("transfer-encoding", "chunked"), ("content-length", "5")],
            &[("transfer-encoding", "gzip, chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "gzip")],
        ] {
            assert!(
                framing(ok, false, &headers(refused)).is_err(),
                "{refused:?}"
            );
        }
        assert_eq!(framing(ok, false, &headers(&[])).unwrap(), Framing::Eof);
    }

    #[test]
    fn requests_are_encoded_in_origin_form() {
        let req = Request::get("/a?b=1")
            .header("host", "example.com")
            .header("x-two", "1")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        encode(&req, &mut out);
        assert_eq!(
            out,
            b"GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\nx-two: 1\r\n\r\n"
        );
    }
}
