//! ferry's own HTTP/1.1 client to endpoints, run on the task that serves
//! the client: that task writes the request, reads the response head, and
//! the response body is read from the endpoint's socket as the client's
//! connection asks for it. There is no task per upstream connection and
//! no channel between it and the request (hyper's client connection keeps
//! both), which was about half of a proxied request's CPU beyond the
//! kernel. As nginx's `proxy_http_version 1.1`: the request body is sent
//! before the response is read (nginx buffers it whole first; ferry
//! streams it), 1xx answers other than 101 are skipped, `Expect` is not
//! passed on, and a connection goes back to the pool only after its
//! response was read to the end.
//!
//! Touches the network: the endpoint connections it is given.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode, Version};
use std::future::Future;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::{RequestBody, TooLarge};
use super::framing::{Framing, FramingError, Step};
use super::pool::Pool;

/// A response head larger than this is refused (nginx's
/// `proxy_buffer_size` is 4-8 KiB and answers 502 beyond it).
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed in place before a larger array is tried.
const HEADERS: usize = 64;
/// Read buffer kept per connection.
const READ_BUF: usize = 16 * 1024;

/// One keep-alive connection to an endpoint.
pub(crate) struct Connection {
    io: TcpStream,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    /// Requests this connection has carried.
    used: u32,
}

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The connection was found closed before any of a response came back
    /// on a connection that had carried requests before: the endpoint
    /// closed it while idle. A request without a body may be sent again.
    #[error("idle connection closed by the endpoint")]
    Stale,
    #[error(transparent)]
    TooLarge(TooLarge),
    #[error("request body from the client failed: {0}")]
    ClientBody(String),
    #[error("connection to the endpoint failed: {0}")]
    Io(#[from] io::Error),
    #[error("the endpoint closed the connection without a response")]
    Closed,
    #[error("the endpoint sent a response head that is not HTTP/1.x: {0}")]
    BadHead(String),
    #[error("the endpoint took the request or answered it too slowly")]
    Timeout,
}

/// A response head and what follows it.
pub(crate) struct Answer {
    pub response: Response<()>,
    /// The connection, for the body or for an upgrade (101).
    pub conn: Connection,
    pub framing: Framing,
    /// The endpoint lets the connection carry another request.
    pub keep_alive: bool,
}

impl Connection {
    pub fn new(io: TcpStream) -> Connection {
        Connection {
            io,
            buf: BytesMut::with_capacity(READ_BUF),
            used: 0,
        }
    }

    /// False when the endpoint has closed this idle connection (or sent
    /// something unasked). Costs a syscall only when the socket has shown
    /// readable since it was last drained.
    pub fn looks_alive(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = tokio::io::ReadBuf::new(&mut probe);
        // Pending: nothing to read, the usual idle state; ready with a
        // byte (unasked), with nothing (closed) or an error: unusable.
        self.io.poll_peek(&mut cx, &mut probe).is_pending()
    }

    /// Sends the request (`parts` as forward made them, then the body)
    /// and reads the response head.
    pub async fn send(
        mut self,
        parts: &Parts,
        body: &mut RequestBody,
    ) -> Result<Answer, SendError> {
        let reused = self.used > 0;
        self.used += 1;
        let has_body = !body.is_end_stream();
        let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
        let mut out = Vec::with_capacity(512);
        encode_head(parts, chunked, &mut out);
        if let Err(e) = self.io.write_all(&out).await {
            return Err(stale_or(reused, e.into()));
        }
        if has_body {
            self.send_body(body, chunked).await?;
        }
        let head_only = parts.method == Method::HEAD;
        match self.read_head_with(head_only, build).await {
            Ok(head) => Ok(Answer {
                response: head.parsed,
                conn: self,
                framing: head.framing,
                keep_alive: head.keep_alive,
            }),
            Err(e) => Err(stale_or(reused, e)),
        }
    }

