//! What the HTTP/2 client needs beyond hyper's to send again the requests a target did
//! not process: knowing at once that a target has sent GOAWAY on a connection, telling
//! which failed requests the target never processed, and keeping the start of a
//! request's body until the target answers, to send it again.
//!
//! A target that closes a connection gracefully (nginx after `keepalive_requests`, a
//! gRPC server at its maximum connection age, a restart) sends GOAWAY with the last
//! stream it will process. hyper does not report the GOAWAY, and h2 keeps opening new
//! streams on the connection, which the target ignores until it closes. So the
//! connection's reads are watched here for the GOAWAY frame itself, and from then on
//! the pool sends nothing new on it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::listener::idle::RequestBody;

/// The frame type of GOAWAY (RFC 9113 §6.8).
const GOAWAY: u8 = 0x7;

/// The length of a frame header (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;

/// What a connection's driver, its reads and its requests share.
#[derive(Debug)]
pub(super) struct ConnState {
    /// Requests whose responses have not ended.
    pub(super) streams: AtomicUsize,
    /// The target's `SETTINGS_MAX_CONCURRENT_STREAMS`, as the connection's task last
    /// saw it (hyper's initial value until the target's first `SETTINGS` arrives).
    pub(super) max_streams: AtomicUsize,
    /// The target has sent GOAWAY: no new request goes out on this connection.
    pub(super) going_away: AtomicBool,
}

impl ConnState {
    pub(super) fn new(max_streams: usize) -> Self {
        Self {
            streams: AtomicUsize::new(0),
            max_streams: AtomicUsize::new(max_streams),
            going_away: AtomicBool::new(false),
        }
    }

    pub(super) fn is_going_away(&self) -> bool {
        self.going_away.load(Ordering::Acquire)
    }
}

/// A target connection whose incoming frames are watched for GOAWAY. Writes pass
/// through untouched; reads are scanned frame header by frame header, skipping the
/// payloads, which costs a few comparisons per frame.
#[derive(Debug)]
pub(super) struct Watched<T> {
    io: T,
    frames: Frames,
    state: Arc<ConnState>,
}

