//! [`ClusterState`]: the versioned set of objects plus the normalized service
//! view derived from them. Snapshots are persistent maps, so keeping an old
//! version costs nothing and an update costs O(change · log n), not O(cluster).
//!
//! Pure.

use std::collections::BTreeSet;
use std::iter::Peekable;
use std::sync::Arc;

use crate::slice::EndpointSlice;
use imbl::OrdMap;

use crate::change::ChangeSet;
use crate::endpoints::{SliceId, slices_of};
use crate::object::{Kind, NamespacedName, Object, ObjectKey};
use crate::view::{self, ServicePortName, ServicePortView, ServiceView};

/// One change from a source.
#[derive(Clone, Debug)]
pub enum Update {
    /// Create or replace the object with this key.
    Apply(Object),
    /// Delete the object (no-op when absent).
    Delete(ObjectKey),
}

/// Everything derived for one Service name: the slices that name it (they
/// may exist before the Service does), and its views. One map entry per
/// service keeps an update to one persistent-map path copy, not three.
#[derive(Clone, Debug, Default)]
struct ServiceEntry {
    slices: Slices,
    view: Option<Arc<ServiceView>>,
    /// Sorted by port name then protocol, the order of [`ServicePortName`].
    ports: Arc<[Arc<ServicePortView>]>,
}

/// The slices naming one Service, sorted by id. A Service has a few, so a
/// vector: an `OrdMap` allocated a whole B-tree node for each Service's
/// one slice (measured at issue 13's target case: 12 MiB of 95).
#[derive(Clone, Debug, Default)]
struct Slices(Vec<(SliceId, Arc<EndpointSlice>)>);

impl Slices {
    fn insert(&mut self, id: SliceId, slice: Arc<EndpointSlice>) {
        match self.0.binary_search_by(|(i, _)| i.cmp(&id)) {
            Ok(i) => self.0[i].1 = slice,
            Err(i) => {
                self.0.insert(i, (id, slice));
                self.0.shrink_to_fit();
            }
        }
    }

    fn remove(&mut self, id: &SliceId) {
        if let Ok(i) = self.0.binary_search_by(|(i, _)| i.cmp(id)) {
            self.0.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn ids(&self) -> impl Iterator<Item = &SliceId> {
        self.0.iter().map(|(id, _)| id)
    }

    fn values(&self) -> impl Iterator<Item = &Arc<EndpointSlice>> {
        self.0.iter().map(|(_, s)| s)
    }
}

impl ServiceEntry {
    fn is_empty(&self) -> bool {
        self.slices.is_empty() && self.view.is_none() && self.ports.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    version: u64,
    objects: OrdMap<ObjectKey, Object>,
    services: OrdMap<NamespacedName, Arc<ServiceEntry>>,
    /// How many entries of `services` have a view (a Service object).
    service_views: usize,
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    /// A state holding exactly `objects` (later ones replace earlier ones with the same key).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        Self::new().apply(objects.into_iter().map(Update::Apply)).0
    }

    /// Increases by one with every [`ClusterState::apply`] that changed something.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key)
    }

    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Keys of the objects of one kind, in namespace/name order (sharing
    /// the state's names, where [`Object::key`] allocates new ones).
    pub fn keys_of(&self, kind: Kind) -> impl Iterator<Item = &ObjectKey> {
        self.objects
            .range(ObjectKey::new(kind, "", "")..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(k, _)| k)
    }

    /// Objects of one kind, in namespace/name order.
    pub fn objects_of(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects
            .range(ObjectKey::new(kind, "", "")..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, v)| v)
    }

    /// Every Service's view, in namespace/name order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceView>> {
        self.services.values().filter_map(|e| e.view.as_ref())
    }

    /// How many Services there are, in O(1) (`services().count()` walks them).
    pub fn service_count(&self) -> usize {
        self.service_views
    }

    pub fn service(&self, name: &NamespacedName) -> Option<&Arc<ServiceView>> {
        self.services.get(name)?.view.as_ref()
    }

    /// Every service port, in namespace/name/port/protocol order.
    pub fn service_ports(&self) -> impl Iterator<Item = &Arc<ServicePortView>> {
        self.services.values().flat_map(|e| e.ports.iter())
    }

    pub fn service_port(&self, name: &ServicePortName) -> Option<&Arc<ServicePortView>> {
        self.services
            .get(&name.service())?
            .ports
            .iter()
            .find(|p| p.name == *name)
    }

    /// The ports of one service.
    pub fn ports_of(
        &self,
        service: &NamespacedName,
    ) -> impl Iterator<Item = &Arc<ServicePortView>> {
        self.services
            .get(service)
            .into_iter()
            .flat_map(|e| e.ports.iter())
    }

