//! Bodies: one boxed type through the proxy, and request bodies buffered up to a limit so a
//! paid request can be replayed. Responses are never buffered (SSE must stream).

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Whatever a body can fail with, boxed: the error type of every [`Body`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The one body type through the proxy, requests and responses alike: boxed, so buffered,
/// streamed and empty bodies are interchangeable.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body with no bytes, known to be empty (its size hint is exactly 0).
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of exactly `bytes`, in one frame, its length known in advance.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// `body` passed on frame by frame as it arrives, never buffered.
pub fn stream(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed()
}

/// A request body as read for forwarding.
pub enum RequestBody {
    /// Fully read: can be sent again after paying.
    Buffered(Bytes),
    /// Larger than the replay limit: what was read so far, then the rest, streamed once.
    Streaming(Prefixed),
}

impl RequestBody {
    /// Reads `body` up to `limit` bytes. An empty body costs nothing.
    pub async fn read(mut body: Incoming, limit: usize) -> Result<RequestBody, hyper::Error> {
        if body.is_end_stream() {
            return Ok(RequestBody::Buffered(Bytes::new()));
        }
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            // Trailers on requests are vanishingly rare; they are dropped.
            if let Ok(data) = frame?.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() > limit {
                    return Ok(RequestBody::Streaming(Prefixed {
                        prefix: Some(buf.freeze()),
                        rest: body,
                    }));
                }
            }
        }
        Ok(RequestBody::Buffered(buf.freeze()))
    }

    /// The buffered bytes, if the body can be replayed.
    pub fn replayable(&self) -> Option<&Bytes> {
        match self {
            RequestBody::Buffered(b) => Some(b),
            RequestBody::Streaming(_) => None,
        }
    }
}

/// `bytes` as a body: [`empty`] when there are none, else [`full`].
pub fn from_bytes(bytes: Bytes) -> Body {
    if bytes.is_empty() {
        empty()
    } else {
        full(bytes)
    }
}

/// Bytes already read, then the rest of the incoming body.
pub struct Prefixed {
    prefix: Option<Bytes>,
    rest: Incoming,
}

impl Prefixed {
    /// `prefix`, then what is left of `rest`.
    pub fn new(prefix: Bytes, rest: Incoming) -> Prefixed {
        Prefixed {
            prefix: Some(prefix),
            rest,
        }
    }
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + extra);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}
