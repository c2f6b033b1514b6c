//! The Kubernetes objects the data plane reads, and how they are named.

use std::fmt;
use std::sync::Arc;

use crate::meta::Meta;
use crate::pod::Pod;
use crate::service::Service;
use crate::slice::EndpointSlice;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Node, Secret};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// Declares the kinds ferry loads, once: the `Kind` and `Object` enums and
/// everything that dispatches on them are generated from this table.
macro_rules! kinds {
    ($( $kind:ident => $ty:ty, $api:literal, namespaced: $ns:literal; )*) => {
        /// The kinds ferry loads. Anything else in a manifest is skipped (and counted).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($kind,)*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$kind => stringify!($kind),)*
                }
            }

            /// The `apiVersion` this kind is served at.
            pub fn api_version(self) -> &'static str {
                match self {
                    $(Kind::$kind => $api,)*
                }
            }

            pub fn namespaced(self) -> bool {
                match self {
                    $(Kind::$kind => $ns,)*
                }
            }
        }

        /// One loaded object. Cheap to clone: the Kubernetes object is shared.
        /// Pods, Services and EndpointSlices are ferry's slim types ([`Pod`],
        /// [`Service`], [`EndpointSlice`]); every other kind is its k8s-openapi type.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Object {
            $($kind(Arc<$ty>),)*
        }

        impl Object {
            pub fn kind(&self) -> Kind {
                match self {
                    $(Object::$kind(_) => Kind::$kind,)*
                }
            }

            /// The metadata every kind has (the slim kinds keep a slim one).
            pub fn metadata(&self) -> &dyn Meta {
                match self {
                    $(Object::$kind(o) => &o.metadata,)*
                }
            }

            /// Mutable metadata (copy-on-write of the shared object).
            pub fn metadata_mut(&mut self) -> &mut dyn Meta {
                match self {
                    $(Object::$kind(o) => &mut Arc::make_mut(o).metadata,)*
                }
            }

            /// True when both hold the very same shared object (a cheap
            /// equality short-cut before the deep comparison).
            pub fn same_allocation(&self, other: &Object) -> bool {
                match (self, other) {
                    $((Object::$kind(a), Object::$kind(b)) => Arc::ptr_eq(a, b),)*
                    _ => false,
                }
            }

            /// The object as JSON, with its apiVersion and kind.
            pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
                match self {
                    $(Object::$kind(o) => serde_json::to_vec(&**o),)*
                }
            }

            /// Types a JSON value as `kind`; the error is (field path, message).
            pub(crate) fn from_value(kind: Kind, value: serde_json::Value) -> Result<Object, (String, String)> {
                match kind {
                    $(Kind::$kind => Ok(Object::$kind(typed(value)?)),)*
                }
            }
        }
    };
}

kinds! {
    Namespace => Namespace, "v1", namespaced: false;
    Node => Node, "v1", namespaced: false;
    Service => Service, "v1", namespaced: true;
    EndpointSlice => EndpointSlice, "discovery.k8s.io/v1", namespaced: true;
    Endpoints => Endpoints, "v1", namespaced: true;
    Pod => Pod, "v1", namespaced: true;
    Deployment => Deployment, "apps/v1", namespaced: true;
    ReplicaSet => ReplicaSet, "apps/v1", namespaced: true;
    Ingress => Ingress, "networking.k8s.io/v1", namespaced: true;
    IngressClass => IngressClass, "networking.k8s.io/v1", namespaced: false;
    Secret => Secret, "v1", namespaced: true;
    ConfigMap => ConfigMap, "v1", namespaced: true;
}

/// Serializes one of the slim kinds as its manifest: apiVersion and kind
/// first, then the fields in order (an absent optional one left out), as
/// k8s-openapi's types are.
macro_rules! manifest_serialize {
    ($ty:ty, $api:literal, $kind:literal, { $($field:ident => $name:literal),* $(,)? }) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("apiVersion", $api)?;
                m.serialize_entry("kind", $kind)?;
                $(if !crate::object::Absent::absent(&self.$field) {
                    m.serialize_entry($name, &self.$field)?;
                })*
                m.end()
            }
        }
    };
}
pub(crate) use manifest_serialize;

/// Whether a manifest field is left out when written.
pub(crate) trait Absent {
    fn absent(&self) -> bool;
}

impl<T> Absent for Option<T> {
    fn absent(&self) -> bool {
        self.is_none()
    }
}

impl Absent for String {
    fn absent(&self) -> bool {
        false
    }
}

impl Absent for crate::meta::ObjectMeta {
    fn absent(&self) -> bool {
        false
    }
}

impl Absent for crate::service::ServiceMeta {
    fn absent(&self) -> bool {
        false
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<Arc<T>, (String, String)> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(Arc::new)
        .map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            (path, e.into_inner().to_string())
        })
}

impl Kind {
    /// Finds the kind for an `apiVersion`/`kind` pair; `None` for kinds ferry does not use.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let kind = Kind::ALL.iter().copied().find(|k| k.as_str() == kind)?;
        // Accept the served version; older group versions of these kinds
        // (extensions/v1beta1 Ingress, discovery.k8s.io/v1beta1) are gone from
        // current API servers and are rejected as unknown.
        (kind.api_version() == api_version).then_some(kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A shared, immutable name. Keys of the persistent maps in
/// [`crate::ClusterState`] are copied along every updated path, so they
/// must be cheap to clone: a reference count, not a string allocation.
pub type Name = Arc<str>;

/// `namespace/name` of a namespaced object (namespace empty for cluster-scoped ones).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct NamespacedName {
    pub namespace: Name,
    pub name: Name,
}

impl NamespacedName {
    pub fn new(namespace: impl Into<Name>, name: impl Into<Name>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Identity of one object: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub name: NamespacedName,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<Name>, name: impl Into<Name>) -> Self {
        Self {
            kind,
            name: NamespacedName::new(namespace, name),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

impl Object {
    /// The object's key. Namespaced objects without a namespace are placed in
    /// `default` when decoded, so the namespace here is always filled in.
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey::new(self.kind(), meta.shared_namespace(), meta.shared_name())
    }

    /// Deep equality with the pointer short-cut first.
    pub fn same_as(&self, other: &Object) -> bool {
        self.same_allocation(other) || self == other
    }
}
