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
