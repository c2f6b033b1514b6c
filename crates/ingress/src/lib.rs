//! The ingress gateway: routes outside HTTP traffic by the Ingress v1
//! rules of the classes ferry owns to the endpoints of the Services they
//! name, without reloads.
//!
//! Rooms: `routes` (state → route table, pure), `tls` (state →
//! certificate table, pure; the rustls configuration), `proxy` (the HTTP
//! server and the upstream connections; network I/O on the sockets it is
//! given), `l4` (the tcp-services and udp-services ConfigMaps: a pure
//! table and its listeners), `proxy_protocol` (the PROXY protocol v1 and
//! v2 headers of clients behind a load balancer, for the HTTP(S) and L4
//! listeners), `access_log` (one line per request, off the
//! request path), `metrics`, `component` (following the source's
//! snapshots, as the agent runs it).

pub mod access_log;
pub mod component;
pub mod l4;
mod metrics;
pub mod proxy;
mod proxy_protocol;
pub mod routes;
pub mod status;
pub mod tls;

pub use metrics::Metrics;
pub use proxy::{Balance, Gateway, ProxyConfig, Scheme};
pub use routes::{
    Backend, ClassConfig, Classes, Explained, HostMatch, PathMatched, PortRef, Problem, RouteIndex,
    RouteTable, RoutesConfig, ServiceRef, UpstreamProtocol,
};
pub use tls::{CertTable, TlsConfig, TlsProblem};
