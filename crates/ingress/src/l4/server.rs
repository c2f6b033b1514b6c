//! The L4 listeners: one per port of the table and per address the
//! ingress listens on. Applying a new table opens the ports that are new,
//! closes the ones that are gone (their UDP flows with them; TCP
//! connections under way finish), and swaps the backend of the others in
//! place, so a changed Service or endpoint list never restarts a listener.
//! A port that cannot be bound is reported and tried again at the next
//! table.
//!
//! Touches the network: binds TCP and UDP sockets; runs on the ingress's
//! runtime.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ferry_model::Protocol;
use tokio::task::JoinHandle;

use super::table::{L4Backend, L4Table};
use super::{tcp, udp};

/// How L4 traffic is carried.
#[derive(Clone, Copy, Debug)]
pub struct L4Settings {
    /// Time to connect to an endpoint (the HTTP proxy's connect timeout).
    pub connect_timeout: Duration,
    /// Endpoints tried per TCP connection.
    pub tries: usize,
    /// A UDP flow quiet this long is closed.
    pub udp_idle_timeout: Duration,
}

impl Default for L4Settings {
    fn default() -> Self {
        L4Settings {
            connect_timeout: Duration::from_secs(5),
            tries: 3,
            udp_idle_timeout: Duration::from_secs(30),
        }
    }
}

struct Listener {
    backend: Arc<ArcSwap<L4Backend>>,
    tasks: Vec<JoinHandle<()>>,
    flows: Option<udp::Flows>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(flows) = &self.flows {
            udp::close_all(flows);
        }
    }
}

/// The L4 side of the ingress.
pub struct L4Server {
    addresses: Vec<IpAddr>,
    settings: L4Settings,
    listeners: BTreeMap<(Protocol, u16), Listener>,
}

impl L4Server {
    /// Listens on `addresses` (the HTTP listeners' addresses).
    pub fn new(addresses: Vec<IpAddr>, settings: L4Settings) -> L4Server {
        let mut addresses = addresses;
        addresses.sort();
        addresses.dedup();
        L4Server {
            addresses,
            settings,
            listeners: BTreeMap::new(),
        }
    }

    /// Makes the listeners match `table`; inside a tokio runtime. Returns
    /// the ports that could not be bound, with why.
    pub fn apply(&mut self, table: &L4Table) -> Vec<String> {
        let want: BTreeMap<(Protocol, u16), &Arc<L4Backend>> = table
            .tcp
            .iter()
            .map(|(p, b)| ((Protocol::Tcp, *p), b))
            .chain(table.udp.iter().map(|(p, b)| ((Protocol::Udp, *p), b)))
            .collect();
        self.listeners.retain(|key, _| want.contains_key(key));
        let mut errors = Vec::new();
        for (key, backend) in want {
            if let Some(l) = self.listeners.get(&key) {
                if !l.backend.load().same_as(backend) {
                    l.backend.store(backend.clone());
                }
                continue;
            }
            match self.open(key, backend.clone()) {
                Ok(l) => {
                    tracing::info!(protocol = %key.0, port = key.1, service = %backend.target, "L4 service listening");
                    self.listeners.insert(key, l);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    fn open(
        &self,
        (protocol, port): (Protocol, u16),
        backend: Arc<L4Backend>,
    ) -> Result<Listener, String> {
        // Tasks already started are stopped (on drop) if a later address fails.
        let mut listener = Listener {
            backend: Arc::new(ArcSwap::new(backend)),
            tasks: Vec::new(),
            flows: (protocol == Protocol::Udp).then(udp::flows),
        };
        let backend = listener.backend.clone();
        for ip in &self.addresses {
            let addr = SocketAddr::new(*ip, port);
            let bound = |e: std::io::Error| {
                format!("cannot listen on {addr}/{protocol} for an L4 service: {e}")
            };
            let task = match &listener.flows {
                None => {
                    let l = std::net::TcpListener::bind(addr)
                        .and_then(|l| l.set_nonblocking(true).map(|()| l))
                        .and_then(tokio::net::TcpListener::from_std)
                        .map_err(bound)?;
                    tokio::spawn(tcp::serve(l, backend.clone(), self.settings))
                }
                Some(flows) => {
                    let s = std::net::UdpSocket::bind(addr)
                        .and_then(|s| s.set_nonblocking(true).map(|()| s))
                        .and_then(tokio::net::UdpSocket::from_std)
                        .map_err(bound)?;
                    tokio::spawn(udp::serve(s, backend.clone(), self.settings, flows.clone()))
                }
            };
            listener.tasks.push(task);
        }
        Ok(listener)
    }

    /// The ports listened on, by protocol.
    pub fn ports(&self, protocol: Protocol) -> Vec<u16> {
        self.listeners
            .keys()
            .filter(|(p, _)| *p == protocol)
            .map(|(_, port)| *port)
            .collect()
    }

    /// Open UDP flows on `port`.
    pub fn udp_flows(&self, port: u16) -> usize {
        self.listeners
            .get(&(Protocol::Udp, port))
            .and_then(|l| l.flows.as_ref())
            .map_or(0, udp::count)
    }
}
