//! [`ClusterState`]: the versioned set of objects plus the normalized service
//! view derived from them. Snapshots are persistent maps, so keeping an old
//! version costs nothing and an update costs O(change · log n), not O(cluster).
//!
//! Pure.

use std::collections::BTreeSet;
use std::iter::Peekable;
use std::sync::Arc;

use imbl::OrdMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::change::ChangeSet;
use crate::endpoints::{SliceId, slices_of};
use crate::object::{Kind, NamespacedName, Object, ObjectKey};
use crate::view::{self, Protocol, ServicePortName, ServicePortView, ServiceView};

/// One change from a source.
#[derive(Clone, Debug)]
pub enum Update {
    /// Create or replace the object with this key.
    Apply(Object),
    /// Delete the object (no-op when absent).
    Delete(ObjectKey),
}

#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    version: u64,
    objects: OrdMap<ObjectKey, Object>,
    /// EndpointSlices (own and mirrored from Endpoints) grouped by Service.
    slices: OrdMap<NamespacedName, OrdMap<SliceId, Arc<EndpointSlice>>>,
    services: OrdMap<NamespacedName, Arc<ServiceView>>,
    ports: OrdMap<ServicePortName, Arc<ServicePortView>>,
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

    /// Objects of one kind, in namespace/name order.
    pub fn objects_of(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects
            .range(ObjectKey::new(kind, "", "")..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, v)| v)
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceView>> {
        self.services.values()
    }

    pub fn service(&self, name: &NamespacedName) -> Option<&Arc<ServiceView>> {
        self.services.get(name)
    }

    /// Every service port, in namespace/name/port/protocol order.
    pub fn service_ports(&self) -> impl Iterator<Item = &Arc<ServicePortView>> {
        self.ports.values()
    }

    pub fn service_port(&self, name: &ServicePortName) -> Option<&Arc<ServicePortView>> {
        self.ports.get(name)
    }

    /// The ports of one service.
    pub fn ports_of<'a>(
        &'a self,
        service: &'a NamespacedName,
    ) -> impl Iterator<Item = &'a Arc<ServicePortView>> {
        let start = ServicePortName {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            port: String::new(),
            protocol: Protocol::Tcp,
        };
        self.ports
            .range(start..)
            .take_while(move |(k, _)| k.namespace == service.namespace && k.name == service.name)
            .map(|(_, v)| v)
    }

    /// Applies updates and returns the new state with exactly what changed.
    /// `self` is untouched and stays a valid snapshot.
    pub fn apply(&self, updates: impl IntoIterator<Item = Update>) -> (ClusterState, ChangeSet) {
        let mut next = self.clone();
        let mut touched = BTreeSet::new();
        let mut dirty = BTreeSet::new();
        for update in updates {
            let (key, new) = match update {
                Update::Apply(o) => (o.key(), Some(o)),
                Update::Delete(k) => (k, None),
            };
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
        let mut changes = ChangeSet::default();
        // An object changed and changed back within one batch is no change.
        changes.objects = touched
            .into_iter()
            .filter(|k| match (self.objects.get(k), next.objects.get(k)) {
                (Some(a), Some(b)) => !a.same_as(b),
                (a, b) => a.is_some() != b.is_some(),
            })
            .collect();
        for service in &dirty {
            next.rebuild(service, &mut changes);
        }
        changes.from_version = self.version;
        if !changes.is_empty() {
            next.version += 1;
        }
        changes.to_version = next.version;
        (next, changes)
    }

    fn detach(&mut self, key: &ObjectKey, old: &Object, dirty: &mut BTreeSet<NamespacedName>) {
        let Some((service, slices)) = slices_of(old) else {
            return;
        };
        dirty.insert(service.clone());
        if let Some(group) = self.slices.get_mut(&service) {
            for (id, _) in slices {
                group.remove(&id);
            }
            // Mirrored Endpoints may have had more slices than the set just computed.
            if key.kind == Kind::Endpoints {
                let stale: Vec<SliceId> = group
                    .keys()
                    .filter(|id| id.mirrored.is_some() && id.name == key.name.name)
                    .cloned()
                    .collect();
                for id in stale {
                    group.remove(&id);
                }
            }
            if group.is_empty() {
                self.slices.remove(&service);
            }
        }
    }

    fn attach(&mut self, new: &Object, dirty: &mut BTreeSet<NamespacedName>) {
        let Some((service, slices)) = slices_of(new) else {
            return;
        };
        dirty.insert(service.clone());
        let group = self.slices.entry(service).or_default();
        for (id, slice) in slices {
            group.insert(id, slice);
        }
    }

    /// Recomputes the views of one service and records what differs.
    fn rebuild(&mut self, service: &NamespacedName, changes: &mut ChangeSet) {
        let key = ObjectKey {
            kind: Kind::Service,
            name: service.clone(),
        };
        let built = match self.objects.get(&key) {
            Some(Object::Service(svc)) => {
                let slices: Vec<&EndpointSlice> = self
                    .slices
                    .get(service)
                    .map(|g| g.values().map(AsRef::as_ref).collect())
                    .unwrap_or_default();
                Some(view::build(svc, &slices))
            }
            _ => None,
        };
        let old_ports: Vec<Arc<ServicePortView>> = self.ports_of(service).cloned().collect();
        let (new_view, new_ports) = match built {
            Some((v, p)) => (Some(v), p),
            None => (None, Vec::new()),
        };

        if self.services.get(service).map(AsRef::as_ref) != new_view.as_ref() {
            changes.services.insert(service.clone());
            match new_view {
                Some(v) => {
                    self.services.insert(service.clone(), Arc::new(v));
                }
                None => {
                    self.services.remove(service);
                }
            }
        }

        for old in &old_ports {
            if !new_ports.iter().any(|n| n.name == old.name) {
                record_port(changes, Some(old), None);
                self.ports.remove(&old.name);
            }
        }
        for new in new_ports {
            let old = old_ports.iter().find(|o| o.name == new.name);
            if old.is_some_and(|o| **o == new) {
                continue;
            }
            record_port(changes, old.map(AsRef::as_ref), Some(&new));
            self.ports.insert(new.name.clone(), Arc::new(new));
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
            if a.map(AsRef::as_ref) != b.map(AsRef::as_ref) {
                changes.services.insert(k.clone());
            }
        });
        merge_join(&self.ports, &later.ports, |_, a, b| {
            record_port(&mut changes, a.map(AsRef::as_ref), b.map(AsRef::as_ref));
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