impl<T> Watched<T> {
    pub(super) fn new(io: T, state: Arc<ConnState>) -> Self {
        Self {
            io,
            frames: Frames::default(),
            state,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if this.frames.goaway_in(&buf.filled()[before..]) {
            // Set before h2 reads the frame, so before it fails the streams the GOAWAY
            // leaves unprocessed, whose requests then look for another connection.
            this.state.going_away.store(true, Ordering::Release);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Where a server's byte stream is within its frames: a frame header being read, or
/// the payload bytes still to skip.
#[derive(Debug, Default)]
struct Frames {
    header: [u8; FRAME_HEADER],
    /// Bytes of `header` read so far.
    have: usize,
    /// Payload bytes of the current frame not yet seen.
    skip: usize,
}

impl Frames {
    /// Takes in the next bytes of the stream: whether they complete a GOAWAY frame's
    /// header.
    fn goaway_in(&mut self, mut bytes: &[u8]) -> bool {
        let mut seen = false;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEADER {
                self.have = 0;
                let [a, b, c, kind, ..] = self.header;
                self.skip = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                seen |= kind == GOAWAY;
            }
        }
        seen
    }
}

/// Whether `e`, a request's failure, says the target did not process the request: its
/// stream was beyond the last one the target's GOAWAY said it would process, or the
/// target refused the stream (`REFUSED_STREAM`). RFC 9113 §8.7: such a request may be
/// sent again, whatever its method. (h2 fails streams with the remote's GOAWAY only
/// when they are beyond its last stream.)
pub(super) fn unprocessed(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(e) = s.downcast_ref::<h2::Error>() {
            return e.is_remote()
                && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        source = s.source();
    }
    false
}

/// The most of a request body kept to send again; a longer one is not sent again.
/// Kept are references to the received buffers, not copies.
const MAX_KEPT: usize = 64 * 1024;

/// A request's body, kept from its first attempt until the target answers, so that it
/// can go out again if the target did not process it.
#[derive(Debug)]
pub(super) struct Replay(Option<Arc<Mutex<Tape>>>);

/// The body as it is read from the client, and what it has given so far.
#[derive(Debug)]
struct Tape {
    source: RequestBody,
    /// The attempt that may read `source`; the bodies of earlier ones fail.
    attempt: u32,
    kept: Vec<Bytes>,
    kept_len: usize,
    /// The source's trailers, once given.
    trailers: Option<HeaderMap>,
    /// Nothing is kept any more (the body outgrew [`MAX_KEPT`], or the target
    /// answered): the attempt reading the body is the last.
    sealed: bool,
    ended: bool,
}

impl Replay {
    /// Keeps `body` as its first attempt sends it, which this returns.
    pub(super) fn new(body: RequestBody) -> (Self, Http2Body) {
        if body.is_end_stream() {
            return (Self(None), Http2Body::Empty);
        }
        let tape = Arc::new(Mutex::new(Tape {
            source: body,
            attempt: 1,
            kept: Vec::new(),
            kept_len: 0,
            trailers: None,
            sealed: false,
            ended: false,
        }));
        let first = Taped::new(Arc::clone(&tape), 1);
        (Self(Some(tape)), Http2Body::Taped(first))
    }

    /// The body for another attempt, or `None` when the body can no longer be sent
    /// again. The earlier attempts' bodies fail from then on.
    pub(super) fn again(&self) -> Option<Http2Body> {
        let Some(tape) = &self.0 else {
            return Some(Http2Body::Empty);
        };
        let mut locked = lock(tape);
        if locked.sealed {
            return None;
        }
        locked.attempt += 1;
        Some(Http2Body::Taped(Taped::new(
            Arc::clone(tape),
            locked.attempt,
        )))
    }

    /// The target has answered: the body streams on without being kept.
    pub(super) fn seal(&self) {
        if let Some(tape) = &self.0 {
            lock(tape).seal();
        }
    }
}

impl Tape {
    fn seal(&mut self) {
        self.sealed = true;
        self.kept = Vec::new();
        self.kept_len = 0;
        self.trailers = None;
    }
}

fn lock(tape: &Mutex<Tape>) -> MutexGuard<'_, Tape> {
    tape.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request body as one attempt sends it to an HTTP/2 target.
#[derive(Debug)]
pub(super) enum Http2Body {
    /// A request without a body.
    Empty,
    /// What the tape kept, then the rest of the body as it arrives.
    Taped(Taped),
}

/// One attempt's reader of a [`Tape`].
#[derive(Debug)]
pub(super) struct Taped {
    tape: Arc<Mutex<Tape>>,
    attempt: u32,
    /// The next of the tape's kept pieces to give.
    next: usize,
    /// Bytes of the kept pieces given.
    replayed: usize,
    trailers_sent: bool,
}

impl Taped {
    fn new(tape: Arc<Mutex<Tape>>, attempt: u32) -> Self {
        Self {
            tape,
            attempt,
            next: 0,
            replayed: 0,
            trailers_sent: false,
        }
    }
}

impl Body for Http2Body {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Http2Body::Taped(this) = self.get_mut() else {
            return Poll::Ready(None);
        };
        let mut tape = lock(&this.tape);
        if tape.attempt != this.attempt {
            let superseded = io::Error::other("the request went out again on another connection");
            return Poll::Ready(Some(Err(superseded.into())));
        }
        if let Some(piece) = tape.kept.get(this.next) {
            let piece = piece.clone();
            this.next += 1;
            this.replayed += piece.len();
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if !this.trailers_sent {
            if let Some(trailers) = &tape.trailers {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
            }
        }
        if tape.ended {
            return Poll::Ready(None);
        }
        let Some(polled) = ready!(Pin::new(&mut tape.source).poll_frame(cx)) else {
            tape.ended = true;
            return Poll::Ready(None);
        };
        let frame = match polled {
            Ok(frame) => frame,
            Err(e) => {
                tape.seal();
                return Poll::Ready(Some(Err(e.into())));
            }
        };
        if !tape.sealed {
            if let Some(data) = frame.data_ref() {
                if tape.kept_len + data.len() <= MAX_KEPT {
                    tape.kept_len += data.len();
                    tape.kept.push(data.clone());
                    this.next = tape.kept.len();
                    this.replayed = tape.kept_len;
                } else {
                    tape.seal();
                }
            } else if let Some(trailers) = frame.trailers_ref() {
                tape.trailers = Some(trailers.clone());
                this.trailers_sent = true;
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Http2Body::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        let Http2Body::Taped(this) = self else {
            return SizeHint::with_exact(0);
        };
        let tape = lock(&this.tape);
        let rest = tape.source.size_hint();
        // Kept bytes this attempt has still to give, before the source's rest.
        let kept = tape.kept_len.saturating_sub(this.replayed) as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + kept);
        }
        hint.set_lower(rest.lower() + kept);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_goaway_is_found_however_the_reads_split_the_frames() {
        // SETTINGS, then DATA whose payload holds bytes that look like a GOAWAY header,
        // then a 300-byte HEADERS frame, then GOAWAY.
        let mut stream = frame(0x4, &[0, 3, 0, 0, 0, 100]);
        stream.extend(frame(0x0, &frame(GOAWAY, &[0; 8])));
        stream.extend(frame(0x1, &[7; 300]));
        let before_goaway = stream.len();
        stream.extend(frame(GOAWAY, &[0, 0, 0, 1, 0, 0, 0, 0]));
        for size in [1, 2, 5, 9, 10, 17, 64, stream.len()] {
            let mut frames = Frames::default();
            let mut at = 0;
            for chunk in stream.chunks(size) {
                at += chunk.len();
                let seen = frames.goaway_in(chunk);
                let completes_goaway_header = at >= before_goaway + FRAME_HEADER
                    && at - chunk.len() < before_goaway + FRAME_HEADER;
                assert_eq!(
                    seen, completes_goaway_header,
                    "reads of {size} bytes, at {at}"
                );
            }
        }
    }

    #[test]
    fn payload_lengths_use_all_three_bytes() {
        let mut frames = Frames::default();
        let payload = vec![GOAWAY; 0x01_02_03];
        assert!(!frames.goaway_in(&frame(0x0, &payload)));
        assert!(frames.goaway_in(&frame(GOAWAY, &[0; 8])));
    }
}
