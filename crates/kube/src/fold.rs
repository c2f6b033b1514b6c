//! Folds watch events of every kind into one [`ClusterState`], as the
//! manifests source folds files: the same validation (an invalid object is
//! reported, naming namespace/name/field, and its last good version, if
//! any, is kept), the same node port claims, and exact change sets from
//! [`ClusterState::apply`]. A relist (`Init` .. `InitDone`) replaces one
//! kind's objects: those the server no longer lists are deleted.
//!
//! Pure: events in, snapshots out; the watchers and the clock are in
//! `source.rs`.

use std::collections::{BTreeMap, BTreeSet};

use ferry_model::{
    ClusterState, FieldError, Kind, ManifestError, NodePortClaims, Object, ObjectDesc, ObjectKey,
    Update, ValidationOptions, validate_with,
};
use ferry_source::Snapshot;

/// One watcher event, typed as ferry's objects (kube-runtime's
/// `watcher::Event`, minus the generic).
#[derive(Clone, Debug)]
pub enum Change {
    /// A (re)list starts.
    Init,
    /// One object of the list.
    InitApply(Object),
    /// The list is complete: objects not in it are gone.
    InitDone,
    /// Added or modified while watching.
    Apply(Object),
    /// Deleted while watching.
    Delete(Object),
}

pub struct Fold {
    /// The API server's address, named in every error (as a file is named
    /// by the manifests source).
    origin: String,
    options: ValidationOptions,
    kinds: BTreeSet<Kind>,
    /// Kinds whose first list is complete.
    listed: BTreeSet<Kind>,
    /// Per kind, the keys seen so far in a relist in progress.
    relisting: BTreeMap<Kind, BTreeSet<ObjectKey>>,
    /// Updates since the last snapshot, the last one per key.
    pending: BTreeMap<ObjectKey, Option<Object>>,
    /// Current validation errors per object.
    invalid: BTreeMap<ObjectKey, Vec<ManifestError>>,
    node_ports: NodePortClaims,
    state: ClusterState,
    published_errors: Option<Vec<ManifestError>>,
    /// Per kind, the resourceVersion up to which every change was pushed.
    seen: BTreeMap<Kind, u64>,
    /// A list's version, held until the list is complete.
    listing_at: BTreeMap<Kind, u64>,
}

impl Fold {
    /// A fold over `kinds`: [`Fold::ready`] once each has been listed.
    pub fn new(origin: String, options: ValidationOptions, kinds: &[Kind]) -> Self {
        Fold {
            origin,
            options,
            kinds: kinds.iter().copied().collect(),
            listed: BTreeSet::new(),
            relisting: BTreeMap::new(),
            pending: BTreeMap::new(),
            invalid: BTreeMap::new(),
            node_ports: NodePortClaims::new(),
            state: ClusterState::new(),
            published_errors: None,
            seen: BTreeMap::new(),
            listing_at: BTreeMap::new(),
        }
    }

    /// Every change of `kind` up to `resource_version` has been pushed (a
    /// list's version, an event's, a bookmark's).
    /// During a (re)list it counts from the list's end, when the objects
    /// it no longer holds are deleted.
    pub fn progress(&mut self, kind: Kind, resource_version: u64) {
        if self.relisting.contains_key(&kind) {
            self.listing_at.insert(kind, resource_version);
        } else {
            self.seen.insert(kind, resource_version);
        }
    }

    /// The resourceVersion up to which every kind has been pushed: the
    /// state after the next [`Fold::flush`] holds every change the server
    /// made up to it. `None` until every kind has said.
    pub fn resource_version(&self) -> Option<u64> {
        if self.kinds.iter().any(|k| !self.seen.contains_key(k)) {
            return None;
        }
        self.seen.values().min().copied()
    }

    /// The version of the state the last flush made.
    pub fn state_version(&self) -> u64 {
        self.state.version()
    }

    /// True once every kind's first list is complete.
    pub fn ready(&self) -> bool {
        self.listed == self.kinds
    }

