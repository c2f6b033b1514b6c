//! Readiness probes as kubelet runs them: `httpGet` (any 2xx/3xx answer
//! within the timeout is success; User-Agent `kube-probe/...`) and
//! `tcpSocket` (the connection opens). Plain blocking sockets; these run on
//! a node's `ferry_sys::netns::NsThread`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Check {
    Http { port: u16, path: String },
    Tcp { port: u16 },
}

pub(crate) fn run(check: &Check, ip: IpAddr, timeout: Duration) -> bool {
    match check {
        Check::Tcp { port } => {
            TcpStream::connect_timeout(&SocketAddr::new(ip, *port), timeout).is_ok()
        }
        Check::Http { port, path } => {
            http_status(ip, *port, path, timeout).is_some_and(|s| (200..400).contains(&s))
        }
    }
}

/// GET `path` and return the status code.
pub(crate) fn http_status(ip: IpAddr, port: u16, path: &str, timeout: Duration) -> Option<u16> {
    http_get(ip, port, path, timeout).map(|(status, _)| status)
}

/// GET `path` and return the status code and the body.
pub(crate) fn http_get(
    ip: IpAddr,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let addr = SocketAddr::new(ip, port);
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let host = if ip.is_ipv6() {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}
