//! PROXY protocol v1 (HAProxy's text header), as the `:PROXY` flags of the
//! L4 services ask: read from clients behind a load balancer that sends
//! it, written to endpoints that expect it.
//!
//! Touches the stream it is given.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest v1 header, CRLF included (the spec's 107 bytes).
const MAX: usize = 107;

/// The header announcing a connection from `src` to `dst`.
pub(crate) fn header(src: SocketAddr, dst: SocketAddr) -> String {
    let family = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
        (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
        _ => return "PROXY UNKNOWN\r\n".into(),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
}

/// Reads a v1 header byte by byte (nothing after it is consumed): the
/// source and destination it announces; None for `UNKNOWN`.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<(SocketAddr, SocketAddr)>, String> {
    let mut line = Vec::with_capacity(MAX);
    loop {
        let b = r.read_u8().await.map_err(|e| e.to_string())?;
        line.push(b);
        if line.ends_with(b"\r\n") {
            break;
        }
        if line.len() >= MAX {
            return Err("no PROXY protocol header in the first 107 bytes".into());
        }
    }
    parse(&line[..line.len() - 2])
}

fn parse(line: &[u8]) -> Result<Option<(SocketAddr, SocketAddr)>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "a PROXY header is ASCII".to_string())?;
    let words: Vec<&str> = text.split(' ').collect();
    match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", "TCP4" | "TCP6", src, dst, sport, dport] => {
            let addr = |ip: &str, port: &str| -> Result<SocketAddr, String> {
                Ok(SocketAddr::new(
                    ip.parse().map_err(|_| format!("bad address {ip:?}"))?,
                    port.parse().map_err(|_| format!("bad port {port:?}"))?,
                ))
            };
            Ok(Some((addr(src, sport)?, addr(dst, dport)?)))
        }
        _ => Err(format!("not a PROXY protocol v1 header: {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_written_header_reads_back_and_leaves_the_data_after_it() {
        let src: SocketAddr = "172.18.0.2:40000".parse().unwrap();
        let dst: SocketAddr = "172.18.0.11:9000".parse().unwrap();
        let h = header(src, dst);
        assert_eq!(h, "PROXY TCP4 172.18.0.2 172.18.0.11 40000 9000\r\n");
        let bytes = format!("{h}hello");
        let mut r = bytes.as_bytes();
        assert_eq!(read(&mut r).await.unwrap(), Some((src, dst)));
        assert_eq!(r, b"hello");
        let mut r: &[u8] = b"PROXY UNKNOWN\r\n";
        assert_eq!(read(&mut r).await.unwrap(), None);
        let mut r: &[u8] = b"GET / HTTP/1.1\r\n";
        assert!(read(&mut r).await.is_err());
    }
}
