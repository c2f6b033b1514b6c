//! Bodies streamed through the proxy, never buffered whole: the request
//! body going upstream counts its bytes against the limit (a client that
//! sends more than `client_max_body_size` without announcing it is cut off,
//! and the response is 413 when none has started), and the response body
//! is either the upstream's, frame by frame, or a small one of ferry's own.
//!
//! Touches nothing itself: it is polled by hyper on the connections.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The error a request body ends with when it grows past the limit.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {limit} bytes")]
pub(crate) struct TooLarge {
    pub limit: u64,
}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's request body on its way upstream.
pub(crate) struct RequestBody {
    inner: Incoming,
    seen: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl RequestBody {
    /// The body and a flag that turns true when it went past `limit`.
    pub fn new(inner: Incoming, limit: u64) -> (RequestBody, Arc<AtomicBool>) {
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = RequestBody {
            inner,
            seen: 0,
            limit,
            exceeded: exceeded.clone(),
        };
        (body, exceeded)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(TooLarge { limit: this.limit }.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the proxy answers with.
pub enum ProxyBody {
    /// ferry's own small answer (404, 413, 502, ...), or nothing.
    Own(Option<Bytes>),
    /// An HTTP/2 (h2c) endpoint's body, through hyper's client.
    Upstream(Incoming),
    /// An HTTP/1.1 endpoint's body, read from its connection (`h1`).
    Endpoint(super::h1::UpstreamBody),
    /// Either of the above, counted and logged when done (the access log).
    Logged(Box<crate::access_log::Logged>),
}

impl ProxyBody {
    pub(crate) fn text(s: &'static str) -> ProxyBody {
        ProxyBody::Own(Some(Bytes::from_static(s.as_bytes())))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Own(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Endpoint(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Logged(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Own(b) => b.is_none(),
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Endpoint(b) => b.is_end_stream(),
            ProxyBody::Logged(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Own(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Endpoint(b) => b.size_hint(),
            ProxyBody::Logged(b) => b.size_hint(),
        }
    }
}
