//! Object metadata as the data plane keeps it for its most numerous kind,
//! the Pod: only the fields some reader uses, and labels as one sorted
//! vector instead of a `BTreeMap`.
//!
//! Measured at 100,000 Pods (`cargo run --release -p ferry --example
//! agent_heap`): k8s-openapi's `ObjectMeta` is 360 B inline, and a single
//! label costs a whole B-tree leaf (about 540 B) on top; together most of
//! a slim Pod's 1,163 B.
//!
//! [`Meta`] is what readers of any kind's metadata see
//! ([`crate::Object::metadata`]): k8s-openapi's `ObjectMeta` and
//! [`ObjectMeta`] both answer it.
//!
//! Pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as k8s;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Slim metadata: what ferry's readers of Pods use. Field names are
/// Kubernetes' own (and k8s-openapi's), so `pod.metadata.name` reads as it
/// would on the full type. Everything else (managedFields, annotations,
/// finalizers, timestamps) is skipped by the decoder and never stored.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "MetaIn")]
pub struct ObjectMeta {
    /// Shared with the object's key ([`Meta::shared_name`]): one string
    /// per object, not two. Boxed strings below (16 B, not 24): one of
    /// these per Pod.
    pub name: Option<Arc<str>>,
    /// Shared ([`crate::intern`]), as object keys' namespaces.
    pub namespace: Option<Arc<str>>,
    pub uid: Option<Box<str>>,
    pub resource_version: Option<Box<str>>,
    pub labels: Option<Labels>,
    /// `deletionTimestamp` and `deletionGracePeriodSeconds`, set when
    /// deletion starts (the lab marks terminating Pods so, and kubectl
    /// shows them so); the grace period is validated as the API server
    /// does. Boxed: rare, and 40 B inline on every Pod.
    pub deletion: Option<Box<Deletion>>,
    /// The lab's pod planner tells a Deployment's Pods from bare ones.
    pub owner_references: Option<Box<[k8s::OwnerReference]>>,
}

/// When an object's deletion started, and its grace period.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deletion {
    pub timestamp: Option<k8s::Time>,
    pub grace_period_seconds: Option<i64>,
}

impl Deletion {
    /// The two wire fields, boxed when either is set.
    fn of(
        timestamp: Option<k8s::Time>,
        grace_period_seconds: Option<i64>,
    ) -> Option<Box<Deletion>> {
        (timestamp.is_some() || grace_period_seconds.is_some()).then(|| {
            Box::new(Deletion {
                timestamp,
                grace_period_seconds,
            })
        })
    }
}

impl ObjectMeta {
    pub fn deletion_timestamp(&self) -> Option<&k8s::Time> {
        self.deletion.as_ref()?.timestamp.as_ref()
    }
}

/// The metadata as written: the wire's field names, deletion in two fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaIn {
    name: Option<Arc<str>>,
    #[serde(default, deserialize_with = "crate::intern::deserialize_opt")]
    namespace: Option<Arc<str>>,
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    labels: Option<Labels>,
    deletion_timestamp: Option<k8s::Time>,
    deletion_grace_period_seconds: Option<i64>,
    owner_references: Option<Box<[k8s::OwnerReference]>>,
}

impl From<MetaIn> for ObjectMeta {
    fn from(m: MetaIn) -> ObjectMeta {
        let deletion = Deletion::of(m.deletion_timestamp, m.deletion_grace_period_seconds);
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            labels: m.labels,
            deletion,
            owner_references: m.owner_references,
        }
    }
}

impl Serialize for ObjectMeta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            namespace: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            uid: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            resource_version: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            labels: Option<&'a Labels>,
            #[serde(skip_serializing_if = "Option::is_none")]
            deletion_timestamp: Option<&'a k8s::Time>,
            #[serde(skip_serializing_if = "Option::is_none")]
            deletion_grace_period_seconds: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            owner_references: Option<&'a [k8s::OwnerReference]>,
        }
        Out {
            name: self.name.as_deref(),
            namespace: self.namespace.as_deref(),
            uid: self.uid.as_deref(),
            resource_version: self.resource_version.as_deref(),
            labels: self.labels.as_ref(),
            deletion_timestamp: self.deletion_timestamp(),
            deletion_grace_period_seconds: self.deletion_grace_period_seconds(),
            owner_references: self.owner_references.as_deref(),
        }
        .serialize(s)
    }
}

impl From<k8s::ObjectMeta> for ObjectMeta {
    /// Keeps the fields [`ObjectMeta`] has; the rest is dropped.
    fn from(m: k8s::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            name: m.name.map(Into::into),
            namespace: m.namespace.as_deref().map(crate::intern::shared),
            uid: m.uid.map(Into::into),
            resource_version: m.resource_version.map(Into::into),
            labels: m.labels.map(Labels::from),
            deletion: Deletion::of(m.deletion_timestamp, m.deletion_grace_period_seconds),
            owner_references: m.owner_references.map(Into::into),
        }
    }
}

/// Labels, sorted by key, unique keys: a map's reads over one allocation.
/// Keys and values are shared ([`crate::intern`]): the same few keys and
/// the values of one workload repeat on every Pod and slice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Box<[(Arc<str>, Arc<str>)]>);

impl Labels {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| &**k)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a map, for code that wants one.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Labels {
        use crate::intern::shared;
        Labels(map.iter().map(|(k, v)| (shared(k), shared(v))).collect())
    }
}

impl FromIterator<(String, String)> for Labels {
    /// A later pair wins over an earlier one with the same key, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Labels {
        Labels::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(Labels::from)
    }
}

