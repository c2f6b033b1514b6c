//! The one contract between a source and its consumers. A source runs on
//! a thread of its own and publishes every new [`Snapshot`] into a watch
//! channel ([`Feed`]); each consumer holds a [`Follower`], awaits the next
//! state, and gets the changes since the state *it* last saw: exactly the
//! source's change set when it kept up, the full diff of the two states
//! when it lagged and missed versions. Nothing blocks on a poll.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_model::{ChangeSet, ClusterState, ValidationOptions};
use tokio::sync::watch;

use crate::manifests::{Snapshot, SourceError};
use crate::spec::SourceSpec;
use crate::watch::ManifestWatcher;

/// A running source; dropping every [`Follower`] and the feed stops it.
pub struct Feed {
    rx: watch::Receiver<Arc<Snapshot>>,
    health: watch::Receiver<SourceHealth>,
    progress: watch::Receiver<Option<SourceProgress>>,
    /// The channel's first value is a placeholder, not a state the source
    /// read: followers wait for the first one it publishes.
    pending: bool,
}

/// How far the source has read: every change the server made up to
/// `resource_version` is in state version `state_version` (or an older
/// one). The Kubernetes API source knows this per kind, from lists,
/// events and bookmarks, and reports the lowest; the manifests source
/// reports nothing (the objects' own resourceVersions say it there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceProgress {
    pub state_version: u64,
    pub resource_version: u64,
}

/// Whether the source is in step with what it watches. A stale source
/// keeps publishing its last good state (consumers keep serving it); the
/// agent's health endpoint shows `stale_since` and the reason. The
/// manifests source is never stale (a file that stops parsing is an error
/// in the snapshot, not a lost connection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceHealth {
    /// When the source stopped being sure it sees every change (the first
    /// failed request of an outage); `None` while it is in step.
    pub stale_since: Option<SystemTime>,
    /// Why, as the last error said it.
    pub reason: Option<String>,
}

/// The sending half of a [`Feed`], for sources that run elsewhere (the
/// Kubernetes API source in ferry-kube).
pub struct Publisher {
    snapshots: watch::Sender<Arc<Snapshot>>,
    health: watch::Sender<SourceHealth>,
    progress: watch::Sender<Option<SourceProgress>>,
}

impl Publisher {
    /// Publishes a new snapshot to every follower.
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshots.send_replace(Arc::new(kept(snapshot)));
    }

    /// Says whether the source is in step (followers are not woken).
    pub fn set_health(&self, health: SourceHealth) {
        self.health.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        });
    }

    /// Says how far the source has read (followers are not woken).
    pub fn set_progress(&self, progress: SourceProgress) {
        self.progress.send_if_modified(|p| {
            let changed = *p != Some(progress);
            *p = Some(progress);
            changed
        });
    }

    /// True once the feed and every follower are gone: the source should stop.
    pub fn is_closed(&self) -> bool {
        self.snapshots.is_closed()
    }
}

/// How a source reads what it reads.
#[derive(Clone, Debug, Default)]
pub struct FeedOptions {
    /// Validation as an API server with these flags would do it.
    pub validation: ValidationOptions,
    /// Manifests: read directories recursively.
    pub recursive: bool,
    /// The source's thread yields its core to every other thread
    /// ([`ferry_sys::yield_to_others`]): for a process whose other threads
    /// answer queries (`ferry dns`).
    pub yield_to_others: bool,
}

impl FeedOptions {
    /// What a source's own thread does first: yield its core to every
    /// other thread when asked to.
    pub fn on_source_thread(&self) {
        if self.yield_to_others
            && let Err(e) = ferry_sys::yield_to_others()
        {
            tracing::debug!(error = %e, "the source thread keeps its priority");
        }
    }
}

/// Debounce of the manifests watcher: a burst of file events (a writer
/// replacing many files) becomes one snapshot.
const DEBOUNCE: Duration = Duration::from_millis(10);

