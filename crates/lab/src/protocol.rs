//! Requests from `ferry lab ...` commands to the lab controller, over the
//! lab's Unix socket: one JSON line each way.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Manifests as (file name for messages, content).
    Apply { files: Vec<(String, String)> },
    Delete {
        kind: String,
        namespace: String,
        name: String,
    },
    Scale {
        kind: String,
        namespace: String,
        name: String,
        replicas: i32,
    },
    /// Stop the lab: the controller removes what it made and exits.
    Stop,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Ok(String),
    Rejected(Vec<String>),
}

/// Only root or the controller's own user may talk to it: the socket is
/// 0600 in a 0700 directory, and the peer's credentials are checked too.
pub(crate) fn check_peer(stream: &std::os::unix::net::UnixStream) -> Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(stream, PeerCredentials).map_err(|e| format!("peer unknown: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == 0 || cred.uid() == me {
        Ok(())
    } else {
        Err(format!(
            "refused a client of uid {} (pid {}): only root may control the lab",
            cred.uid(),
            cred.pid()
        ))
    }
}
