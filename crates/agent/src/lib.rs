//! `ferry agent`: runs on every node. It hosts the data-plane components
//! (the service proxy and cluster DNS now; ingress and overlay plug in the
//! same way): it starts one source ([`Feed`]), gives every enabled
//! component a [`ferry_source::Follower`] of it and a thread or runtime of
//! its own, and collects what each reports as applied. It serves
//! kube-proxy-style health (`/healthz` the proxy's sync health and
//! `nodeEligible`, `/readyz` every component, on 10256) and Prometheus
//! metrics (`/metrics` on 10249).

mod health;
mod limits;
mod metrics;
mod nodelocal;
mod progress;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_proxy::Family;
use ferry_proxy::component::{self as proxy, ProxyConfig};
use ferry_proxy::iptables::Flavor;
pub use ferry_source::SourceSpec;
use ferry_source::{Feed, FeedOptions, Snapshot, SourceError};
use tokio::sync::watch;

pub use progress::Progress;

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

/// The components an agent can run (`--components`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Proxy,
    Dns,
    /// The pod network (flanneld's part): lease, VXLAN or host-gw, masquerade.
    Overlay,
    Ingress,
}

impl FromStr for Component {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "proxy" => Ok(Component::Proxy),
            "dns" => Ok(Component::Dns),
            "overlay" => Ok(Component::Overlay),
            "ingress" => Ok(Component::Ingress),
            other => Err(format!(
                "{other:?}: components are proxy, dns, overlay and ingress"
            )),
        }
    }
}

pub struct Config {
    pub node: String,
    /// Which components run (the proxy also needs a proxy mode other than
    /// `none`, DNS also needs addresses).
    pub components: Vec<Component>,
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
    /// The pod network; None: off (another CNI network runs on the node).
    pub overlay: Option<ferry_overlay::component::OverlayConfig>,
    /// Where the overlay installs its CNI conflist (`/etc/cni/net.d`), and
    /// the plugin's IPAM directory; None: not installed.
    pub cni: Option<CniInstall>,
    /// The ingress gateway (runs when `components` has it).
    pub ingress: ferry_ingress::component::IngressConfig,
}

