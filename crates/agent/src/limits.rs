//! Process limits the agent sets at start: the open-files limit is raised
//! to its hard maximum, so that the caps of the DNS and HTTP servers (all
//! below it) are what bounds the agent, not EMFILE in the middle of a sync.

/// The soft RLIMIT_NOFILE after [`raise_nofile`].
pub(crate) fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                tracing::debug!(from = soft, to = hard, "raised the open-files limit");
                return hard;
            }
            soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            0
        }
    }
}
