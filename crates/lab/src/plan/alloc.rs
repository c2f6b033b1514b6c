//! Service addresses, as the API server and a cloud controller would give
//! them: ClusterIPs from the service CIDR, NodePorts from the node-port
//! range, health-check node ports, LoadBalancer IPs from the lab's pool.
//! Explicit values are kept (and checked); earlier allocations stay stable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferry_model::Service;
use ferry_model::{NamespacedName, Object};
use serde::{Deserialize, Serialize};

use super::{Inputs, Settings};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub cluster_ip: Option<IpAddr>,
    /// By `port/PROTOCOL`.
    pub node_ports: BTreeMap<String, u16>,
    pub health_check_node_port: Option<u16>,
    pub lb_ip: Option<IpAddr>,
}

fn port_key(port: i32, protocol: Option<&str>) -> String {
    format!("{port}/{}", protocol.unwrap_or("TCP"))
}

fn wants_node_ports(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    match spec.and_then(|s| s.type_.as_deref()) {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec
            .and_then(|s| s.allocate_load_balancer_node_ports)
            .unwrap_or(true),
        _ => false,
    }
}

type Errors = Vec<(NamespacedName, String)>;

/// Allocates addresses for every Service in `inputs`. Services with an
/// allocation error get none and are listed with the reason.
pub fn allocate(
    inputs: &Inputs,
    prev: &BTreeMap<NamespacedName, Allocation>,
    settings: &Settings,
) -> (BTreeMap<NamespacedName, Allocation>, Errors) {
    let services: Vec<(NamespacedName, &Service)> = inputs
        .values()
        .filter_map(|o| match o {
            Object::Service(s) => Some((o.key().name, s.as_ref())),
            _ => None,
        })
        .collect();
    let mut errors = Vec::new();
    // Who holds what: earlier allocations of services that still exist
    // come first, so a new Service cannot take an address already in use.
    let mut used_ips: BTreeMap<IpAddr, NamespacedName> = BTreeMap::new();
    let mut used_ports: BTreeMap<u16, NamespacedName> = BTreeMap::new();
    let mut used_lb: BTreeMap<IpAddr, NamespacedName> = BTreeMap::new();
    for (key, _) in &services {
        if let Some(old) = prev.get(key) {
            if let Some(ip) = old.cluster_ip {
                used_ips.insert(ip, key.clone());
            }
            for n in old
                .node_ports
                .values()
                .chain(old.health_check_node_port.iter())
            {
                used_ports.insert(*n, key.clone());
            }
            if let Some(ip) = old.lb_ip {
                used_lb.insert(ip, key.clone());
            }
        }
    }
    let taken = |m: &BTreeMap<IpAddr, NamespacedName>, ip: &IpAddr, key: &NamespacedName| {
        m.get(ip).is_some_and(|o| o != key)
    };
    let port_taken = |m: &BTreeMap<u16, NamespacedName>, n: &u16, key: &NamespacedName| {
        m.get(n).is_some_and(|o| o != key)
    };
    let mut out: BTreeMap<NamespacedName, Allocation> = BTreeMap::new();
    let range = settings.node_port_min..=settings.node_port_max;

    // Pass 1: explicit values, then what each service already had.
    for (key, svc) in &services {
        let spec = svc.spec.clone().unwrap_or_default();
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let old = prev.get(key).cloned().unwrap_or_default();
        let mut a = Allocation::default();
        let mut fail = |why: String| errors.push((key.clone(), why));
        match spec.cluster_ip.as_deref() {
            Some("None") => {}
            Some(ip) if !ip.is_empty() => match ip.parse::<IpAddr>() {
                Ok(ip) if !matches!(ip, IpAddr::V4(v4) if settings.service_cidr.contains(&v4)) => {
                    fail(format!(
                        "spec.clusterIP: {ip} is not in the lab's service CIDR {}",
                        settings.service_cidr
                    ))
                }
                Ok(ip) if taken(&used_ips, &ip, key) => fail(format!(
                    "spec.clusterIP: {ip} is already allocated to another Service"
                )),
                Ok(ip) => {
                    used_ips.insert(ip, key.clone());
                    a.cluster_ip = Some(ip);
                }
                Err(_) => fail(format!("spec.clusterIP: {ip:?} is not an IP address")),
            },
            _ => {
                if let Some(ip) = old.cluster_ip.filter(|ip| !taken(&used_ips, ip, key)) {
                    used_ips.insert(ip, key.clone());
                    a.cluster_ip = Some(ip);
                }
            }
        }
        if wants_node_ports(svc) {
            for (i, p) in spec.ports.iter().flatten().enumerate() {
                let k = port_key(p.port, p.protocol.as_deref());
                let explicit = p.node_port.filter(|n| *n != 0);
                let chosen = match explicit {
                    Some(n) => {
                        let n = u16::try_from(n).unwrap_or(0);
                        if !range.contains(&n) {
                            fail(format!(
                                "spec.ports[{i}].nodePort: {n} is not in the node-port range {}-{}",
                                settings.node_port_min, settings.node_port_max
                            ));
                            continue;
                        }
                        if port_taken(&used_ports, &n, key) {
                            fail(format!(
                                "spec.ports[{i}].nodePort: {n} is already allocated"
                            ));
                            continue;
                        }
                        Some(n)
                    }
                    None => old
                        .node_ports
                        .get(&k)
                        .copied()
                        .filter(|n| !port_taken(&used_ports, n, key)),
                };
                if let Some(n) = chosen {
                    used_ports.insert(n, key.clone());
                    a.node_ports.insert(k, n);
                }
            }
        }
        let local_lb =
            ty == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local");
        if local_lb {
            let hc = spec
                .health_check_node_port
                .filter(|n| *n != 0)
                .and_then(|n| u16::try_from(n).ok())
                .or(old.health_check_node_port)
                .filter(|n| !port_taken(&used_ports, n, key));
            if let Some(n) = hc {
                used_ports.insert(n, key.clone());
                a.health_check_node_port = Some(n);
            }
        }
        if ty == "LoadBalancer" {
            let recorded = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|i| i.first())
                .and_then(|i| i.ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            if let Some(ip) = recorded
                .or(old.lb_ip)
                .filter(|ip| !taken(&used_lb, ip, key))
            {
                used_lb.insert(ip, key.clone());
                a.lb_ip = Some(ip);
            }
        }
        out.insert(key.clone(), a);
    }
    let failed: BTreeSet<NamespacedName> = errors.iter().map(|(k, _)| k.clone()).collect();
    out.retain(|k, _| !failed.contains(k));

    // Pass 2: fill in what is missing.
    let mut free_ips = settings
        .service_cidr
        .hosts()
        .skip(9)
        .map(IpAddr::V4)
        .filter(|ip| !used_ips.contains_key(ip));
    let mut free_ports = range.clone().filter(|n| !used_ports.contains_key(n));
    let mut free_lb = settings
        .lb_pool
        .hosts()
        .map(IpAddr::V4)
        .filter(|ip| !used_lb.contains_key(ip));
    for (key, svc) in &services {
        let Some(a) = out.get_mut(key) else { continue };
        let spec = svc.spec.clone().unwrap_or_default();
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        let mut missing =
            |what: &str| errors.push((key.clone(), format!("no {what} left to allocate")));
        if a.cluster_ip.is_none() && spec.cluster_ip.as_deref() != Some("None") {
            match free_ips.next() {
                Some(ip) => a.cluster_ip = Some(ip),
                None => missing("ClusterIP"),
            }
        }
        if wants_node_ports(svc) {
            for p in spec.ports.iter().flatten() {
                let k = port_key(p.port, p.protocol.as_deref());
                if let std::collections::btree_map::Entry::Vacant(e) = a.node_ports.entry(k) {
                    match free_ports.next() {
                        Some(n) => {
                            e.insert(n);
                        }
                        None => missing("NodePort"),
                    }
                }
            }
        }
        if ty == "LoadBalancer"
            && spec.external_traffic_policy.as_deref() == Some("Local")
            && a.health_check_node_port.is_none()
        {
            match free_ports.next() {
                Some(n) => a.health_check_node_port = Some(n),
                None => missing("health-check node port"),
            }
        }
        if ty == "LoadBalancer" && a.lb_ip.is_none() {
            match free_lb.next() {
                Some(ip) => a.lb_ip = Some(ip),
                None => missing("LoadBalancer IP"),
            }
        }
    }
    (out, errors)
}
