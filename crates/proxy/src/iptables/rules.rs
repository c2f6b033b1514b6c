//! The rules kube-proxy's iptables mode writes, from ferry's proxy plan:
//! the same chains (`KUBE-SERVICES`, `KUBE-SVC-…`, `KUBE-SEP-…`, …), the
//! same rules in the same order, the same comments, so that `iptables-save`
//! on a ferry node reads as on a kube-proxy node.
//!
//! Each ServicePort renders to its own [`ServiceRules`] (its lines in the
//! shared chains and the chains it owns); [`restore`] assembles the
//! `iptables-restore --noflush` input from them. A partial sync writes the
//! shared chains whole (iptables-restore cannot edit part of a chain) and
//! only the changed ServicePorts' own chains, as kube-proxy's
//! MinimizeIPTablesRestore does.
//!
//! Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;

use ferry_model::ServicePortName;
use ipnet::IpNet;

use super::hash::{endpoint_hash, port_proto_hash};
use crate::plan::{Family, PlannedEndpoint, ServicePlan};

pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
pub const KUBE_PROXY_CANARY: &str = "KUBE-PROXY-CANARY";

/// The shared chains this mode makes (in nat, filter or both).
pub const TOP_LEVEL_CHAINS: [&str; 8] = [
    KUBE_SERVICES,
    KUBE_EXTERNAL_SERVICES,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
    KUBE_FORWARD,
    KUBE_PROXY_FIREWALL,
    KUBE_PROXY_CANARY,
];

/// kube-proxy's default masquerade bit 14.
pub const MASQ_MARK: &str = "0x4000";

/// Above this many endpoints in all, per-endpoint comments are left out
/// (kube-proxy's "large cluster mode": the ruleset shrinks by ~40%).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Chain prefixes of per-Service chains (what stale-chain cleanup may delete).
pub const SERVICE_CHAIN_PREFIXES: [&str; 5] = [
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
];

/// What a rendering depends on besides the ServicePort itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub family: Family,
    /// Pod traffic comes from here (kube-proxy's `--cluster-cidr` local
    /// detector). `None`: no detector, as kube-proxy without a cluster CIDR.
    pub local_cidr: Option<IpNet>,
    /// Leave out per-endpoint comments.
    pub large: bool,
}

/// The local detector's one CIDR from the cluster CIDRs of a family: the
/// CIDR itself (kube-proxy takes a single `--cluster-cidr` per family), or
/// the smallest prefix covering them all, if that is no wider than a /8
/// (IPv4) or /32 (IPv6); wider, it would count foreign addresses as pods,
/// and there is no detector (as kube-proxy without a cluster CIDR).
pub fn local_cidr(family: Family, cidrs: &[IpNet]) -> Option<IpNet> {
    let of_family: Vec<IpNet> = cidrs
        .iter()
        .filter(|c| family.has(&c.addr()))
        .map(IpNet::trunc)
        .collect();
    let merged = IpNet::aggregate(&of_family);
    let first = *merged.first()?;
    let cover = merged.iter().skip(1).fold(first, |acc, c| {
        let mut net = acc;
        while !net.contains(c) {
            match net.supernet() {
                Some(wider) => net = wider,
                None => break,
            }
        }
        net
    });
    let widest = match family {
        Family::V4 => 8,
        Family::V6 => 32,
    };
    (cover.prefix_len() >= widest).then_some(cover)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn the_local_cidr_covers_the_pod_cidrs_but_never_the_world() {
        let one = |s: &[&str]| local_cidr(Family::V4, &nets(s)).map(|n| n.to_string());
        assert_eq!(one(&["10.244.0.0/16"]), Some("10.244.0.0/16".into()));
        assert_eq!(
            one(&["10.244.0.0/24", "10.244.1.0/24"]),
            Some("10.244.0.0/23".into())
        );
        assert_eq!(
            one(&["10.244.0.0/24", "10.244.2.0/24"]),
            Some("10.244.0.0/22".into())
        );
        assert_eq!(one(&["10.0.0.0/16", "192.168.0.0/16"]), None);
        assert_eq!(one(&["fd00::/64"]), None, "no IPv4 CIDR");
    }
}

