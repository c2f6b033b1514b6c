//! The normalized service view that the proxy, DNS and ingress share: one
//! [`ServiceView`] per Service and one [`ServicePortView`] per ServicePort,
//! each with its endpoints merged from every EndpointSlice of the service.
//!
//! Pure: built from a Service and its slices; deterministic ordering.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::service::Service;
use crate::slice::EndpointSlice;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::object::{Name, NamespacedName};

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours), as in Kubernetes.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// Parses a validated protocol; absent means TCP, as the API server defaults it.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

impl ServiceType {
    fn parse(s: Option<&str>) -> ServiceType {
        match s {
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => ServiceType::ExternalName,
            _ => ServiceType::ClusterIP,
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

impl TrafficPolicy {
    fn parse(s: Option<&str>) -> TrafficPolicy {
        if s == Some("Local") {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// `namespace/name:port-name` plus protocol: what kube-proxy calls a
/// ServicePortName. The port name is empty for a service's single unnamed port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServicePortName {
    pub namespace: Name,
    pub name: Name,
    pub port: Name,
    pub protocol: Protocol,
}

impl ServicePortName {
    pub fn service(&self) -> NamespacedName {
        NamespacedName {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}:{}/{}",
            self.namespace, self.name, self.port, self.protocol
        )
    }
}

/// One endpoint of one service port. The details a few readers want
/// (node, zone, hostname, hints, Pod) are read from the slice entry it
/// came from, not copied: a view holds one of these per endpoint
/// (160,000 at 20,000 Services x 8), 96 -> 40 B.
#[derive(Clone)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    from: SliceEntry,
}

/// Where an endpoint's details are: its slice, and its place in the slice.
#[derive(Clone)]
struct SliceEntry {
    slice: Arc<EndpointSlice>,
    index: u32,
}

impl SliceEntry {
    fn get(&self) -> Option<&crate::slice::Endpoint> {
        self.slice.endpoints.as_deref()?.get(self.index as usize)
    }

    fn node_name(&self) -> Option<&str> {
        self.get()?.node_name.as_deref()
    }

    fn zone(&self) -> Option<&str> {
        self.get()?.zone.as_deref()
    }

    fn hostname(&self) -> Option<&str> {
        self.get()?.hostname.as_deref()
    }

    fn pod(&self) -> Option<&str> {
        self.get().and_then(pod_name)
    }

    fn zone_hints(&self) -> impl Iterator<Item = &str> + Clone {
        let hints = self.get().and_then(|e| e.hints.as_deref());
        hints
            .and_then(|h| h.for_zones.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|z| z.name.as_str())
    }

    fn node_hints(&self) -> impl Iterator<Item = &str> + Clone {
        let hints = self.get().and_then(|e| e.hints.as_deref());
        hints
            .and_then(|h| h.for_nodes.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|n| n.name.as_str())
    }
}

impl Endpoint {
    /// The node the endpoint is on (`nodeName`).
    pub fn node_name(&self) -> Option<&str> {
        self.from.node_name()
    }

    pub fn zone(&self) -> Option<&str> {
        self.from.zone()
    }

    pub fn hostname(&self) -> Option<&str> {
        self.from.hostname()
    }

    /// The Pod behind the endpoint (`targetRef`), when it is one.
    pub fn pod(&self) -> Option<&str> {
        self.from.pod()
    }

    /// `hints.forZones`: zones that should use this endpoint under
    /// topology-aware routing (none without hints).
    pub fn zone_hints(&self) -> impl Iterator<Item = &str> + Clone {
        self.from.zone_hints()
    }

    /// `hints.forNodes` (PreferSameNode).
    pub fn node_hints(&self) -> impl Iterator<Item = &str> + Clone {
        self.from.node_hints()
    }

    fn wire(&self) -> EndpointWire<'_> {
        EndpointWire {
            ip: self.ip,
            port: self.port,
            ready: self.ready,
            serving: self.serving,
            terminating: self.terminating,
            node_name: self.node_name(),
            zone: self.zone(),
            hostname: self.hostname(),
            zone_hints: self.zone_hints().collect(),
            node_hints: self.node_hints().collect(),
            pod: self.pod(),
        }
    }
}

/// An endpoint as `ferry services --json` shows it (and as equality and
/// debug output see it).
#[derive(Debug, PartialEq, Serialize)]
struct EndpointWire<'a> {
    ip: IpAddr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    zone_hints: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    node_hints: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Endpoint) -> bool {
        (
            self.ip,
            self.port,
            self.ready,
            self.serving,
            self.terminating,
        ) == (
            other.ip,
            other.port,
            other.ready,
            other.serving,
            other.terminating,
        ) && (Arc::ptr_eq(&self.from.slice, &other.from.slice)
            && self.from.index == other.from.index
            || self.wire() == other.wire())
    }
}

