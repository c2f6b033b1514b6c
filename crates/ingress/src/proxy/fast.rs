//! The HTTP/1.1 fast path: the common request, proxied without hyper.
//! A client connection starts here; each request head is parsed in place
//! (httparse), routed, and its upstream head written straight from the
//! client's bytes (hop-by-hop headers dropped, forwarding headers set as
//! `headers.rs` sets them); the endpoint's response head is rewritten the
//! same way into the client's, and the body relayed with it, a small one
//! in the same write. No header map, no task, no channel per request: as
//! nginx proxies. This is what brings ferry's CPU per request near
//! nginx's (README, `ferry bench ingress`).
//!
//! Anything else is handed to hyper for the rest of the connection, with
//! the bytes read so far put back in front (`Rewind`): HTTP/2 (prior
//! knowledge), HTTP/1.0, Upgrade (WebSocket), `Expect`, chunked request
//! bodies, bodies over the limit (413), unknown hosts and paths (404),
//! redirects to HTTPS (308), Services without endpoints (503), h2c
//! endpoints, and heads hyper must refuse. Their behaviour is hyper's path
//! in `mod.rs`, unchanged.
//!
//! Touches the network: the client connection it is given and the
//! endpoint connections of the pool.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::framing::{Framing, Step};
use super::h1::{Connection, SendError};
use super::headers::HOP_BY_HOP;
use super::{Failure, Scheme, Shared, drained};
use crate::access_log::Entry;
use crate::routes::{Backend, UpstreamProtocol};
use crate::tls;

/// A request head larger than this goes to hyper (which answers 431).
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed in place; more goes to hyper.
const HEADERS: usize = 64;
/// An idle keep-alive connection is closed after this (hyper's
/// header-read timeout, which applied before).
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Response bytes gathered before they are written to the client.
const FLUSH_AT: usize = 64 * 1024;

/// How a connection left the fast path.
pub(super) enum Served<IO> {
    /// Closed (by the client, an error, the idle timeout, or a drain).
    Closed,
    /// For hyper: the connection and the bytes already read from it.
    Hyper(IO, BytesMut),
}

/// Serves requests on `io` while they are fast-path requests.
pub(super) async fn serve<IO>(
    shared: &Arc<Shared>,
    mut io: IO,
    peer: SocketAddr,
    local: SocketAddr,
    scheme: Scheme,
) -> Served<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(4096);
    let mut draining = shared.draining.subscribe();
    loop {
        // The whole head must come within KEEP_ALIVE of waiting for it
        // (one deadline, not one per read: a byte every few seconds does
        // not hold the connection).
        let deadline = tokio::time::Instant::now() + KEEP_ALIVE;
        let request = loop {
            if !buf.is_empty() {
                match prepare(shared, &buf, peer, local, scheme) {
                    Prepared::Ready(r) => break r,
                    Prepared::Hyper => return Served::Hyper(io, buf),
                    Prepared::Partial if buf.len() >= MAX_HEAD => {
                        return Served::Hyper(io, buf);
                    }
                    Prepared::Partial => {}
                }
            } else if *draining.borrow() {
                return Served::Closed;
            }
            let read = tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => r,
                () = drained(&mut draining), if buf.is_empty() => return Served::Closed,
                () = tokio::time::sleep_until(deadline) => return Served::Closed,
            };
            match read {
                Ok(0) | Err(_) => return Served::Closed,
                Ok(_) => {}
            }
        };
        buf.advance(request.head_len);
        match proxy(shared, &mut io, &mut buf, request).await {
            Ok(true) => {}
            _ => {
                let _ = io.shutdown().await;
                return Served::Closed;
            }
        }
    }
}

/// A request the fast path takes, with its upstream head written.
struct Request {
    head_len: usize,
    backend: Arc<Backend>,
    /// The request line and headers for the endpoint.
    upstream: Vec<u8>,
    content_length: u64,
    head_only: bool,
    /// May be sent again when a pooled connection closed unanswered.
    idempotent: bool,
    /// The client asked to close after this response.
    close: bool,
    hsts: bool,
    start: Instant,
    log: Option<Entry>,
}

// Moved once per request; a box would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Ready(Request),
    Partial,
    Hyper,
}

