//! The ingress as a component of the agent (or of a command running it
//! alone): it binds its listeners first, so a port in use stops it before
//! anything runs, then serves them on a runtime of its own (ingress load
//! must not starve DNS or the proxy's syncs in the same agent) and follows
//! the source's snapshots: each new state gives a new route table (from
//! the snapshot's change set: what did not change is shared with the
//! previous table) and a new certificate table, built on a blocking thread
//! and swapped in whole;
//! it reports the state version it routes by, and logs each problem
//! (skipped Ingress, conflict, backend without endpoints, unusable TLS
//! Secret, bad L4 entry) once, when it appears. The L4 services follow the
//! same snapshots, and the access log gets a writer thread.
//!
//! Touches the network: binds TCP listeners (and the L4 services' TCP and
//! UDP ports); starts threads.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_source::Follower;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::access_log::{AccessLog, AccessLogFormat};
use crate::l4::{L4, L4Config, L4Settings};
use crate::routes::RouteIndex;
use crate::tls::{self, CertTable, TlsConfig};
use crate::{Gateway, Metrics, ProxyConfig, RoutesConfig, Scheme};

/// The ingress component's settings.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// Plain HTTP listeners (the agent's default: :80, as an ingress-nginx
    /// DaemonSet with host ports).
    pub http: Vec<SocketAddr>,
    /// HTTPS listeners (the agent's: :443). None by default here, so a
    /// test or tool starting the component binds only what it names.
    pub https: Vec<SocketAddr>,
    pub routes: RoutesConfig,
    pub tls: TlsConfig,
    pub proxy: ProxyConfig,
    /// Worker threads, each with a current-thread runtime of its own
    /// accepting on every listener (as nginx's worker processes).
    pub workers: usize,
    /// One line (or JSON object) per request on stdout, or off.
    pub access_log: AccessLogFormat,
    /// The tcp-services and udp-services ConfigMaps (listened on at the
    /// HTTP listeners' addresses).
    pub l4: L4Config,
    /// How long [`IngressHandle::drain`] waits for requests in flight.
    pub drain_timeout: Duration,
}

/// The default drain timeout: within a Pod's default
/// terminationGracePeriodSeconds (30 s), so the drain ends before the
/// kubelet's SIGKILL. (ingress-nginx waits up to its
/// `worker-shutdown-timeout`, 240 s, under a grace period of 300 s.)
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            http: vec![SocketAddr::from(([0, 0, 0, 0], 80))],
            https: Vec::new(),
            routes: RoutesConfig::default(),
            tls: TlsConfig::default(),
            proxy: ProxyConfig::default(),
            workers: 1,
            access_log: AccessLogFormat::default(),
            l4: L4Config::default(),
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot listen on {addr} for ingress HTTP(S): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the ingress runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    DefaultCertificate(#[from] tls::DefaultCertError),
}

/// A running ingress.
pub struct IngressHandle {
    /// The state version of the route table in use.
    pub applied: watch::Receiver<Option<u64>>,
    /// The addresses listened on (ports resolved).
    pub http: Vec<SocketAddr>,
    pub https: Vec<SocketAddr>,
    pub gateway: Gateway,
    drain_timeout: Duration,
}

impl IngressHandle {
    /// The graceful stop (on SIGTERM): stops accepting on the HTTP(S)
    /// listeners, lets requests in flight finish and closes idle
    /// connections (see [`Gateway::drain`]), waiting at most the drain
    /// timeout. True when every connection closed in time.
    pub async fn drain(&self) -> bool {
        let start = Instant::now();
        let open = self.gateway.open_connections();
        tracing::info!(open, timeout = ?self.drain_timeout, "ingress draining");
        let drained = self.gateway.drain(self.drain_timeout).await;
        if drained {
            tracing::info!(took = ?start.elapsed(), "ingress drained");
        } else {
            tracing::warn!(
                open = self.gateway.open_connections(),
                "ingress drain timed out; closing the connections left"
            );
        }
        drained
    }
}

/// Binds the listeners, then serves and follows `follower` on a thread
/// with its own runtime.
pub fn start(
    config: IngressConfig,
    mut follower: Follower,
    registry: &mut Registry,
) -> Result<IngressHandle, IngressError> {
    let workers = config.workers.max(1);
    let (mut listeners, http) = bind(&config.http, workers)?;
    let (mut tls_listeners, https) = bind(&config.https, workers)?;
    let self_signed = tls::self_signed()?;
    let metrics = Metrics::register(registry);
    let gateway = Gateway::new(config.proxy.clone(), Some(metrics));
    gateway.swap_certs(Arc::new(CertTable::with_default(self_signed.clone())));
    if let Some(log) = AccessLog::start(
        config.access_log,
        Box::new(std::io::stdout()),
        crate::access_log::QUEUE,
        Some(registry),
    )
    .map_err(IngressError::Runtime)?
    {
        gateway.set_access_log(log);
    }
    // Each worker is a thread with a current-thread runtime of its own
    // accepting on its own socket of each address (SO_REUSEPORT: the
    // kernel spreads connections evenly), as nginx's worker processes do:
    // a request and its upstream connection stay on one thread, so it never
    // wakes another (a profile of the one-worker multi-thread runtime spent
    // about a tenth of its time in the kernel's wake-ups; two work-stealing
    // workers cost twice nginx's CPU per request). Worker 0 also follows
    // the source and runs the L4 services.
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(IngressError::Runtime)
    };
    let rt = runtime()?;
    for worker in 1..workers {
        let rt = runtime()?;
        let http = listeners.pop().unwrap_or_default();
        let https = tls_listeners.pop().unwrap_or_default();
        let gw = gateway.clone();
        std::thread::Builder::new()
            .name(format!("ingress-{worker}"))
            .spawn(move || {
                crate::proxy::set_worker(worker);
                rt.block_on(async move {
                    serve_all(&gw, http, https);
                    std::future::pending::<()>().await;
                });
            })
            .map_err(IngressError::Runtime)?;
    }
    let (applied_tx, applied) = watch::channel(None::<u64>);
    let gw = gateway.clone();
    let tables = Tables {
        routes: config.routes.clone(),
        tls: config.tls.clone(),
        self_signed,
    };
    let l4_settings = L4Settings {
        connect_timeout: config.proxy.connect_timeout,
        tries: config.proxy.tries,
        udp_idle_timeout: config.l4.udp_idle_timeout,
    };
    let l4_config = config.l4.clone();
    let l4_addresses = http.clone();
    std::thread::Builder::new()
        .name("ingress".into())
        .spawn(move || {
            rt.block_on(async move {
                serve_all(
                    &gw,
                    listeners.pop().unwrap_or_default(),
                    tls_listeners.pop().unwrap_or_default(),
                );
                let l4 = L4::new(l4_config, &l4_addresses, l4_settings);
                follow(&gw, l4, &mut follower, tables, &applied_tx).await;
            });
        })
        .map_err(IngressError::Runtime)?;
    tracing::info!(http = ?http, https = ?https, "ingress serving");
    Ok(IngressHandle {
        applied,
        http,
        https,
        gateway,
        drain_timeout: config.drain_timeout,
    })
}