impl Feed {
    /// Starts `spec` (the Kubernetes API source is started by the
    /// ferry-kube crate instead, which keeps kube out of this one): the first state is read before this returns (errors
    /// such as a missing directory are returned here), later ones arrive
    /// on the followers. Watching starts before the first read, so no
    /// change made meanwhile is lost.
    pub fn start(spec: &SourceSpec, options: FeedOptions) -> Result<Feed, SourceError> {
        match spec {
            SourceSpec::Manifests(dir) => Feed::manifests(std::slice::from_ref(dir), options),
            SourceSpec::Kube { .. } => Err(SourceError::NotHere(spec.to_string())),
        }
    }

    /// A manifests source over several files or directories (as `ferry
    /// services` and `kubectl apply -f` take them).
    pub fn manifests(
        paths: &[std::path::PathBuf],
        options: FeedOptions,
    ) -> Result<Feed, SourceError> {
        let (mut watcher, first) =
            ManifestWatcher::open_with(paths, options.recursive, DEBOUNCE, options.validation)?;
        let (tx, rx) = watch::channel(Arc::new(kept(first)));
        std::thread::Builder::new()
            .name("source".into())
            .spawn(move || {
                options.on_source_thread();
                while !tx.is_closed() {
                    let asked = std::time::Instant::now();
                    match watcher.next(Duration::from_secs(1)) {
                        Some(Ok(snapshot)) => {
                            let _ = tx.send(Arc::new(snapshot));
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "source error"),
                        // Nothing, and at once: the file watcher is gone.
                        // Stopping tells every follower (`next` is None).
                        None if asked.elapsed() < Duration::from_millis(500) => {
                            tracing::error!("the file watcher stopped; the source ends");
                            return;
                        }
                        None => {}
                    }
                }
            })
            .map_err(|e| SourceError::Thread(e.to_string()))?;
        Ok(Feed::from_channel(rx))
    }

    /// A feed over `rx`, never stale and reporting no progress.
    fn from_channel(rx: watch::Receiver<Arc<Snapshot>>) -> Feed {
        Feed {
            rx,
            health: watch::channel(SourceHealth::default()).1,
            progress: watch::channel(None).1,
            pending: false,
        }
    }

    /// A feed of fixed snapshots pushed by the caller (tests, benchmarks).
    pub fn manual(first: Snapshot) -> (watch::Sender<Arc<Snapshot>>, Feed) {
        let (tx, rx) = watch::channel(Arc::new(first));
        (tx, Feed::from_channel(rx))
    }

    /// A feed whose snapshots, health and progress a source elsewhere
    /// publishes; `first` is the first state every follower sees.
    pub fn publisher(first: Snapshot) -> (Publisher, Feed) {
        Feed::publisher_with(first, false)
    }

    /// A feed with no state yet (a source that has not read its first
    /// one): followers wait for the first [`Publisher::publish`], and
    /// [`Feed::has_state`] says whether it came. Until then [`Feed::latest`]
    /// is an empty cluster that nobody should program.
    pub fn publisher_pending() -> (Publisher, Feed) {
        let empty = Snapshot {
            state: ClusterState::new(),
            changes: ChangeSet::default(),
            errors: Vec::new(),
        };
        Feed::publisher_with(empty, true)
    }

    fn publisher_with(first: Snapshot, pending: bool) -> (Publisher, Feed) {
        let (snapshots, rx) = watch::channel(Arc::new(first));
        let (health, health_rx) = watch::channel(SourceHealth::default());
        let (progress, progress_rx) = watch::channel(None);
        (
            Publisher {
                snapshots,
                health,
                progress,
            },
            Feed {
                rx,
                health: health_rx,
                progress: progress_rx,
                pending,
            },
        )
    }

    /// Whether the source has published a state it read (always true but
    /// for a [`Feed::publisher_pending`] feed before its first state).
    pub fn has_state(&self) -> bool {
        // This receiver never marks a value seen: "changed" means
        // "published since the feed was made".
        !self.pending || self.rx.has_changed().unwrap_or(false)
    }

