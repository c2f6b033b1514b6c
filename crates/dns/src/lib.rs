//! Cluster DNS: authoritative answers for the cluster zones from the
//! `ClusterState`, by the Kubernetes DNS-Based Service Discovery
//! specification 1.1.0 and CoreDNS's kubernetes plugin where the spec is
//! silent; every other name forwarded to upstream resolvers through a cache.
//!
//! The caller (the agent, or `ferry dns`) owns the sockets' namespace and the
//! metrics registry:
//!
//! ```no_run
//! # async fn run(state: ferry_model::ClusterState) -> Result<(), ferry_dns::DnsError> {
//! let mut registry = prometheus_client::registry::Registry::default();
//! let server = ferry_dns::Server::new(ferry_dns::Config::default(), &mut registry)?;
//! let listeners = ferry_dns::Listener::bind("127.0.0.1:5353".parse().unwrap())?;
//! server.serve(listeners)?;
//! server.update(&state);
//! // and for each later state: server.apply(&state, &changes);
//! # Ok(()) }
//! ```
//!
//! Rooms: `wire` (the DNS format, by hand), `index` (state → names,
//! following change sets, pure), `contrib` (what each Service, Pod or
//! namespace gives a name, pure), `encode` (a name's records → answer
//! bytes, pure), `answer` (query → answer, pure), `cache`, `upstream` (forwarding sockets),
//! `server` (the serving loops), `metrics`, `http` (health and metrics).

mod addresses;
mod answer;
mod cache;
mod contrib;
mod encode;
mod http;
mod index;
mod metrics;
mod names;
mod server;
mod upstream;
mod wire;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferry_model::{ChangeSet, ClusterState};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use http::{serve_health, serve_http};
pub use upstream::{ResolvConfError, UpstreamError, read_resolv_conf};

/// CoreDNS's kubernetes plugin default TTL.
pub const DEFAULT_TTL: u32 = 5;
/// The TTL bounds CoreDNS accepts.
pub const MAX_TTL: u32 = 3600;

/// How `a-b-c-d.<ns>.pod.<zone>` names are answered (CoreDNS `pods`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PodMode {
    /// NXDOMAIN for every pod name (CoreDNS's default).
    #[default]
    Disabled,
    /// The address in the name, if the namespace exists (kube-dns compatible).
    Insecure,
    /// Only addresses of Pods in that namespace.
    Verified,
}

