//! `ferry lab`: a multi-node Kubernetes cluster made of network namespaces.
//! The lab plays the control plane only (scheduling, IPAM, EndpointSlices)
//! and writes the cluster as manifests; each node runs the production
//! `ferry agent` against them.
//!
//! - [`plan`]: the control plane, pure.
//! - `net`: namespaces, links, addresses and routes (the only place that runs `ip`).
//! - probes and health checks run on `ferry_sys::netns::NsThread`s inside node namespaces.
//! - `controller`: the daemon that owns a running lab.
//! - `client`: what the `ferry lab ...` commands do.

mod cleanup;
pub mod client;
mod cni;
mod controller;
mod leases;
pub mod names;
mod net;
pub mod plan;
mod probe;
mod protocol;
mod runtime;
pub mod status;
mod write;

pub use controller::{ControllerArgs, run_controller};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "lab name {0:?} is not valid: use up to 16 lowercase letters, digits and '-', starting with a letter"
    )]
    BadName(String),
    #[error("ferry lab needs root (it creates network namespaces); run it with sudo")]
    NotRoot,
    #[error("{0}")]
    Plan(String),
    #[error("{command}: {message}")]
    Command { command: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lab {0:?} is not running (start it with: ferry lab up PATH... --lab {0})")]
    NotRunning(String),
    #[error(
        "lab {0:?} is already running (change it with ferry lab apply, or stop it with ferry lab down --lab {0})"
    )]
    AlreadyRunning(String),
    #[error("the lab controller failed: {0}")]
    Controller(String),
    #[error("{0}")]
    Rejected(String),
}

impl LabError {
    pub(crate) fn io(
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io { path, source }
    }
}
