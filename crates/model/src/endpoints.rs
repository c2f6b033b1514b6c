//! Which EndpointSlices belong to which Service, and legacy Endpoints turned
//! into EndpointSlices the way the EndpointSlice mirroring controller does.
//!
//! Pure.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};

use crate::meta::ObjectMeta;
use crate::slice::{Addresses, Endpoint, EndpointConditions, EndpointPort, EndpointSlice};

use crate::object::{Name, NamespacedName, Object};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Endpoints carrying this label set to "true" are not mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Where a slice came from; ordering is slice-name order, so the merge of
/// endpoints is deterministic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SliceId {
    pub name: Name,
    /// `Some(i)` for the i-th slice mirrored from a legacy Endpoints object.
    pub mirrored: Option<usize>,
}

/// Slices an object contributes, with where each came from.
pub(crate) type Contributed = Vec<(SliceId, Arc<EndpointSlice>)>;

/// The service an object feeds endpoints to, and the slices it contributes.
pub(crate) fn slices_of(object: &Object) -> Option<(NamespacedName, Contributed)> {
    match object {
        Object::EndpointSlice(slice) => {
            let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
            let namespace = slice.metadata.namespace.clone().unwrap_or_default();
            let id = SliceId {
                name: slice.metadata.name.as_deref().unwrap_or_default().into(),
                mirrored: None,
            };
            Some((
                NamespacedName::new(namespace, service),
                vec![(id, slice.clone())],
            ))
        }
        Object::Endpoints(ep) => {
            let skip = ep
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SKIP_MIRROR_LABEL))
                .is_some_and(|v| v == "true");
            if skip {
                return None;
            }
            let namespace = ep.metadata.namespace.clone().unwrap_or_default();
            let name: Name = ep.metadata.name.as_deref().unwrap_or_default().into();
            let slices = mirror(ep)
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let id = SliceId {
                        name: name.clone(),
                        mirrored: Some(i),
                    };
                    (id, Arc::new(s))
                })
                .collect();
            Some((NamespacedName::new(namespace, name), slices))
        }
        _ => None,
    }
}

/// Converts legacy Endpoints into EndpointSlices: one slice per subset and
/// address family; `addresses` become ready endpoints, `notReadyAddresses`
/// not-ready ones.
pub(crate) fn mirror(ep: &Endpoints) -> Vec<EndpointSlice> {
    let mut out = Vec::new();
    let name = ep.metadata.name.clone().unwrap_or_default();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        for family in ["IPv4", "IPv6"] {
            let want_v4 = family == "IPv4";
            let pick = |list: &Option<Vec<EndpointAddress>>, ready: bool| -> Vec<Endpoint> {
                list.iter()
                    .flatten()
                    .filter(|a| {
                        a.ip.parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_ipv4() == want_v4)
                    })
                    .map(|a| Endpoint {
                        addresses: Addresses::One(a.ip.as_str().into()),
                        conditions: Some(EndpointConditions {
                            ready: Some(ready),
                            serving: Some(ready),
                            terminating: None,
                        }),
                        hostname: a.hostname.as_deref().map(Into::into),
                        node_name: a.node_name.as_deref().map(crate::intern::shared),
                        target_ref: a.target_ref.clone().map(Into::into),
                        ..Default::default()
                    })
                    .collect()
            };
            let mut endpoints = pick(&subset.addresses, true);
            endpoints.extend(pick(&subset.not_ready_addresses, false));
            if endpoints.is_empty() {
                continue;
            }
            let mut labels = std::collections::BTreeMap::new();
            labels.insert(SERVICE_NAME_LABEL.to_string(), name.clone());
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(name.as_str().into()),
                    namespace: ep.metadata.namespace.as_deref().map(crate::intern::shared),
                    labels: Some(labels.into()),
                    ..Default::default()
                },
                address_type: family.into(),
                endpoints: Some(endpoints),
                ports: Some(ports.clone()),
            });
        }
    }
    out
}
