//! Pod and Node validation: the addresses, ports and CIDRs the data plane uses.

use k8s_openapi::api::core::v1::{Node, Pod};

use super::{Errors, names};

pub(super) fn pod(errs: &mut Errors, pod: &Pod) {
    if let Some(spec) = &pod.spec {
        if spec.containers.is_empty() {
            errs.push(
                "spec.containers",
                "Required value: a pod needs at least one container",
            );
        }
        if let Some(n) = &spec.node_name {
            errs.check("spec.nodeName", names::dns1123_subdomain(n));
        }
        if let Some(h) = &spec.hostname {
            errs.check("spec.hostname", names::dns1123_label(h));
        }
        if let Some(s) = &spec.subdomain {
            errs.check("spec.subdomain", names::dns1123_label(s));
        }
        for (i, c) in spec.containers.iter().enumerate() {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let path = format!("spec.containers[{i}].ports[{j}]");
                errs.check(
                    format!("{path}.containerPort"),
                    names::port(p.container_port),
                );
                if let Some(hp) = p.host_port.filter(|p| *p != 0) {
                    errs.check(format!("{path}.hostPort"), names::port(hp));
                }
                if let Some(n) = &p.name {
                    errs.check(format!("{path}.name"), names::iana_svc_name(n));
                }
                errs.protocol(format!("{path}.protocol"), p.protocol.as_ref());
            }
        }
    } else {
        errs.push("spec", "Required value");
    }
    if let Some(status) = &pod.status {
        if let Some(ip) = status.pod_ip.as_deref().filter(|s| !s.is_empty()) {
            errs.check_result("status.podIP", names::ip(ip));
        }
        for (i, ip) in status.pod_ips.iter().flatten().enumerate() {
            errs.check_result(format!("status.podIPs[{i}].ip"), names::ip(&ip.ip));
        }
    }
}

pub(super) fn node(errs: &mut Errors, node: &Node) {
    if let Some(spec) = &node.spec {
        if let Some(c) = spec.pod_cidr.as_deref().filter(|s| !s.is_empty()) {
            errs.check_result("spec.podCIDR", names::cidr(c));
        }
        let cidrs = spec.pod_cidrs.as_deref().unwrap_or_default();
        if cidrs.len() > 2 {
            errs.push("spec.podCIDRs", "at most two pod CIDRs (one per IP family)");
        }
        for (i, c) in cidrs.iter().enumerate() {
            errs.check_result(format!("spec.podCIDRs[{i}]"), names::cidr(c));
        }
    }
    for (i, a) in node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP") {
            errs.check_result(
                format!("status.addresses[{i}].address"),
                names::ip(&a.address),
            );
        }
    }
}
