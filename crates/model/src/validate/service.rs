//! Service validation: types, ports, cluster IPs, external addresses and
//! traffic policies, as `ValidateService` in the API server checks them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::service::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Errors, ValidationOptions, names};

pub(super) fn service(errs: &mut Errors, svc: &Service, options: &ValidationOptions) {
    let Some(spec) = &svc.spec else {
        errs.push("spec", "Required value");
        return;
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    errs.check(
        "spec.type",
        names::one_of(
            ty,
            &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
        ),
    );
    let headless = spec.cluster_ip.as_deref() == Some("None");

    if ty == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => errs.push(
                "spec.externalName",
                "Required value: required for type ExternalName",
            ),
            Some(name) => errs.check(
                "spec.externalName",
                names::dns1123_subdomain(name.strip_suffix('.').unwrap_or(name)),
            ),
        }
    }

    // Cluster IPs.
    let mut families = BTreeSet::new();
    if let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "None")
        && let Some(ip) = errs.check_result("spec.clusterIP", names::ip(ip))
    {
        families.insert(ip.is_ipv4());
    }
    if headless && ty != "ClusterIP" {
        errs.push(
            "spec.clusterIP",
            format!("\"None\" (headless) is only allowed for type ClusterIP, not {ty}"),
        );
    }
    if let Some(ips) = &spec.cluster_ips {
        if ips.len() > 2 {
            errs.push(
                "spec.clusterIPs",
                "at most two cluster IPs (one per IP family) may be given",
            );
        }
        if let (Some(first), Some(single)) = (ips.first(), spec.cluster_ip.as_deref())
            && !single.is_empty()
            && first != single
        {
            errs.push(
                "spec.clusterIPs[0]",
                format!("{first:?} must match spec.clusterIP {single:?}"),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, ip) in ips.iter().enumerate() {
            if ip == "None" {
                if i > 0 || ips.len() > 1 {
                    errs.push(
                        format!("spec.clusterIPs[{i}]"),
                        "\"None\" must be the only entry",
                    );
                }
                continue;
            }
            if let Some(ip) = errs.check_result(format!("spec.clusterIPs[{i}]"), names::ip(ip))
                && !seen.insert(ip.is_ipv4())
            {
                errs.push(
                    format!("spec.clusterIPs[{i}]"),
                    "two cluster IPs of the same IP family",
                );
            }
        }
    }
    let mut seen_family = BTreeSet::new();
    for (i, f) in spec.ip_families.iter().flatten().enumerate() {
        errs.check(
            format!("spec.ipFamilies[{i}]"),
            names::one_of(f, &["IPv4", "IPv6"]),
        );
        if !seen_family.insert(f) {
            errs.push(
                format!("spec.ipFamilies[{i}]"),
                format!("Duplicate value: {f:?}"),
            );
        }
    }
    if let Some(p) = &spec.ip_family_policy {
        errs.check(
            "spec.ipFamilyPolicy",
            names::one_of(p, &["SingleStack", "PreferDualStack", "RequireDualStack"]),
        );
    }

    ports(errs, spec, ty, headless, options);

    // External addresses.
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        let path = format!("spec.externalIPs[{i}]");
        if let Some(ip) = errs.check_result(&path, names::ip(ip))
            && let Some(why) = special_ip(ip)
        {
            errs.push(&path, format!("{ip} may not be {why}"));
        }
    }
    if spec
        .load_balancer_source_ranges
        .as_ref()
        .is_some_and(|r| !r.is_empty())
        && ty != "LoadBalancer"
    {
        errs.push(
            "spec.loadBalancerSourceRanges",
            "may only be used when type is LoadBalancer",
        );
    }
    for (i, r) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        errs.check_result(
            format!("spec.loadBalancerSourceRanges[{i}]"),
            names::cidr(r.trim()),
        );
    }
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
        errs.check_result("spec.loadBalancerIP", names::ip(ip));
    }

    // Affinity and policies.
    let affinity = spec.session_affinity.as_deref().unwrap_or("None");
    errs.check(
        "spec.sessionAffinity",
        names::one_of(affinity, &["None", "ClientIP"]),
    );
    if let Some(t) = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
    {
        if affinity != "ClientIP" {
            errs.push(
                "spec.sessionAffinityConfig",
                "may only be set when sessionAffinity is ClientIP",
            );
        } else if !(1..=86400).contains(&t) {
            errs.push(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                format!("{t} is not in 1..86400"),
            );
        }
    }
    let external = matches!(ty, "NodePort" | "LoadBalancer")
        || spec.external_ips.as_ref().is_some_and(|v| !v.is_empty());
    if let Some(p) = &spec.external_traffic_policy {
        errs.check(
            "spec.externalTrafficPolicy",
            names::one_of(p, &["Cluster", "Local"]),
        );
        if !external && !p.is_empty() {
            errs.push("spec.externalTrafficPolicy", "may only be set for externally-accessible services (NodePort, LoadBalancer or externalIPs)");
        }
    }
    if let Some(p) = &spec.internal_traffic_policy {
        errs.check(
            "spec.internalTrafficPolicy",
            names::one_of(p, &["Cluster", "Local"]),
        );
    }
    if let Some(hc) = spec.health_check_node_port.filter(|p| *p != 0) {
        if ty != "LoadBalancer" || spec.external_traffic_policy.as_deref() != Some("Local") {
            errs.push(
                "spec.healthCheckNodePort",
                "may only be set when type is LoadBalancer and externalTrafficPolicy is Local",
            );
        }
        errs.check("spec.healthCheckNodePort", names::port(hc));
        node_port_range(errs, "spec.healthCheckNodePort", hc, options);
        // The API server allocates it from the node ports, so it may not be
        // one of the Service's own.
        if spec.ports.iter().flatten().any(|p| p.node_port == Some(hc)) {
            errs.push(
                "spec.healthCheckNodePort",
                format!("Duplicate value: {hc} is also a nodePort of this Service"),
            );
        }
    }
    if let Some(td) = &spec.traffic_distribution {
        errs.check(
            "spec.trafficDistribution",
            names::one_of(td, &["PreferClose", "PreferSameZone", "PreferSameNode"]),
        );
    }
    errs.label_pairs(
        "spec.selector",
        spec.selector.iter().flat_map(crate::Labels::iter),
    );

    for (i, ing) in svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("status.loadBalancer.ingress[{i}]");
        if let Some(ip) = ing.ip.as_deref().filter(|s| !s.is_empty()) {
            errs.check_result(format!("{path}.ip"), names::ip(ip));
        }
        if let Some(mode) = &ing.ip_mode {
            errs.check(
                format!("{path}.ipMode"),
                names::one_of(mode, &["VIP", "Proxy"]),
            );
        }
    }
}

