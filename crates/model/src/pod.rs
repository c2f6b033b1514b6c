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
use crate::slice::{Address, Addresses};
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

/// The scheduling part of a Pod's spec. `hostname` and `subdomain` are
/// not kept: endpoint names come from the EndpointSlices' hostnames, as
/// CoreDNS's do, and no component reads them from the Pod.
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
    /// The address inline, as a slice endpoint's ([`Address`]): no
    /// allocation for an IP.
    #[serde(rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<Address>,
    #[serde(rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<PodIPs>,
    /// Only the `Ready` condition is kept (see [`PodStatus::ready`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<PodConditions>,
}

/// `status.podIPs`: a list of `{ip: ...}` on the wire, the addresses
/// inline here (one IP costs no allocation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIPs(pub Addresses);

impl PodIPs {
    pub fn iter(&self) -> std::slice::Iter<'_, Address> {
        self.0.iter()
    }
}

#[derive(Serialize, Deserialize)]
struct PodIPWire<T> {
    ip: T,
}

impl Serialize for PodIPs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|a| PodIPWire { ip: a.text() }))
    }
}

impl<'de> Deserialize<'de> for PodIPs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PodIPs, D::Error> {
        let all: Vec<PodIPWire<String>> = Vec::deserialize(d)?;
        Ok(PodIPs(all.iter().map(|p| p.ip.as_str()).collect()))
    }
}

/// `status.conditions`, of which only `Ready` is kept: the kubelet
/// writes four or five others (with messages and times) no component
/// reads. Written back as a list holding that one condition, or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodConditions {
    /// The Ready condition's status (`True`, `False`, `Unknown`), shared
    /// ([`crate::intern`]).
    pub ready: Option<Arc<str>>,
}

impl PodConditions {
    /// A list with a Ready condition of this status.
    pub fn ready(status: &str) -> PodConditions {
        PodConditions {
            ready: Some(crate::intern::shared(status)),
        }
    }
}

#[derive(Serialize)]
struct ConditionWire<'a> {
    #[serde(rename = "type")]
    type_: &'a str,
    status: &'a str,
}

/// A condition as decoded: the kubelet's few types and statuses are
/// shared strings, so reading them allocates nothing.
#[derive(Deserialize)]
struct ConditionIn {
    #[serde(rename = "type", deserialize_with = "crate::intern::deserialize")]
    type_: Arc<str>,
    #[serde(deserialize_with = "crate::intern::deserialize")]
    status: Arc<str>,
}

impl Serialize for PodConditions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.ready.iter().map(|status| ConditionWire {
            type_: "Ready",
            status,
        }))
    }
}

impl<'de> Deserialize<'de> for PodConditions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PodConditions, D::Error> {
        let all: Vec<ConditionIn> = Vec::deserialize(d)?;
        Ok(PodConditions {
            ready: all
                .into_iter()
                .find(|c| &*c.type_ == "Ready")
                .map(|c| c.status),
        })
    }
}

impl PodStatus {
    /// The Ready condition's status is `True`.
    pub fn ready(&self) -> bool {
        self.conditions.as_ref().and_then(|c| c.ready.as_deref()) == Some("True")
    }
}

crate::object::manifest_serialize!(Pod, "v1", "Pod", {
    metadata => "metadata",
    spec => "spec",
    status => "status",
});

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
        assert_eq!(
            serde_json::to_value(spec).unwrap().get("subdomain"),
            None,
            "no component reads it"
        );
        let status = pod.status.as_ref().unwrap();
        assert!(status.ready());
        assert_eq!(
            status.conditions,
            Some(PodConditions::ready("True")),
            "the other conditions are not kept"
        );
        assert_eq!(
            status.pod_ip,
            Some(Address::Ip("10.244.1.5".parse().unwrap()))
        );
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
