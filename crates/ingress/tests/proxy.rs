//! The proxy on loopback with real upstream servers and real clients
//! (curl, and hyper in-process): routing, balancing, retries and passive
//! health, headers, the body limit, HTTP/2 from the client, Upgrade
//! pass-through, and route-table swaps under load.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use ferry_ingress::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn url(gw: SocketAddr, path: &str) -> String {
    format!("http://{gw}{path}")
}

fn host(h: &str) -> [String; 2] {
    ["-H".into(), format!("Host: {h}")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_requests_are_routed_by_host_and_path_to_the_endpoints() {
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let a = upstream("a").await;
    let b = upstream("b").await;
    let mut objects = service("a", &[a.addr]);
    objects.extend(service("b", &[b.addr]));
    objects.push(ingress("web", "foo.test", &[("/a", "a"), ("/b", "b")]));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    for (path, want) in [("/a", "a"), ("/a/x?q=1", "a"), ("/b/", "b")] {
        let (code, body) = curl([&host("foo.test")[..], &[url(addr, path)]].concat()).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(field(&body, "name"), Some(want), "{path}: {body}");
        assert_eq!(field(&body, "path"), Some(path), "{body}");
    }
    // HTTP/2 from the client (h2c by prior knowledge), HTTP/1.1 upstream.
    let (code, body) = curl(
        [
            &["--http2-prior-knowledge".to_string()][..],
            &host("foo.test"),
            &[url(addr, "/b")],
        ]
        .concat(),
    )
    .await;
    assert_eq!((code, field(&body, "name")), (200, Some("b")), "{body}");
    for (h, path) in [("foo.test", "/c"), ("other.test", "/a")] {
        let (code, body) = curl([&host(h)[..], &[url(addr, path)]].concat()).await;
        assert_eq!((code, body.as_str()), (404, "404 page not found\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spread_round_robin_over_the_ready_endpoints() {
    let ups = [
        upstream("e1").await,
        upstream("e2").await,
        upstream("e3").await,
    ];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let mut objects = service("web", &addrs);
    objects.push(ingress("web", "foo.test", &[("/", "web")]));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    let mut client = Client::connect(addr).await;
    let mut seen = BTreeMap::new();
    for _ in 0..30 {
        let (status, body) = client.get("foo.test", "/").await.unwrap();
        assert_eq!(status, 200);
        *seen
            .entry(field(&body, "name").unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        seen,
        BTreeMap::from([("e1".into(), 10), ("e2".into(), 10), ("e3".into(), 10)])
    );
    // Keep-alive to the endpoints: far fewer connections than requests.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        (1..=3).contains(&gw.idle_connections()),
        "{}",
        gw.idle_connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_is_retried_on_the_next_one_and_then_skipped() {
    let good = upstream("good").await;
    let bad = refusing();
    let mut objects = service("web", &[bad, good.addr]);
    objects.push(ingress("web", "foo.test", &[("/", "web")]));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ferry_ingress::Metrics::register(&mut registry);
    let (gw, addr) = gateway(ProxyConfig::default(), Some(metrics)).await;
    gw.swap(table(objects));
    let mut client = Client::connect(addr).await;
    for _ in 0..20 {
        let (status, body) = client.get("foo.test", "/").await.unwrap();
        assert_eq!((status.as_u16(), field(&body, "name")), (200, Some("good")));
    }
    // A request is counted once its answer is sent: the last one may be
    // counted just after the client has read it.
    let served = r#"ferry_ingress_requests_total{ingress="default/web",service="default/web",status="200"} 20"#;
    let mut text = String::new();
    for _ in 0..100 {
        text.clear();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if text.contains(served) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let errors = text
        .lines()
        .find_map(|l| l.strip_prefix("ferry_ingress_upstream_connect_errors_total "))
        .unwrap();
    assert_eq!(
        errors, "1",
        "the refusing endpoint is tried once, then skipped"
    );
    assert!(text.contains(served), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoints_is_503_and_only_refusing_endpoints_is_502() {
    let mut objects = service("down", &[refusing(), refusing()]);
    objects.extend(service("empty", &[]));
    objects.push(ingress(
        "web",
        "foo.test",
        &[("/down", "down"), ("/empty", "empty")],
    ));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    let mut client = Client::connect(addr).await;
    let (status, _) = client.get("foo.test", "/empty").await.unwrap();
    assert_eq!(status, 503);
    let (status, _) = client.get("foo.test", "/down").await.unwrap();
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_sees_forwarding_headers_and_no_hop_by_hop_headers() {
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let a = upstream("a").await;
    let mut objects = service("a", &[a.addr]);
    objects.push(ingress("web", "foo.test", &[("/", "a")]));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    let args: Vec<String> = [
        "-H",
        "Host: Foo.Test:8080",
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-H",
        "Connection: keep-alive, X-Secret",
        "-H",
        "X-Secret: 1",
        "-H",
        "Keep-Alive: timeout=5",
    ]
    .into_iter()
    .map(String::from)
    .chain([url(addr, "/hello")])
    .collect();
    let (code, body) = curl(args).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(field(&body, "x-forwarded-for"), Some("127.0.0.1"), "{body}");
    assert_eq!(field(&body, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(field(&body, "x-forwarded-proto"), Some("http"));
    assert_eq!(field(&body, "x-forwarded-host"), Some("Foo.Test:8080"));
    let port = addr.port().to_string();
    assert_eq!(field(&body, "x-forwarded-port"), Some(port.as_str()));
    assert_eq!(field(&body, "host"), Some("Foo.Test:8080"));
    assert_eq!(field(&body, "x-request-id").map(str::len), Some(32));
    assert_eq!(field(&body, "x-secret"), None, "{body}");
    assert_eq!(field(&body, "keep-alive"), None, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_the_limit_gets_413_announced_or_not() {
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let a = upstream("a").await;
    let mut objects = service("a", &[a.addr]);
    objects.push(ingress("web", "foo.test", &[("/", "a")]));
    let config = ProxyConfig {
        max_body: 64 * 1024,
        ..ProxyConfig::default()
    };
    let (gw, addr) = gateway(config, None).await;
    gw.swap(table(objects));
    let dir = std::env::temp_dir().join(format!("ferry-ingress-413-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = dir.join("small");
    let big = dir.join("big");
    std::fs::write(&small, vec![b'x'; 60 * 1024]).unwrap();
    std::fs::write(&big, vec![b'x'; 200 * 1024]).unwrap();
    let post = |file: &std::path::Path, chunked: bool| {
        let mut args: Vec<String> = host("foo.test").to_vec();
        args.extend(["--data-binary".into(), format!("@{}", file.display())]);
        if chunked {
            args.extend(["-H".into(), "Transfer-Encoding: chunked".into()]);
        }
        args.push(url(addr, "/upload"));
        curl(args)
    };
    let (code, body) = post(&small, false).await;
    assert_eq!(
        (code, field(&body, "body_len")),
        (200, Some("61440")),
        "{body}"
    );
    let (code, body) = post(&small, true).await;
    assert_eq!(
        (code, field(&body, "body_len")),
        (200, Some("61440")),
        "{body}"
    );
    let (code, body) = post(&big, false).await;
    assert_eq!(code, 413, "{body}");
    let (code, body) = post(&big, true).await;
    assert_eq!(code, 413, "{body}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Opens an upgraded connection through the gateway and checks the echo.
async fn open_upgraded(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: foo.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    s
}

async fn echo(s: &mut tokio::net::TcpStream, text: &str) -> String {
    s.write_all(text.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("echo within 5 s")
        .expect("upgraded connection open");
    String::from_utf8(buf).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_passed_through_and_echoes_both_ways() {
    let a = upstream("a").await;
    let mut objects = service("a", &[a.addr]);
    objects.push(ingress("web", "foo.test", &[("/", "a")]));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    let mut s = open_upgraded(addr).await;
    assert_eq!(echo(&mut s, "hello").await, "hello");
    assert_eq!(echo(&mut s, "and again").await, "and again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_table_swaps_under_load_fail_no_request_and_close_no_upgraded_connection() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let with = |svc: &str| {
        let mut objects = service("a", &[a.addr]);
        objects.extend(service("b", &[b.addr]));
        objects.push(ingress("web", "foo.test", &[("/", svc)]));
        table(objects)
    };
    let (tables, tables_b) = (with("a"), with("b"));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(tables.clone());
    let mut ws = open_upgraded(addr).await;
    // Four keep-alive clients, 500 requests each, while the table flips
    // between two versions every 2 ms.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut failed = Vec::new();
            let mut seen = BTreeMap::<String, usize>::new();
            for _ in 0..500 {
                match c.get("foo.test", "/").await {
                    Ok((s, body)) if s == 200 => {
                        *seen
                            .entry(field(&body, "name").unwrap_or("?").into())
                            .or_default() += 1
                    }
                    other => failed.push(format!("{other:?}")),
                }
            }
            (failed, seen)
        }));
    }
    let flipper = {
        let gw = gw.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                gw.swap(if i % 2 == 0 {
                    tables_b.clone()
                } else {
                    tables.clone()
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut total = BTreeMap::<String, usize>::new();
    for c in clients {
        let (failed, seen) = c.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        for (k, v) in seen {
            *total.entry(k).or_default() += v;
        }
    }
    flipper.await.unwrap();
    assert_eq!(total.values().sum::<usize>(), 2000);
    assert!(
        total.contains_key("a") && total.contains_key("b"),
        "both versions served: {total:?}"
    );
    assert_eq!(echo(&mut ws, "still here").await, "still here");
    // The last table routes to a; the upgraded connection kept its endpoint.
    assert_eq!(
        a.requests.load(Ordering::Relaxed) + b.requests.load(Ordering::Relaxed),
        2001
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_table_served_is_empty_and_answers_404() {
    let (_gw, addr) = gateway(ProxyConfig::default(), None).await;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.get("foo.test", "/").await.unwrap().0, 404);
}

/// The conformance suite's check: every answer, ferry's own (404, 503,
/// 413) and proxied ones, carries Content-Length, Content-Type, Date and
/// Server (ferry's, as nginx names itself on proxied answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_and_proxied_answers_carry_content_length_type_date_and_server() {
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let a = upstream("a").await;
    let mut objects = service("a", &[a.addr]);
    objects.extend(service("empty", &[]));
    objects.push(ingress(
        "web",
        "foo.test",
        &[("/a", "a"), ("/empty", "empty")],
    ));
    let config = ProxyConfig {
        max_body: 16,
        ..ProxyConfig::default()
    };
    let (gw, addr) = gateway(config, None).await;
    gw.swap(table(objects));
    let big = vec!["--data-binary".to_string(), "x".repeat(100)];
    let cases: [(&str, &str, &[String], u16); 4] = [
        ("foo.test", "/a", &[], 200),
        ("other.test", "/", &[], 404),
        ("foo.test", "/empty", &[], 503),
        ("foo.test", "/a", &big, 413),
    ];
    for (h, path, extra, want) in cases {
        let args = [&["-i".to_string()][..], &host(h), extra, &[url(addr, path)]].concat();
        let (code, out) = curl(args).await;
        assert_eq!(code, want, "{h}{path}: {out}");
        let head = out.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        for name in ["content-length", "content-type", "date", "server"] {
            assert!(
                head.lines().any(|l| l.starts_with(&format!("{name}:"))),
                "{h}{path} ({code}): no {name}: {head}"
            );
        }
        assert!(head.contains("\nserver: ferry"), "{head}");
    }
}

/// A hand-written HTTP/1.1 endpoint answering by path: chunked bodies,
/// bodies that run until it closes, HEAD, 204, and `/once`, which answers
/// once per connection and then closes the connection when the next
/// request arrives on it (the race a pooled connection can lose). Counts
/// the connections it accepted.
async fn raw_endpoint() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut answered_once = false;
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if s.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let answer: &[u8] = match path.as_str() {
                        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nx-t: 1\r\n\r\n",
                        "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n",
                        "/empty" => b"HTTP/1.1 204 No Content\r\n\r\n",
                        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter",
                        "/both" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                        "/close" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end").await;
                            return;
                        }
                        _ if answered_once => return,
                        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nonce",
                    };
                    answered_once |= path == "/once";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_bodies_of_every_framing_come_through_and_closed_pooled_connections_are_resent() {
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let (endpoint, accepted) = raw_endpoint().await;
    let mut objects = service("web", &[endpoint]);
    objects.push(ingress("web", "foo.test", &[("/", "web")]));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    let mut client = Client::connect(addr).await;
    for (path, want) in [
        ("/chunked", "hello, world"),
        ("/close", "until the end"),
        ("/empty", ""),
        ("/continue", "after"),
        ("/chunked", "hello, world"),
    ] {
        let (status, body) = client.get("foo.test", path).await.unwrap();
        assert!(status.is_success(), "{path}: {status}");
        assert_eq!(body, want, "{path}");
    }
    // HEAD: the endpoint's Content-Length and no body.
    let (code, out) = curl(
        [
            &["-I".to_string()][..],
            &host("foo.test"),
            &[url(addr, "/head")],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 200, "{out}");
    assert!(out.to_lowercase().contains("content-length: 11"), "{out}");
    // `/once` answers one request per connection and drops the next one
    // unanswered: every request still gets its answer, resent on a new
    // connection each time a pooled one turns out closed.
    let before = accepted.load(Ordering::SeqCst);
    for i in 0..5 {
        let (status, body) = client.get("foo.test", "/once").await.unwrap();
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "once"),
            "request {i}"
        );
    }
    // The first may reuse the connection `/chunked` left; each next one
    // finds its pooled connection closed and is sent on a new one.
    let new = accepted.load(Ordering::SeqCst) - before;
    assert!(new >= 4, "{new} new connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_a_body_and_connection_close_on_one_raw_connection() {
    let e = upstream("e1").await;
    let mut objects = service("web", &[e.addr]);
    objects.push(ingress("web", "foo.test", &[("/", "web")]));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Three requests in one write: a GET, a POST with a 5-byte body, and
    // a GET asking to close; then the connection must end.
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: foo.test\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: foo.test\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: foo.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("the connection closes after the third answer")
        .unwrap();
    let all = String::from_utf8(all).unwrap();
    let answers: Vec<&str> = all.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 3, "{all}");
    assert!(answers[0].contains("path=/one\n") && answers[0].contains("body_len=0\n"));
    assert!(answers[1].contains("path=/two\n") && answers[1].contains("body_len=5\n"));
    assert!(answers[2].contains("path=/three\n"), "{all}");
    assert!(
        answers[2].to_lowercase().contains("connection: close\r\n"),
        "{all}"
    );
    for a in &answers {
        let lower = a.to_lowercase();
        assert!(
            lower.contains("server: ferry\r\n") && lower.contains("date: "),
            "{a}"
        );
        assert!(
            !lower.contains("keep-alive: timeout"),
            "hop-by-hop passed on: {a}"
        );
    }
    assert_eq!(e.requests.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_is_ferrys_own_and_nothing_is_smuggled_or_sent_twice() {
    let (endpoint, accepted) = raw_endpoint().await;
    let e = upstream("e1").await;
    let mut objects = service("raw", &[endpoint]);
    objects.extend(service("web", &[e.addr]));
    objects.extend(service("gone", &[refusing()]));
    objects.push(ingress("raw", "raw.test", &[("/", "raw")]));
    objects.push(ingress("web", "web.test", &[("/", "web")]));
    objects.push(ingress("gone", "gone.test", &[("/", "gone")]));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    let exchange = |raw: &'static [u8]| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut all)).await;
        String::from_utf8_lossy(&all).to_lowercase()
    };
    // Chunked and a Content-Length from the endpoint: the client gets
    // ferry's chunked framing only.
    let out = exchange(b"GET /both HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n").await;
    assert!(
        out.contains("transfer-encoding: chunked") && !out.contains("content-length"),
        "{out}"
    );
    assert!(out.contains("\r\n2\r\nok\r\n0\r\n\r\n"), "{out}");
    // `Connection: content-length` must not strip the body's framing
    // upstream: the body stays a body, no second request is smuggled.
    let out = exchange(
        b"POST /x HTTP/1.1\r\nHost: web.test\r\nConnection: content-length, close\r\nContent-Length: 38\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: web.test\r\n\r\n",
    )
    .await;
    assert!(!out.contains("/smuggled"), "{out}");
    assert_eq!(e.requests.load(Ordering::Relaxed), 1, "{out}");
    // HEAD answered by ferry itself (no endpoint reachable): no body, and
    // the connection carries the next request.
    let out = exchange(
        b"HEAD / HTTP/1.1\r\nHost: gone.test\r\n\r\nGET / HTTP/1.1\r\nHost: gone.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("http/1.1 502").count(), 2, "{out}");
    assert_eq!(
        out.matches("502 bad gateway: no endpoint").count(),
        1,
        "{out}"
    );
    // A POST on a pooled connection the endpoint drops unanswered is not
    // sent again (the endpoint may have acted on it): 502, one attempt.
    let mut client = Client::connect(addr).await;
    let (status, _) = client.get("raw.test", "/once").await.unwrap();
    assert_eq!(status, 200);
    let before = accepted.load(Ordering::SeqCst);
    let out = exchange(
        b"POST /once HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let after = accepted.load(Ordering::SeqCst);
    assert!(out.starts_with("http/1.1 502"), "{out}");
    assert_eq!(after, before, "a POST that got no answer was sent again");
}
