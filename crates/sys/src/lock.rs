//! One agent per node: an abstract Unix socket named `ferry-agent`. The
//! abstract socket namespace belongs to the network namespace, so the
//! name is taken once per node (lab nodes included), the kernel frees it
//! when the holder dies (even by kill -9), and a second agent learns the
//! holder's PID from the socket's peer credentials.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// Held for the agent's lifetime; dropping it frees the node.
#[derive(Debug)]
pub struct NodeLock {
    _listener: UnixListener,
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        // Wakes the accepting thread (its accept fails), which then drops
        // its copy: the name is free when both copies are closed.
        use std::os::fd::AsRawFd;
        let _ = nix::sys::socket::shutdown(
            self._listener.as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another ferry agent (PID {pid}) already runs in this network namespace; one agent per node (stop it first, or use --proxy-mode none for a second program)"
    )]
    Held { pid: i32 },
    #[error(
        "another process holds this network namespace's agent lock (@{name}) and its PID could not be read: {reason}"
    )]
    HeldUnknown { name: String, reason: String },
    #[error("cannot take the agent lock (@{name}): {source}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

impl NodeLock {
    /// Takes the lock `name` (ferry's agent uses `ferry-agent`). A holder
    /// that may be going away (its socket refuses connections, or the
    /// agent it names was just stopped and is still exiting, as when a
    /// node's agent is restarted) is waited for up to a second.
    pub fn acquire(name: &str) -> Result<NodeLock, LockError> {
        let mut tries = 0;
        loop {
            match Self::try_acquire(name) {
                Err(LockError::HeldUnknown { .. } | LockError::Held { .. }) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn try_acquire(name: &str) -> Result<NodeLock, LockError> {
        let addr =
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(|source| LockError::Io {
                name: name.to_string(),
                source,
            })?;
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => {
                // Accept and drop whoever asks (a second agent reads our
                // PID from the connection's credentials), so the queue
                // never fills and a later asker never blocks.
                if let Ok(l) = listener.try_clone() {
                    let _ = std::thread::Builder::new()
                        .name("node-lock".into())
                        .spawn(move || {
                            for c in l.incoming() {
                                if c.is_err() {
                                    // Shut down by NodeLock's drop.
                                    return;
                                }
                            }
                        });
                }
                Ok(NodeLock {
                    _listener: listener,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                Err(match UnixStream::connect_addr(&addr) {
                    Ok(stream) => match getsockopt(&stream, PeerCredentials) {
                        Ok(cred) => LockError::Held { pid: cred.pid() },
                        Err(e) => LockError::HeldUnknown {
                            name: name.to_string(),
                            reason: e.to_string(),
                        },
                    },
                    Err(e) => LockError::HeldUnknown {
                        name: name.to_string(),
                        reason: e.to_string(),
                    },
                })
            }
            Err(source) => Err(LockError::Io {
                name: name.to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_the_lock_frees_on_drop() {
        let name = format!("ferry-test-lock-{}", std::process::id());
        let first = NodeLock::acquire(&name).unwrap();
        match NodeLock::acquire(&name) {
            Err(LockError::Held { pid }) => assert_eq!(pid as u32, std::process::id()),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        NodeLock::acquire(&name).unwrap();
    }
}