    /// Applies updates and returns the new state with exactly what changed.
    /// `self` is untouched and stays a valid snapshot.
    pub fn apply(&self, updates: impl IntoIterator<Item = Update>) -> (ClusterState, ChangeSet) {
        let mut next = self.clone();
        let mut touched = BTreeSet::new();
        let mut dirty = BTreeSet::new();
        let mut updates: Vec<(ObjectKey, Option<Object>)> = updates
            .into_iter()
            .map(|update| match update {
                Update::Apply(o) => (o.key(), Some(o)),
                Update::Delete(k) => (k, None),
            })
            .collect();
        // A bulk load comes sorted (the manifests source's first state):
        // inserted in that order, the object map's nodes stay half full.
        if updates.len() >= crate::packing::PACKED_BATCH
            && updates.windows(2).all(|w| w[0].0 < w[1].0)
        {
            updates = crate::packing::insertion_order(updates);
        }
        for (key, new) in updates {
            let old = next.objects.get(&key).cloned();
            match (&old, &new) {
                (None, None) => continue,
                (Some(a), Some(b)) if a.same_as(b) => continue,
                _ => {}
            }
            touched.insert(key.clone());
            if key.kind == Kind::Service {
                dirty.insert(key.name.clone());
            }
            if let Some(old) = &old {
                next.detach(&key, old, &mut dirty);
            }
            match new {
                Some(new) => {
                    next.attach(&new, &mut dirty);
                    next.objects.insert(key, new);
                }
                None => {
                    next.objects.remove(&key);
                }
            }
        }
        // An object changed and changed back within one batch is no change.
        let objects = touched
            .into_iter()
            .filter(|k| match (self.objects.get(k), next.objects.get(k)) {
                (Some(a), Some(b)) => !a.same_as(b),
                (a, b) => a.is_some() != b.is_some(),
            })
            .collect();
        let mut changes = ChangeSet {
            from_version: self.version,
            objects,
            ..Default::default()
        };
        for service in &dirty {
            next.rebuild(service, &mut changes);
        }
        if !changes.is_empty() {
            next.version += 1;
        }
        changes.to_version = next.version;
        (next, changes)
    }

    fn entry_mut(&mut self, service: &NamespacedName) -> &mut ServiceEntry {
        Arc::make_mut(self.services.entry(service.clone()).or_default())
    }

    fn detach(&mut self, key: &ObjectKey, old: &Object, dirty: &mut BTreeSet<NamespacedName>) {
        let Some((service, slices)) = slices_of(old) else {
            return;
        };
        dirty.insert(service.clone());
        let entry = self.entry_mut(&service);
        for (id, _) in slices {
            entry.slices.remove(&id);
        }
        // Mirrored Endpoints may have had more slices than the set just computed.
        if key.kind == Kind::Endpoints {
            let stale: Vec<SliceId> = entry
                .slices
                .ids()
                .filter(|id| id.mirrored.is_some() && id.name == key.name.name)
                .cloned()
                .collect();
            for id in stale {
                entry.slices.remove(&id);
            }
        }
    }

    fn attach(&mut self, new: &Object, dirty: &mut BTreeSet<NamespacedName>) {
        let Some((service, slices)) = slices_of(new) else {
            return;
        };
        dirty.insert(service.clone());
        let entry = self.entry_mut(&service);
        for (id, slice) in slices {
            entry.slices.insert(id, slice);
        }
    }

