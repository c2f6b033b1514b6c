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

impl Snapshot {
    /// The same state and errors, with `changes` instead. The change set
    /// of `self` is not copied (on a first state it names every object:
    /// about 13 MiB at 20,000 Services and 100,000 Pods).
    pub fn with_changes(&self, changes: ChangeSet) -> Snapshot {
        Snapshot {
            state: self.state.clone(),
            changes,
            errors: self.errors.clone(),
        }
    }

    /// The same state and errors, and no change (from its version to
    /// itself): what a consumer keeps once it has applied the changes.
    /// A follower that meets it after an older state diffs the states
    /// instead, so nothing is lost by dropping the set.
    pub fn without_changes(&self) -> Snapshot {
        let version = self.state.version();
        self.with_changes(ChangeSet {
            from_version: version,
            to_version: version,
            ..ChangeSet::default()
        })
    }
}
