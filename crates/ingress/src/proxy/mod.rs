//! The HTTP proxy: hyper serves HTTP/1.1 and HTTP/2 (h2c by prior
//! knowledge, h2 by ALPN over TLS) on the listeners it is given (TLS
//! handshakes by `tls`, with the certificate table swapped in last); HTTP
//! to a host that has TLS gets a 308 to HTTPS, and HTTPS answers for it
//! carry HSTS. Each request loads the current
//! route table (one atomic load, no lock), picks an endpoint of the
//! matched backend, and is streamed to it over a pooled HTTP/1.1
//! connection (or the endpoint's HTTP/2 connection for h2c and gRPC
//! backends, trailers kept). Connection failures are retried on the next endpoint
//! (bounded by `tries`) and mark the endpoint down for a while; an Upgrade
//! (WebSocket) is spliced byte for byte once the endpoint answers 101. A
//! new route table is swapped in whole: requests and upgraded connections
//! already under way keep the backend they started with, so nothing is
//! closed by a configuration change. [`Gateway::drain`] stops accepting,
//! lets requests in flight finish and closes each client connection once
//! it is idle (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY), as nginx does
//! on a graceful stop.
//!
//! Touches the network: the sockets it is given, and TCP to endpoints.

mod balance;
mod body;
mod fast;
mod framing;
mod h1;
mod headers;
mod pool;

pub(crate) use pool::set_worker;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::{Notify, watch};

pub use balance::Balance;
pub(crate) use body::BoxError;
pub use body::ProxyBody;

use crate::access_log::{self, AccessLog, UpstreamAddr};
use crate::metrics::Metrics;
use crate::proxy_protocol;
use crate::routes::{Backend, RouteTable, UpstreamProtocol};
use crate::tls::{self, CertTable};
use body::RequestBody;
use headers::Client;

/// How the proxy talks to clients and endpoints.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Time to connect to an endpoint (ingress-nginx `proxy-connect-timeout`).
    pub connect_timeout: Duration,
    /// Time for an endpoint to take the request and answer with its
    /// response headers (ingress-nginx's `proxy-send-timeout` and
    /// `proxy-read-timeout` together; bodies then stream without a timer).
    pub read_timeout: Duration,
    /// Endpoints tried per request when connecting fails
    /// (`proxy-next-upstream-tries`).
    pub tries: usize,
    /// Larger request bodies get 413 (`proxy-body-size`, 1 MiB like nginx's
    /// `client_max_body_size` default).
    pub max_body: u64,
    pub balance: Balance,
    /// How long an endpoint that refused a connection is skipped.
    pub down_for: Duration,
    /// Idle keep-alive connections kept per endpoint
    /// (`upstream-keepalive-connections`).
    pub max_idle_per_endpoint: usize,
    /// `upstream-keepalive-timeout`.
    pub idle_timeout: Duration,
    /// Append to the client's X-Forwarded-* instead of replacing them
    /// (`use-forwarded-headers`).
    pub trust_forwarded: bool,
    /// Every client connection starts with a PROXY protocol header (v1 or
    /// v2), whose source address is the client's (`use-proxy-protocol`);
    /// a connection without a valid one is closed.
    pub proxy_protocol: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            tries: 3,
            max_body: 1 << 20,
            balance: Balance::RoundRobin,
            down_for: Duration::from_secs(10),
            max_idle_per_endpoint: 320,
            idle_timeout: Duration::from_secs(60),
            trust_forwarded: false,
            proxy_protocol: false,
        }
    }
}

/// The proxy: cheap to clone; every clone serves the same route table.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    table: ArcSwap<RouteTable>,
    /// Read by the TLS handshakes (through `tls`) and for the redirect and HSTS.
    certs: Arc<ArcSwap<CertTable>>,
    tls: Arc<rustls::ServerConfig>,
    /// The port of the first HTTPS listener: where HTTP to a TLS host is
    /// redirected (no HTTPS listener: no redirect).
    https_port: OnceLock<u16>,
    config: ProxyConfig,
    pool: Arc<pool::Pool>,
    endpoints: balance::Endpoints,
    metrics: Option<Metrics>,
    request_ids: AtomicU64,
    http: auto::Builder<TokioExecutor>,
    /// Set once, before serving; None: no access log.
    access_log: OnceLock<AccessLog>,
    /// True once the gateway drains: accept loops stop, connections close
    /// when idle.
    draining: watch::Sender<bool>,
    /// Client connections open (TLS handshakes included); `closed` is
    /// notified when the last one goes.
    open: AtomicUsize,
    closed: Notify,
}