    /// Writes `bytes` to the endpoint; on a connection that had carried
    /// requests before, a reset or closed socket is `Stale`.
    pub async fn write_request(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        let reused = self.used > 0;
        self.used += 1;
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| stale_or(reused, e.into()))
    }

    /// More of a request's body, after `write_request`.
    pub async fn write_more(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        Ok(self.io.write_all(bytes).await?)
    }

    /// Reads the final response head and gives it to `f` (in the read
    /// buffer, parsed in place); a close before any of it on a connection
    /// that had carried requests before is `Stale`.
    pub async fn read_response<R>(
        &mut self,
        head_only: bool,
        f: impl FnMut(&httparse::Response<'_, '_>) -> Result<R, SendError>,
    ) -> Result<Head<R>, SendError> {
        let reused = self.used > 1;
        self.read_head_with(head_only, f)
            .await
            .map_err(|e| stale_or(reused, e))
    }

    /// The next step of the response body from what has been read.
    pub fn body_step(&mut self, framing: &mut Framing) -> Result<Step, FramingError> {
        framing.step(&mut self.buf)
    }

    /// Reads more of the response; 0 when the endpoint closed.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read_more(cx)).await
    }

    /// True when nothing was read past the response (the connection can go
    /// back to the pool once its body is done).
    pub fn drained(&self) -> bool {
        self.buf.is_empty()
    }

    async fn send_body(&mut self, body: &mut RequestBody, chunked: bool) -> Result<(), SendError> {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| match e.downcast::<TooLarge>() {
                Ok(t) => SendError::TooLarge(*t),
                Err(e) => SendError::ClientBody(e.to_string()),
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers: not passed on over HTTP/1.1
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                let size = format!("{:x}\r\n", data.len());
                self.io.write_all(size.as_bytes()).await?;
                self.io.write_all(&data).await?;
                self.io.write_all(b"\r\n").await?;
            } else {
                self.io.write_all(&data).await?;
            }
        }
        if chunked {
            self.io.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    /// Reads until a final response head (1xx other than 101 skipped),
    /// given to `f` as parsed in place.
    async fn read_head_with<R>(
        &mut self,
        head_only: bool,
        mut f: impl FnMut(&httparse::Response<'_, '_>) -> Result<R, SendError>,
    ) -> Result<Head<R>, SendError> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf, head_only, &mut f)? {
                    Some((len, head)) => {
                        let _ = self.buf.split_to(len);
                        match head {
                            Some(head) => return Ok(head),
                            None => continue, // a 1xx
                        }
                    }
                    None if self.buf.len() >= MAX_HEAD => {
                        return Err(SendError::BadHead(format!(
                            "response head larger than {MAX_HEAD} bytes"
                        )));
                    }
                    None => {}
                }
            }
            if poll_fn(|cx| self.poll_read_more(cx)).await? == 0 {
                // Closed with nothing of a response read: perhaps never
                // seen (Stale on a reused connection); a partial head is
                // an answer cut short, never resent.
                return Err(if self.buf.is_empty() {
                    SendError::Closed
                } else {
                    SendError::BadHead("closed in the response head".into())
                });
            }
        }
    }

    /// Reads what the socket has into the buffer; 0 at the end. Through
    /// `AsyncRead`, whose short reads clear the socket's readiness, so the
    /// next wait goes to epoll without a read that finds nothing (a
    /// syscall per request saved, counted with strace).
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_BUF / 4 {
            self.buf.reserve(READ_BUF);
        }
        let read = self.io.read_buf(&mut self.buf);
        std::pin::pin!(read).poll(cx)
    }

    /// The socket and any bytes already read past the 101 head, for a
    /// splice.
    pub fn into_upgraded(self) -> (TcpStream, Bytes) {
        (self.io, self.buf.freeze())
    }
}

