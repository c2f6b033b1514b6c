//! Pod and Node validation: the addresses, ports and CIDRs the data plane uses.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, PodSpec, PodTemplateSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Errors, names};

/// A Pod as the model keeps it (see [`crate::pod`]): its addresses. Its
/// spec is checked whole by [`whole_pod_spec`] while a manifest is decoded.
pub(super) fn pod(errs: &mut Errors, pod: &crate::Pod) {
    if pod.spec.is_none() {
        errs.push("spec", "Required value");
    }
    if let Some(status) = &pod.status {
        if let Some(ip) = status
            .pod_ip
            .as_ref()
            .map(|a| a.text())
            .filter(|s| !s.is_empty())
        {
            errs.check_result("status.podIP", names::ip(&ip));
        }
        for (i, ip) in status.pod_ips.iter().flat_map(|p| p.iter()).enumerate() {
            errs.check_result(format!("status.podIPs[{i}].ip"), names::ip(&ip.text()));
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

/// A Pod's whole spec as the API server checks it (containers, ports,
/// probes, grace period, names): run on the decoded document, before the
/// model keeps only the slim Pod.
pub(crate) fn whole_pod_spec(spec: Option<&serde_json::Value>) -> Vec<crate::FieldError> {
    let mut errs = Errors::default();
    let Some(spec) = spec else {
        return errs.0;
    };
    match serde_path_to_error::deserialize::<_, PodSpec>(spec) {
        Ok(spec) => pod_spec(&mut errs, "spec", &spec),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            errs.push(path, e.into_inner().to_string());
        }
    }
    errs.0
}

fn pod_spec(errs: &mut Errors, path: &str, spec: &PodSpec) {
    if spec.containers.is_empty() {
        errs.push(
            format!("{path}.containers"),
            "Required value: a pod needs at least one container",
        );
    }
    if let Some(n) = &spec.node_name {
        errs.check(format!("{path}.nodeName"), names::dns1123_subdomain(n));
    }
    if let Some(h) = &spec.hostname {
        errs.check(format!("{path}.hostname"), names::dns1123_label(h));
    }
    if let Some(s) = &spec.subdomain {
        errs.check(format!("{path}.subdomain"), names::dns1123_label(s));
    }
    errs.labels(&format!("{path}.nodeSelector"), spec.node_selector.as_ref());
    if let Some(g) = spec.termination_grace_period_seconds {
        errs.check(
            format!("{path}.terminationGracePeriodSeconds"),
            names::seconds(g),
        );
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let cpath = format!("{path}.containers[{i}]");
        for (j, p) in c.ports.iter().flatten().enumerate() {
            let ppath = format!("{cpath}.ports[{j}]");
            errs.check(
                format!("{ppath}.containerPort"),
                names::port(p.container_port),
            );
            if let Some(hp) = p.host_port.filter(|p| *p != 0) {
                errs.check(format!("{ppath}.hostPort"), names::port(hp));
            }
            if let Some(n) = &p.name {
                errs.check(format!("{ppath}.name"), names::iana_svc_name(n));
            }
            errs.protocol(format!("{ppath}.protocol"), p.protocol.as_ref());
        }
        if let Some(probe) = &c.readiness_probe {
            self::probe(errs, &format!("{cpath}.readinessProbe"), probe);
        }
    }
}

fn probe(errs: &mut Errors, path: &str, probe: &Probe) {
    let port = |errs: &mut Errors, p: &IntOrString, at: String| match p {
        IntOrString::Int(n) => errs.check(at, names::port(*n)),
        IntOrString::String(s) => errs.check(at, names::iana_svc_name(s)),
    };
    if let Some(h) = &probe.http_get {
        port(errs, &h.port, format!("{path}.httpGet.port"));
        if let Some(p) = h.path.as_deref().filter(|p| !p.starts_with('/')) {
            errs.push(
                format!("{path}.httpGet.path"),
                format!("{p:?} must be an absolute path"),
            );
        }
    }
    if let Some(t) = &probe.tcp_socket {
        port(errs, &t.port, format!("{path}.tcpSocket.port"));
    }
    if let Some(d) = probe.initial_delay_seconds
        && d < 0
    {
        errs.push(
            format!("{path}.initialDelaySeconds"),
            format!("{d} must be 0 or more"),
        );
    }
    if let Some(g) = probe.termination_grace_period_seconds {
        errs.check(
            format!("{path}.terminationGracePeriodSeconds"),
            names::seconds(g),
        );
    }
    for (field, v) in [
        ("periodSeconds", probe.period_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("failureThreshold", probe.failure_threshold),
        ("successThreshold", probe.success_threshold),
    ] {
        if let Some(v) = v
            && v < 1
        {
            errs.push(format!("{path}.{field}"), format!("{v} must be 1 or more"));
        }
    }
}

/// The selector and template checks Deployments and ReplicaSets share.
fn workload(
    errs: &mut Errors,
    replicas: Option<i32>,
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
) {
    if let Some(r) = replicas
        && r < 0
    {
        errs.push("spec.replicas", format!("{r} must be 0 or more"));
    }
    errs.selector("spec.selector", selector);
    if selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
    {
        errs.push(
            "spec.selector",
            "Required value: an empty selector would match every pod",
        );
    }
    let Some(template) = template else {
        errs.push("spec.template", "Required value");
        return;
    };
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    errs.labels("spec.template.metadata.labels", labels);
    let empty = BTreeMap::new();
    if !crate::selector::matches(selector, labels.unwrap_or(&empty)) {
        errs.push(
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        );
    }
    match &template.spec {
        Some(spec) => pod_spec(errs, "spec.template.spec", spec),
        None => errs.push("spec.template.spec", "Required value"),
    }
}

pub(super) fn deployment(errs: &mut Errors, d: &Deployment) {
    let spec = &d.spec;
    workload(errs, spec.replicas, &spec.selector, Some(&spec.template));
}

pub(super) fn replica_set(errs: &mut Errors, rs: &ReplicaSet) {
    let spec = &rs.spec;
    workload(errs, spec.replicas, &spec.selector, spec.template.as_ref());
}
