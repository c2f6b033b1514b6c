//! Talking to upstream resolvers: one query over UDP (a fresh socket with
//! an ephemeral port and an ID from the OS random source per query), again over TCP when the
//! answer is truncated, the next upstream on timeout or error; and reading
//! upstreams from a resolv.conf-style file.
//!
//! Sockets only; the answer is checked against the question, nothing else.

use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::wire;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("upstream {addr}: {what}")]
    Failed { addr: SocketAddr, what: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: nameserver {value:?} is not an IP address")]
    BadAddress {
        path: String,
        line: usize,
        value: String,
    },
    #[error("{path}: no nameserver lines")]
    Empty { path: String },
}

/// The `nameserver` lines of a resolv.conf-style file, on port 53.
pub fn read_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, ResolvConfError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ResolvConfError::Read {
        path: p.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let value = words.next().unwrap_or_default();
        // A zone index (fe80::1%eth0) is not supported for upstreams.
        let ip: IpAddr = value.parse().map_err(|_| ResolvConfError::BadAddress {
            path: p.clone(),
            line: i + 1,
            value: value.to_string(),
        })?;
        out.push(SocketAddr::new(ip, 53));
    }
    if out.is_empty() {
        return Err(ResolvConfError::Empty { path: p });
    }
    Ok(out)
}

/// Query IDs drawn from the OS random source (`/dev/urandom`), read a
/// block at a time so a query costs no system call.
struct Ids {
    source: Option<File>,
    block: [u8; 256],
    used: usize,
}

static IDS: Mutex<Ids> = Mutex::new(Ids {
    source: None,
    block: [0; 256],
    used: 256,
});

/// A query ID a blind spoofer cannot predict (RFC 5452 §9.2): from the
/// kernel's CSPRNG, never from a generator seeded by the clock.
fn next_id() -> std::io::Result<u16> {
    // A panic elsewhere cannot leave the pool half-written in a way that
    // matters: at worst an ID is reused from random bytes.
    let mut ids = IDS.lock().unwrap_or_else(PoisonError::into_inner);
    if ids.used + 2 > ids.block.len() {
        let Ids { source, block, .. } = &mut *ids;
        let file = match source {
            Some(f) => f,
            None => source.insert(File::open("/dev/urandom")?),
        };
        file.read_exact(block)?;
        ids.used = 0;
    }
    let at = ids.used;
    ids.used += 2;
    Ok(u16::from_be_bytes([ids.block[at], ids.block[at + 1]]))
}

/// Sends `query` (any ID) to the upstreams in order, one socket at a time,
/// and returns the first answer, with `query`'s ID restored.
pub(crate) async fn exchange(
    upstreams: &[SocketAddr],
    query: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, UpstreamError> {
    let mut last = UpstreamError::NoUpstream;
    let mut q = query.to_vec();
    let client_id = [query[0], query[1]];
    for &addr in upstreams {
        let id = next_id().map_err(|e| UpstreamError::Failed {
            addr,
            what: format!("no random query ID from /dev/urandom: {e}"),
        })?;
        q[..2].copy_from_slice(&id.to_be_bytes());
        let result = match tokio::time::timeout(timeout, udp(addr, &q)).await {
            Ok(Ok(a)) if wire::is_truncated(&a) => {
                match tokio::time::timeout(timeout, tcp(addr, &q)).await {
                    Ok(r) => r,
                    Err(_) => Err("timed out over TCP".to_string()),
                }
            }
            Ok(r) => r,
            Err(_) => Err("timed out over UDP".to_string()),
        };
        match result {
            Ok(mut answer) => {
                answer[..2].copy_from_slice(&client_id);
                return Ok(answer);
            }
            Err(what) => last = UpstreamError::Failed { addr, what },
        }
    }
    Err(last)
}

/// Whether `answer` answers `query`: same ID and the same question.
fn matches(query: &[u8], answer: &[u8]) -> bool {
    let Ok(q) = wire::parse_query(query) else {
        return false;
    };
    answer.len() >= q.question_end
        && answer[..2] == query[..2]
        && answer[2] & 0x80 != 0
        && answer[4..6] == query[4..6]
        && answer[12..q.question_end].eq_ignore_ascii_case(&query[12..q.question_end])
}

async fn udp(addr: SocketAddr, q: &[u8]) -> Result<Vec<u8>, String> {
    // Bind next to the upstream: loopback for a loopback upstream, so tests
    // and node-local setups never open a socket on other addresses.
    let local: IpAddr = match (addr.ip(), addr.ip().is_loopback()) {
        (IpAddr::V4(_), true) => Ipv4Addr::LOCALHOST.into(),
        (IpAddr::V4(_), false) => Ipv4Addr::UNSPECIFIED.into(),
        (IpAddr::V6(_), true) => Ipv6Addr::LOCALHOST.into(),
        (IpAddr::V6(_), false) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind(SocketAddr::new(local, 0))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    sock.connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    sock.send(q).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        // Anything else (late or forged answers) is ignored; the timeout bounds the wait.
        if matches(q, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(addr: SocketAddr, q: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("TCP connect: {e}"))?;
    let mut framed = Vec::with_capacity(q.len() + 2);
    framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
    framed.extend_from_slice(q);
    s.write_all(&framed)
        .await
        .map_err(|e| format!("TCP send: {e}"))?;
    let len = s
        .read_u16()
        .await
        .map_err(|e| format!("TCP receive: {e}"))?;
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf)
        .await
        .map_err(|e| format!("TCP receive: {e}"))?;
    if !matches(q, &buf) {
        return Err("TCP answer does not match the question".to_string());
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(
            &p,
            "search default.svc.cluster.local\nnameserver 10.0.0.10\nnameserver ::1\noptions ndots:5\n",
        )
        .unwrap();
        assert_eq!(
            read_resolv_conf(&p).unwrap(),
            vec!["10.0.0.10:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        std::fs::write(&p, "nameserver ten\n").unwrap();
        let e = read_resolv_conf(&p).unwrap_err().to_string();
        assert!(e.contains(":1: nameserver \"ten\""), "{e}");
    }

    #[test]
    fn ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..1000).map(|_| next_id().unwrap()).collect();
        assert!(ids.len() > 980);
    }
}