/// A write or close on a connection that had carried requests before,
/// with nothing of a response seen: the endpoint closed it while idle.
/// Callers resend only idempotent requests (RFC 9110 §9.2.2), as nginx
/// does: the endpoint may have acted on it before closing.
fn stale_or(reused: bool, e: SendError) -> SendError {
    let closed = match &e {
        SendError::Closed => true,
        SendError::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        ),
        _ => false,
    };
    if reused && closed {
        SendError::Stale
    } else {
        e
    }
}

/// The request line and headers, as HTTP/1.1.
fn encode_head(parts: &Parts, chunked: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == header::EXPECT || (chunked && name == header::CONTENT_LENGTH) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A final response head: what `f` made of it, how its body is framed,
/// and whether the endpoint keeps the connection.
pub(crate) struct Head<R> {
    pub parsed: R,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// A complete response head at the start of `buf`: its length and, unless
/// it is a 1xx other than 101 (to be skipped), the head; None when more
/// is needed.
#[allow(clippy::type_complexity)]
fn parse_head<R>(
    buf: &[u8],
    head_only: bool,
    f: &mut impl FnMut(&httparse::Response<'_, '_>) -> Result<R, SendError>,
) -> Result<Option<(usize, Option<Head<R>>)>, SendError> {
    let mut small = [httparse::EMPTY_HEADER; HEADERS];
    let mut parsed = httparse::Response::new(&mut small);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            let mut large = vec![httparse::EMPTY_HEADER; 1024];
            let mut parsed = httparse::Response::new(&mut large);
            return match parsed.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    Ok(Some((len, head(&parsed, head_only, f)?)))
                }
                Ok(httparse::Status::Partial) => Ok(None),
                Err(e) => Err(SendError::BadHead(e.to_string())),
            };
        }
        Err(e) => return Err(SendError::BadHead(e.to_string())),
    };
    Ok(Some((len, head(&parsed, head_only, f)?)))
}

fn head<R>(
    parsed: &httparse::Response<'_, '_>,
    head_only: bool,
    f: &mut impl FnMut(&httparse::Response<'_, '_>) -> Result<R, SendError>,
) -> Result<Option<Head<R>>, SendError> {
    let code = parsed.code.unwrap_or(0);
    if (100..200).contains(&code) && code != 101 {
        return Ok(None);
    }
    let framing = framing_of(code, parsed.headers, head_only)?;
    let keep_alive = keep_alive(parsed.version.unwrap_or(1), parsed.headers);
    Ok(Some(Head {
        parsed: f(parsed)?,
        framing,
        keep_alive,
    }))
}

/// Methods a proxy may send again when a connection closed without an
/// answer (RFC 9110 §9.2.2; nginx never resends POST, LOCK, PATCH).
pub(crate) fn idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// The response a hyper connection serves, from a parsed head.
fn build(parsed: &httparse::Response<'_, '_>) -> Result<Response<()>, SendError> {
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
        .map_err(|_| SendError::BadHead(format!("status {:?}", parsed.code)))?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| SendError::BadHead(format!("header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| SendError::BadHead(format!("value of header {}", h.name)))?;
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *response.headers_mut() = headers;
    Ok(response)
}

/// The comma-separated tokens of every `name` header.
fn tokens<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// RFC 9112 §6.3, for a response.
fn framing_of(
    code: u16,
    headers: &[httparse::Header<'_>],
    head_only: bool,
) -> Result<Framing, SendError> {
    if head_only || (100..200).contains(&code) || code == 204 || code == 304 {
        return Ok(Framing::Done);
    }
    if let Some(last) = tokens(headers, "transfer-encoding").last() {
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            Framing::chunked()
        } else {
            Framing::UntilClose
        });
    }
    let mut lengths = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value);
    match lengths.next() {
        None => Ok(Framing::UntilClose),
        Some(v) => {
            let n = super::framing::content_length(v)
                .ok_or_else(|| SendError::BadHead("Content-Length not a number".into()))?;
            if lengths.any(|other| other != v) {
                return Err(SendError::BadHead(
                    "two different Content-Length values".into(),
                ));
            }
            Ok(Framing::Length(n))
        }
    }
}

