//! `ferry agent`: runs on every node. It keeps one watch of the cluster
//! (today: the manifests source) and publishes each new state to the
//! data-plane components (proxy, DNS, ingress and overlay plug in here),
//! and serves kube-proxy-style health (`/healthz`, `/readyz`, `/livez` on
//! 10256) and Prometheus metrics (`/metrics` on 10249).

mod health;
mod healthcheck;
mod limits;
mod metrics;
mod nodelocal;
mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the agent looks for changes when none arrive (and checks
/// that nobody else changed its rules, at the backend's own period).
const IDLE_PERIOD: Duration = Duration::from_secs(1);

use ferry_proxy::iptables::{Flavor, IptablesBackend};
use ferry_proxy::nft::NftBackend;
use ferry_proxy::{Backend, Family};
use ferry_source::{ManifestWatcher, Snapshot, SourceError};
use tokio::sync::watch;

/// Where the agent reads the cluster from.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// `manifests:DIR`: files watched on disk (the lab writes these).
    Manifests(PathBuf),
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("manifests", path)) if !path.is_empty() => Ok(SourceSpec::Manifests(path.into())),
            _ => Err(format!(
                "{s:?}: expected manifests:DIR (the Kubernetes API source is not built yet)"
            )),
        }
    }
}

/// Which service proxy the agent runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    Nftables,
    /// kube-proxy's iptables mode, rule for rule.
    Iptables,
    /// No service proxy (another one runs on the node).
    None,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Nftables => "nftables",
            ProxyMode::Iptables => "iptables",
            ProxyMode::None => "none",
        }
    }
}

impl FromStr for ProxyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nftables" => Ok(ProxyMode::Nftables),
            "iptables" => Ok(ProxyMode::Iptables),
            "none" => Ok(ProxyMode::None),
            other => Err(format!(
                "{other:?}: proxy mode is nftables, iptables or none"
            )),
        }
    }
}

pub struct Config {
    pub node: String,
    pub source: SourceSpec,
    pub proxy_mode: ProxyMode,
    /// Which iptables binaries iptables mode runs.
    pub iptables_flavor: Flavor,
    /// Pod CIDRs: ClusterIP traffic from elsewhere is masqueraded. Empty:
    /// the podCIDRs of every Node.
    pub cluster_cidrs: Vec<ipnet::IpNet>,
    /// Changes closer together than this are synced together (kube-proxy's
    /// --min-sync-period).
    pub min_sync_period: Duration,
    pub healthz_bind: SocketAddr,
    /// NodePorts outside this range are invalid (the API server's
    /// --service-node-port-range).
    pub service_node_port_range: ferry_model::NodePortRange,
    /// /healthz turns 503 when a change waited longer than this to be
    /// programmed (kube-proxy: twice its sync period, 60 s).
    pub health_timeout: Duration,
    pub metrics_bind: SocketAddr,
    /// Node-local cluster DNS; None: off.
    pub dns: Option<DnsConfig>,
}