/// One ServicePort's part of the ruleset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceRules {
    /// Lines of the shared chains, in kube-proxy's order.
    pub filter: Vec<String>,
    pub nat_shared: Vec<String>,
    /// The nat chains this ServicePort owns, and their rules.
    pub chains: Vec<String>,
    pub chain_rules: Vec<String>,
    /// Endpoint chains (for the large-cluster threshold).
    pub endpoints: usize,
}

/// kube-proxy's ServicePortName string: `ns/name:port`, or `ns/name` for
/// an unnamed port.
pub fn service_port_string(name: &ServicePortName) -> String {
    if name.port.is_empty() {
        format!("{}/{}", name.namespace, name.name)
    } else {
        format!("{}/{}:{}", name.namespace, name.name, name.port)
    }
}

fn endpoint_string(e: &PlannedEndpoint) -> String {
    SocketAddr::new(e.ip, e.port).to_string()
}

struct Chains {
    svc: String,
    svl: String,
    ext: String,
    fw: String,
}

/// The rules of one ServicePort, following kube-proxy's syncProxyRules.
pub fn service(p: &ServicePlan, s: &Settings) -> ServiceRules {
    let spn = service_port_string(&p.name);
    let proto = p.protocol.as_str().to_ascii_lowercase();
    let h = port_proto_hash(&spn, &proto);
    let c = Chains {
        svc: format!("KUBE-SVC-{h}"),
        svl: format!("KUBE-SVL-{h}"),
        ext: format!("KUBE-EXT-{h}"),
        fw: format!("KUBE-FW-{h}"),
    };
    let externally = p.is_external();
    // kube-proxy's CategorizeEndpoints, from the plan's lists.
    let cluster_eps: &[PlannedEndpoint] = if !p.internal_local {
        &p.cluster_endpoints
    } else if !p.external_local {
        &p.external_endpoints
    } else {
        &p.cluster_policy_endpoints
    };
    let local_eps: &[PlannedEndpoint] = if p.internal_local {
        &p.cluster_endpoints
    } else if p.external_local {
        &p.external_endpoints
    } else {
        &[]
    };
    let uses_cluster = !cluster_eps.is_empty() && (!p.internal_local || externally);
    let uses_local =
        !local_eps.is_empty() && (p.internal_local || (p.external_local && externally));
    let has_endpoints = !cluster_eps.is_empty() || !local_eps.is_empty();
    let has_internal = has_endpoints && (!p.internal_local || !local_eps.is_empty());
    let has_external = has_endpoints && (!p.external_local || !local_eps.is_empty());
    let internal_chain = if p.internal_local { &c.svl } else { &c.svc };
    let external_policy_chain = if p.external_local { &c.svl } else { &c.svc };
    let uses_ext = has_endpoints && externally;
    let uses_fw = has_endpoints && !p.load_balancer_ips.is_empty() && !p.source_ranges.is_empty();
    let lb_chain = if uses_fw { &c.fw } else { &c.ext };

    let (internal_target, internal_comment, external_target, external_comment) = if !has_endpoints {
        let comment = format!("\"{spn} has no endpoints\"");
        ("REJECT", comment.clone(), "REJECT", comment)
    } else {
        let comment = format!("\"{spn} has no local endpoints\"");
        ("DROP", comment.clone(), "DROP", comment)
    };

    let mut out = ServiceRules::default();
    let port = p.port;
    let m = format!("-m {proto} -p {proto}");

    // Capture the ClusterIP.
    for ip in &p.cluster_ips {
        if has_internal {
            out.nat_shared.push(format!(
                "-A {KUBE_SERVICES} -m comment --comment \"{spn} cluster IP\" {m} -d {ip} --dport {port} -j {internal_chain}"
            ));
        } else {
            out.filter.push(format!(
                "-A {KUBE_SERVICES} -m comment --comment {internal_comment} {m} -d {ip} --dport {port} -j {internal_target}"
            ));
        }
    }
    // Capture external IPs.
    for ip in &p.external_ips {
        if has_endpoints {
            out.nat_shared.push(format!(
                "-A {KUBE_SERVICES} -m comment --comment \"{spn} external IP\" {m} -d {ip} --dport {port} -j {}",
                c.ext
            ));
        }
        if !has_external {
            out.filter.push(format!(
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} {m} -d {ip} --dport {port} -j {external_target}"
            ));
        }
    }
    // Capture load-balancer IPs.
    for ip in &p.load_balancer_ips {
        if has_endpoints {
            out.nat_shared.push(format!(
                "-A {KUBE_SERVICES} -m comment --comment \"{spn} loadbalancer IP\" {m} -d {ip} --dport {port} -j {lb_chain}"
            ));
        }
        if uses_fw {
            out.filter.push(format!(
                "-A {KUBE_PROXY_FIREWALL} -m comment --comment \"{spn} traffic not accepted by {}\" {m} -d {ip} --dport {port} -j DROP",
                c.fw
            ));
        }
    }
    if !has_external {
        for ip in &p.load_balancer_ips {
            out.filter.push(format!(
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} {m} -d {ip} --dport {port} -j {external_target}"
            ));
        }
    }
    // Capture the NodePort.
    if let Some(np) = p.node_port {
        if has_endpoints {
            out.nat_shared.push(format!(
                "-A {KUBE_NODEPORTS} -m comment --comment {spn} {m} --dport {np} -j {}",
                c.ext
            ));
        }
        if !has_external {
            out.filter.push(format!(
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} -m addrtype --dst-type LOCAL {m} --dport {np} -j {external_target}"
            ));
        }
    }
    if let Some(hc) = p.health_check_node_port {
        out.filter.push(format!(
            "-A {KUBE_NODEPORTS} -m comment --comment \"{spn} health check node port\" -m tcp -p tcp --dport {hc} -j ACCEPT"
        ));
    }
    if !has_endpoints {
        return out;
    }

    let rules = &mut out.chain_rules;
    // Internal traffic: masquerade what does not come from a pod.
    if has_internal && let Some(cidr) = s.local_cidr {
        for ip in &p.cluster_ips {
            rules.push(format!(
                "-A {internal_chain} -m comment --comment \"{spn} cluster IP\" {m} -d {ip} --dport {port} ! -s {cidr} -j {KUBE_MARK_MASQ}"
            ));
        }
    }
    if uses_ext {
        out.chains.push(c.ext.clone());
        if !p.external_local {
            rules.push(format!(
                "-A {} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j {KUBE_MARK_MASQ}",
                c.ext
            ));
        } else {
            if let Some(cidr) = s.local_cidr {
                rules.push(format!(
                    "-A {} -m comment --comment \"pod traffic for {spn} external destinations\" -s {cidr} -j {}",
                    c.ext, c.svc
                ));
            }
            rules.push(format!(
                "-A {} -m comment --comment \"masquerade LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}",
                c.ext
            ));
            rules.push(format!(
                "-A {} -m comment --comment \"route LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {}",
                c.ext, c.svc
            ));
        }
        if has_external {
            rules.push(format!("-A {} -j {external_policy_chain}", c.ext));
        }
    }
    if uses_fw {
        out.chains.push(c.fw.clone());
        for range in &p.source_ranges {
            rules.push(format!(
                "-A {} -m comment --comment \"{spn} loadbalancer IP\" -s {range} -j {}",
                c.fw, c.ext
            ));
        }
        rules.push(format!(
            "-A {} -m comment --comment \"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL\"",
            c.fw
        ));
    }
    let sep = |e: &PlannedEndpoint| {
        format!(
            "KUBE-SEP-{}",
            endpoint_hash(&spn, &proto, &endpoint_string(e))
        )
    };
    let comment = |text: &str| {
        if s.large {
            String::new()
        } else {
            format!("-m comment --comment {text} ")
        }
    };
    let to_endpoints = |chain: &str, eps: &[PlannedEndpoint], rules: &mut Vec<String>| {
        if let Some(timeout) = p.affinity_timeout {
            for e in eps {
                let name = sep(e);
                rules.push(format!(
                    "-A {chain} {}-m recent --name {name} --rcheck --seconds {timeout} --reap -j {name}",
                    comment(&format!("\"{spn} -> {}\"", endpoint_string(e)))
                ));
            }
        }
        let n = eps.len();
        for (i, e) in eps.iter().enumerate() {
            let mut line = format!(
                "-A {chain} {}",
                comment(&format!("\"{spn} -> {}\"", endpoint_string(e)))
            );
            if i + 1 < n {
                let _ = write!(
                    line,
                    "-m statistic --mode random --probability {:.10} ",
                    1.0 / (n - i) as f64
                );
            }
            let _ = write!(line, "-j {}", sep(e));
            rules.push(line);
        }
    };
    if uses_cluster {
        out.chains.push(c.svc.clone());
        to_endpoints(&c.svc, cluster_eps, rules);
    }
    if uses_local {
        out.chains.push(c.svl.clone());
        to_endpoints(&c.svl, local_eps, rules);
    }
    let mut reachable: BTreeSet<&PlannedEndpoint> = BTreeSet::new();
    if uses_cluster {
        reachable.extend(cluster_eps);
    }
    if uses_local {
        reachable.extend(local_eps);
    }
    let spn_comment = comment(&spn);
    for e in reachable {
        let chain = sep(e);
        out.chains.push(chain.clone());
        rules.push(format!(
            "-A {chain} {spn_comment}-s {} -j {KUBE_MARK_MASQ}",
            e.ip
        ));
        let recent = if p.affinity_timeout.is_some() {
            format!("-m recent --name {chain} --set ")
        } else {
            String::new()
        };
        rules.push(format!(
            "-A {chain} {spn_comment}{recent}{m} -j DNAT --to-destination {}",
            endpoint_string(e)
        ));
        out.endpoints += 1;
    }
    out
}

