//! The Kubernetes lease store's read side, as flannel's kube subnet
//! manager reads it: a Node's lease is its `spec.podCIDR` plus the
//! `flannel.alpha.coreos.com/*` annotations (public IP, backend type and
//! data); only Nodes marked `kube-subnet-manager: "true"` are peers.
//! Nodes without the annotations yet (their agent has not written them)
//! are not peers. Pure: from a cluster state.

use std::net::Ipv4Addr;

use ferry_model::{ClusterState, Kind, Object};
use ipnet::Ipv4Net;

use crate::lease::{BackendData, Lease, LeaseAttrs};

/// flannel's default annotation prefix (`--kube-annotation-prefix`).
pub const ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com";

/// The leases of every Node that has one, sorted by subnet.
pub fn node_leases(state: &ClusterState) -> Vec<Lease> {
    let mut out: Vec<Lease> = state
        .objects_of(Kind::Node)
        .filter_map(|o| match o {
            Object::Node(n) => {
                let a = n.metadata.annotations.as_ref()?;
                let get = |k: &str| {
                    a.get(&format!("{ANNOTATION_PREFIX}/{k}"))
                        .map(String::as_str)
                };
                if get("kube-subnet-manager") != Some("true") {
                    return None;
                }
                let spec = n.spec.as_ref()?;
                let subnet: Ipv4Net = spec
                    .pod_cidr
                    .as_deref()
                    .or_else(|| spec.pod_cidrs.as_ref()?.first().map(String::as_str))?
                    .parse()
                    .ok()?;
                let public_ip: Ipv4Addr = get("public-ip-overwrite")
                    .or(get("public-ip"))?
                    .parse()
                    .ok()?;
                let backend_type = get("backend-type").unwrap_or("vxlan").to_string();
                let backend_data =
                    get("backend-data").and_then(|d| serde_json::from_str::<BackendData>(d).ok());
                Some(Lease {
                    subnet: subnet.trunc(),
                    attrs: LeaseAttrs {
                        public_ip,
                        backend_type,
                        backend_data,
                    },
                })
            }
            _ => None,
        })
        .collect();
    out.sort_by_key(|l| l.subnet);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::{Update, decode};

    #[test]
    fn annotated_nodes_are_peers_and_others_are_not() {
        let yaml = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-1
  annotations:
    flannel.alpha.coreos.com/kube-subnet-manager: "true"
    flannel.alpha.coreos.com/public-ip: 172.18.0.11
    flannel.alpha.coreos.com/backend-type: vxlan
    flannel.alpha.coreos.com/backend-data: '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}'
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Node
metadata:
  name: node-2
  annotations:
    flannel.alpha.coreos.com/kube-subnet-manager: "true"
    flannel.alpha.coreos.com/public-ip: 172.18.0.12
    flannel.alpha.coreos.com/public-ip-overwrite: 192.0.2.12
spec: {podCIDR: 10.244.2.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node-3}
spec: {podCIDR: 10.244.3.0/24}
"#;
        let decoded = decode("n.yaml", yaml);
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        let objects: Vec<Update> = decoded
            .objects
            .into_iter()
            .map(|d| Update::Apply(d.object))
            .collect();
        let (state, _) = ClusterState::new().apply(objects);
        let leases = node_leases(&state);
        assert_eq!(leases.len(), 2, "node-3 has no annotations: {leases:?}");
        assert_eq!(
            leases[0].subnet,
            "10.244.1.0/24".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(
            leases[0].attrs.backend_data.as_ref().unwrap().vtep_mac,
            "12:c6:65:89:b4:e3"
        );
        assert_eq!(
            leases[1].attrs.public_ip,
            Ipv4Addr::new(192, 0, 2, 12),
            "the overwrite wins"
        );
    }
}
