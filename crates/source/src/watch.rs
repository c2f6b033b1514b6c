//! Watches a [`ManifestSource`]'s files with inotify (via `notify`) and
//! turns bursts of file events into one refresh (debounced), so that a
//! writer replacing many files yields one new state, not many.
//!
//! Only complete files are read: a file is reloaded when a writer closes it
//! (IN_CLOSE_WRITE), when it is renamed into place (IN_MOVED_TO) or away,
//! deleted, or created as a symlink (whose target is already written); a
//! bare modification means a write is still under way and is ignored, so a
//! file rewritten in place is never applied half-written. A ConfigMap
//! volume's `..data` symlink swap changes every file behind its links at
//! once, so it rescans.
//!
//! Owns the watcher thread's channel; the caller decides where to block.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use ferry_model::ValidationOptions;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::manifests::{ManifestSource, Snapshot, SourceError};

pub struct ManifestWatcher {
    source: ManifestSource,
    events: Events,
    debounce: Duration,
    _watcher: notify::RecommendedWatcher,
}

impl ManifestWatcher {
    /// Starts watching `paths`, then reads them: no change is lost between
    /// the first snapshot and the first [`ManifestWatcher::next`].
    pub fn open(
        paths: &[PathBuf],
        recursive: bool,
        debounce: Duration,
    ) -> Result<(Self, Snapshot), SourceError> {
        Self::open_with(paths, recursive, debounce, ValidationOptions::default())
    }

    /// [`ManifestWatcher::open`], validating as an API server started with `options`.
    pub fn open_with(
        paths: &[PathBuf],
        recursive: bool,
        debounce: Duration,
        options: ValidationOptions,
    ) -> Result<(Self, Snapshot), SourceError> {
        let (watcher, events) = watch(paths, recursive)?;
        let (source, first) = ManifestSource::open_with(paths, recursive, options)?;
        Ok((
            Self {
                source,
                events,
                debounce,
                _watcher: watcher,
            },
            first,
        ))
    }

    pub fn source(&self) -> &ManifestSource {
        &self.source
    }

    /// Waits up to `timeout` for file changes and returns the next snapshot
    /// when something the source reads changed (its change set may still be
    /// empty when the content is the same). `None` on timeout.
    pub fn next(&mut self, timeout: Duration) -> Option<Result<Snapshot, SourceError>> {
        let deadline = Instant::now() + timeout;
        loop {
            let first = match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => return None,
            };
            let mut batch = vec![first];
            let quiet_until = Instant::now() + self.debounce;
            while let Ok(ev) = self
                .events
                .recv_timeout(quiet_until.saturating_duration_since(Instant::now()))
            {
                batch.push(ev);
            }
            let mut rescan = false;
            let mut paths: Vec<PathBuf> = Vec::new();
            for ev in batch {
                match ev.map(reaction) {
                    Ok(Reaction::Nothing) => {}
                    Ok(Reaction::Reload(p)) => {
                        paths.extend(p.into_iter().filter(|p| self.source.covers(p)));
                    }
                    Ok(Reaction::Rescan) => rescan = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "file watch error; rescanning");
                        rescan = true;
                    }
                }
            }
            if rescan {
                return Some(self.source.rescan());
            }
            paths.sort();
            paths.dedup();
            if !paths.is_empty() {
                return Some(Ok(self.source.refresh(&paths)));
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }
}

type Events = Receiver<notify::Result<notify::Event>>;

/// What one file event asks of the source.
enum Reaction {
    Nothing,
    /// These paths are complete (or gone): reload those the source reads.
    Reload(Vec<PathBuf>),
    Rescan,
}

/// The symlink a ConfigMap or Secret volume swaps atomically to publish a
/// new version of every key (each key is a link through it).
const CONFIGMAP_DATA_LINK: &str = "..data";

fn is_data_link(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == CONFIGMAP_DATA_LINK)
}

fn reaction(ev: notify::Event) -> Reaction {
    if ev.need_rescan() {
        return Reaction::Rescan;
    }
    match ev.kind {
        // A writer closed the file: its content is complete.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Reaction::Reload(ev.paths),
        // Renamed into place (complete by construction) or away, or deleted.
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
            if ev.paths.iter().any(|p| is_data_link(p)) {
                Reaction::Rescan
            } else {
                Reaction::Reload(ev.paths)
            }
        }
        // A new symlink points at content already written; a new regular
        // file is read when its writer closes it.
        EventKind::Create(_) => {
            if ev.paths.iter().any(|p| is_data_link(p)) {
                return Reaction::Rescan;
            }
            let links: Vec<PathBuf> = ev
                .paths
                .into_iter()
                .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_symlink()))
                .collect();
            if links.is_empty() {
                Reaction::Nothing
            } else {
                Reaction::Reload(links)
            }
        }
        // A bare modification is a write still under way (the close comes
        // later); reads, ours and other readers', are not changes (reacting
        // to them would have readers of one directory wake each other
        // forever); attribute changes do not change content.
        _ => Reaction::Nothing,
    }
}

fn watch(
    roots: &[PathBuf],
    recursive: bool,
) -> Result<(notify::RecommendedWatcher, Events), SourceError> {
    let (tx, events) = channel();
    let mut watcher = notify::recommended_watcher(move |ev| {
        // The receiver may be gone while shutting down; nothing to do then.
        let _ = tx.send(ev);
    })
    .map_err(|source| SourceError::Watch {
        path: PathBuf::new(),
        source,
    })?;
    for root in roots {
        let (path, mode) = if root.is_dir() {
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            (root.clone(), mode)
        } else {
            let parent = root
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from);
            (parent, RecursiveMode::NonRecursive)
        };
        watcher
            .watch(&path, mode)
            .map_err(|source| SourceError::Watch {
                path: path.clone(),
                source,
            })?;
    }
    Ok((watcher, events))
}
