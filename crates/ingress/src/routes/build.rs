//! Checks one Ingress whole ([`plan`]) before any of its rules goes in,
//! so a bad Ingress is skipped without half its rules routing, and
//! resolves a backend's Service port to endpoints ([`backend_for`]). The
//! index (`index.rs`) puts the plans together, oldest Ingress first: a
//! host and path already claimed by an older Ingress stays with it
//! (ingress-nginx's rule), and the newer claim is reported.
//!
//! Pure.

use std::sync::Arc;

use ferry_model::k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use ferry_model::{ClusterState, NamespacedName};

use super::backend::endpoints_of;
use super::path::{PathMatch, normalize};
use super::{Backend, PortRef, Problem, ServiceRef, UpstreamProtocol};

/// Which host a rule (or a `spec.tls[].hosts` entry) is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum HostKey {
    Exact(Box<str>),
    /// `*.foo.com`, held as `foo.com`.
    Wildcard(Box<str>),
    Any,
}

impl std::fmt::Display for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKey::Exact(h) => write!(f, "host {h}"),
            HostKey::Wildcard(h) => write!(f, "host *.{h}"),
            HostKey::Any => f.write_str("any host"),
        }
    }
}

/// One path of one rule, checked.
pub(super) struct PlannedPath {
    pub(super) key: Box<str>,
    pub(super) kind: PathMatch,
    pub(super) target: ServiceRef,
    pub(super) field: String,
}

/// An Ingress, checked and ready to insert.
pub(super) struct Plan {
    /// `nginx.ingress.kubernetes.io/backend-protocol: GRPC`: every backend
    /// of this Ingress is spoken to in h2c.
    pub(super) grpc: bool,
    pub(super) default: Option<(ServiceRef, String)>,
    pub(super) rules: Vec<(HostKey, Vec<PlannedPath>)>,
}

/// The [`Backend`] of an Ingress (None: the controller's default backend)
/// for a Service port, and why it has no endpoints if it has none.
pub(super) fn backend_for(
    state: &ClusterState,
    ingress: Option<&NamespacedName>,
    target: &ServiceRef,
    field: &str,
    grpc: bool,
) -> (Arc<Backend>, Option<Problem>) {
    let mut problem = None;
    let (endpoints, protocol) = endpoints_of(state, target).unwrap_or_else(|reason| {
        problem = Some(Problem::NoEndpoints {
            ingress: ingress
                .cloned()
                .unwrap_or_else(|| NamespacedName::new("", "(controller)")),
            field: field.to_string(),
            target: target.clone(),
            reason,
        });
        (Arc::from(Vec::new()), UpstreamProtocol::Http1)
    });
    let protocol = if grpc {
        UpstreamProtocol::H2c
    } else {
        protocol
    };
    let b =
        Arc::new(Backend::new(ingress.cloned(), target.clone(), endpoints).with_protocol(protocol));
    (b, problem)
}

/// ingress-nginx's annotation naming how to speak to the backends
/// (HTTP, HTTPS, GRPC, GRPCS, ...); ferry acts on GRPC (h2c) only.
const BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";

pub(crate) fn name_of(i: &Ingress) -> NamespacedName {
    NamespacedName::new(
        i.metadata.namespace.as_deref().unwrap_or("default"),
        i.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Checks an Ingress whole; the first problem found skips it.
pub(super) fn plan(ingress: &Ingress) -> Result<Plan, Box<Problem>> {
    let name = name_of(ingress);
    let grpc = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BACKEND_PROTOCOL))
        .is_some_and(|p| p.eq_ignore_ascii_case("GRPC"));
    let invalid = |field: String, reason: &str| {
        Box::new(Problem::Invalid {
            ingress: name.clone(),
            field,
            reason: reason.to_string(),
        })
    };
    let Some(spec) = &ingress.spec else {
        return Err(invalid("spec".into(), "Required value"));
    };
    let namespace = &name.namespace;
    let default = match &spec.default_backend {
        Some(b) => {
            let field = "spec.defaultBackend".to_string();
            Some((
                target(namespace, b).map_err(|r| invalid(field.clone(), &r))?,
                field,
            ))
        }
        None => None,
    };
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() && default.is_none() {
        return Err(invalid(
            "spec".into(),
            "either defaultBackend or rules must be specified",
        ));
    }
    let mut planned = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let host = host_key(rule.host.as_deref().unwrap_or_default())
            .map_err(|r| invalid(format!("{field}.host"), &r))?;
        let mut paths = Vec::new();
        for (j, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let field = format!("{field}.http.paths[{j}]");
            let kind = PathMatch::parse(&p.path_type).ok_or_else(|| {
                invalid(
                    format!("{field}.pathType"),
                    "must be Exact, Prefix or ImplementationSpecific",
                )
            })?;
            let path = match p.path.as_deref() {
                None | Some("") if p.path_type == "ImplementationSpecific" => "/",
                Some(path) if path.starts_with('/') => path,
                _ => {
                    return Err(invalid(
                        format!("{field}.path"),
                        "must be an absolute path (start with /)",
                    ));
                }
            };
            let key: Box<str> = match kind {
                PathMatch::Exact => path.into(),
                PathMatch::Prefix => normalize(path).into(),
            };
            let target = target(namespace, &p.backend)
                .map_err(|r| invalid(format!("{field}.backend"), &r))?;
            paths.push(PlannedPath {
                key,
                kind,
                target,
                field: format!("{field}.backend"),
            });
        }
        planned.push((host, paths));
    }
    Ok(Plan {
        grpc,
        default,
        rules: planned,
    })
}

/// A host as an Ingress writes it (lowercased), checked.
pub(crate) fn host_key(host: &str) -> Result<HostKey, String> {
    if host.is_empty() {
        return Ok(HostKey::Any);
    }
    let host = host.to_ascii_lowercase();
    let (wild, rest) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if rest.is_empty() || !rest.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a DNS name (a wildcard may only be a whole first label, \"*.\")"
        ));
    }
    if rest.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{host:?}: a host may not be an IP address"));
    }
    Ok(if wild {
        HostKey::Wildcard(rest.into())
    } else {
        HostKey::Exact(rest.into())
    })
}

/// The Service port a backend names.
fn target(namespace: &str, b: &IngressBackend) -> Result<ServiceRef, String> {
    if b.resource.is_some() {
        return Err("resource backends are not supported by ferry (only service)".into());
    }
    let Some(svc) = &b.service else {
        return Err("Required value: service".into());
    };
    let port = match svc.port.as_ref().map(|p| (p.name.as_deref(), p.number)) {
        Some((Some(name), None)) if !name.is_empty() => PortRef::Name(name.into()),
        Some((None | Some(""), Some(n))) => match u16::try_from(n) {
            Ok(n) if n > 0 => PortRef::Number(n),
            _ => return Err(format!("service.port.number {n} is not a port")),
        },
        _ => return Err("service.port: exactly one of name and number".into()),
    };
    if svc.name.is_empty() {
        return Err("Required value: service.name".into());
    }
    Ok(ServiceRef {
        service: NamespacedName::new(namespace, svc.name.as_str()),
        port,
    })
}