impl Eq for Endpoint {}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.wire().fmt(f)
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(s)
    }
}

/// Everything the data plane needs about one ServicePort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePortView {
    pub name: ServicePortName,
    pub service_type: ServiceType,
    pub port: u16,
    pub target_port: TargetPort,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Primary family first; empty for headless and ExternalName services.
    pub cluster_ips: Vec<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` in VIP mode (Proxy-mode addresses
    /// are the load balancer's own and are not captured on nodes, as in kube-proxy).
    pub load_balancer_ips: Vec<IpAddr>,
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `Some(timeout seconds)` for `sessionAffinity: ClientIP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity_timeout: Option<u32>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    /// Sorted by IP then port; one entry per IP:port even when several slices list it.
    pub endpoints: Arc<[Endpoint]>,
}

impl ServicePortView {
    /// The part of the view that is not endpoints, for change detection.
    pub(crate) fn same_config(&self, other: &ServicePortView) -> bool {
        let mut a = self.clone();
        a.endpoints = other.endpoints.clone();
        &a == other
    }
}

/// A service port as DNS SRV records and summaries show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortSummary {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// One address backing a service, regardless of port (for headless DNS).
/// Its details are read from its slice entry, as an [`Endpoint`]'s.
#[derive(Clone)]
pub struct EndpointAddress {
    pub ip: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    from: SliceEntry,
}

impl EndpointAddress {
    pub fn hostname(&self) -> Option<&str> {
        self.from.hostname()
    }

    pub fn node_name(&self) -> Option<&str> {
        self.from.node_name()
    }

    pub fn pod(&self) -> Option<&str> {
        self.from.pod()
    }

    fn wire(&self) -> AddressWire<'_> {
        AddressWire {
            ip: self.ip,
            ready: self.ready,
            serving: self.serving,
            terminating: self.terminating,
            hostname: self.hostname(),
            node_name: self.node_name(),
            pod: self.pod(),
        }
    }
}

#[derive(Debug, PartialEq, Serialize)]
struct AddressWire<'a> {
    ip: IpAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
}

impl PartialEq for EndpointAddress {
    fn eq(&self, other: &EndpointAddress) -> bool {
        self.wire() == other.wire()
    }
}

impl Eq for EndpointAddress {}

impl fmt::Debug for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.wire().fmt(f)
    }
}

impl Serialize for EndpointAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(s)
    }
}

/// Service-level facts: what DNS answers for the service name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    pub name: NamespacedName,
    pub service_type: ServiceType,
    pub headless: bool,
    pub cluster_ips: Vec<IpAddr>,
    pub ip_families: Vec<IpFamily>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    pub publish_not_ready_addresses: bool,
    pub ports: Vec<PortSummary>,
    /// Ports named in the service's EndpointSlices (headless SRV records use these).
    pub endpoint_ports: Vec<PortSummary>,
    /// Every address of every slice, one per IP, sorted.
    pub addresses: Vec<EndpointAddress>,
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

struct Conditions {
    ready: bool,
    serving: bool,
    terminating: bool,
}

fn conditions(ep: &crate::slice::Endpoint) -> Conditions {
    let c = ep.conditions.as_ref();
    // As the EndpointSlice API documents: a missing `ready` or `serving`
    // means ready; a missing `terminating` means not terminating.
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    Conditions {
        ready,
        serving: c.and_then(|c| c.serving).unwrap_or(ready),
        terminating: c.and_then(|c| c.terminating).unwrap_or(false),
    }
}

fn pod_name(ep: &crate::slice::Endpoint) -> Option<&str> {
    ep.target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .and_then(|r| r.name.as_deref())
}