/// The CNI conflist the agent installs with the overlay, as flannel's
/// DaemonSet installs its own.
#[derive(Clone, Debug)]
pub struct CniInstall {
    pub conf_dir: std::path::PathBuf,
    pub data_dir: Option<std::path::PathBuf>,
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
    #[error("source: {0}")]
    Kube(#[from] ferry_kube::KubeError),
    #[error("cluster DNS: {0}")]
    Dns(#[from] ferry_dns::DnsError),
    #[error("ingress: {0}")]
    Ingress(#[from] ferry_ingress::component::IngressError),
    #[error("cannot start the {0} component: {1}")]
    Component(&'static str, String),
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

/// What the agent publishes after every source update (the health
/// endpoint reads it).
#[derive(Clone)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub at: SystemTime,
    /// False while the source has not read its first state (the
    /// Kubernetes API source during an outage at start): `snapshot` is
    /// then an empty placeholder.
    pub listed: bool,
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
    if config.overlay.as_ref().is_some_and(|o| o.ip_masq) {
        out.push("nft".into());
    }
    out.sort();
    out.dedup();
    out
}

/// The name of the per-network-namespace lock every agent takes first.
pub const NODE_LOCK: &str = "ferry-agent";

impl Config {
    fn runs_proxy(&self) -> bool {
        self.components.contains(&Component::Proxy) && self.proxy_mode != ProxyMode::None
    }

    fn runs_ingress(&self) -> bool {
        self.components.contains(&Component::Ingress)
    }

    fn runs_dns(&self) -> bool {
        self.components.contains(&Component::Dns) && self.dns.is_some()
    }

    fn runs_overlay(&self) -> bool {
        self.components.contains(&Component::Overlay) && self.overlay.is_some()
    }
}

/// The overlay's Node writes, through the API source's writer.
struct NodeWriter(ferry_kube::Writer);

impl ferry_overlay::kube_store::NodeAnnotator for NodeWriter {
    fn annotate(
        &self,
        node: &str,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        self.0.annotate_node(node, annotations)
    }
}

/// Runs the agent until the process is stopped.
pub async fn run(mut config: Config) -> Result<(), AgentError> {
    if !config.runs_proxy() {
        config.proxy_mode = ProxyMode::None;
    }
    if !config.runs_dns() {
        config.dns = None;
    }
    if !config.runs_overlay() {
        config.overlay = None;
    }
    // One agent per node, before anything else: a second one must not
    // touch the first one's rules or ports. An agent that programs
    // nothing (no proxy, no DNS) only reads and serves health, and takes
    // no lock.
    let _lock =
        if config.proxy_mode != ProxyMode::None || config.dns.is_some() || config.overlay.is_some()
        {
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
    let healthz = bind(config.healthz_bind, "healthz").await?;
    let metrics_listener = bind(config.metrics_bind, "metrics").await?;
    // Watching starts before the first read, so a change made while the
    // components start is not lost. The API source does not wait for its
    // first lists: the agent serves its health (not ready, the source
    // stale) and the components start programming when the lists arrive.
    let feed = ferry_kube::start_in_background(
        &config.source,
        FeedOptions {
            validation: ferry_model::ValidationOptions {
                service_node_port_range: config.service_node_port_range,
            },
            recursive: false,
            // The proxy follows the same source: its changes do not wait.
            yield_to_others: false,
        },
    )?;
    let metrics = Arc::new(metrics::Metrics::new(config.proxy_mode));
    let progress = Arc::new(Progress::default());
    // The pod network first: pods on this node need their subnet (and
    // subnet.env) before anything else makes sense.
    if let Some(mut overlay) = config.overlay.clone() {
        if matches!(
            overlay.store,
            ferry_overlay::component::StoreSpec::Kube { .. }
        ) {
            // Leases on Nodes: the source writes them (the one writer).
            let SourceSpec::Kube { kubeconfig } = &config.source else {
                return Err(AgentError::Component(
                    "overlay",
                    "--lease-store kube keeps leases on the Nodes through the API: it needs --source kube".into(),
                ));
            };
            overlay.annotator = Some(ferry_overlay::component::Annotator(Arc::new(NodeWriter(
                ferry_kube::Writer::new(kubeconfig.clone()),
            ))));
        }
        let subnet_file = overlay.subnet_file.clone();
        let handle = ferry_overlay::component::start(overlay, feed.follow())
            .map_err(|e| AgentError::Component("overlay", e.to_string()))?;
        progress.add("overlay", handle.applied.clone());
        if let Some(cni) = &config.cni {
            // Until the lease is taken the plugin answers "try again
            // later" (it reads subnet.env), as flannel's does.
            let conflist = ferry_cni::Conflist {
                name: String::new(),
                subnet_file: Some(subnet_file),
                data_dir: cni.data_dir.clone(),
            };
            match ferry_cni::install(&cni.conf_dir, &conflist) {
                Ok(_) => {
                    tracing::info!(dir = %cni.conf_dir.display(), file = ferry_cni::CONFLIST_FILE, "CNI conflist installed")
                }
                Err(e) => return Err(AgentError::Component("overlay", e.to_string())),
            }
        }
    }
    let mut proxy_health = None;
    if config.proxy_mode != ProxyMode::None {
        let handle = metrics
            .with_registry(|r| {
                proxy::start(
                    ProxyConfig {
                        node: config.node.clone(),
                        mode: match config.proxy_mode {
                            ProxyMode::Iptables => proxy::Mode::Iptables,
                            _ => proxy::Mode::Nftables,
                        },
                        iptables_flavor: config.iptables_flavor,
                        cluster_cidrs: config.cluster_cidrs.clone(),
                        min_sync_period: config.min_sync_period,
                        health_timeout: config.health_timeout,
                    },
                    // Its first sync is a full one, from the state.
                    feed.follow_whole(),
                    r,
                )
            })
            .map_err(|e| AgentError::Component("proxy", e.to_string()))?;
        tokio::spawn(handle.health_check_ports());
        progress.add("proxy", handle.applied.clone());
        proxy_health = Some(handle.health.clone());
    }
    if let Some(dns) = &config.dns
        && let Some(applied) = start_dns(dns, &metrics, &feed)?
    {
        progress.add("dns", applied);
    }
    let mut ingress = None;
    if config.runs_ingress() {
        // Its own runtime and threads: ingress load cannot starve DNS,
        // the proxy's syncs or the health endpoints.
        let handle = metrics.with_registry(|r| {
            ferry_ingress::component::start(config.ingress.clone(), feed.follow(), r)
        })?;
        progress.add("ingress", handle.applied.clone());
        ingress = Some(handle);
    }
    // The agent's own follower: logs, source metrics, the resourceVersion
    // of each state version, and what the health endpoint reads.
    let first = feed.latest();
    let (tx, rx) = watch::channel(Published {
        snapshot: first,
        at: SystemTime::now(),
        listed: feed.has_state(),
    });
    // The API source says how far it has read (per kind, bookmarks
    // included); it tells exactly which resourceVersion a state holds.
    let mut source_progress = feed.watch_progress();
    if matches!(config.source, SourceSpec::Kube { .. }) {
        progress.follow_source();
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                let reported = *source_progress.borrow_and_update();
                if let Some(p) = reported {
                    progress.note(p.state_version, p.resource_version);
                }
                if source_progress.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(health::serve(
        healthz,
        health::Context {
            node: config.node.clone(),
            state: rx,
            proxy: proxy_health,
            timeout: config.health_timeout,
            progress: progress.clone(),
            source: feed.watch_health(),
        },
    ));
    tokio::spawn(metrics::serve(metrics_listener, metrics.clone()));
    // Once every component has applied its first state, what the bulk
    // load freed goes back to the kernel (ferry_sys::release_free_memory).
    {
        let progress = progress.clone();
        tokio::spawn(async move {
            while !progress.ready() {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            let started = std::time::Instant::now();
            let (before, after) = tokio::task::spawn_blocking(|| {
                let before = ferry_sys::heap_usage();
                ferry_sys::release_free_memory();
                (before, ferry_sys::heap_usage())
            })
            .await
            .unwrap_or_default();
            const MIB: usize = 1 << 20;
            tracing::info!(
                heap_in_use_mib = after.in_use / MIB,
                heap_free_mib = after.free / MIB,
                free_before_mib = before.free / MIB,
                took = ?started.elapsed(),
                "first state applied everywhere; the first load's free memory returned to the system"
            );
        });
    }
    tracing::info!(node = %config.node, healthz = %config.healthz_bind, metrics = %config.metrics_bind, "agent started");
    let mut follower = feed.follow_whole();
    let watcher = tokio::spawn(async move {
        let mut logged_errors = std::collections::BTreeSet::new();
        while let Some(snapshot) = follower.next().await {
            log_new_errors(&mut logged_errors, &snapshot);
            metrics.observe(&snapshot);
            progress.record(&snapshot);
            // Health reads the state and the errors; the change set (every
            // key of the state, on the first one: 12 MiB at issue 13's
            // target case) is not kept until the next change.
            let snapshot = if snapshot.changes.is_empty() {
                snapshot
            } else {
                Arc::new(snapshot.without_changes())
            };
            if tx
                .send(Published {
                    snapshot,
                    at: SystemTime::now(),
                    listed: true,
                })
                .is_err()
            {
                return;
            }
        }
    });
    // SIGTERM and SIGINT: the proxy's rules stay (established and new
    // connections keep working while the agent restarts, as with
    // kube-proxy); node-local DNS gives the cluster DNS ClusterIP back;
    // the ingress drains.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| AgentError::Signal { source })?;
    tokio::select! {
        _ = watcher => {
            stopping("the source ended", config.dns.as_ref());
            return Err(AgentError::Component("source", "it stopped publishing".into()));
        }
        _ = term.recv() => stopping("SIGTERM", config.dns.as_ref()),
        _ = tokio::signal::ctrl_c() => stopping("SIGINT", config.dns.as_ref()),
    }
    // The ingress stops as ingress-nginx does: no new connections, requests
    // in flight finish (bounded by --ingress-drain-timeout).
    if let Some(ingress) = &ingress {
        ingress.drain().await;
    }
    drop(feed);
    Ok(())
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<tokio::net::TcpListener, AgentError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind { addr, what, source })
}

/// What the agent undoes when it is told to stop.
fn stopping(signal: &str, dns: Option<&DnsConfig>) {
    tracing::info!(signal, "stopping; the proxy rules stay in place");
    if let Some(dns) = dns {
        give_back(dns);
    }
}

/// Gives the node-local addresses that have a Service behind them (the
/// cluster DNS ClusterIP) back to the proxy: they and their NOTRACK go, so
/// queries reach the Service's endpoints while ferry's DNS is not there.
fn give_back(dns: &DnsConfig) {
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

/// Node-local DNS: the addresses on the dummy interface with NOTRACK,
/// then the server on each of them, on a runtime of its own (a DNS flood
/// must not hold up the proxy's syncs or the health endpoints), following
/// the source. The state version it has indexed, or `None` when DNS is off
/// on this node.
fn start_dns(
    dns: &DnsConfig,
    metrics: &metrics::Metrics,
    feed: &Feed,
) -> Result<Option<watch::Receiver<Option<u64>>>, AgentError> {
    // The health port first: a port in use must stop us before the
    // node's DNS addresses are taken.
    let health = match dns.health_bind {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| AgentError::Bind {
                    addr,
                    what: "DNS health",
                    source,
                })?,
        ),
        None => None,
    };
    if let Err(e) = nodelocal::setup(&dns.addresses) {
        // Without the addresses there is nothing to bind; the proxy goes on.
        tracing::error!(error = %e, "node-local DNS not set up; cluster DNS is off on this node");
        give_back(dns);
        return Ok(None);
    }
    let server = match metrics.with_registry(|r| ferry_dns::Server::new(dns.server.clone(), r)) {
        Ok(s) => s,
        Err(e) => {
            give_back(dns);
            return Err(e.into());
        }
    };
    let mut listeners = Vec::new();
    for ip in &dns.addresses {
        match ferry_dns::Listener::bind(SocketAddr::new(*ip, 53)) {
            Ok(l) => listeners.extend(l),
            // Another DNS server may own the address (a NodeLocal DNSCache
            // already on the node): the proxy goes on without ferry's DNS.
            Err(e) => {
                tracing::error!(error = %e, "cluster DNS is off on this node");
                give_back(dns);
                return Ok(None);
            }
        }
    }
    let (applied_tx, applied) = watch::channel(None::<u64>);
    // The first state is indexed whole (below).
    let mut follower = feed.follow_whole();
    let (started_tx, started) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                if let Err(e) = server.serve(listeners) {
                    let _ = started_tx.send(Err(e.to_string()));
                    return;
                }
                if let Some(listener) =
                    health.and_then(|l| tokio::net::TcpListener::from_std(l).ok())
                {
                    tokio::spawn(ferry_dns::serve_health(listener, server.clone()));
                }
                let _ = started_tx.send(Ok(()));
                // The first state is indexed whole; after it, each change
                // set is relative to the state the index holds.
                let mut first = true;
                while let Some(snapshot) = follower.next().await {
                    let s = server.clone();
                    let version = snapshot.state.version();
                    let _ = tokio::task::spawn_blocking(move || {
                        if first {
                            s.update(&snapshot.state);
                        } else {
                            s.apply(&snapshot.state, &snapshot.changes);
                        }
                    })
                    .await;
                    first = false;
                    applied_tx.send_replace(Some(version));
                }
            });
        })
        .map_err(|e| {
            give_back(dns);
            AgentError::Component("dns", e.to_string())
        })?;
    let failed = match started.recv() {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some("its thread ended".to_string()),
    };
    if let Some(e) = failed {
        give_back(dns);
        return Err(AgentError::Component("dns", e));
    }
    tracing::info!(addresses = ?dns.addresses, zones = ?dns.server.zones, upstreams = ?dns.server.upstreams, "cluster DNS serving");
    Ok(Some(applied))
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
    let (proxy_done, proxy_errors) = proxy::cleanup(flavor);
    done.extend(proxy_done);
    errors.extend(proxy_errors);
    let (overlay_done, overlay_errors) = ferry_overlay::component::cleanup();
    done.extend(overlay_done);
    errors.extend(overlay_errors);
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(errors.join("; "))
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