/// One open client connection, counted for [`Gateway::drain`].
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: &Arc<Shared>) -> Open {
        shared.open.fetch_add(1, Ordering::AcqRel);
        Open(shared.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

/// Whether a listener is plain HTTP or TLS (for X-Forwarded-Proto).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl Gateway {
    /// A proxy with an empty route table (every request 404 until
    /// [`Gateway::swap`]).
    pub fn new(config: ProxyConfig, metrics: Option<Metrics>) -> Gateway {
        let pool = Arc::new(pool::Pool::new(
            config.max_idle_per_endpoint,
            config.idle_timeout,
            config.connect_timeout,
        ));
        let endpoints = balance::Endpoints::new(config.balance, config.down_for);
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .keep_alive(true)
            .timer(hyper_util::rt::TokioTimer::new());
        let certs = Arc::new(ArcSwap::from_pointee(CertTable::default()));
        let tls = tls::server_config(certs.clone())
            // Only fails for protocol versions the provider lacks; ring
            // has both TLS 1.2 and 1.3.
            .expect("the ring provider supports TLS 1.2 and 1.3");
        Gateway {
            shared: Arc::new(Shared {
                table: ArcSwap::from_pointee(RouteTable::default()),
                certs,
                tls: Arc::new(tls),
                https_port: OnceLock::new(),
                config,
                pool,
                endpoints,
                metrics,
                request_ids: AtomicU64::new(seed()),
                http,
                access_log: OnceLock::new(),
                draining: watch::Sender::new(false),
                open: AtomicUsize::new(0),
                closed: Notify::new(),
            }),
        }
    }

    /// Makes `table` the one new requests use; requests under way finish
    /// with the table they loaded.
    pub fn swap(&self, table: Arc<RouteTable>) {
        if let Some(m) = &self.shared.metrics {
            m.table(&table);
        }
        self.shared.table.store(table);
    }

    /// Logs every request from now on (set once, before serving).
    pub fn set_access_log(&self, log: AccessLog) {
        let _ = self.shared.access_log.set(log);
    }

    /// The route table in use.
    pub fn table(&self) -> Arc<RouteTable> {
        self.shared.table.load_full()
    }

    /// Makes `certs` the table new TLS handshakes and new requests use;
    /// connections already open keep the certificate they were given.
    pub fn swap_certs(&self, certs: Arc<CertTable>) {
        self.shared.certs.store(certs);
    }

    /// The certificate table in use.
    pub fn certs(&self) -> Arc<CertTable> {
        self.shared.certs.load_full()
    }

    /// Idle upstream connections in the pool.
    pub fn idle_connections(&self) -> usize {
        self.shared.pool.idle()
    }

    /// True once [`Gateway::drain`] has begun.
    pub fn draining(&self) -> bool {
        *self.shared.draining.borrow()
    }

    /// Drains: the accept loops stop and drop their listeners (new
    /// connections are refused), every client connection is asked to close
    /// once the requests it carries are answered (an idle HTTP/1.1
    /// connection closes now, a busy one after its response, which says
    /// `Connection: close`; HTTP/2 gets a GOAWAY and finishes its streams),
    /// and this waits until none is open, at most `timeout`. True when all
    /// closed in time. Upgraded connections (WebSocket) are not waited for.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.shared.draining.send_replace(true);
        let all_closed = async {
            loop {
                // Created before the count is read, so a close in between
                // still wakes it.
                let closed = self.shared.closed.notified();
                if self.shared.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                closed.await;
            }
        };
        tokio::time::timeout(timeout, all_closed).await.is_ok()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Serves plain HTTP on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener, scheme: Scheme) {
        self.accept(listener, scheme, None).await;
    }

    /// Serves HTTPS on `listener` until the task is dropped; the first
    /// HTTPS listener is where plain HTTP to TLS hosts is redirected.
    pub async fn serve_tls(self, listener: tokio::net::TcpListener) {
        if let Ok(addr) = listener.local_addr() {
            let _ = self.shared.https_port.set(addr.port());
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.shared.tls.clone());
        self.accept(listener, Scheme::Https, Some(acceptor)).await;
    }

    async fn accept(
        self,
        listener: tokio::net::TcpListener,
        scheme: Scheme,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let mut draining = self.shared.draining.subscribe();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = drained(&mut draining) => return,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "ingress accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(peer);
            let shared = self.shared.clone();
            let open = Open::new(&shared);
            let acceptor = tls.clone();
            tokio::spawn(async move {
                let _open = open;
                let mut stream = stream;
                let Some((peer, local)) = shared.proxy_header(&mut stream, peer, local).await
                else {
                    return;
                };
                let Some(acceptor) = acceptor else {
                    return shared.connection(stream, peer, local, scheme, false).await;
                };
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        shared.connection(stream, peer, local, scheme, h2).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                }
            });
        }
    }
}

