//! A small Kubernetes API server, for the lab: it serves a manifests
//! directory (what the lab's controller writes) through the API server's
//! read paths, so that agents run with `--source kube` and `kubectl` read
//! the lab as they would a cluster, plus the few writes components make
//! (Node annotations for the overlay's Kubernetes lease store, Ingress
//! status). Not a general API server: no admission, no auth, no
//! server-side apply; JSON only.
//!
//! - `resources` (pure): which kinds under which paths.
//! - `select` (pure): label and field selectors.
//! - `store` (pure): objects, resourceVersions, the watch log, writes.
//! - `discovery` (pure): the discovery documents.
//! - `server`: the process (sockets, the manifests source, files).

pub mod discovery;
pub mod resources;
pub mod select;
pub mod server;
pub mod store;

pub use server::{Config, ServerError, run};
pub use store::{ApiError, Store};
