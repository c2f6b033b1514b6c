//! The PROXY protocol on the HTTP listener (`--ingress-proxy-protocol`, as
//! ingress-nginx's `use-proxy-protocol`): real v1 and v2 header bytes
//! over TCP give the client address the upstream sees in X-Forwarded-For
//! and X-Real-IP; a connection without a valid header gets no answer and
//! is closed. (Over TLS: `tls.rs`.)

mod common;

use std::time::Duration;

use common::*;
use ferry_ingress::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn served() -> (Upstream, std::net::SocketAddr, ferry_ingress::Gateway) {
    let a = upstream("a").await;
    let mut objects = service("a", &[a.addr]);
    objects.push(ingress("web", "foo.test", &[("/", "a")]));
    let (gw, addr) = gateway(
        ProxyConfig {
            proxy_protocol: true,
            ..ProxyConfig::default()
        },
        None,
    )
    .await;
    gw.swap(table(objects));
    (a, addr, gw)
}

/// What the upstream saw for a GET sent after `header`.
async fn through(addr: std::net::SocketAddr, header: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(header).await.unwrap();
    let mut c = Client::over(tcp).await;
    let (status, body) = c.get("foo.test", "/x").await.unwrap();
    assert_eq!(status.as_u16(), 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_headers_give_the_forwarded_client_address() {
    let (_a, addr, _gw) = served().await;
    let body = through(addr, b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 80\r\n").await;
    assert_eq!(
        field(&body, "x-forwarded-for"),
        Some("203.0.113.7"),
        "{body}"
    );
    assert_eq!(field(&body, "x-real-ip"), Some("203.0.113.7"));
    // The destination port of the header is the port the client used.
    assert_eq!(field(&body, "x-forwarded-port"), Some("80"));
    let body = through(addr, b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 8080\r\n").await;
    assert_eq!(
        field(&body, "x-forwarded-for"),
        Some("2001:db8::7"),
        "{body}"
    );
    // v2, TCP over IPv4, with a TLV after the addresses (skipped).
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x10".to_vec();
    v2.extend([203, 0, 113, 9, 10, 0, 0, 1, 0x9c, 0x40, 0, 80]);
    v2.extend([0x04, 0x00, 0x01, 0x00]);
    let body = through(addr, &v2).await;
    assert_eq!(
        field(&body, "x-forwarded-for"),
        Some("203.0.113.9"),
        "{body}"
    );
    assert_eq!(field(&body, "x-real-ip"), Some("203.0.113.9"));
    // v2 LOCAL (a load balancer's own health check): the socket's address.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let body = through(addr, local).await;
    assert_eq!(field(&body, "x-forwarded-for"), Some("127.0.0.1"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_header_is_closed_unanswered() {
    let (a, addr, _gw) = served().await;
    for first in [
        &b"GET /x HTTP/1.1\r\nHost: foo.test\r\n\r\n"[..],
        b"PROXY TCP4 not-an-address 10.0.0.1 40000 80\r\nGET /x HTTP/1.1\r\nHost: foo.test\r\n\r\n",
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(first).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
            .await
            .expect("the connection was not closed");
        // Closed (EOF, or a reset for the unread request bytes), no answer.
        assert!(read.is_err() || answer.is_empty(), "{answer:?}");
    }
    assert_eq!(a.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_no_header_in_5_s_is_closed() {
    let (_a, addr, _gw) = served().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let start = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), tcp.read_to_end(&mut answer))
        .await
        .expect("the connection was not closed after 8 s");
    assert!(read.is_ok() && answer.is_empty(), "{read:?} {answer:?}");
    let waited = start.elapsed();
    assert!(
        (Duration::from_millis(4500)..Duration::from_secs(8)).contains(&waited),
        "closed after {waited:?}"
    );
}
