//! Server sockets. TCP listeners for servers with several worker threads: one socket per
//! worker on the same address with `SO_REUSEPORT`, so the kernel spreads
//! new connections evenly over the workers (as nginx's `listen ...
//! reuseport`); with one socket shared by all, whichever worker's epoll
//! wakes first takes the connection and one worker can end up with most
//! of them.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};

/// `n` non-blocking listeners on `addr` (a port of 0 is chosen once and
/// shared). A port already in use is an error, as a plain bind's would be:
/// it is tried with a plain socket first.
pub fn reuseport_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let probe = TcpListener::bind(addr)?;
    let addr = probe.local_addr()?;
    if n <= 1 {
        probe.set_nonblocking(true)?;
        return Ok(vec![probe]);
    }
    drop(probe);
    (0..n).map(|_| bind_one(addr)).collect()
}

/// Makes `sock`'s receive buffer at least `bytes` (root may go past
/// `net.core.rmem_max` with SO_RCVBUFFORCE; others get what rmem_max
/// allows): a UDP server that stalls for a moment then queues a burst
/// instead of dropping it. Returns the size the kernel reports (it
/// doubles the request for its own bookkeeping).
pub fn grow_receive_buffer(sock: &impl AsFd, bytes: usize) -> io::Result<usize> {
    let now = nix::sys::socket::getsockopt(sock, sockopt::RcvBuf)?;
    if now >= bytes {
        return Ok(now);
    }
    if setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        setsockopt(sock, sockopt::RcvBuf, &bytes)?;
    }
    Ok(nix::sys::socket::getsockopt(sock, sockopt::RcvBuf)?)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    // SAFETY: the descriptor is a listening TCP socket owned by nothing else.
    Ok(unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) })
}

/// A loopback port free for both TCP and UDP right now, for a server that
/// a test or a bench starts and that binds it itself a moment later.
///
/// The port is chosen below the kernel's ephemeral range (32768 and up by
/// default), which outgoing connections take their source ports from: a
/// port the kernel handed out with `bind(0)` and let go can be taken by
/// any connection before the server binds it. Here only other callers of
/// this function compete, each starting at a different point of the range.
pub fn free_loopback_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = std::process::id()
        .wrapping_mul(7_919)
        .wrapping_add(nanos / 1_000);
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + start.wrapping_add(step.wrapping_mul(97)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    // Everything below the ephemeral range taken: let the kernel choose.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_buffer_grows_to_what_is_asked() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let got = grow_receive_buffer(&s, 4 << 20).unwrap();
        // Root gets it (doubled by the kernel); others at least the default.
        assert!(got >= 4 << 20 || !nix::unistd::geteuid().is_root(), "{got}");
    }

    #[test]
    fn workers_share_one_port_and_a_port_in_use_is_refused() {
        let ls = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
        // Connections reach the group.
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = reuseport_listeners(taken.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
