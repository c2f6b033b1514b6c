//! The service proxy hop: which ServicePort captures the destination (and
//! as what: ClusterIP, NodePort, LoadBalancer or external IP), on which
//! node, what ferry-proxy's plan for that node decides (traffic policies,
//! topology, terminating fallback, affinity), every candidate endpoint
//! with its rule probability and share, masquerade and why, and the
//! rules or map elements the kernel must hold for it.
//!
//! Pure.

use std::net::IpAddr;

use ferry_model::{Protocol, ServicePortView, TrafficPolicy};
use ferry_proxy::iptables::hash::endpoint_hash;
use ferry_proxy::iptables::rules::{self, Settings, service_port_string};
use ferry_proxy::nft::sets::{Key, Set};
use ferry_proxy::{Family, NodeContext, PlannedEndpoint, ServicePlan};
use ipnet::IpNet;

use super::Inputs;
use crate::iptables::{Rule, parse_rule, summary};
use crate::{Candidate, Check, Expect, Hop, HopKind, Peer, ProxyMode};

/// How the destination was captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capture {
    ClusterIp,
    ExternalIp,
    LoadBalancer,
    NodePort,
}

impl Capture {
    fn as_str(self) -> &'static str {
        match self {
            Capture::ClusterIp => "ClusterIP",
            Capture::ExternalIp => "external IP",
            Capture::LoadBalancer => "LoadBalancer IP",
            Capture::NodePort => "NodePort",
        }
    }

    fn external(self) -> bool {
        self != Capture::ClusterIp
    }
}

pub(super) struct ServiceHop {
    pub hop: Hop,
    /// The node whose proxy rules handle the packet.
    pub entry: Option<String>,
    /// Whether the packet is DNATed to an endpoint (false: rejected,
    /// dropped, or left to another proxy).
    pub dnat: bool,
}

fn find<'a>(inputs: &'a Inputs, dest: IpAddr, port: u16) -> Option<(&'a ServicePortView, Capture)> {
    let dest_is_node = inputs.topology.node_with_ip(dest).is_some();
    inputs
        .state
        .service_ports()
        .filter(|v| v.name.protocol == Protocol::Tcp)
        .find_map(|v| {
            let capture = if v.port == port && v.cluster_ips.contains(&dest) {
                Capture::ClusterIp
            } else if v.port == port && v.external_ips.contains(&dest) {
                Capture::ExternalIp
            } else if v.port == port && v.load_balancer_ips.contains(&dest) {
                Capture::LoadBalancer
            } else if dest_is_node && v.node_port == Some(port) {
                Capture::NodePort
            } else {
                return None;
            };
            Some((v.as_ref(), capture))
        })
}