fn ports(
    errs: &mut Errors,
    spec: &crate::service::ServiceSpec,
    ty: &str,
    headless: bool,
    options: &ValidationOptions,
) {
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push("spec.ports", "Required value: a service needs at least one port (only headless and ExternalName services may have none)");
    }
    let mut names_seen = BTreeSet::new();
    let mut port_seen = BTreeSet::new();
    let mut node_port_seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        match p.name.as_deref().unwrap_or("") {
            "" if ports.len() > 1 => errs.push(
                format!("{path}.name"),
                "Required value: every port needs a name when a service has more than one",
            ),
            "" => {}
            name => {
                errs.check(format!("{path}.name"), names::dns1123_label(name));
                if !names_seen.insert(name) {
                    errs.push(format!("{path}.name"), format!("Duplicate value: {name:?}"));
                }
            }
        }
        errs.check(format!("{path}.port"), names::port(p.port));
        errs.protocol(format!("{path}.protocol"), p.protocol.as_ref());
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !port_seen.insert((p.port, protocol)) {
            errs.push(
                &path,
                format!("Duplicate value: port {} {protocol}", p.port),
            );
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) => errs.check(format!("{path}.targetPort"), names::port(*n)),
            Some(IntOrString::String(s)) => {
                errs.check(format!("{path}.targetPort"), names::iana_svc_name(s))
            }
            None => {}
        }
        if let Some(np) = p.node_port.filter(|n| *n != 0) {
            if !matches!(ty, "NodePort" | "LoadBalancer") {
                errs.push(
                    format!("{path}.nodePort"),
                    format!("may not be used when type is {ty}"),
                );
            }
            errs.check(format!("{path}.nodePort"), names::port(np));
            node_port_range(errs, &format!("{path}.nodePort"), np, options);
            if !node_port_seen.insert((np, protocol)) {
                errs.push(
                    format!("{path}.nodePort"),
                    format!("Duplicate value: {np} {protocol}"),
                );
            }
        }
    }
}

/// A valid port outside `--service-node-port-range` (an invalid one is
/// reported already).
fn node_port_range(errs: &mut Errors, path: &str, port: i32, options: &ValidationOptions) {
    let range = options.service_node_port_range;
    if names::port(port).is_none() && !range.contains(port.into()) {
        errs.push(
            path,
            format!("{port} is not in the node port range {range} (the API server's --service-node-port-range)"),
        );
    }
}

/// External IPs may not be addresses every node already answers to.
fn special_ip(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("in the loopback range")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    } {
        Some("link-local")
    } else {
        None
    }
}
