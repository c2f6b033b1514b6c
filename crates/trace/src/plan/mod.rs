//! The model's trace: from the cluster state, the lab's topology and the
//! pod network's leases, what must happen to a request from FROM to TO,
//! hop by hop, with the kernel state each hop needs as checks (left
//! unchecked here; `kernel` fills them in).
//!
//! Every decision is the component's own: the proxy's per-node plan
//! (`ferry_proxy::plan`), its iptables rendering
//! (`ferry_proxy::iptables::rules`), the overlay's peer routes
//! (`ferry_overlay::peers`); this module only asks them and explains.
//!
//! Pure.

mod dns;
mod ingress;
mod route;
mod service;

use std::net::{IpAddr, Ipv4Addr};

use ferry_model::ClusterState;
use ferry_overlay::config::BackendConfig;
use ferry_overlay::lease::Lease;
use ipnet::{IpNet, Ipv4Net};

use crate::resolve::{From, Resolv, To};
use crate::{Hop, HopKind, Peer, ProxyMode, Trace, TraceError};

/// A lab node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: Option<Ipv4Net>,
    pub netns: String,
}

/// A lab pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub ip: IpAddr,
    pub netns: String,
    pub host_network: bool,
    pub terminating: bool,
}

/// Where things live: nodes, pods, the outside client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    pub nodes: Vec<NodeInfo>,
    pub pods: Vec<PodInfo>,
    /// The outside client's namespace and address.
    pub outside: Option<(String, IpAddr)>,
}

impl Topology {
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The live (not terminating) pod with this address, else any.
    pub fn pod_with_ip(&self, ip: IpAddr) -> Option<&PodInfo> {
        let mut with = self.pods.iter().filter(|p| p.ip == ip && !p.host_network);
        let all: Vec<&PodInfo> = with.by_ref().collect();
        all.iter().find(|p| !p.terminating).or(all.first()).copied()
    }

    pub fn node_with_ip(&self, ip: IpAddr) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| IpAddr::V4(n.ip) == ip)
    }

    /// The node that holds `ip`: a pod's node, the node whose podCIDR
    /// holds it, or the node with that address.
    pub fn holder(&self, ip: IpAddr) -> Option<&NodeInfo> {
        if let Some(p) = self.pod_with_ip(ip) {
            return self.node(&p.node);
        }
        if let IpAddr::V4(v4) = ip
            && let Some(n) = self
                .nodes
                .iter()
                .find(|n| n.pod_cidr.is_some_and(|c| c.contains(&v4)))
        {
            return Some(n);
        }
        self.node_with_ip(ip)
    }

    /// The node network: the smallest prefix (at most /24) holding every
    /// node's address.
    pub fn underlay(&self) -> Option<Ipv4Net> {
        let first = self.nodes.first()?;
        let mut net = Ipv4Net::new(first.ip, 24).ok()?.trunc();
        while !self.nodes.iter().all(|n| net.contains(&n.ip)) {
            net = net.supernet()?;
        }
        Some(net)
    }
}

/// The pod network: its backend and the leases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    pub backend: BackendConfig,
    pub leases: Vec<Lease>,
    /// The whole pod network (flannel's `Network`), which the overlay's
    /// masquerade rules read.
    pub pod_network: Option<Ipv4Net>,
}

/// Everything a trace is planned from.
pub struct Inputs<'a> {
    pub state: &'a ClusterState,
    pub topology: &'a Topology,
    pub network: &'a Network,
    pub mode: ProxyMode,
    /// The resolver of FROM (a pod's resolv.conf; nodes and the outside
    /// get the cluster-first settings of namespace `default`).
    pub resolv: Resolv,
    /// The ingress gateway's address (`--ingress`): a URL is sent there,
    /// with its host in the Host header.
    pub ingress: Option<std::net::SocketAddr>,
}

impl Inputs<'_> {
    /// The pod CIDRs, as the agents take them: every Node's podCIDR.
    pub fn cluster_cidrs(&self) -> Vec<IpNet> {
        ferry_proxy::node_pod_cidrs(self.state)
    }

    pub(crate) fn zone_of(&self, node: &str) -> Option<String> {
        ferry_proxy::node_zone(self.state, node)
    }
}

/// Who FROM is, in the lab.
pub fn locate(topology: &Topology, from: &From) -> Result<Peer, TraceError> {
    let unknown = |what: String, why: &str| TraceError::UnknownFrom {
        what,
        why: why.into(),
    };
    Ok(match from {
        From::Pod { namespace, name } => {
            let p = topology
                .pods
                .iter()
                .find(|p| &p.namespace == namespace && &p.name == name)
                .ok_or_else(|| {
                    unknown(format!("pod/{namespace}/{name}"), "no such pod in the lab")
                })?;
            Peer {
                kind: "pod",
                name: format!("{namespace}/{name}"),
                ip: p.ip,
                node: Some(p.node.clone()),
                netns: Some(p.netns.clone()),
            }
        }
        From::Node(name) => {
            let n = topology
                .node(name)
                .ok_or_else(|| unknown(format!("node/{name}"), "no such node in the lab"))?;
            Peer {
                kind: "node",
                name: name.clone(),
                ip: IpAddr::V4(n.ip),
                node: Some(name.clone()),
                netns: Some(n.netns.clone()),
            }
        }
        From::Outside => {
            let (ns, ip) = topology
                .outside
                .clone()
                .ok_or_else(|| unknown("outside".into(), "the lab has no outside namespace"))?;
            Peer {
                kind: "outside",
                name: "outside".into(),
                ip,
                node: None,
                netns: Some(ns),
            }
        }
        From::Address(ip) => {
            if let Some(p) = topology.pod_with_ip(*ip) {
                return locate(
                    topology,
                    &From::Pod {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                    },
                );
            }
            if let Some(n) = topology.node_with_ip(*ip) {
                return locate(topology, &From::Node(n.name.clone()));
            }
            Peer {
                kind: "address",
                name: ip.to_string(),
                ip: *ip,
                node: None,
                netns: None,
            }
        }
    })
}

