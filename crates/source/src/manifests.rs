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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

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

/// A file's index in [`ManifestSource::files`].
type FileId = u32;

struct FileEntry {
    path: PathBuf,
    hash: u64,
    /// The file's objects, sorted by key and compared in place ([`parts`]):
    /// no key is kept per object (at issue 13's target case a map by key
    /// here, the keys' own strings and a map of owners by key cost 60 MiB
    /// by heaptrack, for 140,000 objects).
    objects: Vec<Object>,
    errors: Vec<ManifestError>,
    skipped: Vec<ObjectDesc>,
}

impl FileEntry {
    fn new(path: &Path) -> Self {
        FileEntry {
            path: path.to_path_buf(),
            hash: 0,
            objects: Vec::new(),
            errors: Vec::new(),
            skipped: Vec::new(),
        }
    }

    fn find(&self, key: Parts<'_>) -> Option<&Object> {
        Some(&self.objects[position(&self.objects, key).ok()?])
    }
}

/// Where `key` is (or would go) in objects sorted by key.
fn position(objects: &[Object], key: Parts<'_>) -> Result<usize, usize> {
    objects.binary_search_by(|o| parts(o).cmp(&key))
}

/// An object's key, borrowed from it: ordered as [`ObjectKey`].
type Parts<'a> = (Kind, &'a str, &'a str);

fn parts(o: &Object) -> Parts<'_> {
    let meta = o.metadata();
    (
        o.kind(),
        meta.namespace().unwrap_or_default(),
        meta.name().unwrap_or_default(),
    )
}

fn key_parts(key: &ObjectKey) -> Parts<'_> {
    (key.kind, &key.name.namespace, &key.name.name)
}

fn to_key((kind, namespace, name): Parts<'_>) -> ObjectKey {
    ObjectKey::new(kind, namespace, name)
}

