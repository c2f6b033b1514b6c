//! What changed between two versions of the cluster state. Exact: a key is
//! in a set if and only if the thing it names differs between the versions
//! (property-tested against a full comparison of the two snapshots).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::object::{Kind, NamespacedName, ObjectKey};
use crate::view::ServicePortName;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub from_version: u64,
    pub to_version: u64,
    /// Objects added, updated or deleted.
    pub objects: BTreeSet<ObjectKey>,
    /// Services whose [`crate::ServiceView`] differs (added, removed or changed).
    pub services: BTreeSet<NamespacedName>,
    /// Service ports added, removed, or changed in anything but their endpoints.
    pub service_ports: BTreeSet<ServicePortName>,
    /// Service ports whose endpoint list differs (a missing port has none).
    pub endpoints: BTreeSet<ServicePortName>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && self.services.is_empty()
            && self.service_ports.is_empty()
            && self.endpoints.is_empty()
    }

    fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &NamespacedName> {
        self.objects
            .iter()
            .filter(move |k| k.kind == kind)
            .map(|k| &k.name)
    }

    /// Ingresses added, updated or deleted.
    pub fn ingresses(&self) -> impl Iterator<Item = &NamespacedName> {
        self.of_kind(Kind::Ingress)
    }

    /// Nodes added, updated or deleted (names only; nodes are cluster-scoped).
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.of_kind(Kind::Node).map(|n| &*n.name)
    }

    /// Folds a later change set into this one, so that a consumer that
    /// skipped versions still sees every key that may have changed.
    pub fn merge(&mut self, later: ChangeSet) {
        if self.is_empty() && self.from_version == 0 && self.to_version == 0 {
            self.from_version = later.from_version;
        }
        self.to_version = later.to_version;
        self.objects.extend(later.objects);
        self.services.extend(later.services);
        self.service_ports.extend(later.service_ports);
        self.endpoints.extend(later.endpoints);
    }

    /// A one-line summary for logs and `ferry services --watch`.
    pub fn summary(&self) -> String {
        format!(
            "version {} -> {}: {} objects, {} services, {} service ports, {} endpoint sets changed",
            self.from_version,
            self.to_version,
            self.objects.len(),
            self.services.len(),
            self.service_ports.len(),
            self.endpoints.len()
        )
    }
}

/// The JSON shape of a change set.
#[derive(Serialize)]
pub(crate) struct ChangeSetJson<'a> {
    from_version: u64,
    to_version: u64,
    objects: Vec<String>,
    services: Vec<String>,
    service_ports: Vec<String>,
    endpoints: Vec<String>,
    #[serde(skip)]
    _p: std::marker::PhantomData<&'a ()>,
}

impl Serialize for ChangeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ChangeSetJson {
            from_version: self.from_version,
            to_version: self.to_version,
            objects: self.objects.iter().map(ToString::to_string).collect(),
            services: self.services.iter().map(ToString::to_string).collect(),
            service_ports: self.service_ports.iter().map(ToString::to_string).collect(),
            endpoints: self.endpoints.iter().map(ToString::to_string).collect(),
            _p: std::marker::PhantomData,
        }
        .serialize(s)
    }
}