/// A set of labels a selector can be matched against.
pub trait LabelSet {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelSet for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl LabelSet for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

/// What readers of any kind's metadata use.
pub trait Meta {
    fn name(&self) -> Option<&str>;
    fn namespace(&self) -> Option<&str>;
    /// The namespace's shared copy ([`crate::intern`]): the slim metadata
    /// holds it already, so no lookup in the table.
    fn shared_namespace(&self) -> Arc<str> {
        crate::intern::shared(self.namespace().unwrap_or_default())
    }
    /// The name as an object key holds it: the slim metadata's own copy.
    fn shared_name(&self) -> Arc<str> {
        Arc::from(self.name().unwrap_or_default())
    }
    fn resource_version(&self) -> Option<&str>;
    fn deletion_grace_period_seconds(&self) -> Option<i64>;
    /// Label pairs, in key order.
    fn label_pairs(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_>;
    fn annotation_keys(&self) -> Box<dyn Iterator<Item = &String> + '_>;
    fn set_namespace(&mut self, namespace: Option<String>);
    fn set_resource_version(&mut self, version: Option<String>);
}

/// The accessors both metadata types answer alike (same field names).
macro_rules! common_meta {
    () => {
        fn name(&self) -> Option<&str> {
            self.name.as_deref()
        }
        fn namespace(&self) -> Option<&str> {
            self.namespace.as_deref()
        }
        fn resource_version(&self) -> Option<&str> {
            self.resource_version.as_deref()
        }
        fn set_resource_version(&mut self, version: Option<String>) {
            self.resource_version = version.map(Into::into);
        }
    };
}

impl Meta for k8s::ObjectMeta {
    common_meta!();
    fn deletion_grace_period_seconds(&self) -> Option<i64> {
        self.deletion_grace_period_seconds
    }
    fn set_namespace(&mut self, namespace: Option<String>) {
        self.namespace = namespace;
    }
    fn label_pairs(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        Box::new((self.labels.iter().flatten()).map(|(k, v)| (k.as_str(), v.as_str())))
    }
    fn annotation_keys(&self) -> Box<dyn Iterator<Item = &String> + '_> {
        Box::new(self.annotations.iter().flat_map(|a| a.keys()))
    }
}

impl Meta for ObjectMeta {
    common_meta!();
    fn deletion_grace_period_seconds(&self) -> Option<i64> {
        self.deletion.as_ref()?.grace_period_seconds
    }
    fn shared_name(&self) -> Arc<str> {
        match &self.name {
            Some(name) => name.clone(),
            None => Arc::from(""),
        }
    }
    fn shared_namespace(&self) -> Arc<str> {
        match &self.namespace {
            Some(ns) => ns.clone(),
            None => crate::intern::shared(""),
        }
    }
    fn set_namespace(&mut self, namespace: Option<String>) {
        self.namespace = namespace.as_deref().map(crate::intern::shared);
    }
    fn label_pairs(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        Box::new(self.labels.iter().flat_map(Labels::iter))
    }
    /// Slim metadata keeps no annotations.
    fn annotation_keys(&self) -> Box<dyn Iterator<Item = &String> + '_> {
        Box::new(std::iter::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_as_a_map_and_round_trip_as_one() {
        let labels: Labels = serde_json::from_str(r#"{"tier":"a","app":"web"}"#).unwrap();
        assert_eq!(labels.get("app"), Some("web"));
        assert_eq!(labels.get("tier"), Some("a"));
        assert_eq!(labels.get("nope"), None);
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["app", "tier"]);
        let json = serde_json::to_string(&labels).unwrap();
        assert_eq!(json, r#"{"app":"web","tier":"a"}"#);
        let later_wins: Labels = [("a", "1"), ("a", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(later_wins.len(), 1);
        assert_eq!(later_wins.label("a"), Some("2"));
    }

    #[test]
    fn slim_metadata_skips_what_no_reader_uses() {
        let meta: ObjectMeta = serde_json::from_str(
            r#"{"name":"web-0","namespace":"shop","uid":"1c9e","resourceVersion":"7",
                "generateName":"web-","labels":{"app":"web"},"annotations":{"a":"b"},
                "managedFields":[{"manager":"kubelet"}],"creationTimestamp":"2026-12-03T09:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(meta.name.as_deref(), Some("web-0"));
        assert_eq!(meta.resource_version(), Some("7"));
        assert_eq!(meta.label_pairs().count(), 1);
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(json.get("managedFields"), None);
        assert_eq!(json.get("annotations"), None);
        assert_eq!(json["labels"]["app"], "web");
    }

    #[test]
    fn a_deletion_reads_and_writes_as_its_two_fields() {
        let json = r#"{"name":"web-0","deletionTimestamp":"2026-12-03T09:00:00Z","deletionGracePeriodSeconds":30}"#;
        let meta: ObjectMeta = serde_json::from_str(json).unwrap();
        assert_eq!(meta.deletion_grace_period_seconds(), Some(30));
        assert!(meta.deletion_timestamp().is_some());
        let back = serde_json::to_value(&meta).unwrap();
        assert_eq!(back["deletionTimestamp"], "2026-12-03T09:00:00Z");
        assert_eq!(back["deletionGracePeriodSeconds"], 30);
        let alive: ObjectMeta = serde_json::from_str(r#"{"name":"web-1"}"#).unwrap();
        assert_eq!(alive.deletion, None, "nothing boxed for the living");
    }
}
