//! Netfilter netlink plumbing shared by nf_tables element updates and
//! conntrack cleanup: a socket whose every receive has a deadline, a
//! message builder for nfnetlink messages, and parsers for what the kernel
//! sends back. Knows the netlink framing, nothing of what a message means.

use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLA_F_NESTED: u16 = 0x8000;

/// How long any one receive may wait for the kernel: a netlink answer
/// normally takes microseconds, so this only turns a hang into an error.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A NETLINK_NETFILTER socket, connected to the kernel, with a receive
/// deadline.
pub struct NfSocket {
    socket: Socket,
    seq: u32,
}

impl NfSocket {
    /// Opens a socket in this thread's network namespace.
    pub fn open() -> std::io::Result<NfSocket> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_ext_ack(true).ok();
        let tv = nix::sys::time::TimeVal::new(
            RECV_TIMEOUT.as_secs() as nix::libc::time_t,
            RECV_TIMEOUT.subsec_micros() as nix::libc::suseconds_t,
        );
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        Ok(NfSocket { socket, seq: 1 })
    }

    /// Opens a socket in network namespace `netns`; it stays there.
    pub fn open_in(netns: &str) -> std::io::Result<NfSocket> {
        crate::netns::in_netns(netns, NfSocket::open)?
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub fn send(&self, buf: &[u8]) -> std::io::Result<()> {
        self.socket.send(buf, 0).map(drop)
    }

    /// One receive; past [`RECV_TIMEOUT`] an error of kind `TimedOut`.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.socket.recv(&mut &mut buf[..], 0) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from the kernel within {RECV_TIMEOUT:?}"),
                ))
            }
            other => other,
        }
    }

    /// Waits for the acknowledgement of every sequence number in `seqs`;
    /// the first error the kernel sends is returned (with its sequence
    /// number), unless `tolerate` accepts its errno.
    pub fn wait_acks(
        &self,
        seqs: &[u32],
        tolerate: impl Fn(i32) -> bool,
    ) -> Result<(), (u32, std::io::Error)> {
        let mut pending: std::collections::BTreeSet<u32> = seqs.iter().copied().collect();
        let mut buf = vec![0u8; 64 * 1024];
        while !pending.is_empty() {
            let n = self.recv(&mut buf).map_err(|e| (0, e))?;
            for (kind, seq, payload) in messages(&buf[..n]) {
                // Answers to earlier requests (left by an aborted batch)
                // are not this batch's.
                if kind == NLMSG_ERROR && pending.contains(&seq) {
                    pending.remove(&seq);
                    if let Err(e) = error_code(payload)
                        && !e.raw_os_error().is_some_and(&tolerate)
                    {
                        return Err((seq, e));
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends one request and collects the payloads of its answers (after
    /// the netlink header) until DONE or an acknowledgement.
    pub fn request(&self, msg: Vec<u8>, seq: u32) -> std::io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.request_each(msg, seq, |payload| out.push(payload.to_vec()))?;
        Ok(out)
    }

    /// Sends one request and hands each answer's payload to `each` as it
    /// arrives (a large dump is never held whole).
    pub fn request_each(
        &self,
        msg: Vec<u8>,
        seq: u32,
        mut each: impl FnMut(&[u8]),
    ) -> std::io::Result<()> {
        self.send(&msg)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            for (kind, got, payload) in messages(&buf[..n]) {
                if got != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return error_code(payload),
                    _ => each(payload),
                }
            }
        }
    }
}

/// An nfnetlink message under construction.
pub struct Msg(Vec<u8>);

impl Msg {
    /// Header and nfgenmsg: `kind` is `(subsystem << 8) | message`.
    pub fn new(kind: u16, flags: u16, seq: u32, res_id: u16, family: u8) -> Msg {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // port id
        b.push(family); // nfgenmsg.nfgen_family
        b.push(0); // version
        b.extend_from_slice(&res_id.to_be_bytes());
        Msg(b)
    }

    pub fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        pad4(&mut self.0, payload);
    }

    pub fn nest_start(&mut self, kind: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&0u16.to_ne_bytes());
        self.0
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    pub fn nest_end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// Appends `field`, then zeros up to a multiple of four bytes.
pub fn pad4(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A NUL-terminated string attribute value.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The netlink messages in a received buffer: (type, sequence, payload
/// after the 16-byte header).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 16 > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().ok()?);
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().ok()?);
        if len < 16 || at + len > buf.len() {
            return None;
        }
        let payload = &buf[at + 16..at + len];
        at += (len + 3) & !3;
        Some((kind, seq, payload))
    })
}

/// An NLMSG_ERROR payload: code 0 is an acknowledgement.
pub fn error_code(payload: &[u8]) -> std::io::Result<()> {
    let code = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_ne_bytes);
    if code == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(-code))
    }
}

/// The attributes of a message body: (type without flag bits, payload).
pub fn attrs(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 4 > body.len() {
            return None;
        }
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if len < 4 || at + len > body.len() {
            return None;
        }
        let payload = &body[at + 4..at + len];
        at += (len + 3) & !3;
        Some((kind, payload))
    })
}

/// The payload of attribute `kind` in a message body.
pub fn find_attr(body: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(body).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_through_the_builder_and_the_parser() {
        let mut m = Msg::new(0x0101, NLM_F_REQUEST, 7, 0, 2);
        m.attr(3, &[1, 2, 3]);
        let n = m.nest_start(1);
        m.attr(2, &5u16.to_be_bytes());
        m.nest_end(n);
        let bytes = m.finish();
        let (kind, seq, payload) = messages(&bytes).next().unwrap();
        assert_eq!((kind, seq), (0x0101, 7));
        let body = &payload[4..];
        assert_eq!(find_attr(body, 3), Some(&[1u8, 2, 3][..]));
        let nested = find_attr(body, 1).unwrap();
        assert_eq!(find_attr(nested, 2), Some(&[0u8, 5][..]));
    }
}
