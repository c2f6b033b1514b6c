//! What the proxy must do on this node for each ServicePort: the
//! backend-independent desired state. Built from the normalized service
//! view and the node's identity, leaving out the Services kube-proxy leaves
//! to others (by label); updated per change set, so a sync costs what
//! changed.
//!
//! Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferry_model::{
    ChangeSet, ClusterState, Endpoint, Kind, NamespacedName, Object, ObjectKey, Protocol,
    ServicePortName, ServicePortView, ServiceType, TrafficPolicy,
};
use ipnet::IpNet;
use serde::Serialize;

use crate::topology;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The nftables family of ferry's table for this IP family.
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    pub fn has(self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == (self == Family::V4)
    }
}

/// Who this node is, as the proxy needs it.
#[derive(Clone, Debug)]
pub struct NodeContext {
    pub node_name: String,
    /// `topology.kubernetes.io/zone` of this node.
    pub zone: Option<String>,
    pub family: Family,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PlannedEndpoint {
    pub ip: IpAddr,
    pub port: u16,
    /// On this node.
    pub local: bool,
}

/// One ServicePort on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePlan {
    pub name: ServicePortName,
    pub protocol: Protocol,
    pub port: u16,
    pub cluster_ips: Vec<IpAddr>,
    pub node_port: Option<u16>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    /// Clients allowed to reach the load-balancer IPs (empty: everyone).
    pub source_ranges: Vec<IpNet>,
    /// `sessionAffinity: ClientIP` timeout.
    pub affinity_timeout: Option<u32>,
    /// For traffic to the ClusterIP (internalTrafficPolicy and topology applied).
    pub cluster_endpoints: Vec<PlannedEndpoint>,
    /// For traffic from outside to NodePorts, external and load-balancer IPs.
    pub external_endpoints: Vec<PlannedEndpoint>,
    /// externalTrafficPolicy Local: external traffic keeps its client IP and
    /// is dropped here when this node has no endpoint.
    pub external_local: bool,
    /// internalTrafficPolicy Local: `cluster_endpoints` are this node's.
    pub internal_local: bool,
    /// The endpoints Cluster traffic policy would use, filled only when both
    /// policies are Local (otherwise `cluster_endpoints` or
    /// `external_endpoints` already are those). kube-proxy's iptables mode
    /// sends pod and host traffic to external destinations of a Local-policy
    /// Service there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_policy_endpoints: Vec<PlannedEndpoint>,
    pub health_check_node_port: Option<u16>,
    /// Usable endpoints on this node (what the health-check node port reports).
    pub local_endpoints: usize,
}

impl ServicePlan {
    /// Traffic to the ClusterIP with no endpoint is rejected at once (ICMP),
    /// as kube-proxy does, instead of timing out.
    pub fn rejects_cluster_traffic(&self) -> bool {
        self.cluster_endpoints.is_empty()
    }

    /// External traffic with no endpoint to go to: rejected for Cluster
    /// policy (no endpoint anywhere), dropped for Local (the load balancer's
    /// health check steers clients to other nodes).
    pub fn external_has_no_endpoints(&self) -> bool {
        self.external_endpoints.is_empty()
    }