/// The service hop, or None when no ServicePort has the destination.
pub(super) fn hop(inputs: &Inputs, peer: &Peer, dest: IpAddr, port: u16) -> Option<ServiceHop> {
    let (view, capture) = find(inputs, dest, port)?;
    let spn = service_port_string(&view.name);
    let mut hop = Hop::new(
        HopKind::Service,
        format!("service proxy: {spn} ({})", capture.as_str()),
    );
    // Which node's rules see the packet first.
    let entry: Option<String> = match capture {
        Capture::NodePort => inputs.topology.node_with_ip(dest).map(|n| n.name.clone()),
        _ if peer.node.is_some() => peer.node.clone(),
        Capture::ClusterIp => None,
        _ => {
            let local = view.external_traffic_policy == TrafficPolicy::Local;
            let with_endpoint = view
                .endpoints
                .iter()
                .filter(|e| e.ready)
                .find_map(|e| e.node_name().map(String::from));
            let first = inputs.topology.nodes.first().map(|n| n.name.clone());
            hop.decided.push(format!(
                "the lab's load balancer routes {dest} over ECMP to {}; traced through one of them",
                if local {
                    "the nodes whose health check passes (a local endpoint)"
                } else {
                    "every node"
                }
            ));
            if local {
                with_endpoint.or(first)
            } else {
                first
            }
        }
    };
    let Some(entry_node) = entry.clone() else {
        hop.decided.push(format!(
            "{dest} is a ClusterIP: only the cluster's nodes and pods capture it; {} has no route to it",
            peer.name
        ));
        return Some(ServiceHop {
            hop,
            entry: None,
            dnat: false,
        });
    };
    hop.node = Some(entry_node.clone());
    hop.netns = inputs.topology.node(&entry_node).map(|n| n.netns.clone());
    let ctx = NodeContext {
        node_name: entry_node.clone(),
        zone: inputs.zone_of(&entry_node),
        family: if dest.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        },
    };
    let proxy = ferry_proxy::plan(inputs.state, &ctx);
    let Some(plan) = proxy.services.get(&view.name) else {
        hop.decided.push(format!(
            "{spn} is not for this proxy (headless, or labelled service.kubernetes.io/service-proxy-name): no rule captures {dest}"
        ));
        return Some(ServiceHop {
            hop,
            entry,
            dnat: false,
        });
    };
    hop.decided.push(format!(
        "{dest}:{port}/TCP is the {} of ServicePort {spn}, captured on {entry_node} ({} mode)",
        capture.as_str(),
        inputs.mode.as_str()
    ));
    let cidrs = inputs.cluster_cidrs();
    let from_cluster = cidrs.iter().any(|c: &IpNet| c.contains(&peer.ip));
    // kube-proxy's iptables mode sends pod and host traffic to an external
    // address of a Local-policy Service to the Cluster-policy endpoints
    // (KUBE-EXT's "pod traffic" and "route LOCAL traffic" rules); ferry's
    // nftables mode applies the Local policy to it.
    let short_circuit = inputs.mode == ProxyMode::Iptables
        && capture.external()
        && plan.external_local
        && (from_cluster || peer.kind == "node");
    let endpoints: &[PlannedEndpoint] = if short_circuit {
        hop.decided.push(format!(
            "{} traffic to an external address of a Local-policy Service goes to the Cluster-policy endpoints (kube-proxy's short circuit)",
            if from_cluster { "pod" } else { "host" }
        ));
        if plan.internal_local {
            &plan.cluster_policy_endpoints
        } else {
            &plan.cluster_endpoints
        }
    } else if capture.external() {
        &plan.external_endpoints
    } else {
        &plan.cluster_endpoints
    };
    policy_lines(&mut hop, view, plan, capture, endpoints);
    if endpoints.is_empty() {
        let verdict = if capture.external()
            && plan.external_local
            && !short_circuit
            && !plan.cluster_endpoints.is_empty()
        {
            "dropped (externalTrafficPolicy: Local and no endpoint on this node)"
        } else {
            "rejected with ICMP port unreachable (no endpoints)"
        };
        hop.decided.push(format!("the connection is {verdict}"));
        return Some(ServiceHop {
            hop,
            entry,
            dnat: false,
        });
    }
    let n = endpoints.len();
    for (i, e) in endpoints.iter().enumerate() {
        let pod = inputs.topology.pod_with_ip(e.ip);
        let masquerade = if e.ip == peer.ip {
            Some("hairpin: the client is this endpoint, so the reply would not come back through the node; SNAT to the node's cni0 address".to_string())
        } else if capture.external() && !plan.external_local {
            Some("external traffic with externalTrafficPolicy: Cluster".to_string())
        } else if short_circuit && !from_cluster {
            Some("host traffic to an external address (KUBE-EXT's addrtype LOCAL rule)".to_string())
        } else if !capture.external() && !from_cluster {
            Some(format!("{} is outside the cluster CIDRs", peer.ip))
        } else {
            None
        };
        let entry_name = match inputs.mode {
            ProxyMode::Iptables => format!(
                "KUBE-SEP-{}",
                endpoint_hash(
                    &spn,
                    "tcp",
                    &std::net::SocketAddr::new(e.ip, e.port).to_string()
                )
            ),
            ProxyMode::Nftables => format!("endpoints[slot . {i}]"),
        };
        hop.endpoints.push(Candidate {
            ip: e.ip,
            port: e.port,
            node: pod.map(|p| p.node.clone()).or_else(|| {
                view.endpoints
                    .iter()
                    .find(|v| v.ip == e.ip)
                    .and_then(|v| v.node_name().map(String::from))
            }),
            pod: pod.map(|p| format!("{}/{}", p.namespace, p.name)),
            local: e.local,
            rule_probability: match inputs.mode {
                ProxyMode::Nftables => 1.0 / n as f64,
                ProxyMode::Iptables => 1.0 / (n - i) as f64,
            },
            share: 1.0 / n as f64,
            entry: entry_name,
            masquerade,
        });
    }
    match plan.affinity_timeout {
        Some(t) => hop.decided.push(format!(
            "sessionAffinity: ClientIP ({t} s): a client seen within {t} s goes back to its endpoint ({})",
            match inputs.mode {
                ProxyMode::Iptables => "-m recent in the KUBE-SVC chain",
                ProxyMode::Nftables => "the affinity map, filled by postrouting",
            }
        )),
        None => hop.decided.push("no session affinity: each new connection chooses again".into()),
    }
    if from_cluster {
        hop.decided
            .push(format!("{} is inside the cluster CIDRs", peer.ip));
    }
    match inputs.mode {
        ProxyMode::Iptables => iptables_checks(&mut hop, plan, &cidrs, dest, port, capture),
        ProxyMode::Nftables => nft_checks(&mut hop, plan, endpoints, dest, port, capture),
    }
    Some(ServiceHop {
        hop,
        entry,
        dnat: true,
    })
}

