//! The route table: every Ingress rule of the classes ferry owns, as the
//! proxy looks it up per request. Built from a `ClusterState`
//! ([`RouteTable::build`], or [`RouteIndex::apply`] from a change set,
//! sharing what did not change), never changed after: a new state gives a
//! new table, swapped in atomically, while requests in flight finish on the
//! one they loaded.
//!
//! Shape: a request's host picks one [`HostRoutes`] (an exact host, else
//! the `*.rest` wildcard for its first label, else the rules without a
//! host); inside it, an Exact path is one hash lookup, and Prefix paths are
//! one hash lookup per element boundary of the request path, longest
//! first; nothing matching gives the host's fallback (the defaultBackend of
//! the Ingress that brought the host, else the controller's default
//! backend), and no fallback gives a 404. Lookups cost O(path elements)
//! whatever the number of Ingresses.
//!
//! Pure: no I/O, no clocks.

mod backend;
mod build;
mod class;
mod index;
#[cfg(test)]
mod index_tests;
mod path;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use ferry_model::NamespacedName;
use ferry_model::k8s_openapi::api::networking::v1::Ingress;

pub(crate) use backend::endpoints_for;
pub(crate) use build::{HostKey, host_key, name_of};
pub use class::{CONTROLLER, ClassConfig, Classes};
pub use index::RouteIndex;

/// What the route table is built with.
#[derive(Clone, Debug, Default)]
pub struct RoutesConfig {
    pub classes: ClassConfig,
    /// The controller's default backend (ingress-nginx's
    /// `--default-backend-service`): unmatched requests go there instead of
    /// getting ferry's 404.
    pub default_backend: Option<ServiceRef>,
}

/// A Service port as a backend names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub service: NamespacedName,
    pub port: PortRef,
}

impl std::str::FromStr for ServiceRef {
    type Err = String;

    /// `namespace/name:port`, the port a number or a name.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: a service is namespace/name:port");
        let (svc, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let (ns, name) = svc.split_once('/').ok_or_else(bad)?;
        if ns.is_empty() || name.is_empty() || port.is_empty() {
            return Err(bad());
        }
        let port = match port.parse::<u16>() {
            Ok(n) => PortRef::Number(n),
            Err(_) => PortRef::Name(port.into()),
        };
        Ok(ServiceRef {
            service: NamespacedName::new(ns, name),
            port,
        })
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.port)
    }
}

/// `service.port` of an Ingress backend: the Service port's number or name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Name(Box<str>),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// How the proxy speaks to a backend's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 without TLS (prior knowledge), one multiplexed connection
    /// per endpoint, trailers kept: the Service port's `appProtocol` is
    /// `kubernetes.io/h2c`, or the Ingress has ingress-nginx's
    /// `nginx.ingress.kubernetes.io/backend-protocol: GRPC`.
    H2c,
}

/// Where matching requests go: a Service port and the endpoints it had
/// when the table was built.
#[derive(Debug)]
pub struct Backend {
    /// The Ingress whose rule (or defaultBackend) this is; None for the
    /// controller's default backend.
    pub ingress: Option<NamespacedName>,
    pub target: ServiceRef,
    /// Ready endpoints; when none is ready, the serving and terminating
    /// ones (as kube-proxy falls back). Sorted.
    pub endpoints: Arc<[SocketAddr]>,
    pub protocol: UpstreamProtocol,
    /// Round-robin position, shared by every request using this table.
    pub(crate) next: AtomicUsize,
    /// `namespace/name` of the Ingress and of the Service, as metric labels.
    pub(crate) labels: [Arc<str>; 2],
}

impl Backend {
    pub(crate) fn new(
        ingress: Option<NamespacedName>,
        target: ServiceRef,
        endpoints: Arc<[SocketAddr]>,
    ) -> Backend {
        let labels = [
            ingress
                .as_ref()
                .map_or_else(String::new, ToString::to_string)
                .into(),
            target.service.to_string().into(),
        ];
        Backend {
            ingress,
            target,
            endpoints,
            protocol: UpstreamProtocol::Http1,
            next: AtomicUsize::new(0),
            labels,
        }
    }

    pub(crate) fn with_protocol(self, protocol: UpstreamProtocol) -> Backend {
        Backend { protocol, ..self }
    }
}

