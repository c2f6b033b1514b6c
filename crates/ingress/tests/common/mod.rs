//! Test rig on loopback: small hyper upstreams that tell what they saw,
//! cluster states whose endpoints are those upstreams, a gateway serving
//! on an ephemeral port, and an in-process keep-alive client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use ferry_ingress::{Gateway, ProxyConfig, RouteTable, RoutesConfig, Scheme};
use ferry_model::EndpointSlice;
use ferry_model::Service;
use ferry_model::k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use ferry_model::{ClusterState, Object};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An upstream on 127.0.0.1: answers every request with what it saw, one
/// `key=value` per line; answers an Upgrade with 101 (and the
/// `Sec-WebSocket-Accept` of a WebSocket handshake) and echoes bytes.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn upstream(name: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    count.fetch_add(1, Ordering::Relaxed);
                    answer(name, req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream {
        addr,
        requests,
        task,
    }
}

async fn answer(
    name: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if let Some(protocol) = req.headers().get("upgrade").cloned() {
        let accept = req
            .headers()
            .get("sec-websocket-key")
            .map(|key| websocket_accept(key.as_bytes()));
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 4096];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", protocol);
        if let Some(accept) = accept {
            resp = resp.header("sec-websocket-accept", accept);
        }
        return Ok(resp.body(Full::new(Bytes::new())).unwrap());
    }
    let mut text = format!("name={name}\npath={}\n", req.uri());
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}={}\n", v.to_str().unwrap_or("?")));
    }
    let body = req.into_body().collect().await?.to_bytes();
    text.push_str(&format!("body_len={}\n", body.len()));
    Ok(Response::builder()
        .header("content-type", "text/plain")
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=60")
        .body(Full::new(Bytes::from(text)))
        .unwrap())
}

/// The `Sec-WebSocket-Accept` answering `key` (RFC 6455 section 4.2.2).
pub fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// Reads a response head (up to the blank line) from a raw connection,
/// leaving what follows (an upgraded protocol's bytes) unread.
pub async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed in the head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// An address on loopback where nothing listens (connections are refused).
pub fn refusing() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A Service `name` (port `http` 80) with one EndpointSlice of `endpoints`
/// (ready), bypassing validation (the API server refuses loopback endpoints).
pub fn service(name: &str, endpoints: &[SocketAddr]) -> Vec<Object> {
    service_port(name, ("http", 80, "TCP"), endpoints)
}

/// The same with one port (name, number, protocol).
pub fn service_port(name: &str, port: (&str, u16, &str), endpoints: &[SocketAddr]) -> Vec<Object> {
    let (port_name, number, protocol) = port;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.1",
                 "ports": [{"name": port_name, "port": number, "protocol": protocol}]},
    }))
    .unwrap();
    // One slice per target port (the upstreams listen on different ports).
    let mut out = vec![Object::Service(Arc::new(svc))];
    for (i, ep) in endpoints.iter().enumerate() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-{i}"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": ep.port(), "protocol": protocol}],
            "endpoints": [{"addresses": [ep.ip().to_string()], "conditions": {"ready": true}}],
        }))
        .unwrap();
        out.push(Object::EndpointSlice(Arc::new(slice)));
    }
    out
}

/// curl's answer: (status, body).
pub async fn curl(args: Vec<String>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let out = ferry_sys::Tool::new("curl")
            .args(["-s", "-S", "-m", "10", "-w", "\n%{http_code}"])
            .args(args)
            .timeout(std::time::Duration::from_secs(15))
            .run()
            .unwrap();
        let (body, code) = out.stdout.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    })
    .await
    .unwrap()
}

/// An Ingress of ferry's class: `host` with (path, Prefix, service) rules.
pub fn ingress(name: &str, host: &str, paths: &[(&str, &str)]) -> Object {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(p, s)| {
            json!({"path": p, "pathType": "Prefix",
                   "backend": {"service": {"name": s, "port": {"number": 80}}}})
        })
        .collect();
    let ing: Ingress = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"ingressClassName": "ferry", "rules": [{"host": host, "http": {"paths": paths}}]},
    }))
    .unwrap();
    Object::Ingress(Arc::new(ing))
}

pub fn class() -> Object {
    let c: IngressClass = serde_json::from_value(json!({
        "metadata": {"name": "ferry"},
        "spec": {"controller": "ferry.dev/ingress-controller"},
    }))
    .unwrap();
    Object::IngressClass(Arc::new(c))
}

pub fn table(mut objects: Vec<Object>) -> Arc<RouteTable> {
    objects.push(class());
    let t = RouteTable::build(
        &ClusterState::from_objects(objects),
        &RoutesConfig::default(),
    );
    assert!(
        t.problems()
            .iter()
            .all(|p| !matches!(p, ferry_ingress::Problem::Invalid { .. })),
        "{:?}",
        t.problems()
    );
    Arc::new(t)
}

/// A gateway serving plain HTTP on 127.0.0.1:<ephemeral>.
pub async fn gateway(
    config: ProxyConfig,
    metrics: Option<ferry_ingress::Metrics>,
) -> (Gateway, SocketAddr) {
    let gw = Gateway::new(config, metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gw.clone().serve(listener, Scheme::Http));
    (gw, addr)
}

/// A keep-alive HTTP/1.1 client connection to the gateway.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        Client::over(tcp).await
    }

    /// A client over an open connection (a TLS stream, say).
    pub async fn over<IO>(io: IO) -> Client
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    /// GET `path` on `host`: status and body.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<(StatusCode, String), String> {
        let (status, _, body) = self.get_with_headers(host, path).await?;
        Ok((status, body))
    }

    /// GET `path` on `host`: status, headers and body.
    pub async fn get_with_headers(
        &mut self,
        host: &str,
        path: &str,
    ) -> Result<(StatusCode, hyper::HeaderMap, String), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

/// A snapshot of `objects` and ferry's IngressClass, as a source sends it.
pub fn snapshot(mut objects: Vec<Object>) -> ferry_source::Snapshot {
    objects.push(class());
    ferry_source::Snapshot {
        state: ClusterState::from_objects(objects),
        changes: Default::default(),
        errors: Vec::new(),
    }
}

/// The value of `key=` in an upstream's answer.
pub fn field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}