/// Parses a request head at the start of `buf` and, when the fast path
/// takes it, routes it and writes its upstream head.
fn prepare(
    shared: &Shared,
    buf: &[u8],
    peer: SocketAddr,
    local: SocketAddr,
    scheme: Scheme,
) -> Prepared {
    let start = Instant::now();
    let mut slots = [httparse::EMPTY_HEADER; HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Prepared::Partial,
        Err(_) => return Prepared::Hyper,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Prepared::Hyper;
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return Prepared::Hyper;
    }
    let Some(facts) = Facts::of(req.headers, shared.config.trust_forwarded) else {
        return Prepared::Hyper;
    };
    let Some(host) = facts.host else {
        return Prepared::Hyper;
    };
    if facts.content_length > shared.config.max_body {
        return Prepared::Hyper;
    }
    let tls_host = shared.certs.load().has_tls(host);
    if tls_host && scheme == Scheme::Http {
        return Prepared::Hyper;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(backend) = shared.table.load().lookup(host, path).cloned() else {
        return Prepared::Hyper;
    };
    if backend.endpoints.is_empty() || backend.protocol != UpstreamProtocol::Http1 {
        return Prepared::Hyper;
    }

    let mut up = Vec::with_capacity(head_len + 256);
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    up.extend_from_slice(target.as_bytes());
    up.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        if facts.passes(h.name, shared.config.trust_forwarded) {
            header(&mut up, h.name, h.value);
        }
    }
    let ip = peer.ip().to_canonical().to_string();
    match facts.forwarded_for {
        Some(prior) if shared.config.trust_forwarded && !prior.trim().is_empty() => {
            up.extend_from_slice(b"x-forwarded-for: ");
            up.extend_from_slice(prior.as_bytes());
            up.extend_from_slice(b", ");
            up.extend_from_slice(ip.as_bytes());
            up.extend_from_slice(b"\r\n");
        }
        _ => header(&mut up, "x-forwarded-for", ip.as_bytes()),
    }
    header(&mut up, "x-real-ip", ip.as_bytes());
    if !facts.kept_proto {
        header(&mut up, "x-forwarded-proto", scheme.as_str().as_bytes());
    }
    if !facts.kept_host {
        header(&mut up, "x-forwarded-host", host.as_bytes());
    }
    if !facts.kept_port {
        header(
            &mut up,
            "x-forwarded-port",
            local.port().to_string().as_bytes(),
        );
    }
    if !facts.request_id {
        header(&mut up, "x-request-id", shared.request_id().as_bytes());
    }
    up.extend_from_slice(b"\r\n");

    let log = shared.access_log.get().map(|_| Entry {
        client: peer.ip().to_canonical(),
        time: SystemTime::now(),
        method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
        path: target.to_string(),
        version: hyper::Version::HTTP_11,
        status: 0,
        bytes: 0,
        referer: facts.referer.and_then(|v| HeaderValue::from_bytes(v).ok()),
        user_agent: facts
            .user_agent
            .and_then(|v| HeaderValue::from_bytes(v).ok()),
        request_time: Duration::ZERO,
        upstream: None,
        backend: None,
    });
    Prepared::Ready(Request {
        head_len,
        backend,
        upstream: up,
        content_length: facts.content_length,
        head_only: method == "HEAD",
        idempotent: super::h1::idempotent(method.as_bytes()),
        close: facts.close,
        hsts: tls_host && scheme == Scheme::Https,
        start,
        log,
    })
}

/// What a request's headers say, from one pass over them.
#[derive(Default)]
struct Facts<'a> {
    host: Option<&'a str>,
    content_length: u64,
    close: bool,
    /// Header names the client's `Connection` lists (hop-by-hop too).
    named: Vec<&'a str>,
    forwarded_for: Option<&'a str>,
    kept_proto: bool,
    kept_host: bool,
    kept_port: bool,
    request_id: bool,
    referer: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
}