/// Cluster DNS served by the agent on this node.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Served on port 53 (UDP and TCP), on a dummy interface, without
    /// conntrack: the link-local 169.254.20.10 and, optionally, the
    /// cluster DNS Service's ClusterIP.
    pub addresses: Vec<std::net::IpAddr>,
    pub server: ferry_dns::Config,
    /// CoreDNS-style `/health` and `/ready` (the metrics are in the agent's `/metrics`).
    pub health_bind: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Lock(#[from] ferry_sys::LockError),
    #[error(transparent)]
    Missing(#[from] ferry_sys::MissingProgram),
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("cluster DNS: {0}")]
    Dns(#[from] ferry_dns::DnsError),
    #[error("cannot watch for signals: {source}")]
    Signal {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What the agent publishes after every source update.
#[derive(Clone)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub at: SystemTime,
    /// The highest `metadata.resourceVersion` this node has programmed
    /// (all components in step with it).
    pub synced_resource_version: u64,
}

/// The highest numeric resourceVersion among the objects a snapshot changed
/// (all objects for the first one).
fn max_resource_version(snapshot: &Snapshot, first: bool) -> u64 {
    let rv = |o: &ferry_model::Object| {
        o.metadata()
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    if first {
        snapshot.state.objects().filter_map(rv).max().unwrap_or(0)
    } else {
        snapshot
            .changes
            .objects
            .iter()
            .filter_map(|k| snapshot.state.get(k))
            .filter_map(rv)
            .max()
            .unwrap_or(0)
    }
}

/// The external programs this configuration runs; the agent refuses to
/// start without them (naming the Debian package) rather than failing
/// every sync later.
pub fn required_programs(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    match config.proxy_mode {
        ProxyMode::Nftables => out.push("nft".into()),
        ProxyMode::Iptables => {
            for family in [Family::V4, Family::V6] {
                for suffix in ["", "-save", "-restore"] {
                    out.push(config.iptables_flavor.binary(family, suffix));
                }
            }
        }
        ProxyMode::None => {}
    }
    if config.dns.is_some() {
        out.extend(["ip".into(), "nft".into()]);
    }
    out.sort();
    out.dedup();
    out
}

/// The name of the per-network-namespace lock every agent takes first.
pub const NODE_LOCK: &str = "ferry-agent";

/// Runs the agent until the process is stopped.
pub async fn run(mut config: Config) -> Result<(), AgentError> {
    // One agent per node, before anything else: a second one must not
    // touch the first one's rules or ports. An agent that programs
    // nothing (no proxy, no DNS) only reads and serves health, and takes
    // no lock.
    let _lock = if config.proxy_mode != ProxyMode::None || config.dns.is_some() {
        Some(ferry_sys::NodeLock::acquire(NODE_LOCK)?)
    } else {
        None
    };
    ferry_sys::require(required_programs(&config).iter().map(String::as_str))?;
    let nofile = limits::raise_nofile();
    if let Some(dns) = config.dns.as_mut() {
        limits::fit_dns_caps(&mut dns.server, nofile);
    }
    // Ports next, so that a port in use stops the agent before it
    // changes anything in the kernel.
    let healthz = tokio::net::TcpListener::bind(config.healthz_bind)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.healthz_bind,
            what: "healthz",
            source,
        })?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_bind)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.metrics_bind,
            what: "metrics",
            source,
        })?;
    let SourceSpec::Manifests(dir) = &config.source;
    // Watching starts before the first read, so a change made while the
    // first state is being programmed is not lost.
    let options = ferry_model::ValidationOptions {
        service_node_port_range: config.service_node_port_range,
    };
    let (mut watcher, first) = ManifestWatcher::open_with(
        std::slice::from_ref(dir),
        false,
        Duration::from_millis(10),
        options,
    )?;
    let mut logged_errors = std::collections::BTreeSet::new();
    log_new_errors(&mut logged_errors, &first);
    let metrics = Arc::new(metrics::Metrics::new(config.proxy_mode));
    metrics.observe(&first);
    let health_ports: healthcheck::Wanted = Default::default();
    // One proxy per IP family, each with its own table (`ip ferry`, `ip6 ferry`).
    let mut proxies: Vec<proxy::Proxy> = Vec::new();
    remove_other_modes(config.proxy_mode, config.iptables_flavor);
    if config.proxy_mode != ProxyMode::None {
        for family in [Family::V4, Family::V6] {
            let ports = (family == Family::V4).then(|| health_ports.clone());
            let backend: Box<dyn Backend> = match config.proxy_mode {
                ProxyMode::Iptables => {
                    Box::new(IptablesBackend::new(family, config.iptables_flavor))
                }
                _ => Box::new(NftBackend::new(family)),
            };
            proxies.push(proxy::Proxy::new(
                backend,
                family,
                &config.node,
                config.cluster_cidrs.clone(),
                metrics.clone(),
                ports,
            ));
        }
    }
    let sync_health = Arc::new(health::SyncHealth::default());
    sync_health.queued();
    // The highest resourceVersion received, and the highest programmed:
    // the second advances only when every proxy synced.
    let mut received = max_resource_version(&first, true);
    let mut synced = 0;
    match sync_all(&mut proxies, &first) {
        Ok(()) => {
            sync_health.synced();
            synced = received;
        }
        Err(e) => sync_health.failed(e),
    }
    let (tx, rx) = watch::channel(Published {
        snapshot: Arc::new(first),
        at: SystemTime::now(),
        synced_resource_version: synced,
    });

    if let Some(dns) = &config.dns {
        start_dns(dns, &metrics, rx.clone())?;
    }
    tokio::spawn(health::serve(
        healthz,
        config.node.clone(),
        rx.clone(),
        sync_health.clone(),
        config.health_timeout,
    ));
    tokio::spawn(healthcheck::run(
        health_ports,
        sync_health.clone(),
        config.health_timeout,
    ));
    tokio::spawn(metrics::serve(metrics_listener, metrics.clone()));
    tracing::info!(node = %config.node, healthz = %config.healthz_bind, metrics = %config.metrics_bind, "agent started");

    // The watcher blocks on file events; it gets a thread of its own.
    let loop_metrics = metrics.clone();
    let min_sync_period = config.min_sync_period;
    let first_published = rx.borrow().snapshot.clone();
    let check_period = proxies
        .iter()
        .map(proxy::Proxy::check_period)
        .min()
        .unwrap_or(IDLE_PERIOD);
    let handle = tokio::task::spawn_blocking(move || {
        // Changes that arrived within the minimum sync period wait here,
        // merged, so a burst costs one sync and the last change is never lost.
        let mut pending: Option<Snapshot> = None;
        let mut latest: Option<Arc<Snapshot>> = Some(first_published);
        // None: nothing synced in the loop yet, so the first change goes at once.
        let mut last_sync: Option<Instant> = None;
        let mut last_check = Instant::now();
        loop {
            let wait = match &pending {
                Some(_) => min_sync_period
                    .saturating_sub(last_sync.map_or(min_sync_period, |t| t.elapsed())),
                None => IDLE_PERIOD,
            };
            match watcher.next(wait) {
                Some(Ok(snapshot)) => {
                    sync_health.queued();
                    received = received.max(max_resource_version(&snapshot, false));
                    log_new_errors(&mut logged_errors, &snapshot);
                    loop_metrics.observe(&snapshot);
                    pending = Some(match pending.take() {
                        Some(mut earlier) => {
                            earlier.changes.merge(snapshot.changes);
                            Snapshot {
                                changes: earlier.changes,
                                ..snapshot
                            }
                        }
                        None => snapshot,
                    });
                }
                Some(Err(e)) => tracing::warn!(error = %e, "source error"),
                None => {}
            }
            if pending.is_some() && last_sync.is_none_or(|t| t.elapsed() >= min_sync_period) {
                let Some(snapshot) = pending.take() else {
                    continue;
                };
                match sync_all(&mut proxies, &snapshot) {
                    Ok(()) => {
                        sync_health.synced();
                        synced = received;
                    }
                    Err(e) => sync_health.failed(e),
                }
                last_sync = Some(Instant::now());
                if !snapshot.changes.is_empty() {
                    tracing::debug!("{}", snapshot.changes.summary());
                }
                let snapshot = Arc::new(snapshot);
                latest = Some(snapshot.clone());
                if tx
                    .send(Published {
                        snapshot,
                        at: SystemTime::now(),
                        synced_resource_version: synced,
                    })
                    .is_err()
                {
                    return;
                }
            }
            if pending.is_none()
                && last_check.elapsed() >= check_period
                && let Some(snap) = &latest
            {
                last_check = Instant::now();
                // Every proxy is checked, even after one failed.
                let errors: Vec<String> = proxies
                    .iter_mut()
                    .filter_map(|p| p.check_table(snap).err())
                    .collect();
                let checked = if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors.join("; "))
                };
                match checked {
                    // A sync that failed earlier went through on retry.
                    Ok(()) if sync_health.failing() => {
                        sync_health.synced();
                        synced = received;
                        let _ = tx.send(Published {
                            snapshot: snap.clone(),
                            at: SystemTime::now(),
                            synced_resource_version: synced,
                        });
                    }
                    Ok(()) => {}
                    Err(e) => sync_health.failed(e),
                }
            }
        }
    });
    // SIGTERM and SIGINT: the proxy's rules stay (established and new
    // connections keep working while the agent restarts, as with
    // kube-proxy); node-local DNS gives the cluster DNS ClusterIP back.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| AgentError::Signal { source })?;
    tokio::select! {
        _ = handle => {}
        _ = term.recv() => stopping("SIGTERM", config.dns.as_ref()),
        _ = tokio::signal::ctrl_c() => stopping("SIGINT", config.dns.as_ref()),
    }
    Ok(())
}

