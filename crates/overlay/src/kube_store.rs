//! The Kubernetes lease store, as flannel's kube subnet manager keeps
//! leases: the subnet is the Node's `spec.podCIDR` (kube-controller-manager
//! allocates it; nothing is allocated here), and the lease's value lives
//! in the Node's `flannel.alpha.coreos.com/*` annotations (public IP,
//! backend type and data, `kube-subnet-manager: "true"`). The network
//! config is flannel's `net-conf.json` (its ConfigMap, mounted as a file).
//! Peers are read from the cluster state the source publishes
//! (`kube::node_leases`); the annotations are written through a
//! [`NodeAnnotator`], which the source crate implements: only the source
//! talks to the API server (ARCHITECTURE.md, "Settled between issues").
//!
//! Touches files (net-conf.json); the API only through the annotator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_model::ClusterState;

use crate::config::NetworkConfig;
use crate::kube::{ANNOTATION_PREFIX, node_leases};
use crate::lease::Lease;
use crate::store::{LeaseStore, StoreError};

/// Writes annotations on a Node (a merge patch of
/// `metadata.annotations`). Implemented by the API source.
pub trait NodeAnnotator: Send + Sync {
    fn annotate(&self, node: &str, annotations: &BTreeMap<String, String>) -> Result<(), String>;
}

/// The annotations that say `lease` is this Node's, as flanneld writes them.
pub fn annotations(lease: &Lease) -> BTreeMap<String, String> {
    let key = |k: &str| format!("{ANNOTATION_PREFIX}/{k}");
    let mut out = BTreeMap::from([
        (key("kube-subnet-manager"), "true".to_string()),
        (key("backend-type"), lease.attrs.backend_type.clone()),
        (key("public-ip"), lease.attrs.public_ip.to_string()),
    ]);
    let data = match &lease.attrs.backend_data {
        Some(d) => serde_json::to_string(d).unwrap_or_else(|_| "null".into()),
        None => "null".into(),
    };
    out.insert(key("backend-data"), data);
    out
}

/// Leases kept on Nodes.
pub struct KubeStore {
    pub node: String,
    pub net_conf: PathBuf,
    pub annotator: Arc<dyn NodeAnnotator>,
    /// The newest cluster state (the component keeps it current).
    pub state: Arc<Mutex<ClusterState>>,
}

impl LeaseStore for KubeStore {
    fn config(&self) -> Result<NetworkConfig, StoreError> {
        let text = std::fs::read_to_string(&self.net_conf).map_err(|source| StoreError::Io {
            path: self.net_conf.clone(),
            source,
        })?;
        NetworkConfig::parse(&text).map_err(|source| StoreError::Config {
            path: self.net_conf.clone(),
            source,
        })
    }

    fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(node_leases(&state))
    }

    /// Only this Node's podCIDR can be "created": it is annotated.
    fn create(&self, lease: &Lease, _ttl: Duration) -> Result<bool, StoreError> {
        let own = crate::component::node_pod_cidr(
            &self.state.lock().unwrap_or_else(|p| p.into_inner()),
            &self.node,
        )
        .ok()
        .flatten();
        if own != Some(lease.subnet) {
            return Err(StoreError::Api(format!(
                "Node {}: the Kubernetes lease store takes only the Node's spec.podCIDR ({}), not {} (is kube-controller-manager allocating node CIDRs?)",
                self.node,
                own.map_or("unset".to_string(), |c| c.to_string()),
                lease.subnet
            )));
        }
        self.annotator
            .annotate(&self.node, &annotations(lease))
            .map_err(StoreError::Api)?;
        Ok(true)
    }

    /// Annotations do not expire: writing them again is enough.
    fn renew(&self, lease: &Lease, _ttl: Duration) -> Result<(), StoreError> {
        self.annotator
            .annotate(&self.node, &annotations(lease))
            .map_err(StoreError::Api)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{BackendData, LeaseAttrs};
    use ferry_model::{Update, decode};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, BTreeMap<String, String>)>>);

    impl NodeAnnotator for Recorder {
        fn annotate(&self, node: &str, a: &BTreeMap<String, String>) -> Result<(), String> {
            self.0.lock().unwrap().push((node.to_string(), a.clone()));
            Ok(())
        }
    }

    fn state(yaml: &str) -> ClusterState {
        let d = decode("n.yaml", yaml);
        ClusterState::new()
            .apply(d.objects.into_iter().map(|o| Update::Apply(o.object)))
            .0
    }

    #[test]
    fn the_node_is_annotated_as_flanneld_annotates_it_and_becomes_a_peer() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net-conf.json");
        std::fs::write(
            &conf,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        let recorder = Arc::new(Recorder::default());
        let store = KubeStore {
            node: "node-1".into(),
            net_conf: conf,
            annotator: recorder.clone(),
            state: Arc::new(Mutex::new(state(
                "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.244.1.0/24}\n",
            ))),
        };
        let attrs = LeaseAttrs {
            public_ip: [172, 18, 0, 11].into(),
            backend_type: "vxlan".into(),
            backend_data: Some(BackendData {
                vni: 1,
                vtep_mac: "02:00:00:00:00:01".into(),
            }),
        };
        let lease = crate::store::acquire(
            &store,
            &attrs,
            Some("10.244.1.0/24".parse().unwrap()),
            None,
            |_| 0,
        )
        .unwrap();
        assert_eq!(lease.subnet, "10.244.1.0/24".parse().unwrap());
        let written = recorder.0.lock().unwrap().clone();
        assert_eq!(written.len(), 1);
        let (node, a) = &written[0];
        assert_eq!(node, "node-1");
        assert_eq!(a["flannel.alpha.coreos.com/kube-subnet-manager"], "true");
        assert_eq!(a["flannel.alpha.coreos.com/public-ip"], "172.18.0.11");
        assert_eq!(a["flannel.alpha.coreos.com/backend-type"], "vxlan");
        assert_eq!(
            a["flannel.alpha.coreos.com/backend-data"],
            r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}"#
        );
        // Once the API has the annotations, the Node is a peer as flannel reads it.
        let mut yaml =
            String::from("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n  annotations:\n");
        for (k, v) in a {
            yaml.push_str(&format!("    {k}: '{v}'\n"));
        }
        yaml.push_str("spec: {podCIDR: 10.244.1.0/24}\n");
        *store.state.lock().unwrap() = state(&yaml);
        assert_eq!(store.leases().unwrap(), vec![lease]);
    }

    #[test]
    fn a_subnet_other_than_the_nodes_pod_cidr_is_refused() {
        let store = KubeStore {
            node: "node-1".into(),
            net_conf: "/nonexistent".into(),
            annotator: Arc::new(Recorder::default()),
            state: Arc::new(Mutex::new(state(
                "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {}\n",
            ))),
        };
        let lease = Lease {
            subnet: "10.244.7.0/24".parse().unwrap(),
            attrs: LeaseAttrs {
                public_ip: [172, 18, 0, 11].into(),
                backend_type: "host-gw".into(),
                backend_data: None,
            },
        };
        let err = store
            .create(&lease, Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.podCIDR"), "{err}");
        assert!(
            store
                .config()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent")
        );
    }
}