/// Returns once the gateway drains (the sender lives as long as `Shared`).
async fn drained(draining: &mut watch::Receiver<bool>) {
    let _ = draining.wait_for(|d| *d).await;
}

/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that has not sent its PROXY protocol header by then is
/// dropped (nginx gives it `proxy_protocol_timeout`, 30 s by default; a
/// load balancer sends the header with its first packet).
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A per-process start for request ids, so two runs do not repeat them.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

/// `Server` on every answer, ferry's own and proxied ones: as nginx, which
/// does not pass an upstream's `Server` on but names itself.
const SERVER: HeaderValue = HeaderValue::from_static("ferry");

/// ferry's own short answers.
fn own(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::text(text));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::SERVER, SERVER);
    r
}

/// Why a request got no upstream answer.
enum Failure {
    NoEndpoints,
    Unreachable,
    Timeout,
    TooLarge,
    Broken,
}

impl Failure {
    fn status_and_text(&self) -> (StatusCode, &'static str) {
        match self {
            Failure::NoEndpoints => (
                StatusCode::SERVICE_UNAVAILABLE,
                "503 service unavailable: no ready endpoints\n",
            ),
            Failure::Unreachable => (
                StatusCode::BAD_GATEWAY,
                "502 bad gateway: no endpoint could be reached\n",
            ),
            Failure::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "504 gateway timeout: the endpoint did not answer in time\n",
            ),
            Failure::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 request entity too large\n",
            ),
            Failure::Broken => (
                StatusCode::BAD_GATEWAY,
                "502 bad gateway: the endpoint closed the connection\n",
            ),
        }
    }

    fn response(&self) -> Response<ProxyBody> {
        let (status, text) = self.status_and_text();
        own(status, text)
    }
}