/// Whether the endpoint keeps the connection open after this response
/// (`version`: httparse's minor version).
fn keep_alive(version: u8, headers: &[httparse::Header<'_>]) -> bool {
    if version == 0 {
        tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case("keep-alive"))
    } else {
        !tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case("close"))
    }
}

/// An endpoint's response body, read from its connection as the client's
/// connection polls for it; the connection goes back to the pool the
/// moment the body is complete.
pub struct UpstreamBody {
    conn: Option<Connection>,
    framing: Framing,
    keep_alive: bool,
    addr: SocketAddr,
    pool: Arc<Pool>,
}

impl UpstreamBody {
    pub(crate) fn new(
        answer: Answer,
        addr: SocketAddr,
        pool: Arc<Pool>,
    ) -> (Response<()>, UpstreamBody) {
        let Answer {
            response,
            conn,
            framing,
            keep_alive,
        } = answer;
        let keep_alive = keep_alive && framing.reusable();
        let mut body = UpstreamBody {
            conn: Some(conn),
            framing,
            keep_alive,
            addr,
            pool,
        };
        body.finish_if_done();
        (response, body)
    }

    /// Gives the connection back once the body is complete (and the
    /// endpoint sent nothing past it).
    fn finish_if_done(&mut self) {
        if !self.framing.is_done() {
            return;
        }
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.pool.give_back(self.addr, conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = FramingError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, FramingError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.buf) {
                Ok(Step::Data(data)) => {
                    this.finish_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Done) => {
                    this.finish_if_done();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) => {
                    let closed = this.framing.closed();
                    this.keep_alive = false;
                    this.conn = None;
                    return Poll::Ready(closed.err().map(Err));
                }
                Ok(_) => {}
                Err(_) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(FramingError::Truncated)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing.exact() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::type_complexity)]
    fn parse(
        wire: &str,
        head_only: bool,
    ) -> Result<Option<(usize, Head<Response<()>>)>, SendError> {
        parse_head(wire.as_bytes(), head_only, &mut build)
            .map(|r| r.map(|(len, head)| (len, head.expect("not a 1xx"))))
    }

    #[test]
    fn heads_give_status_headers_and_framing() {
        let wire = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\nx-a: 2\r\n\r\nhello";
        let (len, head) = parse(wire, false).unwrap().unwrap();
        assert_eq!(&wire[len..], "hello");
        assert_eq!(head.parsed.status(), 200);
        assert_eq!(head.parsed.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert!(
            parse("HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
        let (len, skipped) =
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1", false, &mut build)
                .unwrap()
                .unwrap();
        assert_eq!((len, skipped.is_none()), (25, true));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let head = |s: &str, head_only| parse(s, head_only).unwrap().unwrap().1;
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true).framing,
            Framing::Done
        );
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n", false).framing,
            Framing::Done
        );
        assert_eq!(
            head(
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                false
            )
            .framing,
            Framing::Done
        );
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
                false
            )
            .framing,
            Framing::chunked()
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\n\r\n", false).framing,
            Framing::UntilClose
        );
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false).keep_alive);
        assert!(
            head(
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
                false
            )
            .keep_alive
        );
        assert!(
            !head(
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                false
            )
            .keep_alive
        );
        assert!(
            parse(
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(parse("SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
    }

    #[test]
    fn request_heads_are_http_1_1_with_chunked_when_the_length_is_unknown() {
        let req = hyper::Request::builder()
            .method("POST")
            .uri("/a?b=1")
            .header("host", "foo.test")
            .header("expect", "100-continue")
            .header("content-length", "3")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        encode_head(&parts, false, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nhost: foo.test\r\ncontent-length: 3\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_head(&parts, true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nhost: foo.test\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
