//! `ferry echo`: the workload in every lab pod. On each container port it
//! answers with who it is (pod, namespace, node, pod IP) and who asked (the
//! source address it saw), over HTTP, TCP or UDP. A control socket lets
//! `ferry echo-ctl` make the pod fail its readiness probes.
//!
//! Binds sockets in whatever network namespace it was started in.

mod control;
mod servers;

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

pub use control::{CONTROL_PREFIX, ControlError, send as control_send};

/// How a port is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Http,
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub port: u16,
    pub mode: Mode,
}

impl FromStr for PortSpec {
    type Err = String;

    /// `80`, `80/http`, `9000/tcp`, `53/udp`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (port, mode) = s.split_once('/').unwrap_or((s, "http"));
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: port must be a number in 1..65535"))?;
        let mode = match mode.to_ascii_lowercase().as_str() {
            "http" => Mode::Http,
            "tcp" => Mode::Tcp,
            "udp" => Mode::Udp,
            other => return Err(format!("{s:?}: mode {other:?} is not http, tcp or udp")),
        };
        Ok(PortSpec { port, mode })
    }
}

/// Who this echo server is, as reported in every answer.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    pub pod: String,
    pub namespace: String,
    pub node: String,
    pub pod_ip: String,
}

pub struct Config {
    pub identity: Identity,
    pub ports: Vec<PortSpec>,
    pub bind: IpAddr,
    /// Written once every port is listening (the lab reads it as "container started").
    pub started_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("cannot listen on {addr} ({mode:?}): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        mode: Mode,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    StartedFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Shared by all servers of one echo process.
pub(crate) struct Shared {
    pub identity: Identity,
    /// When false, readiness probes (User-Agent `kube-probe/...`) get 503.
    pub ready: AtomicBool,
}

/// Runs until the process is stopped.
pub async fn run(config: Config) -> Result<(), EchoError> {
    let shared = Arc::new(Shared {
        identity: config.identity,
        ready: AtomicBool::new(true),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for spec in &config.ports {
        let addr = std::net::SocketAddr::new(config.bind, spec.port);
        let bind_err = |source| EchoError::Bind {
            addr,
            mode: spec.mode,
            source,
        };
        match spec.mode {
            Mode::Http => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_err)?;
                tasks.spawn(servers::http(l, shared.clone()));
            }
            Mode::Tcp => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_err)?;
                tasks.spawn(servers::tcp(l, shared.clone()));
            }
            Mode::Udp => {
                let s = tokio::net::UdpSocket::bind(addr).await.map_err(bind_err)?;
                tasks.spawn(servers::udp(s, shared.clone()));
            }
        }
    }
    match control::listen(&shared.identity) {
        Ok(listener) => {
            tasks.spawn(control::serve(listener, shared.clone()));
        }
        Err(e) => tracing::warn!(error = %e, "no control socket; echo-ctl cannot reach this pod"),
    }
    if let Some(path) = &config.started_file {
        std::fs::write(path, b"started\n").map_err(|source| EchoError::StartedFile {
            path: path.clone(),
            source,
        })?;
    }
    tracing::info!(pod = %shared.identity.pod, ports = config.ports.len(), "echo serving");
    while tasks.join_next().await.is_some() {}
    Ok(())
}
