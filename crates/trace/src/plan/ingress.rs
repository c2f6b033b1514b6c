//! The ingress hop: for a URL whose host an owned Ingress routes, which
//! rules the host picked (exact, wildcard or host-less), which path
//! matched and why (longest Prefix; Exact over Prefix), the Ingress and
//! its backend Service port with the endpoints the gateway sends to, or
//! the default backend, or 404. The decision is the ingress crate's own
//! (`RouteTable::explain`); this module only words it.
//!
//! Pure.

use std::net::{IpAddr, SocketAddr};

use ferry_ingress::routes::CONTROLLER;
use ferry_ingress::{Backend, HostMatch, PathMatched, RouteTable, RoutesConfig};

use super::Inputs;
use crate::resolve::To;
use crate::{Candidate, Hop, HopKind};

/// What the ingress hop decided: the hop, and the endpoints the gateway
/// may connect to.
pub(super) struct IngressHop {
    pub hop: Hop,
    pub targets: Vec<IpAddr>,
}

/// The route table of the Ingresses ferry owns (the default classes: the
/// IngressClasses of controller `ferry.dev/ingress-controller`).
pub(super) fn table(inputs: &Inputs) -> RouteTable {
    RouteTable::build(inputs.state, &RoutesConfig::default())
}

/// Whether an owned Ingress has rules for `host` (exactly or by wildcard).
pub(super) fn routes_host(table: &RouteTable, host: &str) -> bool {
    table.explain(host, "/").host != HostMatch::Any
}

fn path_text(m: PathMatched) -> String {
    match m {
        PathMatched::Exact(p) => format!("Exact {p}"),
        PathMatched::Prefix("") => "Prefix /".into(),
        PathMatched::Prefix(p) => format!("Prefix {p}"),
    }
}

fn owner(b: &Backend) -> String {
    match &b.ingress {
        Some(i) => format!("Ingress {i}"),
        None => "the controller's default backend".into(),
    }
}

/// The ingress hop for `to`, entered at `via` (the gateway's address, when
/// known) on node `node`.
pub(super) fn hop(
    inputs: &Inputs,
    table: &RouteTable,
    to: &To,
    via: Option<SocketAddr>,
    node: Option<&str>,
) -> IngressHop {
    let mut hop = Hop::new(HopKind::Ingress, format!("Ingress: {}{}", to.host, to.path));
    hop.node = node.map(str::to_string);
    hop.decided.push(format!(
        "route table of the Ingresses ferry owns (IngressClass controller {CONTROLLER}, the gateway's default): {} Ingress(es), {} host(s) with rules",
        table.ingresses().len(),
        table.hosts()
    ));
    hop.decided.push(match (via, node) {
        (Some(addr), Some(n)) => format!("the request enters the gateway at {addr} on {n}"),
        (Some(addr), None) => format!("the request enters the gateway at {addr} (not a lab node)"),
        (None, _) => "the gateway's address is not known (give it with --ingress ADDR); the lab does not say where the gateway listens".into(),
    });
    let e = table.explain(&to.host, &to.path);
    let host = &to.host;
    let (host_text, host_step) = match e.host {
        HostMatch::Exact(h) => (
            format!("Host {host}: the rules for exactly {h}"),
            format!("host {h}"),
        ),
        HostMatch::Wildcard(rest) => (
            format!(
                "Host {host}: no rule for exactly {host}; the wildcard *.{rest} matches its first label"
            ),
            format!("host *.{rest}"),
        ),
        HostMatch::Any => (
            format!("Host {host}: no rule names it; the rules without a host"),
            "any host".to_string(),
        ),
    };
    hop.decided.push(host_text);
    hop.path.push(host_step);
    let backend = e.backend();
    match e.matches.split_first() {
        Some(((m, b), rest)) => {
            hop.decided.push(format!(
                "path {}: matches {} of {}",
                to.path,
                path_text(*m),
                owner(b)
            ));
            for (other, ob) in rest {
                let why = match (m, other) {
                    (PathMatched::Exact(_), _) => "an Exact match beats every Prefix match",
                    _ => "the longest matching Prefix wins",
                };
                hop.decided.push(format!(
                    "also matches {} of {} (Service {}): passed over, {why}",
                    path_text(*other),
                    owner(ob),
                    ob.target
                ));
            }
            hop.path.push(path_text(*m));
        }
        None => match e.fallback {
            Some(b) => {
                let whose = match (&b.ingress, e.host) {
                    (Some(i), HostMatch::Any) => {
                        format!("the catch-all spec.defaultBackend of Ingress {i}")
                    }
                    (Some(i), _) => {
                        format!("the spec.defaultBackend of Ingress {i}, which brought the host")
                    }
                    (None, _) => "the controller's default backend".into(),
                };
                hop.decided
                    .push(format!("path {}: no rule path matches; {whose}", to.path));
                hop.path.push("default backend".into());
            }
            None => {
                hop.decided.push(format!(
                    "path {}: no rule path matches and there is no default backend: the gateway answers 404",
                    to.path
                ));
                hop.path.push("404".into());
            }
        },
    }
    let mut targets = Vec::new();
    if let Some(b) = backend {
        hop.path.push(format!("Service {}", b.target));
        if b.endpoints.is_empty() {
            hop.decided.push(format!(
                "backend Service {}: no ready endpoint, the gateway answers 503",
                b.target
            ));
        } else {
            hop.decided.push(format!(
                "backend Service {}: {} endpoint(s), dialled directly (not the ClusterIP), round robin",
                b.target,
                b.endpoints.len()
            ));
        }
        let n = b.endpoints.len() as f64;
        for ep in b.endpoints.iter() {
            let holder = inputs.topology.holder(ep.ip());
            let pod = inputs.topology.pod_with_ip(ep.ip());
            hop.endpoints.push(Candidate {
                ip: ep.ip(),
                port: ep.port(),
                node: holder.map(|h| h.name.clone()),
                pod: pod.map(|p| format!("{}/{}", p.namespace, p.name)),
                local: node.is_some() && holder.map(|h| h.name.as_str()) == node,
                rule_probability: 1.0 / n,
                share: 1.0 / n,
                entry: "round robin".into(),
                masquerade: None,
            });
            targets.push(ep.ip());
        }
    }
    let problems: Vec<String> = table
        .problems()
        .iter()
        .map(ToString::to_string)
        .filter(|p| {
            p.contains(&format!("host {host}"))
                || backend.is_some_and(|b| {
                    b.ingress
                        .as_ref()
                        .is_some_and(|i| p.starts_with(&format!("Ingress {i}:")))
                })
        })
        .collect();
    for p in problems {
        hop.decided.push(format!("note: {p}"));
    }
    IngressHop { hop, targets }
}
