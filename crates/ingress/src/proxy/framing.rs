//! How an endpoint's HTTP/1.1 response body ends (RFC 9112 §6.3), and the
//! body cut out of the bytes read so far: a `Content-Length`, chunked
//! transfer coding (decoded; chunk extensions and trailers are dropped, as
//! nginx drops them for HTTP/1 clients), or the end of the connection.
//! Frames are slices of the read buffer, not copies.
//!
//! Pure.

use bytes::{Buf, Bytes, BytesMut};

/// A chunk-size line longer than this is an error (nginx's header
/// buffers are a few KiB; a size line is a handful of bytes).
const MAX_LINE: usize = 4096;

/// A response body the endpoint framed wrongly.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("bad chunk size line in the endpoint's chunked body")]
    ChunkSize,
    #[error("chunk data not followed by CRLF in the endpoint's chunked body")]
    ChunkEnd,
    #[error("the endpoint closed the connection before the body ended")]
    Truncated,
}

/// What the bytes read so far give.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The next piece of the body.
    Data(Bytes),
    /// Nothing yet: read more.
    NeedMore,
    /// The body is complete.
    Done,
}

#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last (zero) chunk: trailer lines up to an empty one.
    Trailers,
}

/// How the body is delimited, and how much of it is left.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304), or its end has been reached.
    Done,
    /// `Content-Length`: this many bytes left.
    Length(u64),
    Chunked(ChunkedState),
    /// Neither: the body runs until the endpoint closes (the connection
    /// cannot be used again).
    UntilClose,
}

/// Where a chunked body's decoding stands.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChunkedState(Chunk);

impl Framing {
    pub fn chunked() -> Framing {
        Framing::Chunked(ChunkedState(Chunk::Size))
    }

    /// True once the body is complete.
    pub fn is_done(&self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }

    /// The body's exact length when known up front.
    pub fn exact(&self) -> Option<u64> {
        match self {
            Framing::Done => Some(0),
            Framing::Length(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether the connection can carry another request once this body is
    /// complete.
    pub fn reusable(&self) -> bool {
        !matches!(self, Framing::UntilClose)
    }

    /// The next step from `buf` (consumed as it is decoded).
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        match self {
            Framing::Done | Framing::Length(0) => {
                *self = Framing::Done;
                Ok(Step::Done)
            }
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                *left -= n as u64;
                Ok(Step::Data(buf.split_to(n).freeze()))
            }
            Framing::UntilClose => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                Ok(Step::Data(buf.split().freeze()))
            }
            Framing::Chunked(state) => {
                let step = state.step(buf)?;
                if step == Step::Done {
                    *self = Framing::Done;
                }
                Ok(step)
            }
        }
    }

    /// The endpoint closed the connection: the end of an `UntilClose`
    /// body, an error for any other that is not complete.
    pub fn closed(&mut self) -> Result<(), FramingError> {
        match self {
            Framing::UntilClose => {
                *self = Framing::Done;
                Ok(())
            }
            f if f.is_done() => Ok(()),
            _ => Err(FramingError::Truncated),
        }
    }
}

impl ChunkedState {
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        loop {
            match self.0 {
                Chunk::Size => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    self.0 = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let rest = left - n as u64;
                    self.0 = if rest == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rest)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(FramingError::ChunkEnd);
                    }
                    buf.advance(2);
                    self.0 = Chunk::Size;
                }
                Chunk::Trailers => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        return Ok(Step::Done);
                    }
                }
            }
        }
    }
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6; Rust's integer
/// parsing would also take a leading `+`, which a proxy must not accept
/// where the next hop might read it differently), surrounding blanks
/// allowed.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Where the first line in `buf` ends (its CR), if it is all there.
fn line_end(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(i)),
        None if buf.len() > MAX_LINE => Err(FramingError::ChunkSize),
        None => Ok(None),
    }
}

/// The size in a chunk-size line (hex, extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = std::str::from_utf8(hex)
        .map_err(|_| FramingError::ChunkSize)?
        .trim_matches(|c| c == ' ' || c == '\t');
    if hex.is_empty() || hex.len() > 15 {
        return Err(FramingError::ChunkSize);
    }
    u64::from_str_radix(hex, 16).map_err(|_| FramingError::ChunkSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes and collects the body.
    fn decode(mut framing: Framing, input: &[u8], piece: usize) -> Result<Vec<u8>, FramingError> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match framing.step(&mut buf)? {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::Done => return Ok(body),
                Step::NeedMore if fed < input.len() => {
                    let n = piece.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
                Step::NeedMore => {
                    framing.closed()?;
                    return Ok(body);
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whole_or_one_byte_at_a_time() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: yes\r\n\r\n";
        for piece in [1, 2, 3, 7, wire.len()] {
            assert_eq!(
                decode(Framing::chunked(), wire, piece).unwrap(),
                b"hello, world",
                "piece {piece}"
            );
        }
    }

    #[test]
    fn a_chunked_body_stops_at_its_end_and_leaves_the_next_response() {
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
        let mut f = Framing::chunked();
        assert_eq!(f.step(&mut buf), Ok(Step::Data(Bytes::from_static(b"abc"))));
        assert_eq!(f.step(&mut buf), Ok(Step::Done));
        assert!(f.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn bad_chunk_sizes_and_missing_crlf_are_errors() {
        assert_eq!(
            decode(Framing::chunked(), b"zz\r\nabc\r\n0\r\n\r\n", 64),
            Err(FramingError::ChunkSize)
        );
        assert_eq!(
            decode(Framing::chunked(), b"3\r\nabcX\r\n0\r\n\r\n", 64),
            Err(FramingError::ChunkEnd)
        );
        assert_eq!(
            decode(Framing::chunked(), &[b'1'; 5000], 64),
            Err(FramingError::ChunkSize)
        );
    }

    #[test]
    fn content_lengths_are_digits_only() {
        assert_eq!(content_length(b" 42 "), Some(42));
        for bad in [
            &b"+42"[..],
            b"-1",
            b"4 2",
            b"",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_length_body_takes_exactly_its_bytes() {
        let mut buf = BytesMut::from(&b"hello, worldEXTRA"[..]);
        let mut f = Framing::Length(12);
        assert_eq!(
            f.step(&mut buf),
            Ok(Step::Data(Bytes::from_static(b"hello, world")))
        );
        assert!(f.is_done());
        assert_eq!(f.step(&mut buf), Ok(Step::Done));
        assert_eq!(&buf[..], b"EXTRA");
        assert_eq!(
            decode(Framing::Length(5), b"hel", 2),
            Err(FramingError::Truncated)
        );
    }

    #[test]
    fn an_until_close_body_ends_with_the_connection() {
        let f = Framing::UntilClose;
        assert!(!f.reusable());
        assert_eq!(decode(f, b"all of it", 4).unwrap(), b"all of it");
        assert_eq!(
            decode(Framing::chunked(), b"3\r\nab", 8),
            Err(FramingError::Truncated)
        );
    }
}