impl Shared {
    /// The client and local addresses of a new connection: the socket's,
    /// or with `proxy_protocol` the ones its PROXY header announces (the
    /// socket's for v1 `UNKNOWN` and v2 `LOCAL`). None: no valid header in
    /// time; the connection is closed, as nginx does.
    async fn proxy_header(
        &self,
        stream: &mut tokio::net::TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<(SocketAddr, SocketAddr)> {
        if !self.config.proxy_protocol {
            return Some((peer, local));
        }
        match tokio::time::timeout(PROXY_HEADER_TIMEOUT, proxy_protocol::read(stream)).await {
            Ok(Ok(Some(announced))) => Some(announced),
            Ok(Ok(None)) => Some((peer, local)),
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "no valid PROXY protocol header; closing");
                None
            }
            Err(_) => {
                tracing::debug!(client = %peer, "no PROXY protocol header in time; closing");
                None
            }
        }
    }

    /// Serves one client connection (HTTP/1.1 or HTTP/2, upgrades) until
    /// it ends: on the fast path while its requests are common HTTP/1.1
    /// ones (`fast`), then on hyper (`h2`: ALPN chose HTTP/2, straight to
    /// hyper).
    async fn connection<IO>(
        self: Arc<Self>,
        io: IO,
        peer: SocketAddr,
        local: SocketAddr,
        scheme: Scheme,
        h2: bool,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = if h2 {
            fast::Rewind::new(io, bytes::Bytes::new())
        } else {
            match fast::serve(&self, io, peer, local, scheme).await {
                fast::Served::Closed => return,
                fast::Served::Hyper(io, read) => fast::Rewind::new(io, read.freeze()),
            }
        };
        let shared = self.clone();
        let service = hyper::service::service_fn(|req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(shared.handle(req, peer, local, scheme).await) }
        });
        let conn = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut draining = self.draining.subscribe();
        let ended = tokio::select! {
            ended = conn.as_mut() => ended,
            () = drained(&mut draining) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(client = %peer, error = %e, "client connection ended");
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        local: SocketAddr,
        scheme: Scheme,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        let tls_host = host
            .as_deref()
            .is_some_and(|h| self.certs.load().has_tls(h));
        if tls_host
            && scheme == Scheme::Http
            && let Some(r) = self.redirect(host.as_deref().unwrap_or(""), req.uri())
        {
            self.record(None, &r, start);
            return r;
        }
        let backend = {
            let table = self.table.load();
            table
                .lookup(host.as_deref().unwrap_or(""), req.uri().path())
                .cloned()
        };
        let logging = self.access_log.get().map(|log| (log, entry(&req, peer)));
        let (mut response, backend) = match backend {
            None => (own(StatusCode::NOT_FOUND, "404 page not found\n"), None),
            Some(backend) => {
                let r = match self
                    .forward(req, &backend, host.as_deref(), peer, local, scheme)
                    .await
                {
                    Ok(r) => r,
                    Err(f) => f.response(),
                };
                (r, Some(backend))
            }
        };
        if tls_host && scheme == Scheme::Https {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, tls::policy::HSTS);
        }
        self.record(backend.as_deref(), &response, start);
        logged(response, logging, backend, start)
    }

    /// The 308 to HTTPS for a TLS host; None when there is no HTTPS listener.
    fn redirect(&self, host: &str, uri: &Uri) -> Option<Response<ProxyBody>> {
        let port = *self.https_port.get()?;
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let location = tls::policy::https_location(host, pq, port)?;
        let mut r = own(StatusCode::PERMANENT_REDIRECT, "308 permanent redirect\n");
        r.headers_mut().insert(header::LOCATION, location);
        Some(r)
    }

    fn record(&self, backend: Option<&Backend>, r: &Response<ProxyBody>, start: Instant) {
        if let Some(m) = &self.metrics {
            m.request(backend, r.status(), start.elapsed());
        }
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        backend: &Arc<Backend>,
        host: Option<&str>,
        peer: SocketAddr,
        local: SocketAddr,
        scheme: Scheme,
    ) -> Result<Response<ProxyBody>, Failure> {
        if backend.endpoints.is_empty() {
            return Err(Failure::NoEndpoints);
        }
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > self.config.max_body) {
            return Err(Failure::TooLarge);
        }
        let upgrade = headers::upgrade_of(req.headers());
        let h2c = backend.protocol == UpstreamProtocol::H2c;
        // gRPC servers may insist on `te: trailers`, the one TE HTTP/2 allows.
        let te_trailers = h2c
            && req
                .headers()
                .get(header::TE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
                });
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, incoming) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, upgrade.clone());
        headers::set_forwarded(
            &mut parts.headers,
            &Client {
                ip: peer.ip().to_canonical(),
                scheme: scheme.as_str(),
                port: local.port(),
                host,
            },
            self.config.trust_forwarded,
            || self.request_id(),
        );
        // HTTP/1.1 endpoints get the path and query alone (`h1`).
        parts.version = hyper::Version::HTTP_11;
        if h2c {
            // HTTP/2 carries the host in the URI (`:authority`), with a scheme.
            let authority = host.unwrap_or("localhost");
            let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            if let Ok(uri) = Uri::try_from(format!("http://{authority}{pq}")) {
                parts.uri = uri;
                parts.headers.remove(header::HOST);
            }
            parts.version = hyper::Version::HTTP_2;
            if te_trailers {
                parts
                    .headers
                    .insert(header::TE, HeaderValue::from_static("trailers"));
            }
        }
        let (body, too_large) = RequestBody::new(incoming, self.config.max_body);
        if h2c {
            let req = Request::from_parts(parts, body);
            return self.forward_h2(req, backend, &too_large).await;
        }
        self.forward_h1(parts, body, backend, client_upgrade).await
    }

    /// Sends the request to an HTTP/1.1 endpoint over a pooled connection
    /// of its own (`h1`), trying the next endpoint when one cannot be
    /// connected to, and resending a bodiless request when a pooled
    /// connection turns out closed.
    async fn forward_h1(
        &self,
        parts: hyper::http::request::Parts,
        mut body: RequestBody,
        backend: &Arc<Backend>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Result<Response<ProxyBody>, Failure> {
        let resendable = body.is_end_stream() && h1::idempotent(parts.method.as_str().as_bytes());
        let mut tried: Vec<SocketAddr> = Vec::with_capacity(self.config.tries);
        let mut stale = 0;
        while tried.len() < self.config.tries.max(1) {
            let Some(addr) = self.endpoints.pick(backend, &tried) else {
                break;
            };
            tried.push(addr);
            let Some(conn) = self.h1_connection(addr).await else {
                continue;
            };
            let stats = self.endpoints.stats(addr);
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let sent_at = Instant::now();
            let sent =
                tokio::time::timeout(self.config.read_timeout, conn.send(&parts, &mut body)).await;
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            match sent {
                Ok(Ok(answer)) => {
                    self.endpoints.observe(&stats, sent_at.elapsed());
                    return self.h1_response(answer, addr, client_upgrade);
                }
                Ok(Err(h1::SendError::Stale)) if resendable && stale < self.config.tries => {
                    // No fault of the endpoint: it closed an idle connection.
                    tracing::debug!(endpoint = %addr, "pooled connection closed; sending again");
                    tried.pop();
                    stale += 1;
                }
                Ok(Err(h1::SendError::TooLarge(_))) => return Err(Failure::TooLarge),
                Ok(Err(e)) => {
                    tracing::debug!(endpoint = %addr, error = %e, "request to endpoint failed");
                    return Err(Failure::Broken);
                }
                Err(_) => {
                    self.endpoints.mark_down(addr);
                    return Err(Failure::Timeout);
                }
            }
        }
        Err(Failure::Unreachable)
    }

    /// The client's response from an HTTP/1.1 endpoint's answer; a 101 to
    /// an upgrade request splices the two connections.
    fn h1_response(
        &self,
        answer: h1::Answer,
        addr: SocketAddr,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Result<Response<ProxyBody>, Failure> {
        let switching = answer.response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let (response, body, upgrade_back) = match (switching, client_upgrade) {
            (true, Some(client)) => {
                let upgrade_back = headers::upgrade_of(answer.response.headers());
                let (io, early) = answer.conn.into_upgraded();
                tokio::spawn(splice_h1(client, io, early));
                (answer.response, ProxyBody::Own(None), upgrade_back)
            }
            (true, None) => {
                tracing::debug!(endpoint = %addr, "101 to a request that asked for no upgrade");
                return Err(Failure::Broken);
            }
            (false, _) => {
                let (response, body) = h1::UpstreamBody::new(answer, addr, self.pool.clone());
                (response, ProxyBody::Endpoint(body), None)
            }
        };
        let (mut parts, ()) = response.into_parts();
        parts.version = hyper::Version::HTTP_11;
        headers::strip_hop_by_hop(&mut parts.headers, upgrade_back);
        parts.headers.insert(header::SERVER, SERVER);
        parts.extensions.insert(UpstreamAddr(addr));
        Ok(Response::from_parts(parts, body))
    }

    /// Sends the request over the h2c endpoint's shared HTTP/2 connection.
    async fn forward_h2(
        &self,
        mut req: Request<RequestBody>,
        backend: &Arc<Backend>,
        too_large: &std::sync::atomic::AtomicBool,
    ) -> Result<Response<ProxyBody>, Failure> {
        let mut tried: Vec<SocketAddr> = Vec::with_capacity(self.config.tries);
        let mut failure = Failure::Unreachable;
        let mut stale = 0;
        while tried.len() < self.config.tries.max(1) {
            let Some(addr) = self.endpoints.pick(backend, &tried) else {
                break;
            };
            tried.push(addr);
            let mut sender = match self.pool.h2(addr).await {
                Ok(s) => s,
                Err(e) => {
                    self.unreachable(addr, &e);
                    continue;
                }
            };
            let stats = self.endpoints.stats(addr);
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let sent_at = Instant::now();
            let sent =
                tokio::time::timeout(self.config.read_timeout, sender.try_send_request(req)).await;
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            match sent {
                Ok(Ok(response)) => {
                    self.endpoints.observe(&stats, sent_at.elapsed());
                    let (mut parts, body) = response.into_parts();
                    // An h2c endpoint's answer may go to an HTTP/1.1 client.
                    parts.version = hyper::Version::HTTP_11;
                    headers::strip_hop_by_hop(&mut parts.headers, None);
                    parts.headers.insert(header::SERVER, SERVER);
                    parts.extensions.insert(UpstreamAddr(addr));
                    return Ok(Response::from_parts(parts, ProxyBody::Upstream(body)));
                }
                Ok(Err(mut e)) => {
                    if too_large.load(Ordering::Relaxed) {
                        return Err(Failure::TooLarge);
                    }
                    match e.take_message() {
                        // Not sent: the connection was dead before it
                        // began; the same request goes to the next try.
                        Some(back) => {
                            req = back;
                            tracing::debug!(endpoint = %addr, error = %e.error(), "retrying on another connection");
                            tried.pop();
                            stale += 1;
                            if stale > self.config.tries {
                                break;
                            }
                        }
                        None => {
                            tracing::debug!(endpoint = %addr, error = %e.error(), "request to endpoint failed");
                            failure = Failure::Broken;
                            break;
                        }
                    }
                }
                Err(_) => {
                    self.endpoints.mark_down(addr);
                    failure = Failure::Timeout;
                    break;
                }
            }
        }
        Err(failure)
    }

    /// An idle pooled HTTP/1.1 connection to `addr` or a new one; None
    /// when it cannot be connected to (then skipped for a while).
    async fn h1_connection(&self, addr: SocketAddr) -> Option<h1::Connection> {
        if let Some(c) = self.pool.take(addr) {
            return Some(c);
        }
        match self.pool.connect(addr).await {
            Ok(c) => Some(c),
            Err(e) => {
                self.unreachable(addr, &e);
                None
            }
        }
    }

    /// An endpoint that could not be connected to is skipped for a while.
    fn unreachable(&self, addr: SocketAddr, e: &pool::ConnectError) {
        tracing::debug!(error = %e, "endpoint skipped");
        self.endpoints.mark_down(addr);
        if let Some(m) = &self.metrics {
            m.connect_error();
        }
    }

    /// A 32-hex-digit id, as nginx's `$request_id`.
    fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        let mut z = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        format!("{:016x}{:016x}", z, n)
    }
}