fn policy_lines(
    hop: &mut Hop,
    view: &ServicePortView,
    plan: &ServicePlan,
    capture: Capture,
    endpoints: &[PlannedEndpoint],
) {
    let policy = |p: TrafficPolicy| match p {
        TrafficPolicy::Cluster => "Cluster",
        TrafficPolicy::Local => "Local",
    };
    if capture.external() {
        hop.decided.push(format!(
            "externalTrafficPolicy: {}{}",
            policy(view.external_traffic_policy),
            if plan.external_local {
                ": only this node's endpoints, client IP kept"
            } else {
                ": any endpoint, masqueraded"
            }
        ));
    } else {
        hop.decided.push(format!(
            "internalTrafficPolicy: {}{}",
            policy(view.internal_traffic_policy),
            if plan.internal_local {
                ": only this node's endpoints"
            } else {
                ""
            }
        ));
    }
    let ready = view.endpoints.iter().filter(|e| e.ready).count();
    let terminating: Vec<&PlannedEndpoint> = endpoints
        .iter()
        .filter(|p| {
            view.endpoints
                .iter()
                .any(|e| e.ip == p.ip && e.port == p.port && !e.ready && e.serving && e.terminating)
        })
        .collect();
    if !endpoints.is_empty() && terminating.len() == endpoints.len() {
        hop.decided.push(
            "no ready endpoint: the serving terminating ones are used (kube-proxy's terminating fallback)".into(),
        );
    }
    if endpoints.len() != ready && terminating.is_empty() {
        hop.decided.push(format!(
            "{} of the Service's {} ready endpoints are candidates here (traffic policy, topology hints)",
            endpoints.len(),
            ready
        ));
    }
    if let Some(d) = &view.traffic_distribution {
        hop.decided.push(format!("trafficDistribution: {d}"));
    }
}

