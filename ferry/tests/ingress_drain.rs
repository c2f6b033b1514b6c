//! `ferry ingress` stops gracefully on SIGTERM, as ingress-nginx does: a
//! request in flight gets its answer, a new connection is refused, an idle
//! keep-alive connection is closed cleanly, `/healthz` on its status port
//! turns 503 while it drains, and the process exits 0 within the drain
//! timeout. Real sockets on loopback; the backend is a small
//! HTTP/1.1 server in this test that answers `/slow` after a delay.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long the backend takes to answer `/slow`.
const SLOW: Duration = Duration::from_millis(1500);

/// A backend on 127.0.0.1: keep-alive, `ok` for every request, after
/// [`SLOW`] for `/slow`. Its threads end with the test process.
fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                loop {
                    let head = read_head(&mut s);
                    if head.is_empty() {
                        return;
                    }
                    if head.starts_with("GET /slow ") {
                        std::thread::sleep(SLOW);
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Bytes up to the end of an HTTP head ("" at EOF).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A whole response on a connection: its head (lowercase) and body.
fn response(s: &mut TcpStream) -> (String, String) {
    let head = read_head(s).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// One request on a connection of its own to the status port.
fn status(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: status\r\n\r\n").unwrap();
    response(&mut s)
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn get(s: &mut TcpStream, path: &str) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: slow.test\r\n\r\n").unwrap();
}

/// Kills the ingress if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn manifests(dir: &std::path::Path, backend: SocketAddr) {
    let yaml = format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: ferry}}\nspec: {{controller: ferry.dev/ingress-controller}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: slow, namespace: default}}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{{name: http, port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: slow-1, namespace: default, labels: {{kubernetes.io/service-name: slow}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n- addresses: [127.0.0.1]\n  conditions: {{ready: true}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: slow, namespace: default}}\n\
         spec:\n  ingressClassName: ferry\n  rules:\n  - host: slow.test\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: slow, port: {{number: 80}}}}}}}}\n",
        port = backend.port()
    );
    std::fs::write(dir.join("all.yaml"), yaml).unwrap();
}

#[test]
fn sigterm_finishes_requests_in_flight_refuses_new_connections_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path(), backend());
    let addr = free_port();
    let metrics = free_port();
    let mut ingress = Running(
        common::ferry()
            .args(["ingress", "--ingress-access-log", "off"])
            .arg(format!("--source=manifests:{}", dir.path().display()))
            .args(["--http", &addr.to_string(), "--ingress-drain-timeout", "5s"])
            .args(["--metrics", &metrics.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Live: the route answers.
    let start = Instant::now();
    let mut idle = loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            get(&mut s, "/");
            let (head, _) = response(&mut s);
            if head.starts_with("http/1.1 200") {
                break s;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "ingress not live"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The status port: healthy, and the request just made is counted.
    let (head, body) = status(metrics, "/healthz");
    assert!(head.starts_with("http/1.1 200"), "{head}{body}");
    let (_, text) = status(metrics, "/metrics");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ferry_ingress_requests_total{") && l.contains("status=\"200\"")),
        "{text}"
    );
    // `idle` stays open with nothing in flight; `busy` waits for /slow.
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    get(&mut busy, "/slow");
    std::thread::sleep(Duration::from_millis(300));
    let pid = nix::unistd::Pid::from_raw(ingress.0.id() as i32);
    let term = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while the request drains.
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(refused.is_err(), "a connection was accepted after SIGTERM");
    // Load balancers see it leave: /healthz fails while it drains.
    let (head, body) = status(metrics, "/healthz");
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert_eq!(body, "draining\n");
    // The idle keep-alive connection is closed cleanly: EOF, not a reset.
    let mut buf = [0u8; 64];
    match idle.read(&mut buf) {
        Ok(0) => {}
        other => panic!("the idle connection saw {other:?}, not EOF"),
    }
    // The request in flight is answered, with Connection: close, then EOF.
    let (head, body) = response(&mut busy);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "ok");
    assert!(matches!(busy.read(&mut buf), Ok(0)));
    // And the process exits 0, within the drain timeout.
    let status = loop {
        if let Some(status) = ingress.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            term.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    eprintln!("exited {:?} after SIGTERM", term.elapsed());
}
