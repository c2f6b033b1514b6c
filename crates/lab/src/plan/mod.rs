//! The lab's control plane, as pure functions: which nodes exist, which
//! pods should run where with which IP, which addresses each Service gets,
//! and the EndpointSlices that follow from selectors and readiness. The
//! controller executes what these decide; nothing here touches the kernel.

mod alloc;
mod nodes;
mod pods;
mod render;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ferry_model::k8s_openapi::api::core::v1::PodSpec;
use ferry_model::{NamespacedName, Object, ObjectKey};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use alloc::{Allocation, allocate};
pub use nodes::{desired_nodes, overlay_config, pod_network};
pub use pods::{Counters, Hint, PodChanges, hints_from_slices, plan_pods};
pub use render::{MANAGED_BY, MANAGER, World, ingress_addresses, ingress_classes, render};

/// The user's objects, by key (what `lab up` and `lab apply` gave), as the
/// model decodes them; and, read by the lab itself, the spec of each bare
/// Pod whole (the model keeps a slim Pod; the lab runs its containers).
/// Reads and writes of the objects go through `Deref` to the map; a spec
/// is looked up only for a Pod key the map holds.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    objects: BTreeMap<ObjectKey, Object>,
    pod_specs: BTreeMap<ObjectKey, Arc<PodSpec>>,
}

impl Inputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the decoded `objects` of `text`, and the whole spec of each
    /// bare Pod in it (the decoder has checked it as the API server would).
    pub fn read(&mut self, objects: Vec<Object>, text: &str) {
        for v in ferry_model::documents(text) {
            if v.get("kind").and_then(|k| k.as_str()) != Some("Pod") {
                continue;
            }
            let Ok(pod) = serde_json::from_value::<WholePod>(v) else {
                continue;
            };
            let m = &pod.metadata;
            let key = ObjectKey::new(
                ferry_model::Kind::Pod,
                m.namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("default"),
                m.name.as_deref().unwrap_or_default(),
            );
            if let Some(spec) = pod.spec {
                self.pod_specs.insert(key, Arc::new(spec));
            }
        }
        for o in objects {
            self.objects.insert(o.key(), o);
        }
    }

    /// Takes `other`'s objects and specs over ours (a `lab apply`).
    pub fn extend(&mut self, other: Inputs) {
        self.objects.extend(other.objects);
        self.pod_specs.extend(other.pod_specs);
    }

    /// The whole spec of the bare Pod `key`.
    pub fn pod_spec(&self, key: &ObjectKey) -> Option<&Arc<PodSpec>> {
        self.pod_specs.get(key)
    }
}

impl std::ops::Deref for Inputs {
    type Target = BTreeMap<ObjectKey, Object>;
    fn deref(&self) -> &Self::Target {
        &self.objects
    }
}

impl std::ops::DerefMut for Inputs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.objects
    }
}

impl FromIterator<(ObjectKey, Object)> for Inputs {
    fn from_iter<T: IntoIterator<Item = (ObjectKey, Object)>>(iter: T) -> Self {
        Inputs {
            objects: iter.into_iter().collect(),
            pod_specs: BTreeMap::new(),
        }
    }
}

type WholePod = ferry_model::k8s_openapi::api::core::v1::Pod;

/// Address plan and defaults of a lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// The node network (the switch): node IPs and the outside client live here.
    pub node_cidr: Ipv4Net,
    /// Pod CIDRs of nodes without one are /24s carved from here.
    pub cluster_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    /// LoadBalancer IPs (written to status.loadBalancer.ingress).
    pub lb_pool: Ipv4Net,
    pub node_port_min: u16,
    pub node_port_max: u16,
    /// Nodes to create when the manifests name none.
    pub default_nodes: u32,
    /// The agents' `--proxy-mode` (nftables or iptables).
    #[serde(default = "default_proxy_mode")]
    pub proxy_mode: String,
    /// The pod network's backend (the agents' overlay): vxlan or host-gw.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Where the pod network's leases live: `file` (a directory) or `etcd`
    /// (a real etcd in the control-plane namespace).
    #[serde(default = "default_lease_store")]
    pub lease_store: String,
    /// Where the agents read the cluster: `manifests` (the files the lab
    /// writes) or `kube` (the lab's API server, with a kubeconfig).
    #[serde(default = "default_source")]
    pub source: String,
}

fn default_source() -> String {
    "manifests".into()
}

fn default_lease_store() -> String {
    "file".into()
}

fn default_backend() -> String {
    "vxlan".into()
}

fn default_proxy_mode() -> String {
    "nftables".into()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_cidr: "172.18.0.0/24".parse().expect("a valid literal CIDR"),
            cluster_cidr: "10.244.0.0/16".parse().expect("a valid literal CIDR"),
            service_cidr: "172.16.0.0/16".parse().expect("a valid literal CIDR"),
            lb_pool: "172.19.0.0/24".parse().expect("a valid literal CIDR"),
            node_port_min: 30000,
            node_port_max: 32767,
            default_nodes: 2,
            proxy_mode: default_proxy_mode(),
            backend: default_backend(),
            lease_store: default_lease_store(),
            source: default_source(),
        }
    }
}

impl Settings {
    /// The outside client's address on the node network.
    pub fn outside_ip(&self) -> Ipv4Addr {
        nth(self.node_cidr, 2)
    }

    /// The lab API server's address on the node network.
    pub fn api_server_ip(&self) -> Ipv4Addr {
        nth(self.node_cidr, 3)
    }
}

/// The n-th address of a network (0 is the network address).
pub fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Stable small number, used in interface names.
    pub index: u32,
    pub ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    pub labels: BTreeMap<String, String>,
}

impl NodeInfo {
    /// The pod network's gateway on this node (its cni0 bridge).
    pub fn gateway(&self) -> Ipv4Addr {
        nth(self.pod_cidr, 1)
    }
}

/// What created a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Owner {
    Pod,
    ReplicaSet(String),
    Deployment(String),
}

/// One pod the lab runs (or is about to).
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub name: NamespacedName,
    pub owner: Owner,
    /// Hash of the pod template it was made from; a changed template replaces the pod.
    pub template_hash: String,
    pub labels: BTreeMap<String, String>,
    pub spec: Arc<PodSpec>,
    pub node: String,
    pub ip: IpAddr,
    pub host_network: bool,
    /// Lab-wide number, used in namespace and interface names.
    pub id: u32,
    /// Creation order (newer pods are removed first on scale-down).
    pub seq: u64,
    /// Its echo server is listening.
    pub started: bool,
    /// The readiness probe (or, without one, `started`) says ready.
    pub ready: bool,
    /// Set when deletion started: (lab clock in ms, grace in ms).
    pub deleting: Option<(u64, u64)>,
}

impl PodInfo {
    pub fn terminating(&self) -> bool {
        self.deleting.is_some()
    }
}
