//! The Pod as the data plane keeps it: only the fields some component
//! reads, decoded straight from a Pod's JSON or YAML (every other field,
//! above all the containers, is skipped by the decoder and never stored).
//!
//! Who reads what: DNS the namespace and `status.podIP`/`podIPs` (pod
//! records); `ferry trace` the labels, `spec.nodeName` and the Ready
//! condition (to explain a Service without endpoints); the lab API
//! server's field selectors `spec.nodeName` and `status.phase`. The lab,
//! which runs the containers, reads whole Pods itself.
//!
//! Field names are Kubernetes' own (and k8s-openapi's), so code reads
//! `pod.status.pod_ips` as it would on the full type. The metadata is the
//! slim [`crate::meta::ObjectMeta`] (no annotations, labels in one sorted
//! vector). Measured at 100,000 Pods: the whole k8s-openapi Pod cost
//! about 6.8 KB each in the agent, the slim Pod with k8s-openapi's
//! metadata 1,163 B, with slim metadata 483 B.
//!
//! Pure.

use crate::meta::ObjectMeta;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A Pod, slim: metadata, and the parts of spec and status listed in the
/// module documentation.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

/// The scheduling and naming part of a Pod's spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// Shared ([`crate::intern`]).
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_name: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Box<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<Box<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

/// Where the Pod is in its life and its addresses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// Shared ([`crate::intern`]).
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub phase: Option<Arc<str>>,
    #[serde(rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<Box<str>>,
    #[serde(rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<Box<[PodIP]>>,
    /// Only the `Ready` condition is kept (see [`PodStatus::ready`]).
    #[serde(
        default,
        deserialize_with = "ready_only",
        skip_serializing_if = "Option::is_none"
    )]
    pub conditions: Option<Box<[PodCondition]>>,
}

/// One of the Pod's addresses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodIP {
    pub ip: Box<str>,
}

/// A condition of the Pod: its type (`Ready`) and status (`True`, `False`, `Unknown`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodCondition {
    /// Shared ([`crate::intern`]), as the status.
    #[serde(rename = "type", deserialize_with = "crate::intern::deserialize")]
    pub type_: Arc<str>,
    #[serde(deserialize_with = "crate::intern::deserialize")]
    pub status: Arc<str>,
}

/// Keeps the `Ready` condition of a decoded list; the kubelet writes four
/// or five others (with messages and times) no component reads.
fn ready_only<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<[PodCondition]>>, D::Error> {
    let all: Option<Vec<PodCondition>> = Option::deserialize(d)?;
    Ok(all.map(|v| v.into_iter().filter(|c| &*c.type_ == "Ready").collect()))
}

impl PodStatus {
    /// The Ready condition's status is `True`.
    pub fn ready(&self) -> bool {
        self.conditions
            .iter()
            .flatten()
            .any(|c| &*c.type_ == "Ready" && &*c.status == "True")
    }
}

/// Serialized as a Pod manifest, with its apiVersion and kind, as the
/// k8s-openapi types are.
impl Serialize for Pod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            api_version: &'static str,
            kind: &'static str,
            metadata: &'a ObjectMeta,
            #[serde(skip_serializing_if = "Option::is_none")]
            spec: &'a Option<PodSpec>,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: &'a Option<PodStatus>,
        }
        Wire {
            api_version: "v1",
            kind: "Pod",
            metadata: &self.metadata,
            spec: &self.spec,
            status: &self.status,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBELET_POD: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "web-0", "namespace": "shop", "uid": "1c9e", "resourceVersion": "812",
                   "labels": {"app": "web"}},
      "spec": {"nodeName": "node-1", "hostname": "web-0", "subdomain": "web",
               "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}],
               "volumes": [{"name": "data", "emptyDir": {}}]},
      "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                 "hostIP": "192.168.1.11",
                 "conditions": [{"type": "Initialized", "status": "True"},
                                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-03T09:00:00Z"},
                                {"type": "ContainersReady", "status": "True"}],
                 "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "nginx", "imageID": ""}]}
    }"#;

    #[test]
    fn a_kubelet_written_pod_keeps_only_what_components_read() {
        let pod: Pod = serde_json::from_str(KUBELET_POD).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let status = pod.status.as_ref().unwrap();
        assert!(status.ready());
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        let json = serde_json::to_value(&pod).unwrap();
        assert_eq!(json["kind"], "Pod");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["status"]["podIPs"][0]["ip"], "10.244.1.5");
        assert_eq!(json["spec"].get("containers"), None);
        assert_eq!(json["status"].get("containerStatuses"), None);
        let back: Pod = serde_json::from_value(json).unwrap();
        assert_eq!(back, pod, "what is written reads back the same");
    }
}
