//! What a trace reads from a running lab: its status (nodes, pods and
//! their namespaces and addresses, the agents' proxy mode), the manifests
//! its agents read (the cluster state), the pod network's lease store, and
//! a pod's resolv.conf.
//!
//! Touches files under /run/ferry/labs/NAME and /etc/netns.

use std::net::IpAddr;
use std::path::PathBuf;

use ferry_lab::names::{LabNames, etc_netns};
use ferry_lab::status::LabStatus;
use ferry_model::ClusterState;
use ferry_overlay::store::{FileStore, LeaseStore};
use ferry_source::ManifestSource;

use crate::plan::{Network, NodeInfo, PodInfo, Topology};
use crate::resolve::Resolv;
use crate::{ProxyMode, TraceError};

/// The lab's node-local DNS address (what every pod's resolv.conf names).
pub const NODE_LOCAL_DNS: &str = "169.254.20.10";

/// A running lab, read once.
pub struct Lab {
    pub name: String,
    pub status: LabStatus,
    pub state: ClusterState,
    pub topology: Topology,
    pub network: Network,
    pub mode: ProxyMode,
}

fn lab_err(lab: &str, why: impl Into<String>) -> TraceError {
    TraceError::Lab {
        lab: lab.into(),
        why: why.into(),
    }
}

/// Reads lab `name`.
pub fn read(name: &str) -> Result<Lab, TraceError> {
    let names = LabNames::new(name).map_err(|e| lab_err(name, e.to_string()))?;
    let status_path = names.status_file();
    let status = LabStatus::read(&status_path).ok_or_else(|| {
        lab_err(
            name,
            format!("no readable {} (is the lab up?)", status_path.display()),
        )
    })?;
    let manifests: PathBuf = names.manifests_dir();
    let (source, _) =
        ManifestSource::open(std::slice::from_ref(&manifests), false).map_err(|e| {
            TraceError::File {
                path: manifests.display().to_string(),
                why: e.to_string(),
            }
        })?;
    let state = source.state().clone();
    let topology = topology(&status);
    let store = FileStore::new(&names.leases_dir());
    let config = store.config().ok();
    let network = Network {
        backend: config
            .as_ref()
            .map(|c| c.backend.clone())
            .unwrap_or_default(),
        leases: store.leases().unwrap_or_default(),
        pod_network: config.map(|c| c.network),
    };
    let mode = match status.proxy_mode.as_str() {
        "iptables" => ProxyMode::Iptables,
        "nftables" => ProxyMode::Nftables,
        other => {
            return Err(lab_err(
                name,
                format!(
                    "{}: proxy_mode {other:?} (a lab started by an older ferry has none; take it down and up again)",
                    status_path.display()
                ),
            ));
        }
    };
    Ok(Lab {
        name: name.into(),
        status,
        state,
        topology,
        network,
        mode,
    })
}

/// Nodes, pods and the outside client from the lab's status.
pub fn topology(status: &LabStatus) -> Topology {
    Topology {
        nodes: status
            .nodes
            .iter()
            .filter_map(|n| {
                Some(NodeInfo {
                    name: n.name.clone(),
                    ip: n.ip.parse().ok()?,
                    pod_cidr: n.pod_cidr.parse().ok(),
                    netns: n.netns.clone(),
                })
            })
            .collect(),
        pods: status
            .pods
            .iter()
            .filter_map(|p| {
                Some(PodInfo {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    node: p.node.clone(),
                    ip: p.ip.parse().ok()?,
                    netns: p.netns.clone(),
                    host_network: p.host_network,
                    terminating: p.terminating,
                })
            })
            .collect(),
        outside: status
            .outside
            .ip
            .parse::<IpAddr>()
            .ok()
            .map(|ip| (status.outside.netns.clone(), ip)),
    }
}

/// The resolver of a pod (its resolv.conf in /etc/netns), or kubelet's
/// cluster-first settings for `namespace`.
pub fn resolv(pod_netns: Option<&str>, namespace: &str) -> Resolv {
    pod_netns
        .and_then(|ns| std::fs::read_to_string(etc_netns(ns).join("resolv.conf")).ok())
        .map(|t| Resolv::parse(&t))
        .filter(|r| !r.nameserver.is_empty())
        .unwrap_or_else(|| Resolv::cluster_first(namespace, NODE_LOCAL_DNS))
}
