//! The Kubernetes API source: one list-and-watch loop per kind the data
//! plane reads (Namespaces, Nodes, Services, EndpointSlices, Pods,
//! Ingresses, IngressClasses, TLS Secrets, and the ConfigMaps ferry reads),
//! folded into [`ferry_model::ClusterState`] with the manifests source's
//! validation and published through a [`ferry_source::Feed`], so every
//! consumer follows it exactly as it follows manifests.
//!
//! kube and its TLS stack are compiled here only: this is a leaf crate,
//! used by the agent and the `ferry` binary.
//!
//! - [`source`]: the running source, batching, staleness and progress.
//! - [`watch`]: the watchers (list, watch, bookmarks, 410, backoff), and
//!   which objects of each kind they ask for.
//! - [`fold`]: events into states and exact change sets (pure).
//! - [`strip`]: what is kept of each object (pure).
//! - [`write`]: the one writer to the API (a Node's annotations for the
//!   overlay's Kubernetes lease store).
//!
//! Pods are decoded straight into the model's slim `Pod` (only the fields
//! components read); the other kinds are stored as their k8s-openapi
//! types, minus managedFields and unread annotations.

pub mod fold;
pub mod source;
pub mod strip;
pub mod watch;
pub mod write;

use std::path::PathBuf;

pub use source::{start, start_in_background};
pub use write::Writer;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes API configuration (in-cluster, KUBECONFIG or ~/.kube/config): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot make a client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Source(#[from] ferry_source::SourceError),
    #[error("cannot start the source's thread: {0}")]
    Thread(String),
    #[error("the Kubernetes API source stopped before its first state")]
    Stopped,
}
