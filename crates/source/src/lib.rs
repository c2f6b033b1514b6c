//! Sources of cluster state. Each turns what it watches into new
//! [`ferry_model::ClusterState`] versions with exact change sets.
//!
//! - [`manifests`]: YAML/JSON files and directories, as `kubectl apply -f`
//!   takes them, watched for changes.

pub mod manifests;
mod watch;

pub use manifests::{ManifestSource, Snapshot, SourceError};
pub use watch::ManifestWatcher;
