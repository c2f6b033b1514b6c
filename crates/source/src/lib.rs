//! Sources of cluster state. Each turns what it watches into new
//! [`ferry_model::ClusterState`] versions with exact change sets, and
//! publishes them through one contract ([`Feed`], [`Follower`]) that every
//! consumer (the agent's components, `ferry dns`, `ferry services
//! --watch`) uses.
//!
//! - [`spec`]: which source (`--source manifests:DIR`, `--source kube`;
//!   the Kubernetes API source itself lives in ferry-kube).
//! - [`snapshot`]: what a source publishes.
//! - [`feed`]: a running source and its followers.
//! - [`manifests`]: YAML/JSON files and directories, as `kubectl apply -f`
//!   takes them, watched for changes.

pub mod feed;
pub mod manifests;
pub mod snapshot;
pub mod spec;
mod watch;

pub use feed::{Feed, FeedOptions, Follower, Publisher, SourceHealth, SourceProgress};
pub use manifests::{ManifestSource, SourceError};
pub use snapshot::Snapshot;
pub use spec::SourceSpec;
pub use watch::ManifestWatcher;
