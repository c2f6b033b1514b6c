//! Watches a [`ManifestSource`]'s files with inotify (via `notify`) and
//! turns bursts of file events into one refresh (debounced), so that a
//! writer replacing many files yields one new state, not many.
//!
//! Owns the watcher thread's channel; the caller decides where to block.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use ferry_model::ValidationOptions;
use notify::{RecursiveMode, Watcher};

use crate::manifests::{ManifestSource, Snapshot, SourceError};

pub struct ManifestWatcher {
    source: ManifestSource,
    events: Events,
    debounce: Duration,
    _watcher: notify::RecommendedWatcher,
}

impl ManifestWatcher {
    /// Starts watching the source's roots. Single files are watched through
    /// their directory, so editors that replace a file by renaming still count.
    /// Changes made between the source's reading and this call are missed:
    /// prefer [`ManifestWatcher::open`].
    pub fn new(source: ManifestSource, debounce: Duration) -> Result<Self, SourceError> {
        let (watcher, events) = watch(source.roots(), source.recursive())?;
        Ok(Self {
            source,
            events,
            debounce,
            _watcher: watcher,
        })
    }

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
                match ev {
                    Ok(ev) if ev.need_rescan() => rescan = true,
                    // Reads (ours and other readers') are not changes; reacting
                    // to them would have readers of one directory wake each
                    // other forever.
                    Ok(ev) if ev.kind.is_access() => {}
                    Ok(ev) => paths.extend(ev.paths.into_iter().filter(|p| self.source.covers(p))),
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