/// The chains a rule jumps through, from the capture rule on, with every
/// rule of each, as the proxy renders them for this node.
fn iptables_checks(
    hop: &mut Hop,
    plan: &ServicePlan,
    cidrs: &[IpNet],
    dest: IpAddr,
    port: u16,
    capture: Capture,
) {
    let settings = Settings {
        family: if dest.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        },
        local_cidr: rules::local_cidr(
            if dest.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            },
            cidrs,
        ),
        large: false,
    };
    let rendered = rules::service(plan, &settings);
    let all: Vec<Rule> = rendered
        .nat_shared
        .iter()
        .chain(&rendered.chain_rules)
        .filter_map(|l| parse_rule(l))
        .collect();
    let dest_s = dest.to_string();
    let first: Vec<&Rule> = all
        .iter()
        .filter(|r| match capture {
            Capture::NodePort => r.chain == rules::KUBE_NODEPORTS && r.dport.is_some(),
            _ => {
                r.chain == rules::KUBE_SERVICES
                    && r.destination.as_deref() == Some(&dest_s)
                    && r.dport == Some(port)
            }
        })
        .collect();
    let mut chains: Vec<String> = vec![match capture {
        Capture::NodePort => format!("{} -> {}", rules::KUBE_SERVICES, rules::KUBE_NODEPORTS),
        _ => rules::KUBE_SERVICES.to_string(),
    }];
    let mut rules_out: Vec<Rule> = first.iter().map(|r| (*r).clone()).collect();
    let mut queue: Vec<String> = first.iter().map(|r| r.target.clone()).collect();
    let mut seen: Vec<String> = Vec::new();
    while let Some(chain) = queue.first().cloned() {
        queue.remove(0);
        if seen.contains(&chain) || !rules::is_service_chain(&chain) {
            continue;
        }
        seen.push(chain.clone());
        for r in all.iter().filter(|r| r.chain == chain) {
            rules_out.push(r.clone());
            if rules::is_service_chain(&r.target) {
                queue.push(r.target.clone());
            }
        }
    }
    let seps = seen.iter().filter(|c| c.starts_with("KUBE-SEP-")).count();
    for c in seen.iter().filter(|c| !c.starts_with("KUBE-SEP-")) {
        chains.push(c.clone());
    }
    if seps > 0 {
        chains.push(format!("KUBE-SEP-… ×{seps} (DNAT)"));
    }
    hop.path = chains;
    for r in rules_out {
        hop.checks.push(Check::new(
            format!("iptables nat {}", r.chain),
            summary(&r),
            Expect::IptablesRule(r),
        ));
    }
}

/// The map and set elements of the ServicePort in ferry's table.
fn nft_checks(
    hop: &mut Hop,
    plan: &ServicePlan,
    endpoints: &[PlannedEndpoint],
    dest: IpAddr,
    port: u16,
    capture: Capture,
) {
    let n = endpoints
        .len()
        .min(ferry_proxy::nft::ruleset::MAX_ENDPOINTS as usize) as u32;
    let (set, key) = match capture {
        Capture::ClusterIp => (Set::ClusterIps, Key::Service(dest, Protocol::Tcp, port)),
        Capture::ExternalIp | Capture::LoadBalancer => {
            (Set::ExternalIps, Key::Service(dest, Protocol::Tcp, port))
        }
        Capture::NodePort => (Set::NodePorts, Key::NodePort(Protocol::Tcp, port)),
    };
    hop.path = vec![
        format!("services: @{}", set.name()),
        "dispatch: @pick".into(),
        format!("pick_{n}: numgen random mod {n} -> @endpoints"),
        "postrouting: @hairpin, masquerade".into(),
    ];
    let shown = match key {
        Key::NodePort(_, p) => format!("tcp . {p}"),
        _ => format!("{dest} . tcp . {port}"),
    };
    hop.checks.push(Check::new(
        format!("nft map {}", set.name()),
        format!("{shown} : slot with {n} endpoints"),
        Expect::NftDispatch { set, key, count: n },
    ));
    hop.checks.push(Check::new(
        "nft map pick",
        format!("{n} : goto pick_{n}"),
        Expect::NftPick { count: n },
    ));
    for (i, e) in endpoints.iter().take(n as usize).enumerate() {
        hop.checks.push(Check::new(
            "nft map endpoints",
            format!("slot . {i} : {} . {}", e.ip, e.port),
            Expect::NftEndpoint {
                index: i as u32,
                ip: e.ip,
                port: e.port,
            },
        ));
        hop.checks.push(Check::new(
            "nft set hairpin",
            format!("{} . {}", e.ip, e.ip),
            Expect::NftHairpin { ip: e.ip },
        ));
    }
    let _ = plan;
}
