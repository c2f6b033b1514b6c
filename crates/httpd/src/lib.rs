//! A minimal HTTP/1 server: accept connections on a listener and answer
//! each request with a handler. Used for the agent's `/healthz` and
//! `/metrics` and for the echo workload. Owns sockets, nothing else.
//! Bounded: at most [`Limits::max_connections`] at once and
//! [`Limits::max_per_client`] from one client address (more are closed as
//! they arrive, so one hostile pod cannot take every slot from a load
//! balancer's health probe), and a connection that does not send a whole request
//! head within [`Limits::header_timeout`] (a slow-header client, or an
//! idle keep-alive connection) is closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub use hyper::body::Incoming;
pub use hyper::{Request, Response, StatusCode, header};

pub type Body = Full<Bytes>;

/// A plain response with a content type.
pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// What a handler sees of a request besides the request itself.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// How much one server may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_client: usize,
    /// For the request head, counted from when the server waits for it
    /// (so it is also the keep-alive idle timeout).
    pub header_timeout: Duration,
}

impl Default for Limits {
    /// Enough for probes and scrapes; far below the agent's open-files limit.
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_per_client: 16,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `listener` with the default [`Limits`] until the task is dropped.
pub async fn serve<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>, Peer) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(listener, Limits::default(), handler).await
}

/// Serves `listener` until the task is dropped. Each connection runs on
/// its own task; a failing connection is logged at debug level and costs
/// nothing else. Any response body type: [`Body`] for whole answers, a
/// streaming one (such as [`ChannelBody`]) for long-lived responses.
pub async fn serve_with<H, F, B>(listener: TcpListener, limits: Limits, handler: H)
where
    H: Fn(Request<Incoming>, Peer) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_client: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Arc::default();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(client) = ClientSlot::take(&per_client, remote.ip(), limits.max_per_client) else {
            tracing::debug!(%remote, "connection refused: too many from this client");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the cap: closed at once, so it costs one accept.
            tracing::debug!(%remote, "connection refused: too many open");
            drop(stream);
            continue;
        };
        let local = stream.local_addr().unwrap_or(remote);
        let peer = Peer { remote, local };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = (slot, client);
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req, peer).await) }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
    }
}

/// A response body fed chunk by chunk from a channel (a watch stream);
/// it ends when every sender is dropped.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it, holding up to `depth` chunks.
    pub fn channel(depth: usize) -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(depth);
        (tx, ChannelBody { rx })
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Either a whole body or a streamed one, for servers that answer both ways.
pub type EitherBody = http_body_util::Either<Body, ChannelBody>;

/// One connection counted against its client address; uncounted on drop.
struct ClientSlot {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl ClientSlot {
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
        max: usize,
    ) -> Option<ClientSlot> {
        // The map holds plain counts: usable even after a panic elsewhere.
        let mut m = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Instant;

    use super::*;

    fn start(limits: Limits) -> (SocketAddr, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(serve_with(listener, limits, |_req, _peer| async {
            respond(StatusCode::OK, "text/plain", "ok\n")
        }));
        (addr, rt)
    }

    fn get(addr: SocketAddr) -> Option<String> {
        let mut c = std::net::TcpStream::connect(addr).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        Some(out)
    }

    #[test]
    fn one_client_cannot_take_every_slot() {
        let (addr, _rt) = start(Limits {
            max_connections: 64,
            max_per_client: 4,
            header_timeout: Duration::from_secs(30),
        });
        // 127.0.0.1 holds its four; 127.0.0.2 still gets in.
        let _held: Vec<_> = (0..8)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!get(addr).unwrap_or_default().contains("200 OK"));
        let other = std::net::SocketAddr::new("127.0.0.2".parse().unwrap(), 0);
        let s = get_from(other, addr);
        assert!(s.contains("200 OK"), "{s:?}");
    }

    /// A GET from a chosen local address (the server sees another client).
    fn get_from(local: SocketAddr, to: SocketAddr) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(local).unwrap();
            let mut c = sock.connect(to).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), c.read_to_string(&mut out)).await;
            out
        })
    }

    #[test]
    fn a_slow_header_client_is_closed_after_the_header_timeout() {
        let (addr, _rt) = start(Limits {
            max_connections: 8,
            max_per_client: 8,
            header_timeout: Duration::from_millis(300),
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: ").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 512];
        // Closed (EOF or an error answer, then EOF) well before 5 s.
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn connections_over_the_cap_are_closed_and_the_server_answers_again_once_they_go() {
        let (addr, _rt) = start(Limits {
            max_connections: 4,
            max_per_client: 4,
            header_timeout: Duration::from_secs(30),
        });
        let held: Vec<_> = (0..4)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let answer = get(addr).unwrap_or_default();
        assert!(!answer.contains("200 OK"), "over the cap: {answer:?}");
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
        assert!(get(addr).unwrap_or_default().contains("200 OK"));
    }
}
