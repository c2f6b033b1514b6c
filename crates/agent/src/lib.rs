//! `ferry agent`: runs on every node. It keeps one watch of the cluster
//! (today: the manifests source) and publishes each new state to the
//! data-plane components (proxy, DNS, ingress and overlay plug in here),
//! and serves kube-proxy-style health (`/healthz`, `/readyz`, `/livez` on
//! 10256) and Prometheus metrics (`/metrics` on 10249).

mod conntrack;
mod health;
mod healthcheck;
mod metrics;
mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the agent checks that nobody else changed its nftables table.
const TABLE_CHECK_PERIOD: Duration = Duration::from_secs(1);

use ferry_source::{ManifestSource, ManifestWatcher, Snapshot, SourceError};
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
    /// No service proxy (another one runs on the node).
    None,
}

impl FromStr for ProxyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nftables" => Ok(ProxyMode::Nftables),
            "none" => Ok(ProxyMode::None),
            other => Err(format!(
                "{other:?}: proxy mode is nftables or none (iptables is not built yet)"
            )),
        }
    }
}

pub struct Config {
    pub node: String,
    pub source: SourceSpec,
    pub proxy_mode: ProxyMode,
    /// Pod CIDRs: ClusterIP traffic from elsewhere is masqueraded. Empty:
    /// the podCIDRs of every Node.
    pub cluster_cidrs: Vec<ipnet::IpNet>,
    /// Changes closer together than this are synced together (kube-proxy's
    /// --min-sync-period).
    pub min_sync_period: Duration,
    pub healthz_bind: SocketAddr,
    pub metrics_bind: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("source: {0}")]
    Source(#[from] SourceError),
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

/// Runs the agent until the process is stopped.
pub async fn run(config: Config) -> Result<(), AgentError> {
    let SourceSpec::Manifests(dir) = &config.source;
    let (source, first) = ManifestSource::open(std::slice::from_ref(dir), false)?;
    log_errors(&first);
    let metrics = Arc::new(metrics::Metrics::new(config.proxy_mode));
    metrics.observe(&first);
    let health_ports: healthcheck::Wanted = Default::default();
    // One proxy per IP family, each with its own table (`ip ferry`, `ip6 ferry`).
    let mut proxies: Vec<proxy::Proxy> = Vec::new();
    if config.proxy_mode == ProxyMode::Nftables {
        for family in [ferry_proxy::Family::V4, ferry_proxy::Family::V6] {
            let ports = (family == ferry_proxy::Family::V4).then(|| health_ports.clone());
            proxies.push(proxy::Proxy::new(
                family,
                &config.node,
                config.cluster_cidrs.clone(),
                metrics.clone(),
                ports,
            ));
        }
    }
    for p in &mut proxies {
        p.on_snapshot(&first);
    }
    let mut synced = max_resource_version(&first, true);
    let (tx, rx) = watch::channel(Published {
        snapshot: Arc::new(first),
        at: SystemTime::now(),
        synced_resource_version: synced,
    });

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
    tokio::spawn(health::serve(healthz, config.node.clone(), rx.clone()));
    tokio::spawn(healthcheck::run(health_ports));
    tokio::spawn(metrics::serve(metrics_listener, metrics.clone()));
    tracing::info!(node = %config.node, healthz = %config.healthz_bind, metrics = %config.metrics_bind, "agent started");

    let mut watcher = ManifestWatcher::new(source, Duration::from_millis(10))?;
    // The watcher blocks on file events; it gets a thread of its own.
    let loop_metrics = metrics.clone();
    let min_sync_period = config.min_sync_period;
    let first_published = rx.borrow().snapshot.clone();
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
                None => TABLE_CHECK_PERIOD,
            };
            match watcher.next(wait) {
                Some(Ok(snapshot)) => {
                    log_errors(&snapshot);
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
                for p in &mut proxies {
                    p.on_snapshot(&snapshot);
                }
                last_sync = Some(Instant::now());
                synced = synced.max(max_resource_version(&snapshot, false));
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
                && last_check.elapsed() >= TABLE_CHECK_PERIOD
                && let Some(snap) = &latest
            {
                last_check = Instant::now();
                for p in &mut proxies {
                    p.check_table(snap);
                }
            }
        }
    });
    let _ = handle.await;
    Ok(())
}

/// `ferry agent --cleanup`: removes everything the proxy installed.
pub fn cleanup() -> Result<(), String> {
    ferry_proxy::nft::NftBackend::cleanup().map_err(|e| e.to_string())
}

fn log_errors(snapshot: &Snapshot) {
    for e in &snapshot.errors {
        tracing::warn!("{e}");
    }
}
