//! The EndpointSlice as the data plane keeps it: the fields the model's
//! views read, decoded straight from JSON or YAML, with slim metadata.
//!
//! Who reads what: the model's views the address type, ports, and per
//! endpoint the addresses, conditions, hostname, nodeName, zone, hints and
//! the target Pod's name (`targetRef`); the lab its targetRefs (to keep
//! recorded Pods' addresses). Dropped: `deprecatedTopology`, and of
//! `targetRef` everything but kind, namespace and name.
//!
//! Field names are Kubernetes' own (and k8s-openapi's), so code reads
//! `slice.endpoints` as it would on the full type. Measured at 20,000
//! slices of 8 endpoints (`cargo run --release -p ferry --example
//! agent_heap`): k8s-openapi's EndpointSlice cost 4,312 B each.
//!
//! Pure.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use k8s_openapi::api::discovery::v1::{
    EndpointConditions, EndpointHints, EndpointPort, ForNode, ForZone,
};

use crate::meta::ObjectMeta;

/// An EndpointSlice, slim.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub address_type: String,
    pub endpoints: Option<Vec<Endpoint>>,
    pub ports: Option<Vec<EndpointPort>>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<EndpointConditions>,
    /// Boxed: set only with topology-aware routing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hints: Option<Box<EndpointHints>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Shared ([`crate::intern`]), as Pods' and views' node names.
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_name: Option<Arc<str>>,
    /// Boxed: absent on endpoints written by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<Box<TargetRef>>,
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub zone: Option<Arc<str>>,
}

/// What an endpoint points at: the parts of an `ObjectReference` read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Arc<str>>,
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub namespace: Option<Arc<str>>,
    /// Shared with the views' `pod`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Arc<str>>,
}

impl From<k8s_openapi::api::core::v1::ObjectReference> for Box<TargetRef> {
    fn from(r: k8s_openapi::api::core::v1::ObjectReference) -> Box<TargetRef> {
        Box::new(TargetRef {
            kind: r.kind.as_deref().map(crate::intern::shared),
            namespace: r.namespace.as_deref().map(crate::intern::shared),
            name: r.name.map(Arc::from),
        })
    }
}

/// Serialized as an EndpointSlice manifest, with its apiVersion and kind,
/// as the k8s-openapi types are.
impl Serialize for EndpointSlice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            api_version: &'static str,
            kind: &'static str,
            metadata: &'a ObjectMeta,
            address_type: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            endpoints: &'a Option<Vec<Endpoint>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ports: &'a Option<Vec<EndpointPort>>,
        }
        Wire {
            api_version: "discovery.k8s.io/v1",
            kind: "EndpointSlice",
            metadata: &self.metadata,
            address_type: &self.address_type,
            endpoints: &self.endpoints,
            ports: &self.ports,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLLER_SLICE: &str = r#"{
      "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
      "metadata": {"name": "web-abc12", "namespace": "shop", "uid": "9f1", "resourceVersion": "41",
                   "generateName": "web-",
                   "labels": {"kubernetes.io/service-name": "web",
                              "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                   "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-12-03T09:00:00Z"},
                   "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "77"}]},
      "addressType": "IPv4",
      "endpoints": [{"addresses": ["10.244.1.5"],
                     "conditions": {"ready": true, "serving": true, "terminating": false},
                     "nodeName": "node-1", "zone": "a",
                     "hints": {"forZones": [{"name": "a"}]},
                     "deprecatedTopology": {"kubernetes.io/hostname": "node-1"},
                     "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "1c9e",
                                   "resourceVersion": "812"}}],
      "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }"#;

    #[test]
    fn a_controller_written_slice_keeps_what_the_views_read() {
        let slice: EndpointSlice = serde_json::from_str(CONTROLLER_SLICE).unwrap();
        let ep = &slice.endpoints.as_ref().unwrap()[0];
        assert_eq!(ep.addresses, ["10.244.1.5"]);
        assert_eq!(ep.conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(ep.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            ep.target_ref.as_ref().unwrap().name.as_deref(),
            Some("web-0")
        );
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
        let json = serde_json::to_value(&slice).unwrap();
        assert_eq!(json["kind"], "EndpointSlice");
        assert_eq!(json["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(json["endpoints"][0].get("deprecatedTopology"), None);
        assert_eq!(json["endpoints"][0]["targetRef"].get("uid"), None);
        assert_eq!(json["metadata"].get("annotations"), None);
        let back: EndpointSlice = serde_json::from_value(json).unwrap();
        assert_eq!(back, slice, "what is written reads back the same");
    }
}
