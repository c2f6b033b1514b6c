//! The access log as a user reads it: a real request through the gateway
//! (curl on loopback, a real upstream) produces one line with its client,
//! request, status, bytes, referer, user agent, upstream and Ingress; a
//! request no rule matches is logged without upstream.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ferry_ingress::ProxyConfig;
use ferry_ingress::access_log::{AccessLog, AccessLogFormat, QUEUE};

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// The first `n` lines, waiting up to 5 s for them.
    fn wait(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "{n} lines not written: {text:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A gateway routing foo.test/a to `a`, logging text lines into `Lines`.
async fn logged(a: &Upstream, config: ProxyConfig) -> (std::net::SocketAddr, Lines) {
    let mut objects = service("a", &[a.addr]);
    objects.push(ingress("web", "foo.test", &[("/a", "a")]));
    let (gw, addr) = gateway(config, None).await;
    gw.swap(table(objects));
    let lines = Lines::default();
    let log = AccessLog::start(AccessLogFormat::Text, Box::new(lines.clone()), QUEUE, None)
        .unwrap()
        .unwrap();
    gw.set_access_log(log);
    (addr, lines)
}

async fn curl(args: &[&str]) -> (u16, String) {
    common::curl(args.iter().map(|s| s.to_string()).collect()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_produces_one_access_log_line_with_its_fields() {
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let a = upstream("a").await;
    let (addr, lines) = logged(&a, ProxyConfig::default()).await;

    let (code, body) = curl(&[
        "-H",
        "Host: foo.test",
        "-e",
        "http://ref.test/",
        "-A",
        "agent/1.0",
        &format!("http://{addr}/a/x?q=1"),
    ])
    .await;
    assert_eq!(code, 200, "{body}");
    let line = lines.wait(1).remove(0);
    let start = line.split(" \"GET").next().unwrap();
    assert!(start.starts_with("127.0.0.1 - ["), "{line}");
    let rest = line.split_once("] ").unwrap().1;
    let want = format!(
        "\"GET /a/x?q=1 HTTP/1.1\" 200 {} \"http://ref.test/\" \"agent/1.0\" ",
        body.len()
    );
    assert!(rest.starts_with(&want), "{line}\nwanted {want}");
    let tail: Vec<&str> = rest[want.len()..].split(' ').collect();
    let took: f64 = tail[0].parse().unwrap();
    assert!((0.0..5.0).contains(&took), "{line}");
    assert_eq!(
        tail[1..],
        [
            a.addr.to_string().as_str(),
            "200",
            "default/web",
            "default/a:80"
        ],
        "{line}"
    );

    // No rule: ferry's 404, no upstream, no Ingress.
    let (code, body) = curl(&["-H", "Host: nope.test", &format!("http://{addr}/")]).await;
    assert_eq!(code, 404);
    let line = lines.wait(2).remove(1);
    assert!(
        line.contains(&format!(
            "\"GET / HTTP/1.1\" 404 {} \"-\" \"curl/",
            body.len()
        )),
        "{line}"
    );
    assert!(line.ends_with(" - - - -"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_of_a_proxy_protocol_header_is_the_one_logged() {
    use tokio::io::AsyncWriteExt;
    let a = upstream("a").await;
    let config = ProxyConfig {
        proxy_protocol: true,
        ..ProxyConfig::default()
    };
    let (addr, lines) = logged(&a, config).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 80\r\n")
        .await
        .unwrap();
    let mut client = Client::over(tcp).await;
    let (status, _) = client.get("foo.test", "/a").await.unwrap();
    assert_eq!(status.as_u16(), 200);
    let line = lines.wait(1).remove(0);
    assert!(line.starts_with("203.0.113.7 - ["), "{line}");
}
