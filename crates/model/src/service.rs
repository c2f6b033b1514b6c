//! The Service as the data plane keeps it: Kubernetes' own spec fields
//! (every one is read by a view, the validator or the lab), with the slim
//! metadata and the selector as sorted shared [`Labels`] instead of a
//! `BTreeMap`. Annotations are not kept: no component reads a Service's
//! (the Kubernetes API source keeps only `ferry_kube::strip::READ_ANNOTATIONS`,
//! of Nodes and Ingresses).
//!
//! Field names are Kubernetes' own (and k8s-openapi's), so code reads
//! `svc.spec.cluster_ip` as it would on the full type; ports, status and
//! the session affinity config are k8s-openapi's types. Measured at
//! 20,000 Services: k8s-openapi's metadata and selector map cost about
//! 700 B of each Service.
//!
//! Pure.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as k8s;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::api::core::v1::{ServicePort, ServiceStatus, SessionAffinityConfig};

use crate::meta::{Labels, Meta, ObjectMeta};

/// A Service, slim: metadata, spec and status.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: ServiceMeta,
    pub spec: Option<ServiceSpec>,
    pub status: Option<ServiceStatus>,
}

/// The slim metadata and the creation time: a NodePort two Services claim
/// goes to the one created first, as the API server's allocator decides
/// (see `node_ports.rs`). Reads as [`ObjectMeta`] (`svc.metadata.name`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMeta {
    #[serde(flatten)]
    pub meta: ObjectMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<k8s::Time>,
}

impl std::ops::Deref for ServiceMeta {
    type Target = ObjectMeta;
    fn deref(&self) -> &ObjectMeta {
        &self.meta
    }
}

impl std::ops::DerefMut for ServiceMeta {
    fn deref_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

impl From<k8s::ObjectMeta> for ServiceMeta {
    fn from(mut m: k8s::ObjectMeta) -> ServiceMeta {
        let creation_timestamp = m.creation_timestamp.take();
        ServiceMeta {
            meta: m.into(),
            creation_timestamp,
        }
    }
}

impl Meta for ServiceMeta {
    fn name(&self) -> Option<&str> {
        self.meta.name()
    }
    fn namespace(&self) -> Option<&str> {
        self.meta.namespace()
    }
    fn shared_namespace(&self) -> Arc<str> {
        self.meta.shared_namespace()
    }
    fn shared_name(&self) -> Arc<str> {
        self.meta.shared_name()
    }
    fn resource_version(&self) -> Option<&str> {
        self.meta.resource_version()
    }
    fn deletion_grace_period_seconds(&self) -> Option<i64> {
        self.meta.deletion_grace_period_seconds()
    }
    fn label_pairs(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        self.meta.label_pairs()
    }
    fn annotation_keys(&self) -> Box<dyn Iterator<Item = &String> + '_> {
        self.meta.annotation_keys()
    }
    fn set_namespace(&mut self, namespace: Option<String>) {
        self.meta.set_namespace(namespace)
    }
    fn set_resource_version(&mut self, version: Option<String>) {
        self.meta.set_resource_version(version)
    }
}

/// `spec`, field for field as the API has it; only the selector's type differs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocate_load_balancer_node_ports: Option<bool>,
    #[serde(rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs", skip_serializing_if = "Option::is_none")]
    pub cluster_ips: Option<Vec<String>>,
    #[serde(rename = "externalIPs", skip_serializing_if = "Option::is_none")]
    pub external_ips: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_families: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    #[serde(rename = "loadBalancerIP", skip_serializing_if = "Option::is_none")]
    pub load_balancer_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer_source_ranges: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ServicePort>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_not_ready_addresses: Option<bool>,
    /// Sorted pairs, shared strings ([`crate::intern`]): a `BTreeMap` of
    /// one pair cost a whole B-tree leaf (about 540 B).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

crate::object::manifest_serialize!(Service, "v1", "Service", {
    metadata => "metadata",
    spec => "spec",
    status => "status",
});

#[cfg(test)]
mod tests {
    use super::*;

    const API_SERVICE: &str = r#"{
      "apiVersion": "v1", "kind": "Service",
      "metadata": {"name": "web", "namespace": "shop", "uid": "5b1", "resourceVersion": "90",
                   "creationTimestamp": "2026-12-03T09:00:00Z",
                   "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                   "managedFields": [{"manager": "kubectl"}], "labels": {"app": "web"}},
      "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
               "selector": {"app": "web", "tier": "front"}, "sessionAffinity": "None",
               "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000,
               "allocateLoadBalancerNodePorts": true, "internalTrafficPolicy": "Cluster",
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                          "nodePort": 30080}]},
      "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}]}}
    }"#;

    #[test]
    fn an_api_server_service_keeps_its_spec_and_status_and_no_annotations() {
        let svc: Service = serde_json::from_str(API_SERVICE).unwrap();
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.selector.as_ref().unwrap().get("tier"), Some("front"));
        assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(30080));
        let json = serde_json::to_value(&svc).unwrap();
        assert_eq!(json["kind"], "Service");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["metadata"].get("annotations"), None);
        assert_eq!(
            json["metadata"]["creationTimestamp"],
            "2026-12-03T09:00:00Z"
        );
        assert_eq!(svc.metadata.name.as_deref(), Some("web"));
        assert_eq!(json["spec"]["clusterIPs"][0], "10.96.0.10");
        assert_eq!(json["spec"]["loadBalancerIP"], serde_json::Value::Null);
        assert_eq!(
            json["status"]["loadBalancer"]["ingress"][0]["ip"],
            "192.0.2.10"
        );
        // Every spec field Kubernetes' own type reads, this one reads alike.
        let k8s: k8s_openapi::api::core::v1::Service = serde_json::from_str(API_SERVICE).unwrap();
        assert_eq!(
            serde_json::to_value(&k8s).unwrap()["spec"],
            json["spec"],
            "the same spec, written back"
        );
        let back: Service = serde_json::from_value(json).unwrap();
        assert_eq!(back, svc, "what is written reads back the same");
    }
}