/// What the agent undoes when it is told to stop.
fn stopping(signal: &str, dns: Option<&DnsConfig>) {
    tracing::info!(signal, "stopping; the proxy rules stay in place");
    let Some(dns) = dns else {
        return;
    };
    let give_up = nodelocal::given_up_at_stop(&dns.addresses);
    if give_up.is_empty() {
        return;
    }
    let keep: Vec<std::net::IpAddr> = dns
        .addresses
        .iter()
        .copied()
        .filter(|a| !give_up.contains(a))
        .collect();
    match nodelocal::release(&keep, &give_up) {
        Ok(()) => {
            tracing::info!(addresses = ?give_up, "node-local DNS gave its Service addresses back to the proxy")
        }
        Err(e) => tracing::warn!(error = %e, "could not give the node-local DNS addresses back"),
    }
}

/// Programs `snapshot` in every proxy (each IP family); all errors, joined.
fn sync_all(proxies: &mut [proxy::Proxy], snapshot: &Snapshot) -> Result<(), String> {
    let errors: Vec<String> = proxies
        .iter_mut()
        .filter_map(|p| p.on_snapshot(snapshot).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Node-local DNS: the addresses on the dummy interface with NOTRACK,
/// then the server on each of them, following every published state.
fn start_dns(
    dns: &DnsConfig,
    metrics: &metrics::Metrics,
    rx: watch::Receiver<Published>,
) -> Result<(), AgentError> {
    if let Err(e) = nodelocal::setup(&dns.addresses) {
        // Without the addresses there is nothing to bind; the proxy goes on.
        tracing::error!(error = %e, "node-local DNS not set up; cluster DNS is off on this node");
        return Ok(());
    }
    let server = metrics.with_registry(|r| ferry_dns::Server::new(dns.server.clone(), r))?;
    let mut listeners = Vec::new();
    for ip in &dns.addresses {
        match ferry_dns::Listener::bind(SocketAddr::new(*ip, 53)) {
            Ok(l) => listeners.extend(l),
            // Another DNS server may own the address (a NodeLocal DNSCache
            // already on the node): the proxy goes on without ferry's DNS.
            Err(e) => {
                tracing::error!(error = %e, "cluster DNS is off on this node");
                return Ok(());
            }
        }
    }
    server.serve(listeners)?;
    if let Some(addr) = dns.health_bind {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|source| AgentError::Bind {
                addr,
                what: "DNS health",
                source,
            })?;
        tokio::spawn(ferry_dns::serve_health(listener, server.clone()));
    }
    server.follow(rx, |p: &Published| p.snapshot.state.clone());
    tracing::info!(addresses = ?dns.addresses, zones = ?dns.server.zones, upstreams = ?dns.server.upstreams, "cluster DNS serving");
    Ok(())
}

/// `ferry agent --cleanup`: removes everything either proxy mode
/// installed (ferry's nftables tables, and kube-proxy-style iptables
/// chains of `flavor`); says what it removed.
pub fn cleanup(flavor: Flavor) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    let mut errors = Vec::new();
    match nodelocal::cleanup() {
        Ok(()) => done.push(format!(
            "node-local DNS (interface {}, addresses labelled {}, nftables tables {})",
            nodelocal::INTERFACE,
            nodelocal::LO_LABEL,
            nodelocal::TABLE
        )),
        Err(e) => errors.push(e.to_string()),
    }
    match NftBackend::cleanup() {
        Ok(()) => done.push("ferry's nftables tables (ip ferry, ip6 ferry)".to_string()),
        Err(e) => errors.push(e.to_string()),
    }
    for family in [Family::V4, Family::V6] {
        match IptablesBackend::cleanup(family, flavor, None) {
            Ok(0) => {}
            Ok(n) => done.push(format!(
                "{n} iptables chains and jumps ({})",
                flavor.binary(family, "")
            )),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(errors.join("; "))
    }
}

/// Switching modes: the rules of the mode not in use are removed, as
/// kube-proxy does at start. The iptables chains are looked for first
/// (one `iptables-save` per family) so a node that never ran iptables mode
/// pays almost nothing.
fn remove_other_modes(mode: ProxyMode, flavor: Flavor) {
    // With no proxy of ours (`none`), another one owns the node's rules.
    if mode == ProxyMode::Iptables
        && let Err(e) = NftBackend::cleanup()
    {
        tracing::warn!(error = %e, "could not remove ferry's nftables tables");
    }
    if mode == ProxyMode::Nftables {
        for family in [Family::V4, Family::V6] {
            if !IptablesBackend::present(family, flavor) {
                continue;
            }
            match IptablesBackend::cleanup(family, flavor, None) {
                Ok(n) => {
                    tracing::info!(removed = n, family = ?family, "removed iptables-mode rules left by an earlier mode")
                }
                Err(e) => tracing::warn!(error = %e, "could not remove iptables-mode rules"),
            }
        }
    }
}

/// Logs the manifest errors of a snapshot that were not there before:
/// an error is logged once when it appears, not on every later snapshot.
fn log_new_errors(logged: &mut std::collections::BTreeSet<String>, snapshot: &Snapshot) {
    let now: std::collections::BTreeSet<String> =
        snapshot.errors.iter().map(ToString::to_string).collect();
    for e in now.difference(logged) {
        tracing::warn!("{e}");
    }
    let fixed = logged.difference(&now).count();
    if fixed > 0 {
        tracing::info!(fixed, "manifest errors resolved");
    }
    *logged = now;
}