/// The paths of one host.
#[derive(Debug, Default)]
pub struct HostRoutes {
    /// Exact paths, as written.
    exact: HashMap<Box<str>, Arc<Backend>>,
    /// Prefix (and ImplementationSpecific) paths, normalized by
    /// [`path::normalize`]: no trailing slash, no empty elements, `/` is "".
    prefix: HashMap<Box<str>, Arc<Backend>>,
    /// Where a request for this host matching no path goes: the
    /// defaultBackend of the Ingress that brought the host (for the rules
    /// without a host, the catch-all's); None: the table's
    /// `default_backend`.
    fallback: Option<Arc<Backend>>,
}

impl HostRoutes {
    /// The backend for `path`: Exact first (an Exact path that matches is
    /// always at least as long as any matching Prefix), then the longest
    /// matching Prefix, then the fallback, then `default`.
    fn lookup<'t>(
        &'t self,
        path: &str,
        default: Option<&'t Arc<Backend>>,
    ) -> Option<&'t Arc<Backend>> {
        match self.matching(path).next() {
            Some((_, b)) => Some(b),
            None => self.fallback.as_ref().or(default),
        }
    }

    /// Every path of this host that matches `path`, best first: the Exact
    /// one, then the Prefixes from the longest.
    fn matching<'t, 'p>(&'t self, path: &'p str) -> Matching<'t, 'p> {
        Matching {
            routes: self,
            path,
            step: Step::Exact,
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty()
    }
}

/// Where [`Matching`] is: the Exact probe, then the Prefix probes from
/// the whole normalized path down to "" (the root), then done.
enum Step<'p> {
    Exact,
    Prefix { norm: Cow<'p, str>, end: usize },
    Done,
}

/// The paths of one host that match a request path, best first.
struct Matching<'t, 'p> {
    routes: &'t HostRoutes,
    path: &'p str,
    step: Step<'p>,
}

impl<'t> Iterator for Matching<'t, '_> {
    type Item = (PathMatched<'t>, &'t Arc<Backend>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match &mut self.step {
                Step::Exact => {
                    self.step = if self.routes.prefix.is_empty() {
                        Step::Done
                    } else {
                        let norm = path::normalize(self.path);
                        let end = norm.len();
                        Step::Prefix { norm, end }
                    };
                    if let Some((k, b)) = self.routes.exact.get_key_value(self.path) {
                        return Some((PathMatched::Exact(k), b));
                    }
                }
                Step::Prefix { norm, end } => {
                    let candidate = &norm[..*end];
                    let found = self.routes.prefix.get_key_value(candidate);
                    match candidate.rfind('/') {
                        Some(i) => *end = i,
                        None => self.step = Step::Done,
                    }
                    if let Some((k, b)) = found {
                        return Some((PathMatched::Prefix(k), b));
                    }
                }
                Step::Done => return None,
            }
        }
    }
}

/// How a request's host picked the rules it is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMatch<'t> {
    /// Rules for exactly this host.
    Exact(&'t str),
    /// The `*.rest` rules for the host's first label; holds `rest`.
    Wildcard(&'t str),
    /// No rule names the host: the rules without a host.
    Any,
}

/// A rule path that matched a request's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMatched<'t> {
    /// An Exact path, as written.
    Exact(&'t str),
    /// A Prefix (or ImplementationSpecific) path, normalized: no trailing
    /// slash, and "" for `/`.
    Prefix(&'t str),
}

/// Why a request goes where it goes: what [`RouteTable::lookup`] decides,
/// with the alternatives it passed over. Built by [`RouteTable::explain`].
#[derive(Debug)]
pub struct Explained<'t> {
    pub host: HostMatch<'t>,
    /// Every path of the picked host that matches, best first; the first
    /// is the one taken.
    pub matches: Vec<(PathMatched<'t>, &'t Arc<Backend>)>,
    /// Where a request matching no path goes (None: 404).
    pub fallback: Option<&'t Arc<Backend>>,
}

impl<'t> Explained<'t> {
    /// The backend the request goes to, as `lookup` gives it.
    pub fn backend(&self) -> Option<&'t Arc<Backend>> {
        self.matches.first().map(|(_, b)| *b).or(self.fallback)
    }
}

