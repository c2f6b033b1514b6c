//! Which nodes the lab has: the Node objects of the manifests, or
//! `node-1..node-N`; each with an IP on the node network and a pod CIDR
//! (its own `spec.podCIDR`, or a /24 from the cluster CIDR).

use std::collections::BTreeMap;

use ferry_model::{Kind, Object};
use ipnet::Ipv4Net;

use super::{Inputs, NodeInfo, Settings, nth};
use crate::LabError;

/// The nodes the inputs call for. `existing` keeps indexes (and so IPs and
/// interface names) stable when nodes are added later.
pub fn desired_nodes(
    inputs: &Inputs,
    settings: &Settings,
    existing: &[NodeInfo],
) -> Result<Vec<NodeInfo>, LabError> {
    let mut wanted: Vec<(String, Option<Ipv4Net>, BTreeMap<String, String>)> = inputs
        .values()
        .filter(|o| o.kind() == Kind::Node)
        .map(|o| {
            let Object::Node(n) = o else {
                unreachable!("filtered on Kind::Node")
            };
            let cidr = n
                .spec
                .as_ref()
                .and_then(|s| {
                    s.pod_cidr.as_deref().or(s
                        .pod_cidrs
                        .as_ref()
                        .and_then(|c| c.first())
                        .map(String::as_str))
                })
                .and_then(|c| c.parse::<Ipv4Net>().ok());
            let name = n.metadata.name.clone().unwrap_or_default();
            (name, cidr, n.metadata.labels.clone().unwrap_or_default())
        })
        .collect();
    if wanted.is_empty() {
        wanted = (1..=settings.default_nodes)
            .map(|i| (format!("node-{i}"), None, BTreeMap::new()))
            .collect();
    }
    let max_nodes = (1u32 << (32 - settings.node_cidr.prefix_len())).saturating_sub(12);
    if wanted.len() as u32 > max_nodes.min(200) {
        return Err(LabError::Plan(format!(
            "{} nodes do not fit the node network {} (at most {})",
            wanted.len(),
            settings.node_cidr,
            max_nodes.min(200)
        )));
    }
    let mut used: Vec<u32> = existing.iter().map(|n| n.index).collect();
    let mut out = Vec::new();
    for (name, cidr, mut labels) in wanted {
        let index = match existing.iter().find(|n| n.name == name) {
            Some(n) => n.index,
            None => {
                let i = (1..).find(|i| !used.contains(i)).unwrap_or(1);
                used.push(i);
                i
            }
        };
        let pod_cidr = match cidr {
            Some(c) => c,
            None => settings
                .cluster_cidr
                .subnets(24)
                .ok()
                .and_then(|mut s| s.nth(index as usize - 1))
                .ok_or_else(|| {
                    LabError::Plan(format!(
                        "no /24 left in the cluster CIDR {} for node {name}",
                        settings.cluster_cidr
                    ))
                })?,
        };
        labels.insert("kubernetes.io/hostname".into(), name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        out.push(NodeInfo {
            ip: nth(settings.node_cidr, 10 + index),
            name,
            index,
            pod_cidr,
            labels,
        });
    }
    for (i, a) in out.iter().enumerate() {
        if let Some(b) = out[i + 1..].iter().find(|b| {
            b.pod_cidr.contains(&a.pod_cidr.network()) || a.pod_cidr.contains(&b.pod_cidr.network())
        }) {
            return Err(LabError::Plan(format!(
                "Node {} and Node {} have overlapping pod CIDRs ({} and {})",
                a.name, b.name, a.pod_cidr, b.pod_cidr
            )));
        }
    }
    Ok(out)
}

/// The pod network the overlay's config names: the smallest network
/// holding every node's podCIDR, widened to a /16 when narrower (flannel's
/// usual Network), so that nodes added later fit.
pub fn pod_network(nodes: &[NodeInfo], settings: &Settings) -> Ipv4Net {
    let Some(first) = nodes.first() else {
        return settings.cluster_cidr;
    };
    let mut net = first.pod_cidr.trunc();
    while !nodes.iter().all(|n| net.contains(&n.pod_cidr)) && net.prefix_len() > 0 {
        net = Ipv4Net::new(net.network(), net.prefix_len() - 1).map_or(net, |n| n.trunc());
    }
    if net.prefix_len() > 16 {
        net = Ipv4Net::new(net.network(), 16).map_or(net, |n| n.trunc());
    }
    net
}

/// flannel's network config for the lab's leases (the file store's `config`).
pub fn overlay_config(nodes: &[NodeInfo], settings: &Settings) -> String {
    let subnet_len = nodes
        .iter()
        .map(|n| n.pod_cidr.prefix_len())
        .max()
        .unwrap_or(24);
    serde_json::json!({
        "Network": pod_network(nodes, settings).to_string(),
        "SubnetLen": subnet_len,
        "Backend": {"Type": settings.backend},
    })
    .to_string()
}
