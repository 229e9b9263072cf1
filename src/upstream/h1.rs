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
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::Target;

/// Most headers a target's response head may have.
const MAX_HEADERS: usize = 128;
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
    let mut reusable = !wants_close(req.headers());
    loop {
        let parsed = read_head(&mut conn).await?;
        let (status, version, headers) = parsed;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Error::Invalid(
                    "101 to a request that did not ask to upgrade",
                ));
            }
            continue; // 100 Continue, 103 Early Hints: the final answer follows
        }
        let framing = framing(status, head_request, &headers)?;
        reusable &= version == Version::HTTP_11 && !wants_close(&headers);
        if matches!(framing, Framing::Eof) {
            reusable = false;
        }
        let mut resp = Response::new(Body {
            conn: Some(conn),
            framing,
            reusable,
            target: Arc::clone(target),
        });
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        return Ok(resp);
    }
}

fn wants_close(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("close"))
    })
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
async fn read_head(conn: &mut Conn) -> Result<(StatusCode, Version, HeaderMap), Error> {
    let mut first = true;
    loop {
        if !conn.buf.is_empty() {
            // Left uninitialised: zeroing 128 slots (4 KiB) per response showed up in
            // profiles.
            let mut slots =
                [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let config = httparse::ParserConfig::default();
            match config.parse_response_with_uninit_headers(&mut parsed, &conn.buf, &mut slots) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed
                        .code
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .ok_or(Error::Invalid("bad status code"))?;
                    let version = match parsed.version {
                        Some(1) => Version::HTTP_11,
                        _ => Version::HTTP_10,
                    };
                    let count = parsed.headers.len();
                    // Offsets, so the values can share the head's bytes once frozen.
                    let mut spans: smallvec::SmallVec<[(usize, usize, usize, usize); 32]> =
                        smallvec::SmallVec::with_capacity(count);
                    let base = conn.buf.as_ptr() as usize;
                    for h in parsed.headers.iter() {
                        let name = h.name.as_ptr() as usize - base;
                        let value = h.value.as_ptr() as usize - base;
                        spans.push((name, h.name.len(), value, h.value.len()));
                    }
                    let head = conn.buf.split_to(len).freeze();
                    let mut headers = HeaderMap::with_capacity(count);
                    for (name, name_len, value, value_len) in spans {
                        let name = HeaderName::from_bytes(&head[name..name + name_len])
                            .map_err(|_| Error::Invalid("bad header name"))?;
                        let value =
                            HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
                                .map_err(|_| Error::Invalid("bad header value"))?;
                        headers.append(name, value);
                    }
                    return Ok((status, version, headers));
                }
                Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(Error::Invalid("response head too large"))
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Error::Invalid("too many response headers"))
                }
                Err(_) => return Err(Error::Invalid("malformed response head")),
            }
        }
        conn.buf.reserve(READ_CHUNK);
        let n = match conn.stream.read_buf(&mut conn.buf).await {
            Ok(n) => n,
            // Reset before answering: as if it had closed.
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

fn framing(status: StatusCode, head_request: bool, headers: &HeaderMap) -> Result<Framing, Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        let chunked = last
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Eof
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or("x").split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| Error::Invalid("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Eof, Framing::Length))
}

/// A response body read from the target connection by whoever polls it.
#[derive(Debug)]
pub struct Body {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    target: Arc<Target>,
}

impl Body {
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

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
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
            framing(ok, false, &headers(&[("content-length", "5, 5")])).unwrap(),
            Framing::Length(5)
        );
        assert!(framing(ok, false, &headers(&[("content-length", "5, 6")])).is_err());
        assert!(framing(ok, false, &headers(&[("content-length", "-1")])).is_err());
        assert_eq!(
            framing(
                ok,
                false,
                &headers(&[
                    ("transfer-encoding", "gzip, chunked"),
                    ("content-length", "5")
                ])
            )
            .unwrap(),
            Framing::Chunked(Chunk::Size)
        );
        assert_eq!(
            framing(ok, false, &headers(&[("transfer-encoding", "gzip")])).unwrap(),
            Framing::Eof
        );
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