/// The model's trace of a request from `from` to `to`.
pub fn plan(inputs: &Inputs, from: &From, to: &To) -> Result<Trace, TraceError> {
    let peer = locate(inputs.topology, from)?;
    let mut trace = Trace {
        format: 1,
        from: peer.clone(),
        to: match &to.scheme {
            Some(s) => format!("{s}://{}:{}{}", to.host, to.port, to.path),
            None => format!("{}:{}", to.host, to.port),
        },
        destination: None,
        proxy_mode: inputs.mode,
        backend: inputs.network.backend.kind.clone(),
        hops: Vec::new(),
        mismatches: 0,
        kernel_checked: false,
        probe: None,
    };
    if let (Some(_), Some(via)) = (&to.scheme, inputs.ingress) {
        trace.destination = Some(via.to_string());
        let node = inputs
            .topology
            .node_with_ip(via.ip())
            .map(|n| n.name.clone());
        let table = ingress::table(inputs);
        push_ingress(&mut trace, inputs, &peer, &table, to, Some(via), node);
        return Ok(trace);
    }
    let dest: IpAddr = match to.host.parse() {
        Ok(ip) => ip,
        Err(_) => {
            let (hop, ip) = dns::hop(inputs, &peer, &to.host);
            trace.hops.push(hop);
            match ip {
                Some(ip) => ip,
                None => {
                    // Not a cluster name: an Ingress may route it.
                    let table = ingress::table(inputs);
                    if to.scheme.is_some() && ingress::routes_host(&table, &to.host) {
                        push_ingress(&mut trace, inputs, &peer, &table, to, None, None);
                    }
                    return Ok(trace);
                }
            }
        }
    };
    trace.destination = Some(std::net::SocketAddr::new(dest, to.port).to_string());
    let service = service::hop(inputs, &peer, dest, to.port);
    let (entry, targets, masqueraded) = match service {
        Some(s) => {
            let entry = s.entry;
            let targets: Vec<IpAddr> = s.hop.endpoints.iter().map(|c| c.ip).collect();
            let masq = s.hop.endpoints.iter().any(|c| c.masquerade.is_some());
            let dnat = s.dnat;
            trace.hops.push(s.hop);
            if !dnat {
                return Ok(trace);
            }
            (entry, targets, Some(masq))
        }
        None => (peer.node.clone(), vec![dest], None),
    };
    let Some(entry) = entry else {
        let mut hop = Hop::new(HopKind::Routing, format!("route to {dest}"));
        hop.decided.push(format!(
            "{} is not on a lab node: the lab's nodes route only what reaches them (NodePorts, load-balancer and external IPs)",
            peer.name
        ));
        trace.hops.push(hop);
        return Ok(trace);
    };
    let mut overlay_masq = false;
    for ip in &targets {
        let hop = route::hop(inputs, &entry, *ip);
        // What the proxy masquerades (mark 0x4000) the overlay leaves alone.
        let proxy_masq = masqueraded == Some(true);
        if !proxy_masq && route::overlay_masquerades(inputs, &entry, peer.ip, *ip) {
            overlay_masq = true;
        }
        trace.hops.push(hop);
    }
    trace.hops.push(route::reply(
        &peer,
        dest,
        to.port,
        masqueraded,
        overlay_masq,
    ));
    Ok(trace)
}

/// The ingress hop, then (when the gateway's node is known) the route from
/// that node to each endpoint, and the reply.
fn push_ingress(
    trace: &mut Trace,
    inputs: &Inputs,
    peer: &Peer,
    table: &ferry_ingress::RouteTable,
    to: &To,
    via: Option<std::net::SocketAddr>,
    node: Option<String>,
) {
    let i = ingress::hop(inputs, table, to, via, node.as_deref());
    trace.hops.push(i.hop);
    // No endpoint (404, 503): the gateway answers itself.
    let Some(node) = node.filter(|_| !i.targets.is_empty()) else {
        return;
    };
    for ip in &i.targets {
        trace.hops.push(route::hop(inputs, &node, *ip));
    }
    let mut reply = Hop::new(HopKind::Reply, format!("reply to {}", peer.name));
    reply.node = Some(node.clone());
    reply.decided.push(format!(
        "the gateway on {node} proxies: the client's connection ends there, the endpoint answers the gateway's own connection, and the gateway writes the response back to {}",
        peer.ip
    ));
    reply.path = vec![
        "endpoint -> gateway".into(),
        format!("gateway -> {}", peer.ip),
    ];
    trace.hops.push(reply);
}
