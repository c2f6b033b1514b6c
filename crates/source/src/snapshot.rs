//! What every source publishes and every consumer reads: one version of
//! the cluster, what changed to reach it, and the problems the source
//! knows of now. Source-neutral: nothing here is about files or the API.

use ferry_model::{ChangeSet, ClusterState, ManifestError};

/// One version of the state, what changed to reach it, and every problem
/// the source currently knows of (invalid objects, with where they came
/// from), kept last-good in `state`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub state: ClusterState,
    pub changes: ChangeSet,
    pub errors: Vec<ManifestError>,
}
