//! The manifests source: files and directories of Kubernetes objects, read
//! with [`ferry_model::decode`] and folded into a [`ClusterState`].
//!
//! Reloading a file costs only that file: objects are tracked per file, and
//! only the keys the file held before or holds now are compared. A file that
//! stops parsing keeps its last good objects; an object that becomes invalid
//! keeps its last good version. Both are reported, never silently dropped.
//! So are Services asking for a node port another Service holds, which an
//! API server would have refused.
//!
//! Touches the file system (reads only); no threads (see `watch.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_model::{
    ClusterState, FieldError, Kind, ManifestError, NodePortClaims, Object, ObjectDesc, ObjectKey,
    Update, ValidationOptions, decode_with,
};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },
    #[error("{path}: cannot read directory: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: this source is started by ferry-kube, not ferry-source")]
    NotHere(String),
    #[error("cannot start the source's thread: {0}")]
    Thread(String),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

pub use crate::snapshot::Snapshot;

struct FileEntry {
    /// The file's path, shared by every `owners` entry naming it.
    path: Arc<Path>,
    hash: u64,
    objects: BTreeMap<ObjectKey, Object>,
    errors: Vec<ManifestError>,
    skipped: Vec<ObjectDesc>,
}

impl FileEntry {
    fn new(path: &Path) -> Self {
        FileEntry {
            path: path.into(),
            hash: 0,
            objects: BTreeMap::new(),
            errors: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

/// The files defining one key, sorted by path: almost always one, so
/// shared paths with room for one inline, not a set of owned ones
/// (measured at issue 13's target case: a `BTreeSet<PathBuf>` per object
/// cost 32 MiB more than a `Vec`; a `HashMap` of `Vec`s 24.8 MiB, this
/// B-tree with the path inline 18.3 MiB, by heaptrack).
type Owners = smallvec::SmallVec<[Arc<Path>; 1]>;

pub struct ManifestSource {
    roots: Vec<PathBuf>,
    recursive: bool,
    files: BTreeMap<PathBuf, FileEntry>,
    /// Files defining each key, in path order: the first one wins.
    owners: BTreeMap<ObjectKey, Owners>,
    /// Keys defined by more than one file.
    duplicates: BTreeSet<ObjectKey>,
    /// The node ports the Services in `state` ask for.
    node_ports: NodePortClaims,
    options: ValidationOptions,
    state: ClusterState,
}

fn is_manifest_name(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

/// Hidden directories are not read: a ConfigMap volume keeps every version
/// of its files in `..<timestamp>` directories behind a `..data` link, and
/// the visible names link into them.
fn is_hidden(c: std::path::Component<'_>) -> bool {
    c.as_os_str().to_str().is_none_or(|n| n.starts_with('.'))
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl ManifestSource {
    /// Reads every manifest under `paths` (files, or directories of `.yaml`,
    /// `.yml` and `.json` files; subdirectories only with `recursive`, as
    /// with `kubectl -R`). Missing paths are an error; bad content is not
    /// (it is reported in the snapshot). Validates as an API server with
    /// default flags.
    pub fn open(paths: &[PathBuf], recursive: bool) -> Result<(Self, Snapshot), SourceError> {
        Self::open_with(paths, recursive, ValidationOptions::default())
    }

    /// [`ManifestSource::open`], validating as an API server started with `options`.
    pub fn open_with(
        paths: &[PathBuf],
        recursive: bool,
        options: ValidationOptions,
    ) -> Result<(Self, Snapshot), SourceError> {
        for p in paths {
            if !p.exists() {
                return Err(SourceError::NotFound { path: p.clone() });
            }
        }
        let mut source = ManifestSource {
            roots: paths.to_vec(),
            recursive,
            files: BTreeMap::new(),
            owners: BTreeMap::new(),
            duplicates: BTreeSet::new(),
            node_ports: NodePortClaims::new(),
            options,
            state: ClusterState::new(),
        };
        let snapshot = source.rescan()?;
        Ok((source, snapshot))
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    pub fn recursive(&self) -> bool {
        self.recursive
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Is `path` a manifest file this source reads (or would read if it appeared)?
    pub fn covers(&self, path: &Path) -> bool {
        self.roots.iter().any(|root| {
            if path == root {
                return true;
            }
            if !is_manifest_name(path) || root.is_file() {
                return false;
            }
            match path.parent() {
                Some(parent) if parent == root => true,
                Some(parent) => {
                    self.recursive
                        && parent
                            .strip_prefix(root)
                            .is_ok_and(|below| !below.components().any(is_hidden))
                }
                None => false,
            }
        })
    }

    fn list_files(&self) -> Result<BTreeSet<PathBuf>, SourceError> {
        let mut out = BTreeSet::new();
        for root in &self.roots {
            if root.is_dir() {
                walk(root, self.recursive, &mut out)?;
            } else if root.exists() {
                out.insert(root.clone());
            }
        }
        Ok(out)
    }

    /// Re-lists every root and reloads what changed (used at start and when
    /// the watcher lost track of events).
    pub fn rescan(&mut self) -> Result<Snapshot, SourceError> {
        let now = self.list_files()?;
        let mut changed: Vec<PathBuf> = now.iter().cloned().collect();
        changed.extend(self.files.keys().filter(|p| !now.contains(*p)).cloned());
        Ok(self.refresh(&changed))
    }

    /// Reloads the given files (removing those that no longer exist) and
    /// returns the new snapshot. Unchanged content costs one read and a hash.
    pub fn refresh(&mut self, paths: &[PathBuf]) -> Snapshot {
        let mut affected: BTreeSet<ObjectKey> = BTreeSet::new();
        for path in paths {
            if path.is_file() {
                self.reload(path, &mut affected);
            } else if let Some(old) = self.files.remove(path) {
                for key in old.objects.into_keys() {
                    self.disown(&key, path);
                    affected.insert(key);
                }
            }
        }
        let updates: Vec<Update> = affected
            .into_iter()
            .map(|key| match self.winner(&key) {
                Some(object) => Update::Apply(object.clone()),
                None => Update::Delete(key),
            })
            .collect();
        let (state, changes) = self.state.apply(updates);
        self.state = state;
        self.node_ports.follow(&self.state, &changes);
        Snapshot {
            state: self.state.clone(),
            changes,
            errors: self.errors(),
        }
    }

    fn reload(&mut self, path: &Path, affected: &mut BTreeSet<ObjectKey>) {
        let label = path.display().to_string();
        // A file a writer still has open is left as it was: its close
        // brings it back here, complete.
        let text = match ferry_sys::read_unless_being_written(path) {
            Ok(None) => return,
            Ok(Some(bytes)) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => return self.file_failed(path, &label, "is not UTF-8 text".into()),
            },
            Err(e) => return self.file_failed(path, &label, format!("cannot read: {e}")),
        };
        let hash = hash_of(text.as_bytes());
        if self.files.get(path).is_some_and(|f| f.hash == hash) {
            return;
        }
        let decoded = decode_with(&label, &text, &self.options);
        let entry = self
            .files
            .entry(path.to_path_buf())
            .or_insert_with(|| FileEntry::new(path));
        entry.hash = hash;
        entry.errors = decoded.errors;
        entry.skipped = decoded.skipped;
        let mut objects: BTreeMap<ObjectKey, Object> = decoded
            .objects
            .into_iter()
            .map(|d| (d.object.key(), d.object))
            .collect();
        if decoded.syntax_error {
            // A document that does not parse could be any of the file's
            // objects: keep every last good one until the file parses again,
            // and take the documents that did parse.
            for (key, old) in &entry.objects {
                objects.entry(key.clone()).or_insert_with(|| old.clone());
            }
        }
        for desc in decoded.rejected {
            let key = entry.objects.keys().find(|k| {
                k.kind.as_str() == desc.kind
                    && *k.name.namespace == *desc.namespace
                    && *k.name.name == *desc.name
            });
            if let Some(key) = key
                && !objects.contains_key(key)
            {
                objects.insert(key.clone(), entry.objects[key].clone());
            }
        }
        let old = std::mem::replace(&mut entry.objects, objects);
        let new_keys: Vec<ObjectKey> = entry.objects.keys().cloned().collect();
        let shared = entry.path.clone();
        for key in old.into_keys() {
            if !self.files[path].objects.contains_key(&key) {
                self.disown(&key, path);
            }
            affected.insert(key);
        }
        for key in new_keys {
            self.own(&key, &shared);
            affected.insert(key);
        }
    }

    fn file_failed(&mut self, path: &Path, label: &str, message: String) {
        let entry = self
            .files
            .entry(path.to_path_buf())
            .or_insert_with(|| FileEntry::new(path));
        entry.hash = 0;
        entry.errors = vec![ManifestError {
            file: label.to_string(),
            document: 0,
            item: None,
            line: None,
            object: None,
            field: FieldError::new("", message),
        }];
    }

    fn own(&mut self, key: &ObjectKey, path: &Arc<Path>) {
        let owners = self.owners.entry(key.clone()).or_default();
        if let Err(i) = owners.binary_search(path) {
            owners.insert(i, path.clone());
        }
        if owners.len() > 1 {
            self.duplicates.insert(key.clone());
        }
    }

    fn disown(&mut self, key: &ObjectKey, path: &Path) {
        if let Some(owners) = self.owners.get_mut(key) {
            owners.retain(|p| **p != *path);
            if owners.len() <= 1 {
                self.duplicates.remove(key);
            }
            if owners.is_empty() {
                self.owners.remove(key);
            }
        }
    }

    fn winner(&self, key: &ObjectKey) -> Option<&Object> {
        let first = self.owners.get(key)?.first()?;
        self.files.get(&**first)?.objects.get(key)
    }

    /// Objects of kinds the data plane does not read (Deployments, ...).
    pub fn skipped(&self) -> Vec<ObjectDesc> {
        self.files
            .values()
            .flat_map(|f| f.skipped.iter().cloned())
            .collect()
    }

    /// Every current error: per-file errors, objects defined in more than
    /// one file, and node ports claimed by a second Service.
    pub fn errors(&self) -> Vec<ManifestError> {
        let mut out: Vec<ManifestError> = self
            .files
            .values()
            .flat_map(|f| f.errors.iter().cloned())
            .collect();
        for key in &self.duplicates {
            let Some(owners) = self.owners.get(key) else {
                continue;
            };
            let mut files = owners.iter();
            let Some(first) = files.next() else { continue };
            for other in files {
                out.push(ManifestError {
                    file: other.display().to_string(),
                    document: 0,
                    item: None,
                    line: None,
                    object: Some(ObjectDesc::of(key)),
                    field: FieldError::new(
                        "metadata.name",
                        format!(
                            "Duplicate value: already defined in {} (that definition is used)",
                            first.display()
                        ),
                    ),
                });
            }
        }
        for conflict in self.node_ports.conflicts() {
            let key = ObjectKey {
                kind: Kind::Service,
                name: conflict.service,
            };
            let file = self
                .owners
                .get(&key)
                .and_then(|owners| owners.first())
                .map(|f| f.display().to_string())
                .unwrap_or_default();
            out.push(ManifestError {
                file,
                document: 0,
                item: None,
                line: None,
                object: Some(ObjectDesc::of(&key)),
                field: conflict.field,
            });
        }
        out
    }
}

fn walk(dir: &Path, recursive: bool, out: &mut BTreeSet<PathBuf>) -> Result<(), SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if recursive && !path.components().next_back().is_some_and(is_hidden) {
                walk(&path, recursive, out)?;
            }
        } else if is_manifest_name(&path) {
            out.insert(path);
        }
    }
    Ok(())
}