/// Every route of the owned Ingresses, for one state version.
#[derive(Debug, Default)]
pub struct RouteTable {
    version: u64,
    /// Exact hosts, lowercase; a host's routes are shared with the
    /// previous table when nothing of them changed.
    hosts: HashMap<Arc<str>, Arc<HostRoutes>>,
    /// `*.foo.com` rules, keyed by `foo.com`.
    wildcards: HashMap<Arc<str>, Arc<HostRoutes>>,
    /// Rules without a host; their fallback is the catch-all default (the
    /// oldest Ingress with a defaultBackend and no rules, else the
    /// controller's default backend).
    any_host: Arc<HostRoutes>,
    /// The controller's default backend (`--ingress-default-backend`):
    /// where a host without a fallback of its own sends unmatched paths.
    /// Kept here, not in each host, so a change of its endpoints rebuilds
    /// no host.
    default_backend: Option<Arc<Backend>>,
    ingresses: Arc<[NamespacedName]>,
    problems: Vec<Problem>,
    /// The routed Ingresses with `spec.tls`, oldest first (the order in
    /// which they claim certificates for hosts).
    tls: Vec<Arc<Ingress>>,
}

impl RouteTable {
    /// The table for `state` (see the module doc); what could not be routed
    /// is in [`RouteTable::problems`].
    pub fn build(state: &ferry_model::ClusterState, config: &RoutesConfig) -> RouteTable {
        RouteIndex::new(config.clone()).apply(state, None)
    }

    /// The backend for a request to `host` (the Host header or `:authority`,
    /// any case, with or without a port) and `path` (without the query);
    /// None: answer 404.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        self.host_routes(host)
            .1
            .lookup(path, self.default_backend.as_ref())
    }

    /// What [`RouteTable::lookup`] decides for `host` and `path`, and why:
    /// the host rules picked, every matching path best first, the
    /// fallback. For tools (`ferry trace`); the proxy calls `lookup`.
    pub fn explain(&self, host: &str, path: &str) -> Explained<'_> {
        let (host, routes) = self.host_routes(host);
        Explained {
            host,
            matches: routes.matching(path).collect(),
            fallback: routes.fallback.as_ref().or(self.default_backend.as_ref()),
        }
    }

    /// The rules a request's host picks: its exact host, else the wildcard
    /// of its first label, else the rules without a host.
    fn host_routes(&self, host: &str) -> (HostMatch<'_>, &HostRoutes) {
        let host = request_host(host);
        let host = host.as_ref();
        if let Some((k, r)) = self.hosts.get_key_value(host) {
            return (HostMatch::Exact(k), r);
        }
        if let Some((_, rest)) = host.split_once('.')
            && let Some((k, r)) = self.wildcards.get_key_value(rest)
        {
            return (HostMatch::Wildcard(k), r);
        }
        (HostMatch::Any, &self.any_host)
    }

    /// The state version this table was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The Ingresses this table routes for (the owned and valid ones), sorted.
    pub fn ingresses(&self) -> &[NamespacedName] {
        &self.ingresses
    }

    /// Ingresses skipped, rules lost to older Ingresses, backends without
    /// endpoints.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The routed Ingresses with `spec.tls`, oldest first.
    pub(crate) fn tls_ingresses(&self) -> &[Arc<Ingress>] {
        &self.tls
    }

    /// Hosts with rules (exact and wildcard).
    pub fn hosts(&self) -> usize {
        self.hosts.len() + self.wildcards.len() + usize::from(!self.any_host.is_empty())
    }
}

/// The host of a Host header (or SNI) as the tables key it: lowercase,
/// without the port, without a final dot.
pub(crate) fn request_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host_only(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    }
}

/// The host of a Host header: without the port, without a final dot.
fn host_only(host: &str) -> &str {
    let host = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:80`.
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Something the table builder could not route as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The whole Ingress is skipped; the others still route.
    #[error("Ingress {ingress}: {field}: {reason}; the Ingress is skipped")]
    Invalid {
        ingress: NamespacedName,
        field: String,
        reason: String,
    },
    /// Two Ingresses claim the same host and path (or the catch-all
    /// default backend): the older one serves it, as in ingress-nginx.
    #[error(
        "Ingress {loser}: {what} is already routed by the older Ingress {winner}; this rule is ignored"
    )]
    Conflict {
        what: String,
        winner: NamespacedName,
        loser: NamespacedName,
    },
    /// A backend routes, but to nothing: its requests get 503.
    #[error("Ingress {ingress}: {field}: Service {target}: {reason}")]
    NoEndpoints {
        ingress: NamespacedName,
        field: String,
        target: ServiceRef,
        reason: String,
    },
}