impl<'a> Facts<'a> {
    /// None: a request the fast path leaves to hyper.
    fn of(headers: &'a [httparse::Header<'a>], trust: bool) -> Option<Facts<'a>> {
        let mut f = Facts::default();
        let mut length: Option<&[u8]> = None;
        for h in headers {
            let n = h.name;
            if n.eq_ignore_ascii_case("host") {
                if f.host.is_some() {
                    return None;
                }
                f.host = Some(std::str::from_utf8(h.value).ok()?);
            } else if n.eq_ignore_ascii_case("content-length") {
                if length.is_some() {
                    return None;
                }
                length = Some(h.value);
            } else if n.eq_ignore_ascii_case("transfer-encoding")
                || n.eq_ignore_ascii_case("upgrade")
                || n.eq_ignore_ascii_case("expect")
            {
                return None;
            } else if n.eq_ignore_ascii_case("connection") {
                for t in std::str::from_utf8(h.value).ok()?.split(',') {
                    let t = t.trim();
                    if t.eq_ignore_ascii_case("close") {
                        f.close = true;
                    } else if t.eq_ignore_ascii_case("upgrade") {
                        return None;
                    } else if t.eq_ignore_ascii_case("content-length")
                        || t.eq_ignore_ascii_case("host")
                    {
                        // Dropping these would change the request's
                        // framing or target upstream (smuggling).
                        return None;
                    } else if !t.is_empty() && !t.eq_ignore_ascii_case("keep-alive") {
                        f.named.push(t);
                    }
                }
            } else if n.eq_ignore_ascii_case("x-forwarded-for") {
                // The first one, as a header map's `get` gives it.
                if f.forwarded_for.is_none() {
                    f.forwarded_for = std::str::from_utf8(h.value).ok();
                }
            } else if n.eq_ignore_ascii_case("x-forwarded-proto") {
                f.kept_proto = trust;
            } else if n.eq_ignore_ascii_case("x-forwarded-host") {
                f.kept_host = trust;
            } else if n.eq_ignore_ascii_case("x-forwarded-port") {
                f.kept_port = trust;
            } else if n.eq_ignore_ascii_case("x-request-id") {
                f.request_id = true;
            } else if n.eq_ignore_ascii_case("referer") {
                f.referer = Some(h.value);
            } else if n.eq_ignore_ascii_case("user-agent") {
                f.user_agent = Some(h.value);
            }
        }
        if let Some(l) = length {
            f.content_length = super::framing::content_length(l)?;
        }
        Some(f)
    }

    /// Whether the client's header `name` goes upstream as it is.
    fn passes(&self, name: &str, trust: bool) -> bool {
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        if HOP_BY_HOP.iter().any(|h| is(h))
            || self.named.iter().any(|h| is(h))
            || is("x-forwarded-for")
            || is("x-real-ip")
        {
            return false;
        }
        trust || !(is("x-forwarded-proto") || is("x-forwarded-host") || is("x-forwarded-port"))
    }
}

fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The client's response head from the endpoint's, without its last CRLF
/// and without framing headers (added once the framing is known).
struct ClientHead {
    bytes: Vec<u8>,
    status: u16,
    /// The endpoint's Content-Length, passed on only for a body-less
    /// answer (HEAD, 304); otherwise ferry writes the framing itself.
    length: Option<Vec<u8>>,
}

