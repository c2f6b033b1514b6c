//! The ingress gateway: routes outside HTTP traffic by the Ingress v1
//! rules of the classes ferry owns to the endpoints of the Services they
//! name, without reloads.
//!
//! Rooms: `routes` (state → route table, pure), `proxy` (the HTTP server
//! and the upstream connections; network I/O on the sockets it is given),
//! `metrics`, `component` (following the source's snapshots, as the agent
//! runs it).

pub mod component;
mod metrics;
pub mod proxy;
pub mod routes;

pub use metrics::Metrics;
pub use proxy::{Balance, Gateway, ProxyConfig, Scheme};
pub use routes::{Backend, ClassConfig, Classes, PortRef, Problem, RouteTable, RoutesConfig, ServiceRef};
