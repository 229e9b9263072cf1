//! The response body type: a target's streamed body, or a small one the proxy made.
//! An enum rather than a boxed body, so no response allocates for its body type.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::target::InFlight;
use crate::upstream::{ResponseBody, Reusable};

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// Streamed from a target; the request counts as in flight until the body ends,
    /// and then the connection goes back to the target's pool.
    Target(ResponseBody, Tail),
    /// Made by the proxy (errors, redirects, fixed responses).
    Full(Option<Bytes>),
}

/// What a target's body releases when it ends.
#[derive(Debug, Default)]
pub struct Tail {
    /// Counts the request in flight.
    pub in_flight: Option<InFlight>,
    /// The HTTP/1.1 connection the body arrives on.
    pub reuse: Option<Reusable>,
    /// The access-log record to write when the body ends.
    pub record: Option<Box<super::record::Record>>,
    /// Body bytes sent so far (counted only for the access log).
    pub sent: u64,
    /// Marks the client connection as sending a response (HTTP/1).
    pub open: Option<crate::listener::idle::OpenResponse>,
}

impl Tail {
    fn finish(&mut self) {
        self.in_flight.take();
        self.open.take();
        if let Some(reuse) = self.reuse.take() {
            reuse.release();
        }
        self.write_record();
    }

    fn write_record(&mut self) {
        if let Some(record) = self.record.take() {
            record.write(self.sent);
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // hyper does not poll a body that says it is empty (HEAD, 204, 304,
        // `Content-Length: 0`): such a body is complete, and its connection reusable.
        if let Body::Target(body, tail) = self {
            if http_body::Body::is_end_stream(body) {
                tail.finish();
            }
            // A body cut short (client gone) is still logged, with what was sent.
            tail.write_record();
        }
    }
}

impl Body {
    /// A target's response fields as received, when they were asked for so (they are
    /// then not in the response's `HeaderMap`, which holds only what the proxy added).
    pub fn raw_head(&self) -> Option<&crate::upstream::RawHead> {
        match self {
            Body::Target(body, _) => body.raw_head(),
            Body::Full(_) => None,
        }
    }

    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body::Full(None)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Target(body, tail) => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if tail.record.is_some() {
                            tail.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
                        }
                        // The last frame: the target connection can serve the next
                        // request now, before these bytes reach the client.
                        if body.is_end_stream() {
                            tail.finish();
                        }
                    }
                    Poll::Ready(None) => tail.finish(),
                    // A broken body leaves its connection unusable: drop it, do not pool it.
                    Poll::Ready(Some(Err(_))) => tail.reuse = None,
                    _ => {}
                }
                polled
            }
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Target(body, _) => body.is_end_stream(),
            Body::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Target(body, _) => body.size_hint(),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
        }
    }
}
