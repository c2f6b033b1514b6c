//! EndpointSlice and legacy Endpoints validation.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::slice::EndpointSlice;
use k8s_openapi::api::core::v1::Endpoints;

use super::{Errors, names};

pub(super) fn endpoint_slice(errs: &mut Errors, slice: &EndpointSlice) {
    let ty = slice.address_type.as_str();
    if ty.is_empty() {
        errs.push("addressType", "Required value: IPv4, IPv6 or FQDN");
    } else {
        errs.check("addressType", names::one_of(ty, &["IPv4", "IPv6", "FQDN"]));
    }
    for (i, ep) in slice.endpoints.iter().flatten().enumerate() {
        let path = format!("endpoints[{i}]");
        if ep.addresses.is_empty() || ep.addresses.len() > 100 {
            errs.push(
                format!("{path}.addresses"),
                "must hold between 1 and 100 addresses",
            );
        }
        for (j, a) in ep.addresses.iter().enumerate() {
            let apath = format!("{path}.addresses[{j}]");
            let a = &*a.text();
            match ty {
                "IPv4" | "IPv6" => {
                    if let Some(ip) = errs.check_result(&apath, names::ip(a))
                        && ip.is_ipv4() != (ty == "IPv4")
                    {
                        errs.push(&apath, format!("{a:?} is not an {ty} address"));
                    }
                }
                "FQDN" => errs.check(&apath, names::dns1123_subdomain(a)),
                _ => {}
            }
        }
        if let Some(h) = &ep.hostname {
            errs.check(format!("{path}.hostname"), names::dns1123_label(h));
        }
        if let Some(n) = &ep.node_name {
            errs.check(format!("{path}.nodeName"), names::dns1123_subdomain(n));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let path = format!("ports[{i}]");
        let name = p.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            errs.check(format!("{path}.name"), names::dns1123_label(name));
        }
        if !seen.insert(name) {
            errs.push(format!("{path}.name"), format!("Duplicate value: {name:?}"));
        }
        errs.protocol(format!("{path}.protocol"), p.protocol.as_ref());
        if let Some(port) = p.port {
            errs.check(format!("{path}.port"), names::port(port));
        }
    }
}

pub(super) fn endpoints(errs: &mut Errors, ep: &Endpoints) {
    for (i, subset) in ep.subsets.iter().flatten().enumerate() {
        let path = format!("subsets[{i}]");
        for (field, list) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, a) in list.iter().flatten().enumerate() {
                errs.check_result::<IpAddr>(format!("{path}.{field}[{j}].ip"), names::ip(&a.ip));
                if let Some(h) = &a.hostname {
                    errs.check(
                        format!("{path}.{field}[{j}].hostname"),
                        names::dns1123_label(h),
                    );
                }
            }
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        let mut seen = BTreeSet::new();
        for (j, p) in ports.iter().enumerate() {
            let ppath = format!("{path}.ports[{j}]");
            let name = p.name.as_deref().unwrap_or("");
            if name.is_empty() && ports.len() > 1 {
                errs.push(
                    format!("{ppath}.name"),
                    "Required value: every port needs a name when there is more than one",
                );
            } else if !name.is_empty() {
                errs.check(format!("{ppath}.name"), names::dns1123_label(name));
            }
            if !seen.insert(name) {
                errs.push(
                    format!("{ppath}.name"),
                    format!("Duplicate value: {name:?}"),
                );
            }
            errs.check(format!("{ppath}.port"), names::port(p.port));
            errs.protocol(format!("{ppath}.protocol"), p.protocol.as_ref());
        }
    }
}
