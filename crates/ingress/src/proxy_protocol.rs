//! The PROXY protocol (HAProxy's header before a client's first byte): v1
//! (text) and v2 (binary) read from clients behind a load balancer that
//! sends it (the HTTP(S) listeners with `--ingress-proxy-protocol`, the L4
//! services' `:PROXY` flag), v1 written to L4 endpoints that expect it.
//! Nothing after the header is consumed.
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

/// The 12 bytes every v2 header starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads a v1 or a v2 header (told apart by the first byte): the source
/// and destination it announces; None for v1 `UNKNOWN`, a v2 `LOCAL`
/// command (a health check from the load balancer itself) or a v2 family
/// other than TCP over IPv4 or IPv6.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<(SocketAddr, SocketAddr)>, String> {
    let first = r.read_u8().await.map_err(|e| e.to_string())?;
    if first == V2_SIGNATURE[0] {
        return read_v2(r).await;
    }
    let mut line = Vec::with_capacity(MAX);
    line.push(first);
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

/// The rest of a v2 header, after its first byte: the signature, version
/// and command, family, length, addresses (TLVs after them are skipped).
async fn read_v2<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<(SocketAddr, SocketAddr)>, String> {
    let mut fixed = [0u8; 15];
    r.read_exact(&mut fixed).await.map_err(|e| e.to_string())?;
    if fixed[..11] != V2_SIGNATURE[1..] {
        return Err("not a PROXY protocol header (bad v2 signature)".into());
    }
    let (version_command, family) = (fixed[11], fixed[12]);
    let len = usize::from(u16::from_be_bytes([fixed[13], fixed[14]]));
    let mut rest = vec![0u8; len];
    r.read_exact(&mut rest).await.map_err(|e| e.to_string())?;
    match version_command {
        0x20 => return Ok(None),
        0x21 => {}
        other => {
            return Err(format!(
                "PROXY protocol v2: version/command {other:#04x} is not 2/LOCAL or 2/PROXY"
            ));
        }
    }
    let short = || format!("PROXY protocol v2: {len} address bytes are too few");
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family {
        // TCP over IPv4: 4 + 4 address bytes, 2 + 2 port bytes.
        0x11 => {
            let a = rest.get(..12).ok_or_else(short)?;
            let ip = |b: &[u8]| std::net::IpAddr::from([b[0], b[1], b[2], b[3]]);
            Ok(Some((
                SocketAddr::new(ip(&a[0..4]), port(&a[8..10])),
                SocketAddr::new(ip(&a[4..8]), port(&a[10..12])),
            )))
        }
        // TCP over IPv6: 16 + 16 address bytes, 2 + 2 port bytes.
        0x21 => {
            let a = rest.get(..36).ok_or_else(short)?;
            let ip = |b: &[u8]| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(b);
                std::net::IpAddr::from(octets)
            };
            Ok(Some((
                SocketAddr::new(ip(&a[0..16]), port(&a[32..34])),
                SocketAddr::new(ip(&a[16..32]), port(&a[34..36])),
            )))
        }
        // UDP, UNIX sockets, unspecified: no TCP client address to use.
        _ => Ok(None),
    }
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

    /// A v2 header as HAProxy sends it: signature, 2/PROXY, `family`,
    /// length, addresses, and one TLV (skipped).
    fn v2(family: u8, addresses: &[u8]) -> Vec<u8> {
        let tlv = [0x04, 0x00, 0x01, 0x00]; // PP2_TYPE_NOOP, 1 byte
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x21, family]);
        h.extend(
            u16::try_from(addresses.len() + tlv.len())
                .unwrap()
                .to_be_bytes(),
        );
        h.extend(addresses);
        h.extend(tlv);
        h
    }

    #[tokio::test]
    async fn v2_headers_read_for_ipv4_and_ipv6_and_local_gives_none() {
        let mut bytes = v2(0x11, &[203, 0, 113, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 80]);
        bytes.extend(b"GET /");
        let mut r = &bytes[..];
        let src: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(read(&mut r).await.unwrap(), Some((src, dst)));
        assert_eq!(r, b"GET /");
        let mut six = Vec::new();
        six.extend(
            "2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        six.extend(
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        six.extend([0x9c, 0x40, 1, 187]);
        let bytes = v2(0x21, &six);
        let src: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(read(&mut &bytes[..]).await.unwrap(), Some((src, dst)));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(read(&mut &local[..]).await.unwrap(), None);
        let mut bad = V2_SIGNATURE.to_vec();
        bad[5] = b'X';
        bad.extend([0x21, 0x11, 0, 0]);
        assert!(read(&mut &bad[..]).await.is_err());
        let truncated = v2(0x11, &[203, 0, 113]);
        assert!(read(&mut &truncated[..]).await.is_err());
    }
}
