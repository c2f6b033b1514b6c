//! `Gateway::drain` with real clients on loopback: idle HTTP/1.1 and
//! HTTP/2 connections are closed (HTTP/2 by GOAWAY: the client's
//! connection ends without error), new connections are refused, and the
//! drain reports done long before its timeout. (The binary on SIGTERM,
//! with a request in flight: `ferry/tests/ingress_drain.rs`.)

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use ferry_ingress::ProxyConfig;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_idle_http1_and_http2_connections_and_refuses_new_ones() {
    let a = upstream("a").await;
    let mut objects = service("a", &[a.addr]);
    objects.push(ingress("web", "foo.test", &[("/", "a")]));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    // HTTP/1.1 keep-alive, one request answered, then idle.
    let mut h1 = Client::connect(addr).await;
    let (status, _) = h1.get("foo.test", "/").await.unwrap();
    assert_eq!(status.as_u16(), 200);
    // HTTP/2 by prior knowledge, one request answered, then idle.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let h2_conn = tokio::spawn(conn);
    let req = Request::get("http://foo.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.into_body().collect().await.unwrap();
    assert_eq!(gw.open_connections(), 2);

    let start = Instant::now();
    assert!(gw.drain(Duration::from_secs(10)).await, "not drained");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(gw.open_connections(), 0);
    // The HTTP/2 connection ended cleanly (GOAWAY, then close).
    let ended = tokio::time::timeout(Duration::from_secs(5), h2_conn)
        .await
        .expect("the HTTP/2 connection is still open");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    // The HTTP/1.1 connection is closed: the next request cannot be sent.
    assert!(h1.get("foo.test", "/").await.is_err());
    // And nothing accepts any more (the accept loop's task drops its
    // listener as soon as it sees the drain).
    let refused = async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), refused)
        .await
        .expect("still accepting 1 s after the drain");
}
