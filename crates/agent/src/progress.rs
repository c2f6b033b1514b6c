//! What each component has applied, and what that means for the node: the
//! components report the state version they programmed; the agent maps
//! state versions to resourceVersions, so the node can say which
//! resourceVersion every enabled component has reached. On the manifests
//! source a state's resourceVersion is its objects' highest (the lab
//! numbers its writes); on the API source it is what the source reports
//! (the lowest version every kind's watch has reached, bookmarks
//! included), because the highest object would run ahead of a kind whose
//! events are still on their way.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ferry_model::Object;
use ferry_source::Snapshot;
use tokio::sync::watch;

/// A component's name and the state version it reports as applied.
type Report = (&'static str, watch::Receiver<Option<u64>>);

/// The components' reports, and resourceVersions by state version.
#[derive(Default)]
pub struct Progress {
    components: Mutex<Vec<Report>>,
    /// State version -> the resourceVersion that state holds everything up to.
    versions: Mutex<BTreeMap<u64, u64>>,
    /// The source reports its progress itself ([`Progress::note`]).
    from_source: std::sync::atomic::AtomicBool,
}

fn resource_version(o: &Object) -> Option<u64> {
    o.metadata().resource_version()?.parse().ok()
}

impl Progress {
    /// A component reporting the state version it applied.
    pub(crate) fn add(&self, name: &'static str, applied: watch::Receiver<Option<u64>>) {
        self.lock_components().push((name, applied));
    }

    fn lock_components(&self) -> std::sync::MutexGuard<'_, Vec<Report>> {
        // Plain data: usable after a panic elsewhere.
        self.components.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_versions(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on the source's own reports say which resourceVersion a
    /// state holds, not the objects in it.
    pub(crate) fn follow_source(&self) {
        self.from_source
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The source says state version `state_version` holds every change
    /// up to `resource_version`.
    pub(crate) fn note(&self, state_version: u64, resource_version: u64) {
        let mut versions = self.lock_versions();
        let at = versions.entry(state_version).or_insert(0);
        *at = (*at).max(resource_version);
        self.forget_old(&mut versions);
    }

    /// Notes the highest resourceVersion of a state the source published
    /// (from its changed objects; all objects for the first one).
    pub(crate) fn record(&self, snapshot: &Snapshot) {
        if self.from_source.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut versions = self.lock_versions();
        let before = versions.values().next_back().copied();
        let changed = match before {
            None => snapshot.state.objects().filter_map(resource_version).max(),
            Some(_) => snapshot
                .changes
                .objects
                .iter()
                .filter_map(|k| snapshot.state.get(k))
                .filter_map(resource_version)
                .max(),
        };
        let rv = before.into_iter().chain(changed).max().unwrap_or(0);
        versions.insert(snapshot.state.version(), rv);
        self.forget_old(&mut versions);
    }

    /// Keeps what a component may still report: versions from the oldest
    /// one any component has applied.
    fn forget_old(&self, versions: &mut BTreeMap<u64, u64>) {
        if let Some(oldest) = self.applied_min()
            && let Some(&floor) = versions.range(..=oldest).next_back().map(|(k, _)| k)
        {
            versions.retain(|v, _| *v >= floor);
        }
    }

    /// The state version every component has applied (`None` before all
    /// of them applied one).
    fn applied_min(&self) -> Option<u64> {
        let components = self.lock_components();
        let mut min: Option<u64> = None;
        for (_, rx) in components.iter() {
            let v = (*rx.borrow())?;
            min = Some(min.map_or(v, |m: u64| m.min(v)));
        }
        min
    }

    /// Every component has applied a state.
    pub fn ready(&self) -> bool {
        self.lock_components()
            .iter()
            .all(|(_, rx)| rx.borrow().is_some())
    }

    /// The components that have not applied a state yet.
    pub fn waiting(&self) -> Vec<&'static str> {
        self.lock_components()
            .iter()
            .filter(|(_, rx)| rx.borrow().is_none())
            .map(|(n, _)| *n)
            .collect()
    }

    /// The highest resourceVersion every component has programmed.
    pub fn synced_resource_version(&self) -> u64 {
        let versions = self.lock_versions();
        let Some(min) = self.applied_min() else {
            // No components: everything read is "applied".
            return if self.lock_components().is_empty() {
                versions.values().next_back().copied().unwrap_or(0)
            } else {
                0
            };
        };
        versions.range(..=min).next_back().map_or(0, |(_, rv)| *rv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_the_api_source_the_synced_version_is_the_sources_report_for_the_applied_state() {
        let progress = Progress::default();
        progress.follow_source();
        let (applied, rx) = watch::channel(None);
        progress.add("proxy", rx);
        progress.note(1, 10);
        assert_eq!(progress.synced_resource_version(), 0, "nothing applied");
        applied.send_replace(Some(1));
        assert_eq!(progress.synced_resource_version(), 10);
        // A bookmark: the same state holds everything up to a later version.
        progress.note(1, 15);
        assert_eq!(progress.synced_resource_version(), 15);
        progress.note(2, 20);
        assert_eq!(
            progress.synced_resource_version(),
            15,
            "state 2 is not applied yet"
        );
        applied.send_replace(Some(2));
        assert_eq!(progress.synced_resource_version(), 20);
    }
}