/// Which ServicePorts' own chains a restore carries.
pub enum Scope<'a> {
    /// Every chain (a full sync).
    Full,
    /// Only these ServicePorts' chains; the rest stay as they are.
    Changed(&'a BTreeSet<ServicePortName>),
}

/// The `iptables-restore --noflush` input: the filter and nat tables'
/// shared chains whole, the own chains `scope` names, and the deletion of
/// `stale` chains.
pub fn restore(
    family: Family,
    services: &BTreeMap<ServicePortName, ServiceRules>,
    scope: &Scope<'_>,
    stale: &BTreeSet<String>,
) -> String {
    let full = matches!(scope, Scope::Full);
    let included = |name: &ServicePortName| match scope {
        Scope::Full => true,
        Scope::Changed(set) => set.contains(name),
    };
    let mut t = String::with_capacity(services.len() * 512 + 4096);
    t.push_str("*filter\n");
    for chain in [
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_FORWARD,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
    ] {
        let _ = writeln!(t, ":{chain} - [0:0]");
    }
    if full {
        let _ = writeln!(t, ":{KUBE_PROXY_CANARY} - [0:0]");
    }
    for r in services.values() {
        for line in &r.filter {
            t.push_str(line);
            t.push('\n');
        }
    }
    let _ = writeln!(
        t,
        "-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP\n\
         -A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT\n\
         -A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         COMMIT\n*nat"
    );
    for chain in [
        KUBE_SERVICES,
        KUBE_NODEPORTS,
        KUBE_POSTROUTING,
        KUBE_MARK_MASQ,
    ] {
        let _ = writeln!(t, ":{chain} - [0:0]");
    }
    if full {
        let _ = writeln!(t, ":{KUBE_PROXY_CANARY} - [0:0]");
    }
    for (name, r) in services {
        if included(name) {
            for chain in &r.chains {
                let _ = writeln!(t, ":{chain} - [0:0]");
            }
        }
    }
    for chain in stale {
        let _ = writeln!(t, ":{chain} - [0:0]");
    }
    let _ = writeln!(
        t,
        "-A {KUBE_POSTROUTING} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN\n\
         -A {KUBE_POSTROUTING} -j MARK --xor-mark {MASQ_MARK}\n\
         -A {KUBE_POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A {KUBE_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}"
    );
    for (name, r) in services {
        for line in &r.nat_shared {
            t.push_str(line);
            t.push('\n');
        }
        if included(name) {
            for line in &r.chain_rules {
                t.push_str(line);
                t.push('\n');
            }
        }
    }
    for chain in stale {
        let _ = writeln!(t, "-X {chain}");
    }
    t.push_str(&nodeports_tail(family));
    t.push_str("COMMIT\n");
    t
}