    /// How far the source has read, as it changes (`None` for sources
    /// that do not say).
    pub fn watch_progress(&self) -> watch::Receiver<Option<SourceProgress>> {
        self.progress.clone()
    }

    /// Whether the source is in step now.
    pub fn health(&self) -> SourceHealth {
        self.health.borrow().clone()
    }

    /// The source's health as it changes (for the agent's health endpoint).
    pub fn watch_health(&self) -> watch::Receiver<SourceHealth> {
        self.health.clone()
    }

    /// The newest snapshot.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// A new consumer; its first [`Follower::next`] returns the newest
    /// state with every object in the change set (for a pending feed, the
    /// first state the source publishes).
    pub fn follow(&self) -> Follower {
        let mut rx = self.rx.clone();
        if !self.pending {
            rx.mark_changed();
        }
        Follower {
            rx,
            seen: None,
            whole_first: false,
        }
    }

    /// A consumer that reads its first state whole (it builds from the
    /// state, not from the changes): its first snapshot's change set is
    /// empty, from version 0 to the state's, instead of naming every
    /// object. That set (13 MiB at 20,000 Services and 100,000 Pods) would
    /// be made and dropped at once, once per consumer, while the
    /// consumers build what they keep: holes the allocator cannot give
    /// back. Later snapshots are as [`Feed::follow`]'s.
    pub fn follow_whole(&self) -> Follower {
        Follower {
            whole_first: true,
            ..self.follow()
        }
    }
}

/// What the channel keeps of a published snapshot. A change set from
/// the empty state (a source's first state) names every object, and no
/// follower uses it: a follower's first state is always a diff from
/// nothing (see [`Follower::take`]). It is dropped rather than held until
/// the next change (13 MiB at 20,000 Services and 100,000 Pods).
fn kept(snapshot: Snapshot) -> Snapshot {
    if snapshot.changes.from_version == 0 && !snapshot.changes.is_empty() {
        snapshot.without_changes()
    } else {
        snapshot
    }
}

/// One consumer's view of a [`Feed`].
pub struct Follower {
    rx: watch::Receiver<Arc<Snapshot>>,
    seen: Option<ClusterState>,
    /// See [`Feed::follow_whole`].
    whole_first: bool,
}

impl Follower {
    /// Waits for a state newer than the last one returned; `None` once the
    /// source has stopped. The change set is relative to that last state.
    pub async fn next(&mut self) -> Option<Arc<Snapshot>> {
        self.rx.changed().await.ok()?;
        Some(self.take())
    }

    /// The newer state if there is one, without waiting.
    pub fn try_next(&mut self) -> Option<Arc<Snapshot>> {
        // After the source ended, a last state not yet seen still counts.
        let unseen = self.rx.has_changed().unwrap_or_else(|_| {
            self.seen
                .as_ref()
                .is_none_or(|s| s.version() != self.rx.borrow().state.version())
        });
        unseen.then(|| self.take())
    }

    fn take(&mut self) -> Arc<Snapshot> {
        let latest = self.rx.borrow_and_update().clone();
        let out = match &self.seen {
            Some(seen) if seen.version() == latest.changes.from_version => latest,
            Some(seen) if seen.version() == latest.state.version() => {
                Arc::new(latest.without_changes())
            }
            None if self.whole_first => Arc::new(latest.with_changes(ChangeSet {
                from_version: 0,
                to_version: latest.state.version(),
                ..ChangeSet::default()
            })),
            // Missed versions (or the first state): the diff says exactly
            // what differs from what this consumer has.
            seen => {
                let empty = ClusterState::new();
                let from = seen.as_ref().unwrap_or(&empty);
                Arc::new(latest.with_changes(from.diff(&latest.state)))
            }
        };
        self.seen = Some(out.state.clone());
        out
    }
}
