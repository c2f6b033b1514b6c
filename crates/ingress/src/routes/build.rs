//! Builds a [`RouteTable`] from a state: the owned Ingresses, oldest first
//! (creationTimestamp, then namespace/name), each checked whole before any
//! of its rules goes in, so a bad Ingress is skipped without half its
//! rules routing; a host and path already claimed by an older Ingress stays
//! with it (ingress-nginx's rule), and the newer claim is reported.
//!
//! Pure.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_model::k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use ferry_model::{ClusterState, Kind, NamespacedName, Object};

use super::backend::endpoints_of;
use super::class::{ClassConfig, Classes};
use super::path::{PathMatch, normalize};
use super::{
    Backend, HostRoutes, PortRef, Problem, RouteTable, RoutesConfig, ServiceRef, UpstreamProtocol,
};

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
struct PlannedPath {
    key: Box<str>,
    kind: PathMatch,
    target: ServiceRef,
    field: String,
}

/// An Ingress, checked and ready to insert.
struct Plan {
    name: NamespacedName,
    /// `nginx.ingress.kubernetes.io/backend-protocol: GRPC`: every backend
    /// of this Ingress is spoken to in h2c.
    grpc: bool,
    default: Option<(ServiceRef, String)>,
    rules: Vec<(HostKey, Vec<PlannedPath>)>,
}

/// The Ingresses of the classes ferry owns, oldest first (the order in
/// which they claim hosts and paths; the TLS certificates follow it too).
pub(crate) fn owned_oldest_first<'a>(
    state: &'a ClusterState,
    config: &ClassConfig,
) -> Vec<&'a Ingress> {
    let classes = Classes::new(state, config);
    let mut ingresses: Vec<&Ingress> = state
        .objects_of(Kind::Ingress)
        .filter_map(|o| match o {
            Object::Ingress(i) => Some(&**i),
            _ => None,
        })
        .filter(|i| classes.owns(i))
        .collect();
    // Oldest first; an Ingress without a creationTimestamp counts as newest.
    ingresses.sort_by_key(|i| {
        let created = i.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (created.is_none(), created, name_of(i))
    });
    ingresses
}

pub(super) fn build(state: &ClusterState, config: &RoutesConfig) -> RouteTable {
    let ingresses = owned_oldest_first(state, &config.classes);
    let mut b = Builder {
        state,
        table: RouteTable {
            version: state.version(),
            ..RouteTable::default()
        },
        claims: HashMap::new(),
        backends: HashMap::new(),
        catch_all: None,
        controller_default: None,
    };
    b.controller_default = config
        .default_backend
        .as_ref()
        .map(|t| b.backend(None, t, "--default-backend-service", false));
    for ingress in ingresses {
        match plan(ingress) {
            Ok(plan) => b.insert(plan),
            Err(p) => b.table.problems.push(*p),
        }
    }
    let catch_all = b
        .catch_all
        .take()
        .map(|(backend, _)| backend)
        .or_else(|| b.controller_default.clone());
    b.table.any_host.fallback = catch_all;
    b.table.ingresses.sort();
    b.table
}

struct Builder<'a> {
    state: &'a ClusterState,
    table: RouteTable,
    /// Who routes each (host, path, match): the first, oldest Ingress.
    claims: HashMap<(HostKey, Box<str>, PathMatchKey), NamespacedName>,
    backends: HashMap<(Option<NamespacedName>, ServiceRef), Arc<Backend>>,
    /// The oldest Ingress with a defaultBackend and no rules.
    catch_all: Option<(Arc<Backend>, NamespacedName)>,
    controller_default: Option<Arc<Backend>>,
}

type PathMatchKey = bool;

impl Builder<'_> {
    fn insert(&mut self, plan: Plan) {
        let default = plan
            .default
            .as_ref()
            .map(|(t, field)| self.backend(Some(&plan.name), t, field, plan.grpc));
        if plan.rules.is_empty()
            && let Some(d) = &default
        {
            match &self.catch_all {
                None => self.catch_all = Some((d.clone(), plan.name.clone())),
                Some((_, winner)) => self.table.problems.push(Problem::Conflict {
                    what: "the catch-all spec.defaultBackend".into(),
                    winner: winner.clone(),
                    loser: plan.name.clone(),
                }),
            }
        }
        for (host, paths) in plan.rules {
            // The Ingress that brings a host gives it its fallback.
            let fallback = default.clone().or_else(|| self.controller_default.clone());
            let routes = match &host {
                HostKey::Exact(h) => Some((&mut self.table.hosts, h)),
                HostKey::Wildcard(h) => Some((&mut self.table.wildcards, h)),
                HostKey::Any => None,
            };
            let routes = match routes {
                Some((map, h)) => map.entry(h.clone()).or_insert_with(|| HostRoutes {
                    fallback,
                    ..HostRoutes::default()
                }),
                None => &mut self.table.any_host,
            };
            for p in paths {
                let claim = (host.clone(), p.key.clone(), p.kind == PathMatch::Exact);
                if let Some(winner) = self.claims.get(&claim) {
                    self.table.problems.push(Problem::Conflict {
                        what: format!("{host} path {:?} ({:?})", p.key, p.kind),
                        winner: winner.clone(),
                        loser: plan.name.clone(),
                    });
                    continue;
                }
                let backend = backend_for(
                    self.state,
                    &mut self.backends,
                    &mut self.table.problems,
                    Some(&plan.name),
                    &p.target,
                    &p.field,
                    plan.grpc,
                );
                match p.kind {
                    PathMatch::Exact => routes.exact.insert(p.key, backend),
                    PathMatch::Prefix => routes.prefix.insert(p.key, backend),
                };
                self.claims.insert(claim, plan.name.clone());
            }
        }
        self.table.ingresses.push(plan.name);
    }

    fn backend(
        &mut self,
        ingress: Option<&NamespacedName>,
        target: &ServiceRef,
        field: &str,
        grpc: bool,
    ) -> Arc<Backend> {
        backend_for(
            self.state,
            &mut self.backends,
            &mut self.table.problems,
            ingress,
            target,
            field,
            grpc,
        )
    }
}

/// One shared [`Backend`] per Ingress and Service port, so its paths share
/// one round robin.
fn backend_for(
    state: &ClusterState,
    backends: &mut HashMap<(Option<NamespacedName>, ServiceRef), Arc<Backend>>,
    problems: &mut Vec<Problem>,
    ingress: Option<&NamespacedName>,
    target: &ServiceRef,
    field: &str,
    grpc: bool,
) -> Arc<Backend> {
    let key = (ingress.cloned(), target.clone());
    if let Some(b) = backends.get(&key) {
        return b.clone();
    }
    let (endpoints, protocol) = endpoints_of(state, target).unwrap_or_else(|reason| {
        problems.push(Problem::NoEndpoints {
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
    backends.insert(key, b.clone());
    b
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
fn plan(ingress: &Ingress) -> Result<Plan, Box<Problem>> {
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
        name,
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