/// Spawns the accept loops of `http` and `https` on the current runtime.
fn serve_all(gw: &Gateway, http: Vec<std::net::TcpListener>, https: Vec<std::net::TcpListener>) {
    let listeners = http
        .into_iter()
        .map(|l| (l, false))
        .chain(https.into_iter().map(|l| (l, true)));
    for (l, tls) in listeners {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) if tls => {
                tokio::spawn(gw.clone().serve_tls(l));
            }
            Ok(l) => {
                tokio::spawn(gw.clone().serve(l, Scheme::Http));
            }
            Err(e) => tracing::error!(error = %e, "ingress listener lost"),
        }
    }
}

/// Binds `addrs` for `workers` workers (non-blocking, for tokio): each
/// worker's listeners (one socket per address each, `SO_REUSEPORT` when
/// there are several workers) and the addresses with ports resolved.
#[allow(clippy::type_complexity)]
fn bind(
    addrs: &[SocketAddr],
    workers: usize,
) -> Result<(Vec<Vec<std::net::TcpListener>>, Vec<SocketAddr>), IngressError> {
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for addr in addrs {
        let group = ferry_sys::reuseport_listeners(*addr, workers).map_err(|source| {
            IngressError::Bind {
                addr: *addr,
                source,
            }
        })?;
        bound.push(group[0].local_addr().map_err(IngressError::Runtime)?);
        for (w, l) in group.into_iter().enumerate() {
            per_worker[w].push(l);
        }
    }
    Ok((per_worker, bound))
}

/// What every snapshot's tables are built with.
struct Tables {
    routes: RoutesConfig,
    tls: TlsConfig,
    self_signed: Arc<rustls::sign::CertifiedKey>,
}

/// Builds and swaps a route table and a certificate table for every
/// snapshot until the source ends.
async fn follow(
    gateway: &Gateway,
    mut l4: Option<L4>,
    follower: &mut Follower,
    tables: Tables,
    applied: &watch::Sender<Option<u64>>,
) {
    let tables = Arc::new(tables);
    let mut logged = BTreeSet::new();
    let mut l4_logged = BTreeSet::new();
    // Kept between snapshots, so a change costs what it touches; taken by
    // the blocking build and given back (a build that panics loses it, and
    // the next one starts over).
    let mut index = Some(RouteIndex::new(tables.routes.clone()));
    while let Some(snapshot) = follower.next().await {
        let tables = tables.clone();
        let previous = gateway.certs();
        let start = Instant::now();
        if let Some(l4) = &mut l4 {
            log_new(&mut l4_logged, l4.update(&snapshot.state));
        }
        let mut routes_index = index
            .take()
            .unwrap_or_else(|| RouteIndex::new(tables.routes.clone()));
        let built = tokio::task::spawn_blocking(move || {
            let routes = routes_index.apply(&snapshot.state, Some(&snapshot.changes));
            let certs = CertTable::build(
                &snapshot.state,
                &routes,
                &tables.tls,
                &tables.self_signed,
                &previous,
            );
            (routes_index, routes, certs)
        })
        .await;
        let Ok((routes_index, table, certs)) = built else {
            tracing::error!("ingress route table build panicked; keeping the previous table");
            continue;
        };
        index = Some(routes_index);
        let problems = table.problems().iter().map(ToString::to_string);
        log_new(
            &mut logged,
            problems.chain(certs.problems().iter().map(ToString::to_string)),
        );
        let version = table.version();
        tracing::debug!(
            version,
            ingresses = table.ingresses().len(),
            hosts = table.hosts(),
            tls_hosts = certs.hosts(),
            took = ?start.elapsed(),
            "ingress route table swapped"
        );
        // Certificates first: a route for a new TLS host is never served
        // over HTTP without its redirect.
        gateway.swap_certs(Arc::new(certs));
        gateway.swap(Arc::new(table));
        applied.send_replace(Some(version));
    }
}

/// Logs each problem once, when it appears.
fn log_new(logged: &mut BTreeSet<String>, problems: impl IntoIterator<Item = String>) {
    let now: BTreeSet<String> = problems.into_iter().collect();
    for p in now.difference(logged) {
        tracing::warn!("{p}");
    }
    *logged = now;
}