    /// Kinds whose first list is not complete yet.
    pub fn waiting_for(&self) -> Vec<Kind> {
        self.kinds.difference(&self.listed).copied().collect()
    }

    /// The object `key` names now, counting updates not yet applied.
    fn current(&self, key: &ObjectKey) -> Option<&Object> {
        match self.pending.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.state.get(key),
        }
    }

    pub fn push(&mut self, kind: Kind, change: Change) {
        match change {
            Change::Init => {
                self.relisting.insert(kind, BTreeSet::new());
            }
            Change::InitApply(object) => {
                let key = object.key();
                self.relisting.entry(kind).or_default().insert(key);
                self.accept(object);
            }
            Change::InitDone => {
                let listed = self.relisting.remove(&kind).unwrap_or_default();
                let mut gone: Vec<ObjectKey> = self
                    .state
                    .objects_of(kind)
                    .map(Object::key)
                    .filter(|k| !listed.contains(k))
                    .collect();
                gone.extend(
                    self.pending
                        .iter()
                        .filter(|(k, o)| k.kind == kind && o.is_some() && !listed.contains(*k))
                        .map(|(k, _)| k.clone()),
                );
                for key in gone {
                    self.remove(key);
                }
                self.invalid
                    .retain(|k, _| k.kind != kind || listed.contains(k));
                self.listed.insert(kind);
                if let Some(rv) = self.listing_at.remove(&kind) {
                    self.seen.insert(kind, rv);
                }
            }
            Change::Apply(object) => self.accept(object),
            Change::Delete(object) => self.remove(object.key()),
        }
    }

    fn remove(&mut self, key: ObjectKey) {
        self.invalid.remove(&key);
        self.pending.insert(key, None);
    }

    /// Validates `object` as the manifests source does: a valid one
    /// replaces the stored one; an invalid one is reported and the last
    /// good version (if any) stays.
    fn accept(&mut self, object: Object) {
        let key = object.key();
        let problems = validate_with(&object, &self.options);
        if problems.is_empty() {
            self.invalid.remove(&key);
            let unchanged = self.current(&key).is_some_and(|o| o.same_as(&object));
            if !unchanged {
                self.pending.insert(key, Some(object));
            }
            return;
        }
        let errors = problems
            .into_iter()
            .map(|field| self.error(&key, field))
            .collect();
        self.invalid.insert(key, errors);
    }

    fn error(&self, key: &ObjectKey, field: FieldError) -> ManifestError {
        ManifestError {
            file: self.origin.clone(),
            document: 0,
            item: None,
            line: None,
            object: Some(ObjectDesc::of(key)),
            field,
        }
    }

    /// Applies what arrived since the last call as one state version.
    /// `None` when neither the state nor the errors changed (the first
    /// call after [`Fold::ready`] always returns a snapshot).
    pub fn flush(&mut self) -> Option<Snapshot> {
        let updates: Vec<Update> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(key, object)| match object {
                Some(o) => Update::Apply(o),
                None => Update::Delete(key),
            })
            .collect();
        let (state, changes) = self.state.apply(updates);
        self.state = state;
        self.node_ports.follow(&self.state, &changes);
        let errors = self.errors();
        let errors_changed = self.published_errors.as_ref() != Some(&errors);
        if changes.is_empty() && !errors_changed {
            return None;
        }
        self.published_errors = Some(errors.clone());
        Some(Snapshot {
            state: self.state.clone(),
            changes,
            errors,
        })
    }

    /// Every current error: invalid objects, then node ports claimed by a
    /// second Service (which an API server would have refused).
    fn errors(&self) -> Vec<ManifestError> {
        let mut out: Vec<ManifestError> = self.invalid.values().flatten().cloned().collect();
        for conflict in self.node_ports.conflicts() {
            let key = ObjectKey {
                kind: Kind::Service,
                name: conflict.service,
            };
            out.push(self.error(&key, conflict.field));
        }
        out
    }
}