fn client_head(r: &httparse::Response<'_, '_>, hsts: bool) -> Result<ClientHead, SendError> {
    let status = r.code.unwrap_or(0);
    if status == 101 {
        // Only an upgrade request may be answered so; those go to hyper.
        return Err(SendError::BadHead(
            "101 to a request that asked for no upgrade".into(),
        ));
    }
    let code =
        StatusCode::from_u16(status).map_err(|_| SendError::BadHead(format!("status {status}")))?;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(b' ');
    let reason = r
        .reason
        .filter(|r| !r.is_empty())
        .or(code.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let named: Vec<&str> = r
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut date = false;
    let mut length = None;
    for h in r.headers.iter() {
        let is = |other: &str| h.name.eq_ignore_ascii_case(other);
        if is("content-length") {
            length.get_or_insert_with(|| h.value.to_vec());
            continue;
        }
        if HOP_BY_HOP.iter().any(|n| is(n))
            || is("upgrade")
            || is("server")
            || named.iter().any(|n| is(n))
            || (hsts && is("strict-transport-security"))
        {
            continue;
        }
        date |= is("date");
        header(&mut out, h.name, h.value);
    }
    out.extend_from_slice(b"server: ferry\r\n");
    if !date {
        header(
            &mut out,
            "date",
            httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
        );
    }
    if hsts {
        header(
            &mut out,
            "strict-transport-security",
            tls::policy::HSTS.as_bytes(),
        );
    }
    Ok(ClientHead {
        bytes: out,
        status,
        length,
    })
}

/// Sends the request to an endpoint and relays the answer. Ok(true): the
/// client connection can carry another request (it cannot once the client
/// asked to close or the gateway drains: the answer says
/// `Connection: close`).
async fn proxy<IO>(
    shared: &Arc<Shared>,
    io: &mut IO,
    buf: &mut BytesMut,
    mut request: Request,
) -> io::Result<bool>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    // The body, or as much of it as has been read, goes with the head.
    let in_buf = usize::try_from(request.content_length).map_or(buf.len(), |n| n.min(buf.len()));
    request.upstream.extend_from_slice(&buf.split_to(in_buf));
    let rest = request.content_length - in_buf as u64;
    let backend = request.backend.clone();
    let config = &shared.config;
    let mut tried: Vec<SocketAddr> = Vec::with_capacity(config.tries);
    let mut stale = 0;
    let mut failure = Failure::Unreachable;
    let mut answered = None;
    while tried.len() < config.tries.max(1) {
        let Some(addr) = shared.endpoints.pick(&backend, &tried) else {
            break;
        };
        tried.push(addr);
        let Some(mut conn) = shared.h1_connection(addr).await else {
            continue;
        };
        let stats = shared.endpoints.stats(addr);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let sent_at = Instant::now();
        let t = config.read_timeout;
        let exchange = async {
            // Each wait has its own bound (nginx's proxy_send_timeout,
            // client_body_timeout, proxy_read_timeout): a slow client
            // upload is the client's failure, not the endpoint's.
            within(t, conn.write_request(&request.upstream)).await?;
            copy_body(io, buf, &mut conn, rest, t).await?;
            within(
                t,
                conn.read_response(request.head_only, |r| client_head(r, request.hsts)),
            )
            .await
        };
        let sent = exchange.await;
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        match sent {
            Ok(head) => {
                shared.endpoints.observe(&stats, sent_at.elapsed());
                answered = Some((addr, conn, head));
                break;
            }
            // Resent only when the endpoint cannot have acted on it, as
            // nginx does: idempotent, and nothing of an answer seen.
            Err(SendError::Stale) if rest == 0 && request.idempotent && stale < config.tries => {
                tracing::debug!(endpoint = %addr, "pooled connection closed; sending again");
                tried.pop();
                stale += 1;
            }
            Err(SendError::ClientBody(e)) => {
                tracing::debug!(error = %e, "client request body failed");
                finish(shared, &backend, request, 400, 0, None);
                return Ok(false);
            }
            Err(SendError::Timeout) => {
                shared.endpoints.mark_down(addr);
                failure = Failure::Timeout;
                break;
            }
            Err(e) => {
                tracing::debug!(endpoint = %addr, error = %e, "request to endpoint failed");
                failure = Failure::Broken;
                break;
            }
        }
    }
    // Looked at once the endpoint has answered: a drain that began
    // meanwhile closes this connection after this answer.
    let closing = request.close || *shared.draining.borrow();
    let Some((addr, mut conn, head)) = answered else {
        // The body may be partly unread: close after the answer then.
        let keep = rest == 0 && !closing;
        let status = own_answer(io, &failure, &request, !keep, config.read_timeout).await?;
        finish(shared, &backend, request, status, 0, None);
        return Ok(keep);
    };

    let mut framing = head.framing;
    let until_close = framing == Framing::UntilClose;
    // A body that runs until the endpoint closes goes to the client
    // chunked, so the client's connection stays open (as nginx does).
    let chunked = until_close || matches!(framing, Framing::Chunked(_));
    let mut out = head.parsed.bytes;
    match framing {
        _ if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(n) => header(&mut out, "content-length", n.to_string().as_bytes()),
        // HEAD and 304 tell the length a GET would have had.
        _ => {
            if let Some(l) = &head.parsed.length {
                header(&mut out, "content-length", l);
            }
        }
    }
    if closing {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let mut sent = 0u64;
    let complete = loop {
        match conn.body_step(&mut framing) {
            Ok(Step::Data(data)) => {
                sent += data.len() as u64;
                if chunked {
                    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&data);
                }
                if out.len() >= FLUSH_AT {
                    send(io, &out, config.read_timeout).await?;
                    out.clear();
                }
            }
            Ok(Step::Done) => break true,
            Ok(Step::NeedMore) => {
                if !out.is_empty() {
                    send(io, &out, config.read_timeout).await?;
                    out.clear();
                }
                match tokio::time::timeout(config.read_timeout, conn.read_more()).await {
                    Ok(Ok(0)) => break framing.closed().is_ok(),
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => break false,
                }
            }
            Err(_) => break false,
        }
    };
    if complete && chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    // The endpoint's answer is all read: its connection goes back to the
    // pool before the client gets the last bytes, so the client's next
    // request (on this or another connection) finds it there.
    if complete && head.keep_alive && !until_close && conn.drained() {
        shared.pool.give_back(addr, conn);
    }
    if !out.is_empty() {
        send(io, &out, config.read_timeout).await?;
    }
    finish(
        shared,
        &backend,
        request,
        head.parsed.status,
        sent,
        Some(addr),
    );
    Ok(complete && !closing)
}

