//! The small HTTP/1.1 client etcd's JSON gateway needs, and no more: a
//! `POST` of a JSON body to `http://host:port/path`, one connection per
//! request (`Connection: close`), a bound on connecting and on the whole
//! exchange, and for the watch a body read line by line as it streams
//! (chunked transfer encoding), each read bounded by the caller's
//! deadline. No TLS: endpoints are `http://` URLs.
//!
//! Touches sockets (TCP to the endpoint).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A response larger than this is an error rather than memory used.
const MAX_BODY: usize = 64 << 20;

/// An endpoint as given on the command line (`http://127.0.0.1:2379`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub url: String,
    host: String,
    port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("etcd endpoint {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("{url}: cannot connect: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: no answer within {after:?}")]
    TimedOut { url: String, after: Duration },
    #[error("{url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: not an HTTP/1.1 answer: {why}")]
    BadResponse { url: String, why: String },
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, HttpError> {
        let bad = |why| HttpError::BadUrl {
            url: url.to_string(),
            why,
        };
        if url.starts_with("https://") {
            return Err(bad("https (TLS) is not supported yet; use http://"));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http://"))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(bad("must be http://host:port with no path"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            // [v6]:port
            Some(v6) => {
                let (h, rest) = v6.split_once(']').ok_or_else(|| bad("no closing ]"))?;
                (h, rest.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
            None => 2379,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            url: url.trim_end_matches('/').to_string(),
            host: host.to_string(),
            port,
        })
    }

    fn connect(&self, timeout: Duration) -> Result<TcpStream, HttpError> {
        let connect_err = |source| HttpError::Connect {
            url: self.url.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(connect_err)?
            .collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }
}

/// A response: the status and the whole body (de-chunked).
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An open response whose body is read line by line as it arrives.
pub(crate) struct LineStream {
    url: String,
    socket: TcpStream,
    decoder: Decoder,
    pub status: u16,
}

/// `POST path` with a JSON body; the whole answer must come within
/// `timeout` (connecting has its own bound).
pub(crate) fn post(
    endpoint: &Endpoint,
    path: &str,
    body: &[u8],
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let deadline = Instant::now() + timeout;
    let mut stream = post_streaming(endpoint, path, body, connect_timeout, timeout)?;
    let mut out = Vec::new();
    loop {
        out.append(&mut stream.decoder.body);
        if stream.decoder.done {
            return Ok(Response {
                status: stream.status,
                body: out,
            });
        }
        if out.len() > MAX_BODY {
            return Err(stream.bad(format!("a body over {MAX_BODY} bytes")));
        }
        if !stream.fill(deadline)? {
            return Err(HttpError::TimedOut {
                url: stream.url.clone(),
                after: timeout,
            });
        }
    }
}

/// `POST path` and return once the status line and headers are in (within
/// `timeout`); the body is then read with `LineStream::next_line`.
pub(crate) fn post_streaming(
    endpoint: &Endpoint,
    path: &str,
    body: &[u8],
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<LineStream, HttpError> {
    let deadline = Instant::now() + timeout;
    let mut socket = endpoint.connect(connect_timeout)?;
    let io = |source| HttpError::Io {
        url: endpoint.url.clone(),
        source,
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.host,
        endpoint.port,
        body.len()
    );
    socket
        .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(io)?;
    socket.write_all(request.as_bytes()).map_err(io)?;
    socket.write_all(body).map_err(io)?;
    let mut stream = LineStream {
        url: endpoint.url.clone(),
        socket,
        decoder: Decoder::default(),
        status: 0,
    };
    // The head.
    let head_end = loop {
        if let Some(i) = find(&stream.decoder.raw, b"\r\n\r\n") {
            break i;
        }
        if stream.decoder.raw.len() > 64 << 10 {
            return Err(stream.bad("headers over 64 KiB".into()));
        }
        if !stream.read_raw(deadline)? {
            return Err(HttpError::TimedOut {
                url: endpoint.url.clone(),
                after: timeout,
            });
        }
    };
    let head = String::from_utf8_lossy(&stream.decoder.raw[..head_end]).into_owned();
    stream.decoder.raw.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    stream.status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| stream.bad(format!("status line {status_line:?}")))?;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            stream.decoder.framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length")
            && stream.decoder.framing != Framing::Chunked
        {
            let n = value
                .parse()
                .map_err(|_| stream.bad(format!("Content-Length {value:?}")))?;
            stream.decoder.framing = Framing::Length(n);
        }
    }
    stream.decoder.decode().map_err(|why| stream.bad(why))?;
    Ok(stream)
}

impl LineStream {
    fn bad(&self, why: String) -> HttpError {
        HttpError::BadResponse {
            url: self.url.clone(),
            why,
        }
    }

    /// Reads more from the socket into the raw buffer: false when the
    /// deadline passed first. The end of the stream is an error unless the
    /// framing says the body is complete.
    fn read_raw(&mut self, deadline: Instant) -> Result<bool, HttpError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let io = |source| HttpError::Io {
            url: self.url.clone(),
            source,
        };
        self.socket.set_read_timeout(Some(left)).map_err(io)?;
        let mut buf = [0u8; 16 << 10];
        match self.socket.read(&mut buf) {
            Ok(0) => {
                if self.decoder.framing == Framing::ToEof {
                    self.decoder.done = true;
                    Ok(true)
                } else {
                    Err(HttpError::Io {
                        url: self.url.clone(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    })
                }
            }
            Ok(n) => {
                self.decoder.raw.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(io(e)),
        }
    }

    /// Reads and decodes more of the body: false when the deadline passed.
    fn fill(&mut self, deadline: Instant) -> Result<bool, HttpError> {
        let more = self.read_raw(deadline)?;
        self.decoder.decode().map_err(|why| self.bad(why))?;
        Ok(more)
    }

    /// The next complete line of the body (without its newline); `None`
    /// when the deadline passed first. The end of the body is an error:
    /// a watch stream does not end while it is wanted.
    pub(crate) fn next_line(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            if let Some(i) = self.decoder.body.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.decoder.body.drain(..=i).collect();
                line.pop();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.decoder.done {
                return Err(self.bad("the stream ended".into()));
            }
            if self.decoder.body.len() > MAX_BODY {
                return Err(self.bad(format!("a line over {MAX_BODY} bytes")));
            }
            if !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Framing {
    #[default]
    ToEof,
    Length(usize),
    Chunked,
}

/// Body bytes out of raw bytes, as they arrive.
#[derive(Default)]
struct Decoder {
    framing: Framing,
    raw: Vec<u8>,
    body: Vec<u8>,
    /// Bytes of the body taken so far (`Length` framing).
    taken: usize,
    done: bool,
}

impl Decoder {
    fn decode(&mut self) -> Result<(), String> {
        match self.framing {
            Framing::ToEof => self.body.append(&mut self.raw),
            Framing::Length(n) => {
                let take = self.raw.len().min(n - self.taken);
                self.body.extend(self.raw.drain(..take));
                self.taken += take;
                self.done = self.taken == n;
            }
            Framing::Chunked => {
                while !self.done {
                    let Some(eol) = find(&self.raw, b"\r\n") else {
                        break;
                    };
                    let size_text = String::from_utf8_lossy(&self.raw[..eol]);
                    let size_hex = size_text.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_hex, 16)
                        .map_err(|_| format!("chunk size {size_text:?}"))?;
                    if size == 0 {
                        // Trailers are not used by etcd; the body is complete.
                        self.done = true;
                        self.raw.clear();
                        break;
                    }
                    if self.raw.len() < eol + 2 + size + 2 {
                        break;
                    }
                    self.body
                        .extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
                    self.raw.drain(..eol + 2 + size + 2);
                }
            }
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_with_a_default_port() {
        let e = Endpoint::parse("http://127.0.0.1:23790/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 23790));
        assert_eq!(e.url, "http://127.0.0.1:23790");
        let e = Endpoint::parse("http://etcd-0").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("etcd-0", 2379));
        let e = Endpoint::parse("http://[::1]:2379").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 2379));
        for bad in [
            "https://a:2379",
            "127.0.0.1:2379",
            "http://a:x",
            "http://a:1/v3",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_however_the_bytes_arrive() {
        let wire = b"5\r\nhello\r\n7;x=1\r\n world\n\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Decoder {
                framing: Framing::Chunked,
                ..Decoder::default()
            };
            d.raw.extend_from_slice(&wire[..split]);
            d.decode().unwrap();
            d.raw.extend_from_slice(&wire[split..]);
            d.decode().unwrap();
            assert!(d.done, "split at {split}");
            assert_eq!(d.body, b"hello world\n", "split at {split}");
        }
    }
}