    pub fn is_external(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

fn planned(endpoints: Vec<&Endpoint>, node: &str) -> Vec<PlannedEndpoint> {
    let mut out: Vec<PlannedEndpoint> = endpoints
        .into_iter()
        .map(|e| PlannedEndpoint {
            ip: e.ip,
            port: e.port,
            local: e.node_name() == Some(node),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The plan of one ServicePort; `None` when the proxy has nothing to do for
/// it (ExternalName, headless, or no ClusterIP of this family).
pub fn plan_port(view: &ServicePortView, ctx: &NodeContext) -> Option<ServicePlan> {
    if view.service_type == ServiceType::ExternalName {
        return None;
    }
    let family = |ips: &[IpAddr]| -> Vec<IpAddr> {
        ips.iter()
            .copied()
            .filter(|ip| ctx.family.has(ip))
            .collect()
    };
    let cluster_ips = family(&view.cluster_ips);
    if cluster_ips.is_empty() {
        return None;
    }
    let endpoints: Vec<&Endpoint> = view
        .endpoints
        .iter()
        .filter(|e| ctx.family.has(&e.ip))
        .collect();
    let node = ctx.node_name.as_str();
    let zone = ctx.zone.as_deref();
    let cluster_endpoints = match view.internal_traffic_policy {
        TrafficPolicy::Local => planned(topology::local(&endpoints, node), node),
        TrafficPolicy::Cluster => planned(topology::cluster(&endpoints, node, zone), node),
    };
    let local = planned(topology::local(&endpoints, node), node);
    let external_local = view.external_traffic_policy == TrafficPolicy::Local;
    let internal_local = view.internal_traffic_policy == TrafficPolicy::Local;
    let cluster_policy_endpoints = if external_local && internal_local {
        planned(topology::cluster(&endpoints, node, zone), node)
    } else {
        Vec::new()
    };
    let external_endpoints = if external_local {
        local.clone()
    } else {
        planned(topology::cluster(&endpoints, node, zone), node)
    };
    Some(ServicePlan {
        name: view.name.clone(),
        protocol: view.name.protocol,
        port: view.port,
        cluster_ips,
        node_port: view.node_port,
        external_ips: family(&view.external_ips),
        load_balancer_ips: family(&view.load_balancer_ips),
        source_ranges: view
            .load_balancer_source_ranges
            .iter()
            .copied()
            .filter(|n| ctx.family.has(&n.addr()))
            .collect(),
        affinity_timeout: view.session_affinity_timeout,
        cluster_endpoints,
        external_endpoints,
        external_local,
        internal_local,
        cluster_policy_endpoints,
        health_check_node_port: view.health_check_node_port,
        local_endpoints: local.len(),
    })
}

/// `topology.kubernetes.io/zone` of Node `node`.
pub fn node_zone(state: &ClusterState, node: &str) -> Option<String> {
    state.objects_of(Kind::Node).find_map(|o| match o {
        Object::Node(n) if n.metadata.name.as_deref() == Some(node) => n
            .metadata
            .labels
            .as_ref()?
            .get("topology.kubernetes.io/zone")
            .cloned(),
        _ => None,
    })
}

/// Every Node's podCIDRs, sorted: the cluster CIDRs when none are given
/// (see "Settled between issues" in ARCHITECTURE.md).
pub fn node_pod_cidrs(state: &ClusterState) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = state
        .objects_of(Kind::Node)
        .filter_map(|o| match o {
            Object::Node(n) => n.spec.as_ref(),
            _ => None,
        })
        .flat_map(|spec| {
            spec.pod_cidrs
                .iter()
                .flatten()
                .chain(spec.pod_cidr.as_ref())
        })
        .filter_map(|c| c.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The whole desired proxy state of a node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyPlan {
    pub services: BTreeMap<ServicePortName, Arc<ServicePlan>>,
}

/// What a plan update changed: the ServicePorts whose plan differs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanChanges {
    pub changed: Vec<ServicePortName>,
}

/// Services with this label are handled by another proxy (any value).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The EndpointSlice controller puts this label on the slices of headless
/// Services; kube-proxy ignores Services carrying it too.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Is this Service for this proxy? kube-proxy watches Services through the
/// label selector `!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless`;
/// the filter lives here, not in the model, because DNS still serves them.
fn proxied(state: &ClusterState, service: &NamespacedName) -> bool {
    let key = ObjectKey {
        kind: Kind::Service,
        name: service.clone(),
    };
    let Some(Object::Service(svc)) = state.get(&key) else {
        return true;
    };
    svc.metadata.labels.as_ref().is_none_or(|labels| {
        !labels.contains_key(SERVICE_PROXY_NAME_LABEL) && !labels.contains_key(HEADLESS_LABEL)
    })
}

pub fn plan(state: &ClusterState, ctx: &NodeContext) -> ProxyPlan {
    ProxyPlan {
        services: state
            .service_ports()
            .filter(|v| proxied(state, &v.name.service()))
            .filter_map(|v| plan_port(v, ctx))
            .map(|p| (p.name.clone(), Arc::new(p)))
            .collect(),
    }
}

impl ProxyPlan {
    /// Replans only the ServicePorts a change set names (and every port of a
    /// Service whose object changed: a label alone can take it in or out of
    /// the proxy's hands); returns those whose plan actually changed.
    pub fn update(
        &mut self,
        state: &ClusterState,
        changes: &ChangeSet,
        ctx: &NodeContext,
    ) -> PlanChanges {
        let mut names: BTreeSet<&ServicePortName> =
            changes.service_ports.union(&changes.endpoints).collect();
        for key in changes.objects.iter().filter(|k| k.kind == Kind::Service) {
            names.extend(state.ports_of(&key.name).map(|v| &v.name));
            // The smallest name of this Service's ports: empty port name, TCP.
            let first = ServicePortName {
                namespace: key.name.namespace.clone(),
                name: key.name.name.clone(),
                port: "".into(),
                protocol: Protocol::Tcp,
            };
            names.extend(
                self.services
                    .range(first..)
                    .map(|(n, _)| n)
                    .take_while(|n| n.service() == key.name),
            );
        }
        let names: Vec<ServicePortName> = names.into_iter().cloned().collect();
        let mut changed = Vec::new();
        for name in &names {
            let new = state
                .service_port(name)
                .filter(|v| proxied(state, &v.name.service()))
                .and_then(|v| plan_port(v, ctx));
            let old = self.services.get(name);
            if old.map(AsRef::as_ref) == new.as_ref() {
                continue;
            }
            match new {
                Some(p) => {
                    self.services.insert(name.clone(), Arc::new(p));
                }
                None => {
                    self.services.remove(name);
                }
            }
            changed.push(name.clone());
        }
        PlanChanges { changed }
    }
}