/// Builds the views of one Service from the service and its slices (in any
/// order; they are sorted here by their position in `slices`, which callers
/// keep in slice-name order as kube-proxy does).
pub(crate) fn build(
    svc: &Service,
    slices: &[&Arc<EndpointSlice>],
) -> (ServiceView, Vec<ServicePortView>) {
    let namespace: Name = svc.metadata.namespace.as_deref().unwrap_or_default().into();
    let name: Name = svc.metadata.name.as_deref().unwrap_or_default().into();
    let spec = svc.spec.clone().unwrap_or_default();
    let service_type = ServiceType::parse(spec.type_.as_deref());
    let headless = spec.cluster_ip.as_deref() == Some("None");

    let mut cluster_ips: Vec<IpAddr> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|s| parse_ip(s)).collect(),
        _ => spec
            .cluster_ip
            .as_deref()
            .and_then(parse_ip)
            .into_iter()
            .collect(),
    };
    if service_type == ServiceType::ExternalName {
        cluster_ips.clear();
    }
    let mut ip_families: Vec<IpFamily> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(IpFamily::IPv4),
            "IPv6" => Some(IpFamily::IPv6),
            _ => None,
        })
        .collect();
    if ip_families.is_empty() {
        ip_families = cluster_ips
            .iter()
            .map(|ip| {
                if ip.is_ipv4() {
                    IpFamily::IPv4
                } else {
                    IpFamily::IPv6
                }
            })
            .collect();
    }

    let mut external_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|s| parse_ip(s))
        .collect();
    external_ips.sort();
    external_ips.dedup();
    let mut load_balancer_ips: Vec<IpAddr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|i| i.ip.as_deref().and_then(parse_ip))
        .collect();
    load_balancer_ips.sort();
    load_balancer_ips.dedup();
    let mut source_ranges: Vec<IpNet> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .filter_map(|s| s.trim().parse::<IpNet>().ok())
        .map(|n| n.trunc())
        .collect();
    source_ranges.sort();
    source_ranges.dedup();
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
    });
    let external_traffic_policy = TrafficPolicy::parse(spec.external_traffic_policy.as_deref());
    let internal_traffic_policy = TrafficPolicy::parse(spec.internal_traffic_policy.as_deref());
    let health_check_node_port = (service_type == ServiceType::LoadBalancer
        && external_traffic_policy == TrafficPolicy::Local)
        .then(|| spec.health_check_node_port.and_then(port_u16))
        .flatten();
    let exposes_node_ports = matches!(
        service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );

    let ports: Vec<PortSummary> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PortSummary {
                name: p.name.clone().unwrap_or_default(),
                protocol: Protocol::parse(p.protocol.as_deref())?,
                port: port_u16(p.port)?,
            })
        })
        .collect();

    let port_views = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = Protocol::parse(p.protocol.as_deref())?;
            let port = port_u16(p.port)?;
            let port_name = p.name.clone().unwrap_or_default();
            let target_port = match &p.target_port {
                Some(IntOrString::Int(n)) => TargetPort::Number(port_u16(*n).unwrap_or(port)),
                Some(IntOrString::String(s)) => TargetPort::Name(s.clone()),
                None => TargetPort::Number(port),
            };
            Some(ServicePortView {
                endpoints: port_endpoints(slices, &port_name, protocol).into(),
                name: ServicePortName {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    port: port_name.into(),
                    protocol,
                },
                service_type,
                port,
                target_port,
                app_protocol: p.app_protocol.clone(),
                cluster_ips: cluster_ips.clone(),
                node_port: if exposes_node_ports {
                    p.node_port.and_then(port_u16)
                } else {
                    None
                },
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                load_balancer_source_ranges: source_ranges.clone(),
                session_affinity_timeout: affinity,
                external_traffic_policy,
                internal_traffic_policy,
                health_check_node_port,
                traffic_distribution: spec.traffic_distribution.clone(),
            })
        })
        .collect();

    let view = ServiceView {
        name: NamespacedName::new(namespace, name),
        service_type,
        headless,
        cluster_ips,
        ip_families,
        external_name: (service_type == ServiceType::ExternalName)
            .then(|| spec.external_name.clone())
            .flatten(),
        publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        ports,
        endpoint_ports: endpoint_ports(slices),
        addresses: addresses(slices),
    };
    (view, port_views)
}

