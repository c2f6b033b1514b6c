//! The three ways a port is served: HTTP (a JSON description of the
//! request), TCP (one JSON line on connect, then an echo of every byte) and
//! UDP (a JSON answer to every datagram).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_httpd::{Peer, Request, StatusCode, respond};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::{Identity, Shared};

#[derive(Serialize)]
struct Answer<'a> {
    #[serde(flatten)]
    identity: &'a Identity,
    /// The source address this pod saw: the real client, or a masqueraded one.
    client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    /// The request's protocol version as the pod saw it, e.g. "HTTP/1.1"
    /// (the conformance suite's echo server calls it `proto`).
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
}

impl<'a> Answer<'a> {
    fn new(identity: &'a Identity, client: SocketAddr) -> Self {
        Answer {
            identity,
            client: client.to_string(),
            method: None,
            path: None,
            host: None,
            proto: None,
            headers: None,
            protocol: None,
            data: None,
        }
    }
}

fn to_json(a: &Answer) -> String {
    // Serializing plain strings and maps cannot fail.
    serde_json::to_string(a).unwrap_or_else(|_| "{}".into())
}

pub(crate) async fn http(listener: TcpListener, shared: Arc<Shared>) {
    ferry_httpd::serve(listener, move |req: Request<_>, peer: Peer| {
        let shared = shared.clone();
        async move {
            let headers: BTreeMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let is_probe = headers
                .get("user-agent")
                .is_some_and(|ua| ua.starts_with("kube-probe/"));
            if is_probe && !shared.ready.load(Ordering::Relaxed) {
                return respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n");
            }
            let mut a = Answer::new(&shared.identity, peer.remote);
            a.method = Some(req.method().to_string());
            a.path = Some(
                req.uri()
                    .path_and_query()
                    .map_or("/".into(), |p| p.to_string()),
            );
            a.host = headers.get("host").cloned();
            a.proto = Some(format!("{:?}", req.version()));
            a.headers = Some(headers);
            let mut body = to_json(&a);
            body.push('\n');
            respond(StatusCode::OK, "application/json", body)
        }
    })
    .await
}

pub(crate) async fn tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut stream, client)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let a = Answer {
                protocol: Some("TCP"),
                ..Answer::new(&shared.identity, client)
            };
            let mut line = to_json(&a);
            line.push('\n');
            if stream.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 16 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

pub(crate) async fn udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let a = Answer {
            protocol: Some("UDP"),
            data: Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            ..Answer::new(&shared.identity, client)
        };
        let mut reply = to_json(&a);
        reply.push('\n');
        if let Err(e) = socket.send_to(reply.as_bytes(), client).await {
            tracing::debug!(error = %e, %client, "udp reply failed");
        }
    }
}