/// The access log's view of a request, taken before it is forwarded.
fn entry<B>(req: &Request<B>, peer: SocketAddr) -> access_log::Entry {
    access_log::Entry {
        client: peer.ip().to_canonical(),
        time: std::time::SystemTime::now(),
        method: req.method().clone(),
        path: req.uri().path_and_query().map_or_else(
            || req.uri().path().to_string(),
            |pq| pq.as_str().to_string(),
        ),
        version: req.version(),
        status: 0,
        bytes: 0,
        referer: req.headers().get(header::REFERER).cloned(),
        user_agent: req.headers().get(header::USER_AGENT).cloned(),
        request_time: Duration::ZERO,
        upstream: None,
        backend: None,
    }
}

/// The response, with a body that logs the request when it ends (when
/// the access log is on).
fn logged(
    response: Response<ProxyBody>,
    logging: Option<(&AccessLog, access_log::Entry)>,
    backend: Option<Arc<Backend>>,
    start: Instant,
) -> Response<ProxyBody> {
    let Some((log, mut entry)) = logging else {
        return response;
    };
    entry.status = response.status().as_u16();
    entry.upstream = response.extensions().get::<UpstreamAddr>().map(|u| u.0);
    entry.backend = backend;
    response.map(|body| {
        ProxyBody::Logged(Box::new(access_log::Logged::new(
            body,
            entry,
            start,
            log.clone(),
        )))
    })
}

/// Copies bytes both ways between an upgraded client connection and the
/// endpoint's connection (after the bytes the endpoint sent right behind
/// its 101) until either side closes.
async fn splice_h1(
    client: hyper::upgrade::OnUpgrade,
    mut upstream: tokio::net::TcpStream,
    early: bytes::Bytes,
) {
    let mut client = match client.await {
        Ok(c) => TokioIo::new(c),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    if !early.is_empty() {
        use tokio::io::AsyncWriteExt;
        if let Err(e) = client.write_all(&early).await {
            tracing::debug!(error = %e, "upgraded connection ended");
            return;
        }
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}