fn ip_slices<'a>(
    slices: &'a [&'a Arc<EndpointSlice>],
) -> impl Iterator<Item = &'a Arc<EndpointSlice>> {
    // FQDN slices are deprecated and ignored by kube-proxy and CoreDNS alike.
    slices
        .iter()
        .copied()
        .filter(|s| matches!(s.address_type.as_str(), "IPv4" | "IPv6"))
}

/// Each endpoint of `slice` with its entry (where its details are read).
fn entries(
    slice: &Arc<EndpointSlice>,
) -> impl Iterator<Item = (&crate::slice::Endpoint, SliceEntry)> {
    slice.endpoints.iter().flatten().enumerate().map(|(i, ep)| {
        let entry = SliceEntry {
            slice: slice.clone(),
            index: i as u32,
        };
        (ep, entry)
    })
}

/// Endpoints of one service port: every slice port with the same name and
/// protocol contributes its endpoints. Slice ports without a port number are
/// ignored, as kube-proxy does. When the same IP:port appears in several
/// slices, a ready entry wins over a not-ready one.
fn port_endpoints(
    slices: &[&Arc<EndpointSlice>],
    port_name: &str,
    protocol: Protocol,
) -> Vec<Endpoint> {
    let mut by_addr: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in ip_slices(slices) {
        for sp in slice.ports.iter().flatten() {
            if sp.name.as_deref().unwrap_or("") != port_name
                || Protocol::parse(sp.protocol.as_deref()) != Some(protocol)
            {
                continue;
            }
            let Some(port) = sp.port.and_then(port_u16) else {
                continue;
            };
            for (ep, from) in entries(slice) {
                // kube-proxy uses the first address; the API says the rest are fungible.
                let Some(ip) = ep.addresses.first().and_then(crate::slice::Address::ip) else {
                    continue;
                };
                let c = conditions(ep);
                let endpoint = Endpoint {
                    ip,
                    port,
                    ready: c.ready,
                    serving: c.serving,
                    terminating: c.terminating,
                    from,
                };
                match by_addr.get(&(ip, port)) {
                    Some(existing) if existing.ready || !endpoint.ready => {}
                    _ => {
                        by_addr.insert((ip, port), endpoint);
                    }
                }
            }
        }
    }
    by_addr.into_values().collect()
}

fn endpoint_ports(slices: &[&Arc<EndpointSlice>]) -> Vec<PortSummary> {
    let mut out: BTreeMap<(String, Protocol, u16), ()> = BTreeMap::new();
    for slice in ip_slices(slices) {
        for sp in slice.ports.iter().flatten() {
            if let (Some(protocol), Some(port)) = (
                Protocol::parse(sp.protocol.as_deref()),
                sp.port.and_then(port_u16),
            ) {
                out.insert((sp.name.clone().unwrap_or_default(), protocol, port), ());
            }
        }
    }
    out.into_keys()
        .map(|(name, protocol, port)| PortSummary {
            name,
            protocol,
            port,
        })
        .collect()
}

fn addresses(slices: &[&Arc<EndpointSlice>]) -> Vec<EndpointAddress> {
    let mut by_ip: BTreeMap<IpAddr, EndpointAddress> = BTreeMap::new();
    for slice in ip_slices(slices) {
        for (ep, from) in entries(slice) {
            let c = conditions(ep);
            for ip in ep.addresses.iter().filter_map(crate::slice::Address::ip) {
                let address = EndpointAddress {
                    ip,
                    ready: c.ready,
                    serving: c.serving,
                    terminating: c.terminating,
                    from: from.clone(),
                };
                match by_ip.get(&ip) {
                    Some(existing) if existing.ready || !address.ready => {}
                    _ => {
                        by_ip.insert(ip, address);
                    }
                }
            }
        }
    }
    by_ip.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_endpoint_holds_its_slice_entry_not_copies_of_its_details() {
        assert!(std::mem::size_of::<Endpoint>() <= 40);
        assert!(std::mem::size_of::<EndpointAddress>() <= 40);
    }
}