fn hash_parts(key: Parts<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Sorts objects by key, keeping the last definition of a key (as a file
/// read top to bottom would).
fn sort_last_wins(objects: &mut Vec<Object>) {
    objects.reverse();
    objects.sort_by(|a, b| parts(a).cmp(&parts(b)));
    objects.dedup_by(|later, kept| parts(later) == parts(kept));
}

/// The files that may define the keys with one hash, in path order, each
/// with how many of its keys have that hash. Almost always one file with
/// one key: a key's definers are the candidates that hold it ([`ManifestSource::definers`]),
/// so two keys sharing a hash cost a lookup, never a wrong answer.
type Candidates = Vec<(FileId, u32)>;

/// Candidates by hash: the first in path order in one map (16 B an entry,
/// one per object), any others in a second one (rare: a key defined
/// twice, or two keys with one hash).
#[derive(Default)]
struct Owners {
    first: HashMap<u64, (FileId, u32)>,
    more: HashMap<u64, Candidates>,
}

impl Owners {
    fn get(&self, hash: u64) -> impl Iterator<Item = &(FileId, u32)> {
        let more = self.more.get(&hash).into_iter().flatten();
        self.first.get(&hash).into_iter().chain(more)
    }

    fn take(&mut self, hash: u64) -> Candidates {
        let mut all: Candidates = self.first.remove(&hash).into_iter().collect();
        all.extend(self.more.remove(&hash).into_iter().flatten());
        all
    }

    fn put(&mut self, hash: u64, mut all: Candidates) {
        if all.is_empty() {
            return;
        }
        let first = all.remove(0);
        self.first.insert(hash, first);
        if !all.is_empty() {
            self.more.insert(hash, all);
        }
    }
}

pub struct ManifestSource {
    roots: Vec<PathBuf>,
    recursive: bool,
    /// Files by [`FileId`] (a removed file leaves a hole, reused).
    files: Vec<Option<FileEntry>>,
    free: Vec<FileId>,
    ids: BTreeMap<PathBuf, FileId>,
    /// Files defining keys, by the key's hash: the first definer in path
    /// order wins.
    owners: Owners,
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
            files: Vec::new(),
            free: Vec::new(),
            ids: BTreeMap::new(),
            owners: Owners::default(),
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
        changed.extend(self.ids.keys().filter(|p| !now.contains(*p)).cloned());
        Ok(self.refresh(&changed))
    }

    /// Reloads the given files (removing those that no longer exist) and
    /// returns the new snapshot. Unchanged content costs one read and a hash.
    pub fn refresh(&mut self, paths: &[PathBuf]) -> Snapshot {
        // Every object whose key some file gained, lost or defined again:
        // its winner is looked up again once all files are read.
        let mut affected: Vec<Object> = Vec::new();
        for path in paths {
            if path.is_file() {
                self.reload(path, &mut affected);
            } else if let Some(id) = self.ids.remove(path) {
                let old = self.files[id as usize].take().map(|f| f.objects);
                self.free.push(id);
                for object in old.unwrap_or_default() {
                    self.disown(parts(&object), id);
                    affected.push(object);
                }
            }
        }
        affected.sort_by(|a, b| parts(a).cmp(&parts(b)));
        affected.dedup_by(|a, b| parts(a) == parts(b));
        let updates: Vec<Update> = affected
            .iter()
            .map(|object| match self.winner(parts(object)) {
                Some(winner) => Update::Apply(winner.clone()),
                None => Update::Delete(object.key()),
            })
            .collect();
        drop(affected);
        let (state, changes) = self.state.apply(updates);
        self.state = state;
        self.node_ports.follow(&self.state, &changes);
        Snapshot {
            state: self.state.clone(),
            changes,
            errors: self.errors(),
        }
    }

    fn file(&self, id: FileId) -> Option<&FileEntry> {
        self.files.get(id as usize)?.as_ref()
    }

    fn file_id(&mut self, path: &Path) -> FileId {
        if let Some(id) = self.ids.get(path) {
            return *id;
        }
        let entry = Some(FileEntry::new(path));
        let id = match self.free.pop() {
            Some(id) => {
                self.files[id as usize] = entry;
                id
            }
            None => {
                self.files.push(entry);
                (self.files.len() - 1) as FileId
            }
        };
        self.ids.insert(path.to_path_buf(), id);
        id
    }

    fn reload(&mut self, path: &Path, affected: &mut Vec<Object>) {
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
        let known = self.ids.get(path).and_then(|id| self.file(*id));
        if known.is_some_and(|f| f.hash == hash) {
            return;
        }
        let decoded = decode_with(&label, &text, &self.options);
        drop(text);
        let id = self.file_id(path);
        let Some(entry) = self.files[id as usize].as_mut() else {
            return;
        };
        entry.hash = hash;
        entry.errors = decoded.errors;
        entry.skipped = decoded.skipped;
        let mut objects: Vec<Object> = decoded.objects.into_iter().map(|d| d.object).collect();
        sort_last_wins(&mut objects);
        let mut kept: Vec<Object> = Vec::new();
        let is_new = |objects: &[Object], key: Parts<'_>| position(objects, key).is_err();
        if decoded.syntax_error {
            // A document that does not parse could be any of the file's
            // objects: keep every last good one until the file parses again,
            // and take the documents that did parse.
            kept.extend(
                (entry.objects.iter())
                    .filter(|old| is_new(&objects, parts(old)))
                    .cloned(),
            );
        }
        for desc in decoded.rejected {
            let old = entry.objects.iter().find(|o| {
                let (kind, namespace, name) = parts(o);
                kind.as_str() == desc.kind && namespace == desc.namespace && name == desc.name
            });
            if let Some(old) = old
                && is_new(&objects, parts(old))
                && !kept.iter().any(|k| parts(k) == parts(old))
            {
                kept.push(old.clone());
            }
        }
        if !kept.is_empty() {
            objects.extend(kept);
            objects.sort_by(|a, b| parts(a).cmp(&parts(b)));
        }
        // The vector was the decoded objects' (40 B each, 16 kept): give
        // back the rest (3 MiB at 140,000 objects).
        objects.shrink_to_fit();
        let old = std::mem::replace(&mut entry.objects, objects);
        // Owners change for the keys only one side holds.
        let mut gained = Vec::new();
        let mut lost = Vec::new();
        {
            let new = &entry.objects;
            let (mut i, mut j) = (0, 0);
            while i < old.len() || j < new.len() {
                let order = match (old.get(i), new.get(j)) {
                    (Some(a), Some(b)) => parts(a).cmp(&parts(b)),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                match order {
                    std::cmp::Ordering::Less => {
                        lost.push(old[i].clone());
                        i += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        gained.push(new[j].clone());
                        j += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        affected.push(new[j].clone());
                        i += 1;
                        j += 1;
                    }
                }
            }
        }
        for object in &lost {
            self.disown(parts(object), id);
        }
        for object in &gained {
            self.own(parts(object), id);
        }
        affected.extend(lost);
        affected.extend(gained);
    }

    fn file_failed(&mut self, path: &Path, label: &str, message: String) {
        let id = self.file_id(path);
        let Some(entry) = self.files[id as usize].as_mut() else {
            return;
        };
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

    /// The files defining `key`, in path order, with their object.
    fn definers<'a, 'k>(
        &'a self,
        key: Parts<'k>,
    ) -> impl Iterator<Item = (&'a FileEntry, &'a Object)> {
        self.owners.get(hash_parts(key)).filter_map(move |(id, _)| {
            let file = self.file(*id)?;
            Some((file, file.find(key)?))
        })
    }

    fn own(&mut self, key: Parts<'_>, id: FileId) {
        let files = &self.files;
        let path_of = |id: FileId| {
            files
                .get(id as usize)
                .and_then(|f| f.as_ref())
                .map(|f| &f.path)
        };
        let hash = hash_parts(key);
        if let Some((f, n)) = self.owners.first.get_mut(&hash)
            && *f == id
            && !self.owners.more.contains_key(&hash)
        {
            // The common case: another key of the same file with this hash.
            *n += 1;
        } else {
            let mut candidates = self.owners.take(hash);
            Self::add_candidate(&mut candidates, id, path_of);
            self.owners.put(hash, candidates);
        }
        if self.definers(key).nth(1).is_some() {
            self.duplicates.insert(to_key(key));
        }
    }

    /// Counts one more key of file `id` among `candidates` (kept in path order).
    fn add_candidate<'p>(
        candidates: &mut Candidates,
        id: FileId,
        path_of: impl Fn(FileId) -> Option<&'p PathBuf>,
    ) {
        match candidates.iter_mut().find(|(f, _)| *f == id) {
            Some((_, n)) => *n += 1,
            None => {
                let at = candidates
                    .iter()
                    .position(|(f, _)| path_of(*f) > path_of(id))
                    .unwrap_or(candidates.len());
                candidates.insert(at, (id, 1));
            }
        }
    }

    fn disown(&mut self, key: Parts<'_>, id: FileId) {
        let hash = hash_parts(key);
        let mut candidates = self.owners.take(hash);
        if let Some(i) = candidates.iter().position(|(f, _)| *f == id) {
            candidates[i].1 -= 1;
            if candidates[i].1 == 0 {
                candidates.remove(i);
            }
        }
        self.owners.put(hash, candidates);
        if !self.duplicates.is_empty() && self.definers(key).nth(1).is_none() {
            self.duplicates.remove(&to_key(key));
        }
    }

    fn winner(&self, key: Parts<'_>) -> Option<&Object> {
        self.definers(key).next().map(|(_, object)| object)
    }

    /// Files in path order.
    fn files_in_order(&self) -> impl Iterator<Item = &FileEntry> {
        self.ids.values().filter_map(|id| self.file(*id))
    }

    /// Objects of kinds the data plane does not read (Deployments, ...).
    pub fn skipped(&self) -> Vec<ObjectDesc> {
        self.files_in_order()
            .flat_map(|f| f.skipped.iter().cloned())
            .collect()
    }

    /// Every current error: per-file errors, objects defined in more than
    /// one file, and node ports claimed by a second Service.
    pub fn errors(&self) -> Vec<ManifestError> {
        let mut out: Vec<ManifestError> = self
            .files_in_order()
            .flat_map(|f| f.errors.iter().cloned())
            .collect();
        for key in &self.duplicates {
            let mut files = self.definers(key_parts(key)).map(|(f, _)| &f.path);
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
                .definers(key_parts(&key))
                .next()
                .map(|(f, _)| f.path.display().to_string())
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
