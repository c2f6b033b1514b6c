//! Ingress and IngressClass validation (networking.k8s.io/v1).

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use super::{Errors, names};

pub(super) fn ingress(errs: &mut Errors, ing: &Ingress) {
    let Some(spec) = &ing.spec else {
        errs.push("spec", "Required value");
        return;
    };
    if let Some(c) = &spec.ingress_class_name {
        errs.check("spec.ingressClassName", names::dns1123_subdomain(c));
    }
    let rules = spec.rules.as_deref().unwrap_or_default();
    if spec.default_backend.is_none() && rules.is_empty() {
        errs.push("spec", "either defaultBackend or rules must be specified");
    }
    if let Some(b) = &spec.default_backend {
        backend(errs, "spec.defaultBackend", b);
    }
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        if let Some(h) = rule.host.as_deref().filter(|h| !h.is_empty()) {
            errs.check(format!("{path}.host"), names::wildcard_subdomain(h));
        }
        let Some(http) = &rule.http else { continue };
        if http.paths.is_empty() {
            errs.push(
                format!("{path}.http.paths"),
                "Required value: at least one path",
            );
        }
        for (j, p) in http.paths.iter().enumerate() {
            let ppath = format!("{path}.http.paths[{j}]");
            let ty = p.path_type.as_str();
            if ty.is_empty() {
                errs.push(
                    format!("{ppath}.pathType"),
                    "Required value: Exact, Prefix or ImplementationSpecific",
                );
            } else {
                errs.check(
                    format!("{ppath}.pathType"),
                    names::one_of(ty, &["Exact", "Prefix", "ImplementationSpecific"]),
                );
            }
            match p.path.as_deref() {
                Some(path) if !path.starts_with('/') => errs.push(
                    format!("{ppath}.path"),
                    format!("{path:?} must be an absolute path"),
                ),
                None | Some("") if ty == "Exact" || ty == "Prefix" => errs.push(
                    format!("{ppath}.path"),
                    format!("Required value: must be set for pathType {ty}"),
                ),
                _ => {}
            }
            backend(errs, &format!("{ppath}.backend"), &p.backend);
        }
    }
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        for (j, h) in tls.hosts.iter().flatten().enumerate() {
            errs.check(
                format!("spec.tls[{i}].hosts[{j}]"),
                names::wildcard_subdomain(h),
            );
        }
        if let Some(s) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
            errs.check(
                format!("spec.tls[{i}].secretName"),
                names::dns1123_subdomain(s),
            );
        }
    }
}

fn backend(errs: &mut Errors, path: &str, b: &IngressBackend) {
    match (&b.service, &b.resource) {
        (Some(_), Some(_)) => errs.push(path, "service and resource are mutually exclusive"),
        (None, None) => errs.push(path, "Required value: service or resource"),
        _ => {}
    }
    let Some(svc) = &b.service else { return };
    errs.check(
        format!("{path}.service.name"),
        names::dns1035_label(&svc.name),
    );
    match svc
        .port
        .as_ref()
        .map(|p| (p.name.as_deref().filter(|n| !n.is_empty()), p.number))
    {
        None | Some((None, None)) => errs.push(
            format!("{path}.service.port"),
            "Required value: name or number",
        ),
        Some((Some(_), Some(_))) => errs.push(
            format!("{path}.service.port"),
            "name and number are mutually exclusive",
        ),
        Some((Some(name), None)) => errs.check(
            format!("{path}.service.port.name"),
            names::iana_svc_name(name),
        ),
        Some((None, Some(n))) => errs.check(format!("{path}.service.port.number"), names::port(n)),
    }
}

pub(super) fn ingress_class(errs: &mut Errors, class: &IngressClass) {
    if let Some(c) = class.spec.as_ref().and_then(|s| s.controller.as_deref()) {
        let ok = c.len() <= 250
            && c.split_once('/').is_some_and(|(domain, path)| {
                names::dns1123_subdomain(domain).is_none() && !path.is_empty()
            });
        if !ok {
            errs.push(
                "spec.controller",
                format!("{c:?} must be a domain-prefixed path such as \"k8s.io/ingress-nginx\""),
            );
        }
    }
}
