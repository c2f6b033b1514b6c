//! L4 services: ingress-nginx's `tcp-services` and `udp-services`
//! ConfigMaps. `table` (pure) reads them into port → Service port
//! endpoints; `server` keeps one listener per port, opening and closing
//! listeners as the ConfigMaps change and swapping each port's backend in
//! place (connections under way keep theirs); `tcp` proxies connections
//! (round robin, a refused connect retried on the next endpoint), `udp`
//! proxies datagrams with one flow per client and an idle timeout;
//! PROXY protocol headers are read and written by the crate's
//! `proxy_protocol`, which the HTTP(S) listeners share.

mod server;
mod table;
mod tcp;
mod udp;

pub use server::{L4Server, L4Settings};
pub use table::{L4Backend, L4Config, L4Problem, L4Table};

use std::net::SocketAddr;

use ferry_model::ClusterState;

/// The L4 services as the component runs them: a table per state, applied
/// to the listeners.
pub(crate) struct L4 {
    config: L4Config,
    /// The HTTP listeners' ports, not available to L4 services.
    reserved: Vec<u16>,
    server: L4Server,
}

impl L4 {
    /// None when no ConfigMap is named.
    pub fn new(config: L4Config, http: &[SocketAddr], settings: L4Settings) -> Option<L4> {
        if config.tcp_services.is_none() && config.udp_services.is_none() {
            return None;
        }
        Some(L4 {
            reserved: http.iter().map(SocketAddr::port).collect(),
            server: L4Server::new(http.iter().map(SocketAddr::ip).collect(), settings),
            config,
        })
    }

    /// Builds the table for `state` and applies it; what it could not
    /// serve as written.
    pub fn update(&mut self, state: &ClusterState) -> Vec<String> {
        let table = L4Table::build(state, &self.config, &self.reserved);
        let mut problems: Vec<String> = table.problems.iter().map(ToString::to_string).collect();
        problems.extend(self.server.apply(&table));
        problems
    }
}