/// Copies the part of the request body not read yet from the client to
/// the endpoint, each read and write bounded by `t`.
async fn copy_body<IO>(
    io: &mut IO,
    buf: &mut BytesMut,
    conn: &mut Connection,
    mut rest: u64,
    t: Duration,
) -> Result<(), SendError>
where
    IO: AsyncRead + Unpin,
{
    while rest > 0 {
        if buf.is_empty() {
            let n = match tokio::time::timeout(t, io.read_buf(buf)).await {
                Ok(r) => r.map_err(|e| SendError::ClientBody(e.to_string()))?,
                Err(_) => return Err(SendError::ClientBody(format!("no body bytes in {t:?}"))),
            };
            if n == 0 {
                return Err(SendError::ClientBody("closed in the body".into()));
            }
        }
        let n = usize::try_from(rest).map_or(buf.len(), |r| r.min(buf.len()));
        let piece = buf.split_to(n);
        within(t, conn.write_more(&piece)).await?;
        rest -= n as u64;
    }
    Ok(())
}

/// `f` within `t`, or `SendError::Timeout`.
async fn within<T>(
    t: Duration,
    f: impl std::future::Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    tokio::time::timeout(t, f)
        .await
        .unwrap_or(Err(SendError::Timeout))
}

/// Writes `out` to the client and flushes it (a TLS stream may hold the
/// last records back otherwise), within `t` (nginx's `send_timeout`).
async fn send<IO>(io: &mut IO, out: &[u8], t: Duration) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let write = async {
        io.write_all(out).await?;
        io.flush().await
    };
    tokio::time::timeout(t, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// ferry's own answer when no endpoint answered; its status. No body
/// for HEAD; HSTS on TLS hosts, as on hyper's path.
async fn own_answer<IO>(
    io: &mut IO,
    failure: &Failure,
    request: &Request,
    close: bool,
    t: Duration,
) -> io::Result<u16>
where
    IO: AsyncWrite + Unpin,
{
    let (status, text) = failure.status_and_text();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    header(&mut out, "content-type", b"text/plain; charset=utf-8");
    header(
        &mut out,
        "content-length",
        text.len().to_string().as_bytes(),
    );
    header(&mut out, "server", b"ferry");
    header(
        &mut out,
        "date",
        httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
    );
    if request.hsts {
        header(
            &mut out,
            "strict-transport-security",
            tls::policy::HSTS.as_bytes(),
        );
    }
    if close {
        header(&mut out, "connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if !request.head_only {
        out.extend_from_slice(text.as_bytes());
    }
    send(io, &out, t).await?;
    Ok(status.as_u16())
}

/// Metrics and the access log for a finished request.
fn finish(
    shared: &Shared,
    backend: &Arc<Backend>,
    request: Request,
    status: u16,
    bytes: u64,
    upstream: Option<SocketAddr>,
) {
    let took = request.start.elapsed();
    if let Some(m) = &shared.metrics {
        m.request(
            Some(backend),
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            took,
        );
    }
    if let (Some(log), Some(mut entry)) = (shared.access_log.get(), request.log) {
        entry.status = status;
        entry.bytes = bytes;
        entry.request_time = took;
        entry.upstream = upstream;
        entry.backend = Some(backend.clone());
        log.log(entry);
    }
}

/// A connection with bytes already read put back in front, for hyper.
pub(super) struct Rewind<IO> {
    pre: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub fn new(io: IO, pre: Bytes) -> Rewind<IO> {
        Rewind { pre, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(out.remaining());
            out.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_of(raw: &str, trust: bool) -> Option<(Vec<String>, u64, bool)> {
        let mut slots = [httparse::EMPTY_HEADER; HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        req.parse(raw.as_bytes()).unwrap();
        let f = Facts::of(req.headers, trust)?;
        let passed = req
            .headers
            .iter()
            .filter(|h| f.passes(h.name, trust))
            .map(|h| h.name.to_ascii_lowercase())
            .collect();
        Some((passed, f.content_length, f.close))
    }

    #[test]
    fn hop_by_hop_and_forwarding_headers_do_not_pass_as_sent() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\
                   Keep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\n\
                   X-Forwarded-Proto: https\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n";
        let (passed, length, close) = facts_of(raw, false).unwrap();
        assert_eq!(passed, ["host", "accept", "content-length"]);
        assert_eq!((length, close), (0, true));
        let (passed, _, _) = facts_of(raw, true).unwrap();
        assert_eq!(
            passed,
            ["host", "x-forwarded-proto", "accept", "content-length"]
        );
    }

    #[test]
    fn requests_hyper_must_serve_are_left_to_it() {
        for raw in [
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(facts_of(raw, false).is_none(), "{raw}");
        }
    }
}