    /// Recomputes the views of one service and records what differs.
    fn rebuild(&mut self, service: &NamespacedName, changes: &mut ChangeSet) {
        let key = ObjectKey {
            kind: Kind::Service,
            name: service.clone(),
        };
        let svc = match self.objects.get(&key) {
            Some(Object::Service(svc)) => Some(svc.clone()),
            _ => None,
        };
        let Some(mut entry) = self.services.get(service).cloned() else {
            if svc.is_none() {
                return;
            }
            self.services.insert(service.clone(), Arc::default());
            return self.rebuild(service, changes);
        };
        let (new_view, mut new_ports) = match &svc {
            Some(svc) => {
                let slices: Vec<&Arc<EndpointSlice>> = entry.slices.values().collect();
                let (v, p) = view::build(svc, &slices);
                (Some(v), p)
            }
            None => (None, Vec::new()),
        };
        new_ports.sort_by(|a, b| a.name.cmp(&b.name));

        let view_changed = entry.view.as_deref() != new_view.as_ref();
        if view_changed {
            changes.services.insert(service.clone());
        }
        let old_ports = entry.ports.clone();
        let mut ports: Vec<Arc<ServicePortView>> = Vec::with_capacity(new_ports.len());
        for old in old_ports.iter() {
            if !new_ports.iter().any(|n| n.name == old.name) {
                record_port(changes, Some(old), None);
            }
        }
        let mut ports_changed = old_ports.len() != new_ports.len();
        for new in new_ports {
            match old_ports.iter().find(|o| o.name == new.name) {
                Some(old) if **old == new => ports.push(old.clone()),
                old => {
                    record_port(changes, old.map(AsRef::as_ref), Some(&new));
                    ports.push(Arc::new(new));
                    ports_changed = true;
                }
            }
        }
        if !view_changed && !ports_changed {
            if entry.is_empty() {
                // Only slices named this service, and they are gone.
                self.services.remove(service);
            }
            return;
        }
        let e = Arc::make_mut(&mut entry);
        if view_changed {
            match (e.view.is_some(), new_view.is_some()) {
                (false, true) => self.service_views += 1,
                (true, false) => self.service_views -= 1,
                _ => {}
            }
            e.view = new_view.map(Arc::new);
        }
        if ports_changed {
            e.ports = ports.into();
        }
        if entry.is_empty() {
            self.services.remove(service);
        } else {
            self.services.insert(service.clone(), entry);
        }
    }

    /// Everything that differs between two snapshots, found by comparing them
    /// in full. [`ClusterState::apply`] finds the same set in O(change); this
    /// is for full resyncs and for checking that claim.
    pub fn diff(&self, later: &ClusterState) -> ChangeSet {
        let mut changes = ChangeSet {
            from_version: self.version,
            to_version: later.version,
            ..Default::default()
        };
        merge_join(&self.objects, &later.objects, |k, a, b| {
            let same = matches!((a, b), (Some(a), Some(b)) if a.same_as(b));
            if !same {
                changes.objects.insert(k.clone());
            }
        });
        merge_join(&self.services, &later.services, |k, a, b| {
            let view = |e: Option<&Arc<ServiceEntry>>| e.and_then(|e| e.view.clone());
            if view(a).as_deref() != view(b).as_deref() {
                changes.services.insert(k.clone());
            }
            let none: Arc<[Arc<ServicePortView>]> = Arc::new([]);
            let pa = a.map_or(none.clone(), |e| e.ports.clone());
            let pb = b.map_or(none, |e| e.ports.clone());
            for p in pa.iter() {
                record_port(
                    &mut changes,
                    Some(p),
                    pb.iter().find(|q| q.name == p.name).map(AsRef::as_ref),
                );
            }
            for q in pb.iter().filter(|q| !pa.iter().any(|p| p.name == q.name)) {
                record_port(&mut changes, None, Some(q));
            }
        });
        changes
    }
}

fn record_port(
    changes: &mut ChangeSet,
    old: Option<&ServicePortView>,
    new: Option<&ServicePortView>,
) {
    let name = match (old, new) {
        (_, Some(n)) => &n.name,
        (Some(o), None) => &o.name,
        (None, None) => return,
    };
    let config_differs = match (old, new) {
        (Some(o), Some(n)) => !o.same_config(n),
        _ => true,
    };
    let no_endpoints: &[view::Endpoint] = &[];
    let old_eps = old.map_or(no_endpoints, |o| &o.endpoints);
    let new_eps = new.map_or(no_endpoints, |n| &n.endpoints);
    if config_differs {
        changes.service_ports.insert(name.clone());
    }
    if old_eps != new_eps {
        changes.endpoints.insert(name.clone());
    }
}

/// Walks two sorted maps together, calling `f` for every key in either.
fn merge_join<K: Ord + Clone, V: Clone>(
    a: &OrdMap<K, V>,
    b: &OrdMap<K, V>,
    mut f: impl FnMut(&K, Option<&V>, Option<&V>),
) {
    let mut ia: Peekable<_> = a.iter().peekable();
    let mut ib: Peekable<_> = b.iter().peekable();
    loop {
        match (ia.peek(), ib.peek()) {
            (None, None) => return,
            (Some((ka, va)), None) => {
                f(ka, Some(va), None);
                ia.next();
            }
            (None, Some((kb, vb))) => {
                f(kb, None, Some(vb));
                ib.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    f(ka, Some(va), None);
                    ia.next();
                }
                std::cmp::Ordering::Greater => {
                    f(kb, None, Some(vb));
                    ib.next();
                }
                std::cmp::Ordering::Equal => {
                    f(ka, Some(va), Some(vb));
                    ia.next();
                    ib.next();
                }
            },
        }
    }
}