fn nodeports_tail(family: Family) -> String {
    // Localhost NodePorts are off (no route_localnet; CVE-2020-8558), as
    // in kube-proxy's nftables mode and with --iptables-localhost-nodeports=false.
    let localhost = match family {
        Family::V4 => "127.0.0.0/8",
        Family::V6 => "::1/128",
    };
    format!(
        "-A {KUBE_SERVICES} -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d {localhost} -j {KUBE_NODEPORTS}\n"
    )
}

/// The jumps from the built-in chains into kube-proxy's, as `(table,
/// chain, rule)`; kube-proxy inserts each at the top of its chain when it
/// is missing (they are not in the restore input, which must not flush
/// the built-in chains).
pub fn jumps() -> Vec<(&'static str, &'static str, String)> {
    const NEW: &str = "-m conntrack --ctstate NEW ";
    let j = |extra: &str, comment: &str, target: &str| {
        format!("{extra}-m comment --comment \"{comment}\" -j {target}")
    };
    vec![
        (
            "filter",
            "INPUT",
            j(
                NEW,
                "kubernetes externally-visible service portals",
                KUBE_EXTERNAL_SERVICES,
            ),
        ),
        (
            "filter",
            "FORWARD",
            j(
                NEW,
                "kubernetes externally-visible service portals",
                KUBE_EXTERNAL_SERVICES,
            ),
        ),
        (
            "filter",
            "INPUT",
            j("", "kubernetes health check service ports", KUBE_NODEPORTS),
        ),
        (
            "filter",
            "FORWARD",
            j(NEW, "kubernetes service portals", KUBE_SERVICES),
        ),
        (
            "filter",
            "OUTPUT",
            j(NEW, "kubernetes service portals", KUBE_SERVICES),
        ),
        (
            "filter",
            "FORWARD",
            j("", "kubernetes forwarding rules", KUBE_FORWARD),
        ),
        (
            "filter",
            "INPUT",
            j(
                NEW,
                "kubernetes load balancer firewall",
                KUBE_PROXY_FIREWALL,
            ),
        ),
        (
            "filter",
            "OUTPUT",
            j(
                NEW,
                "kubernetes load balancer firewall",
                KUBE_PROXY_FIREWALL,
            ),
        ),
        (
            "filter",
            "FORWARD",
            j(
                NEW,
                "kubernetes load balancer firewall",
                KUBE_PROXY_FIREWALL,
            ),
        ),
        (
            "nat",
            "OUTPUT",
            j("", "kubernetes service portals", KUBE_SERVICES),
        ),
        (
            "nat",
            "PREROUTING",
            j("", "kubernetes service portals", KUBE_SERVICES),
        ),
        (
            "nat",
            "POSTROUTING",
            j("", "kubernetes postrouting rules", KUBE_POSTROUTING),
        ),
    ]
}

/// Whether a chain is one of the per-Service chains ferry (or kube-proxy) makes.
pub fn is_service_chain(name: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Chains named in an `iptables-save` text of one table (`:NAME ...` lines).
pub fn saved_chains(save: &str) -> BTreeSet<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
