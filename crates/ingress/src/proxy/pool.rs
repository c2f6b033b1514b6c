//! Keep-alive connections to endpoints. HTTP/1.1 (as nginx's
//! `proxy_http_version 1.1` with an upstream keepalive pool): a request
//! takes an idle connection to its endpoint or dials a new one; the
//! connection goes back to the pool once its response has been read to
//! the end (`h1`).
//! Connections idle longer than `idle_timeout`, beyond `max_idle` per
//! endpoint, or closed by the endpoint are dropped. HTTP/2 (h2c
//! endpoints): one connection per endpoint, shared by every request to
//! it, dialled again once it closes.
//!
//! Touches the network: dials TCP to endpoints.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::RequestBody;
use super::h1::Connection;

pub(crate) type H2Sender = http2::SendRequest<RequestBody>;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot connect to endpoint {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to endpoint {addr}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP handshake with endpoint {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

thread_local! {
    /// The ingress worker this thread is (0 unless set): each worker
    /// thread keeps its own idle connections, whose I/O runs on its own
    /// runtime, so a request never hands its upstream connection to
    /// another thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as ingress worker `i`.
pub(crate) fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// Idle HTTP/1.1 connections (and since when) by worker thread and endpoint.
type Idle = HashMap<(usize, SocketAddr), Vec<(Connection, Instant)>>;

pub(crate) struct Pool {
    idle: Mutex<Idle>,
    h2: Mutex<HashMap<SocketAddr, H2Sender>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration, connect_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::default(),
            h2: Mutex::default(),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    /// An idle connection to `addr`: the most recently used one; closed
    /// and expired ones are dropped on the way.
    pub fn take(&self, addr: SocketAddr) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&(worker(), addr))?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout && conn.looks_alive() {
                return Some(conn);
            }
        }
        None
    }

    /// A new HTTP/1.1 connection to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Connection, ConnectError> {
        Ok(Connection::new(self.dial(addr).await?))
    }

    /// The HTTP/2 (h2c) connection to `addr`, dialled when there is none
    /// open. Two requests racing to dial both succeed; the later
    /// connection is the one kept.
    pub async fn h2(&self, addr: SocketAddr) -> Result<H2Sender, ConnectError> {
        let open = self
            .h2
            .lock()
            .ok()
            .and_then(|m| m.get(&addr).filter(|s| !s.is_closed()).cloned());
        if let Some(s) = open {
            return Ok(s);
        }
        let tcp = self.dial(addr).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(endpoint = %addr, error = %e, "upstream h2 connection ended");
            }
        });
        if let Ok(mut m) = self.h2.lock() {
            m.insert(addr, sender.clone());
        }
        Ok(sender)
    }

    /// A TCP connection to `addr` within the connect timeout.
    async fn dial(&self, addr: SocketAddr) -> Result<tokio::net::TcpStream, ConnectError> {
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout {
                addr,
                timeout: self.connect_timeout,
            })?
            .map_err(|source| ConnectError::Io { addr, source })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// Gives `conn` back once its response has been read to the end.
    pub fn give_back(&self, addr: SocketAddr, conn: Connection) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let list = idle.entry((worker(), addr)).or_default();
        if list.len() < self.max_idle {
            list.push((conn, Instant::now()));
        }
    }

    /// Idle connections held that the endpoints have not closed (for
    /// metrics and tests).
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .map(|m| {
                m.values()
                    .flatten()
                    .filter(|(c, _)| c.looks_alive())
                    .count()
            })
            .unwrap_or(0)
    }
}