impl FromStr for PodMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disabled" => Ok(PodMode::Disabled),
            "insecure" => Ok(PodMode::Insecure),
            "verified" => Ok(PodMode::Verified),
            other => Err(format!(
                "{other:?}: pod mode is disabled, insecure or verified"
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Cluster zones, e.g. `cluster.local`; the first is the primary one
    /// (the names PTR records point to).
    pub zones: Vec<String>,
    /// TTL of cluster records, 0..=3600 s.
    pub ttl: u32,
    pub pods: PodMode,
    /// Only these namespaces are served (CoreDNS `namespaces`); None: all.
    pub namespaces: Option<Vec<String>>,
    /// Resolvers for every other name; empty: such names are REFUSED.
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// Forward-cache bounds; 0 entries disables the cache.
    pub cache_entries: usize,
    pub cache_bytes: usize,
    /// Addresses of `ns.dns.<zone>` (the apex NS glue); CoreDNS uses its own.
    pub nameserver_ips: Vec<IpAddr>,
    /// Forwarded queries in flight at once, each holding one upstream
    /// socket; a query beyond it is answered SERVFAIL at once, not queued.
    pub max_forwards: usize,
    /// TCP connections served at once; one more is closed as it is accepted.
    /// With `max_forwards`, this bounds the sockets the server holds, so the
    /// caller can keep both under its RLIMIT_NOFILE.
    pub tcp_max_connections: usize,
    /// A TCP connection with no query begun for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Time a TCP client has to send the rest of a query once it has begun.
    pub tcp_read_timeout: Duration,
    /// Time a TCP client has to take an answer; a client that does not read is dropped.
    pub tcp_write_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            zones: vec!["cluster.local".to_string()],
            ttl: DEFAULT_TTL,
            pods: PodMode::Disabled,
            namespaces: None,
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            cache_entries: 10_000,
            cache_bytes: 16 << 20,
            nameserver_ips: Vec::new(),
            max_forwards: 256,
            tcp_max_connections: 1000,
            // CoreDNS closes idle TCP connections after 10 s too.
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_read_timeout: Duration::from_secs(5),
            tcp_write_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("zone {zone:?}: not a valid DNS name")]
    BadZone { zone: String },
    #[error("no zone configured")]
    NoZone,
    #[error("ttl {ttl}: must be between 0 and {MAX_TTL} seconds")]
    BadTtl { ttl: u32 },
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve on a given {proto} socket: {source}")]
    Socket {
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Receive buffer asked for each UDP socket served.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// A socket to serve on; the caller may create it (e.g. inside another
/// network namespace) and hand it over.
#[derive(Debug)]
pub enum Listener {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpListener),
}

impl Listener {
    /// Binds UDP and TCP on `addr` in the current thread's network
    /// namespace (port 0: the same ephemeral port for both where possible).
    pub fn bind(addr: SocketAddr) -> Result<Vec<Listener>, DnsError> {
        // Port 0: the UDP port chosen may be taken for TCP by someone
        // else; choose again a few times before giving up.
        let mut tries = if addr.port() == 0 { 5 } else { 1 };
        loop {
            tries -= 1;
            match Self::bind_once(addr) {
                Err(DnsError::Bind {
                    proto: "tcp",
                    source,
                    ..
                }) if tries > 0 && source.kind() == std::io::ErrorKind::AddrInUse => {}
                r => return r,
            }
        }
    }

    fn bind_once(addr: SocketAddr) -> Result<Vec<Listener>, DnsError> {
        let udp = std::net::UdpSocket::bind(addr).map_err(|source| DnsError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        let port_addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        let tcp = std::net::TcpListener::bind(port_addr).map_err(|source| DnsError::Bind {
            addr: port_addr,
            proto: "tcp",
            source,
        })?;
        Ok(vec![Listener::Udp(udp), Listener::Tcp(tcp)])
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Udp(s) => s.local_addr(),
            Listener::Tcp(s) => s.local_addr(),
        }
    }
}

/// The DNS server: cheap to clone; every clone serves the same index.
#[derive(Clone)]
pub struct Server {
    shared: Arc<server::Shared>,
}

impl Server {
    /// Checks `config` and registers the metrics (`ferry_dns_*`) in `registry`.
    /// Cluster names are SERVFAIL until the first [`Server::update`].
    pub fn new(config: Config, registry: &mut Registry) -> Result<Server, DnsError> {
        if config.zones.is_empty() {
            return Err(DnsError::NoZone);
        }
        if config.ttl > MAX_TTL {
            return Err(DnsError::BadTtl { ttl: config.ttl });
        }
        let zones = config
            .zones
            .iter()
            .map(|z| index::Zone::new(z).ok_or_else(|| DnsError::BadZone { zone: z.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = metrics::Metrics::new(registry);
        Ok(Server {
            shared: Arc::new(server::Shared::new(config, zones, metrics)),
        })
    }

    /// Serves on `listeners` from now on, each socket in a task of the
    /// current tokio runtime. Must be called within a runtime.
    pub fn serve(&self, listeners: Vec<Listener>) -> Result<Vec<JoinHandle<()>>, DnsError> {
        let mut tasks = Vec::new();
        for l in listeners {
            match l {
                Listener::Udp(s) => {
                    // A burst that arrives while this socket's task is busy
                    // (an index swap, a full core) waits instead of being
                    // dropped: 4 MiB, as unbound's docs advise under load
                    // (the kernel default is 208 KiB, a few hundred queries).
                    if let Err(e) = ferry_sys::grow_receive_buffer(&s, UDP_RECEIVE_BUFFER) {
                        tracing::warn!(error = %e, "cannot grow the DNS socket's receive buffer");
                    }
                    let s = s
                        .set_nonblocking(true)
                        .and_then(|()| tokio::net::UdpSocket::from_std(s))
                        .map_err(|source| DnsError::Socket {
                            proto: "udp",
                            source,
                        })?;
                    tasks.push(tokio::spawn(server::serve_udp(self.shared.clone(), s)));
                }
                Listener::Tcp(s) => {
                    let s = s
                        .set_nonblocking(true)
                        .and_then(|()| tokio::net::TcpListener::from_std(s))
                        .map_err(|source| DnsError::Socket {
                            proto: "tcp",
                            source,
                        })?;
                    tasks.push(tokio::spawn(server::serve_tcp(self.shared.clone(), s)));
                }
            }
        }
        Ok(tasks)
    }

    /// Rebuilds the name index from `state` and swaps it in; queries in
    /// flight finish on the old one. Blocking work (seconds at 20k Services
    /// and 100k Pods): call it from a blocking thread; later changes go
    /// through [`Server::apply`].
    /// For the first state, and whenever the change set is not known.
    pub fn update(&self, state: &ClusterState) {
        let _writer = self.shared.writer.lock();
        let start = Instant::now();
        let index = index::Index::build(state, &self.shared.config, &self.shared.zones, serial());
        let m = &self.shared.metrics;
        m.index_names.set(index.len() as i64);
        m.index_builds.inc();
        m.index_build_micros.set(start.elapsed().as_micros() as i64);
        tracing::debug!(names = index.len(), took = ?start.elapsed(), "DNS index rebuilt");
        self.shared.index.store(Some(Arc::new(index)));
    }

    /// Moves the index to `state`, where `changes` is what changed since
    /// the state it holds (a `Follower`'s change set): only the names of
    /// the objects `changes` names are derived again, everything else is
    /// shared with the current index, and the new one is swapped in whole.
    /// With no index yet, or a change set that does not start at the
    /// indexed state's version, the changes are found by a full diff.
    pub fn apply(&self, state: &ClusterState, changes: &ChangeSet) {
        let _writer = self.shared.writer.lock();
        let Some(current) = self.shared.index.load_full() else {
            drop(_writer);
            return self.update(state);
        };
        let start = Instant::now();
        let diff;
        let changes =
            if changes.from_version == current.version() && changes.to_version == state.version() {
                changes
            } else {
                tracing::debug!(
                    indexed = current.version(),
                    from = changes.from_version,
                    "DNS change set does not start at the indexed state; diffing"
                );
                diff = current.state().diff(state);
                &diff
            };
        let (index, encoded) = current.apply(
            state,
            changes,
            &self.shared.config,
            &self.shared.zones,
            serial(),
        );
        let m = &self.shared.metrics;
        m.index_names.set(index.len() as i64);
        m.index_changes.inc();
        m.index_change_micros
            .set(start.elapsed().as_micros() as i64);
        tracing::debug!(names = index.len(), encoded, took = ?start.elapsed(), "DNS index changed");
        self.shared.index.store(Some(Arc::new(index)));
    }

    /// Follows a watch channel of states (e.g. the agent's): updates now
    /// and on every change, on a blocking thread, until the sender is gone.
    pub fn follow<T, F>(&self, mut rx: watch::Receiver<T>, state_of: F) -> JoinHandle<()>
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> ClusterState + Send + Sync + 'static,
    {
        let server = self.clone();
        let state_of = Arc::new(state_of);
        tokio::spawn(async move {
            loop {
                let state = state_of(&rx.borrow_and_update());
                let s = server.clone();
                let _ = tokio::task::spawn_blocking(move || s.update(&state)).await;
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    /// True once a state has been loaded (what `/ready` reports).
    pub fn is_ready(&self) -> bool {
        self.shared.index.load().is_some()
    }

    /// Names in the current index (0 before the first state).
    pub fn names(&self) -> usize {
        self.shared.index.load().as_ref().map_or(0, |i| i.len())
    }
}

/// The SOA serial: the time of the change, in seconds.
fn serial() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

impl Server {
    fn cache_len(&self) -> Option<usize> {
        self.shared.cache.lock().ok().map(|c| c.len())
    }
}

impl Server {
    /// Answers `packet` as the serving loops do, without waiting on
    /// upstream: the answer bytes, or None when the packet is dropped or
    /// must be forwarded. For the fuzz target and tests.
    #[doc(hidden)]
    pub fn answer_inline(&self, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match self.shared.handle(packet, udp, &mut out) {
            server::Handled::Reply => Some(out),
            _ => None,
        }
    }
}
