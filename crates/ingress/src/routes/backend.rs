//! Backends to endpoints: an Ingress backend names a Service port by
//! number (`spec.ports[].port`) or by name; the model has already matched
//! the Service port to its EndpointSlices' ports by name, so each port's
//! endpoints carry the target port to dial. Requests go to those
//! endpoints, never to the ClusterIP, as ingress-nginx does. A port whose
//! `appProtocol` is `kubernetes.io/h2c` is spoken to in HTTP/2.
//!
//! Pure.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_model::{ClusterState, Protocol, ServicePortView};

use super::{PortRef, ServiceRef, UpstreamProtocol};

/// The endpoints to send to: the ready ones; with none ready, the serving
/// and terminating ones; and the protocol the port announces. Err: why
/// there are none (the reason names what is missing).
pub(crate) fn endpoints_of(
    state: &ClusterState,
    target: &ServiceRef,
) -> Result<(Arc<[SocketAddr]>, UpstreamProtocol), String> {
    endpoints_for(state, target, Protocol::Tcp)
}

/// The same for a Service port of `protocol` (the L4 services' UDP ports).
pub(crate) fn endpoints_for(
    state: &ClusterState,
    target: &ServiceRef,
    protocol: Protocol,
) -> Result<(Arc<[SocketAddr]>, UpstreamProtocol), String> {
    let Some(service) = state.service(&target.service) else {
        return Err("no such Service".into());
    };
    if service.external_name.is_some() {
        return Err("an ExternalName Service has no endpoints to route to".into());
    }
    let port = state
        .ports_of(&target.service)
        .find(|p| p.name.protocol == protocol && same_port(p, &target.port))
        .ok_or_else(|| format!("the Service has no {protocol} port {}", target.port))?;
    let addr = |e: &ferry_model::Endpoint| SocketAddr::new(e.ip, e.port);
    let mut ready: Vec<SocketAddr> = port
        .endpoints
        .iter()
        .filter(|e| e.ready)
        .map(addr)
        .collect();
    if ready.is_empty() {
        ready = port
            .endpoints
            .iter()
            .filter(|e| e.serving && e.terminating)
            .map(addr)
            .collect();
    }
    if ready.is_empty() {
        return Err("no ready endpoints".into());
    }
    ready.sort();
    ready.dedup();
    let upstream = match port.app_protocol.as_deref() {
        Some("kubernetes.io/h2c") => UpstreamProtocol::H2c,
        _ => UpstreamProtocol::Http1,
    };
    Ok((ready.into(), upstream))
}

fn same_port(p: &ServicePortView, want: &PortRef) -> bool {
    match want {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => *p.name.port == **name,
    }
}
