//! The service proxy as a component of the agent: it follows the source's
//! snapshots on a thread of its own (syncs call into the kernel and block,
//! and must not hold up DNS, health or metrics), batches changes closer
//! than `--min-sync-period` as kube-proxy's sync runner does, checks
//! periodically that nobody else changed its rules, and reports the state
//! version it has programmed. One [`proxier::Proxy`] per IP family does
//! the work; the health-check node ports and the proxy's metrics live here
//! too, as they live beside kube-proxy's proxiers.

mod health;
mod healthcheck;
mod metrics;
mod proxier;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_source::{Follower, Snapshot};
use ipnet::IpNet;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use health::{SyncHealth, Verdict};

use crate::iptables::{Flavor, IptablesBackend};
use crate::nft::NftBackend;
use crate::{Backend, Family};

/// How often the loop wakes when nothing arrives.
const IDLE_PERIOD: Duration = Duration::from_secs(1);

/// Which backend programs the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Nftables,
    /// kube-proxy's iptables mode, rule for rule.
    Iptables,
}

/// The service proxy component's settings.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node: String,
    pub mode: Mode,
    pub iptables_flavor: Flavor,
    /// Pod CIDRs; empty: the podCIDRs of every Node.
    pub cluster_cidrs: Vec<IpNet>,
    pub min_sync_period: Duration,
    pub health_timeout: Duration,
}

/// A running proxy component.
pub struct ProxyHandle {
    /// The proxy's sync health (`/healthz`, health-check node ports).
    pub health: Arc<SyncHealth>,
    /// The state version last programmed by every IP family.
    pub applied: watch::Receiver<Option<u64>>,
    health_ports: healthcheck::Wanted,
    health_timeout: Duration,
}

impl ProxyHandle {
    /// The health-check node ports' servers; run it on the caller's runtime.
    pub fn health_check_ports(&self) -> impl Future<Output = ()> + Send + 'static {
        healthcheck::run(
            self.health_ports.clone(),
            self.health.clone(),
            self.health_timeout,
        )
    }
}

/// Starts the proxy: removes the other mode's rules (as kube-proxy does),
/// then follows `follower` on its own thread.
pub fn start(
    config: ProxyConfig,
    mut follower: Follower,
    registry: &mut Registry,
) -> std::io::Result<ProxyHandle> {
    let metrics = Arc::new(metrics::ProxyMetrics::register(registry));
    remove_other_mode(config.mode, config.iptables_flavor);
    let health_ports: healthcheck::Wanted = Default::default();
    // A node booted without IPv6 runs single-stack, as kube-proxy falls
    // back to: a family the kernel lacks would fail every sync forever.
    let ipv6 = std::path::Path::new("/proc/net/if_inet6").exists();
    if !ipv6 {
        tracing::info!("IPv6 is disabled on this node: IPv4 only");
    }
    let mut proxies: Vec<proxier::Proxy> = [Family::V4, Family::V6]
        .into_iter()
        .filter(|f| *f == Family::V4 || ipv6)
        .map(|family| {
            let backend: Box<dyn Backend> = match config.mode {
                Mode::Iptables => Box::new(IptablesBackend::new(family, config.iptables_flavor)),
                Mode::Nftables => Box::new(NftBackend::new(family)),
            };
            proxier::Proxy::new(
                backend,
                family,
                &config.node,
                config.cluster_cidrs.clone(),
                metrics.clone(),
                (family == Family::V4).then(|| health_ports.clone()),
            )
        })
        .collect();
    let health = Arc::new(SyncHealth::default());
    health.queued();
    let (applied_tx, applied) = watch::channel(None::<u64>);
    let check_period = proxies
        .iter()
        .map(proxier::Proxy::check_period)
        .min()
        .unwrap_or(IDLE_PERIOD);
    let min_sync_period = config.min_sync_period;
    let loop_health = health.clone();
    std::thread::Builder::new()
        .name("proxy".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the proxy's runtime");
                    return;
                }
            };
            rt.block_on(run(
                &mut proxies,
                &mut follower,
                &loop_health,
                &applied_tx,
                min_sync_period,
                check_period,
            ));
        })?;
    Ok(ProxyHandle {
        health,
        applied,
        health_ports,
        health_timeout: config.health_timeout,
    })
}

/// The sync runner: changes closer together than the minimum sync period
/// wait, merged, so a burst costs one sync and the last change is never
/// lost; the first change after a quiet spell goes at once.
async fn run(
    proxies: &mut [proxier::Proxy],
    follower: &mut Follower,
    health: &SyncHealth,
    applied: &watch::Sender<Option<u64>>,
    min_sync_period: Duration,
    check_period: Duration,
) {
    let mut pending: Option<Arc<Snapshot>> = None;
    let mut latest: Option<Arc<Snapshot>> = None;
    let mut last_sync: Option<Instant> = None;
    let mut last_check = Instant::now();
    loop {
        let wait = match &pending {
            Some(_) => {
                min_sync_period.saturating_sub(last_sync.map_or(min_sync_period, |t| t.elapsed()))
            }
            None => IDLE_PERIOD.min(check_period),
        };
        tokio::select! {
            next = follower.next() => {
                let Some(snapshot) = next else { return };
                health.queued();
                pending = Some(match pending.take() {
                    Some(earlier) => {
                        let mut changes = earlier.changes.clone();
                        changes.merge(snapshot.changes.clone());
                        Arc::new(snapshot.with_changes(changes))
                    }
                    None => snapshot,
                });
            }
            () = tokio::time::sleep(wait) => {}
        }
        if pending.is_some() && last_sync.is_none_or(|t| t.elapsed() >= min_sync_period) {
            let Some(snapshot) = pending.take() else {
                continue;
            };
            match sync_all(proxies, &snapshot) {
                Ok(()) => {
                    health.synced();
                    applied.send_replace(Some(snapshot.state.version()));
                }
                Err(e) => health.failed(e),
            }
            last_sync = Some(Instant::now());
            if !snapshot.changes.is_empty() {
                tracing::debug!("{}", snapshot.changes.summary());
            }
            // The checks below sync whole when they sync at all: the
            // change set (every object, after the first state) is not kept.
            latest = Some(Arc::new(snapshot.without_changes()));
        }
        if pending.is_none()
            && last_check.elapsed() >= check_period
            && let Some(snap) = &latest
        {
            last_check = Instant::now();
            // Every family is checked, even after one failed.
            let errors: Vec<String> = proxies
                .iter_mut()
                .filter_map(|p| p.check_table(snap).err())
                .collect();
            if errors.is_empty() {
                if health.failing() {
                    // A sync that failed earlier went through on retry.
                    health.synced();
                    applied.send_replace(Some(snap.state.version()));
                }
            } else {
                health.failed(errors.join("; "));
            }
        }
    }
}

/// Programs `snapshot` in every family's proxier; all errors, joined.
fn sync_all(proxies: &mut [proxier::Proxy], snapshot: &Snapshot) -> Result<(), String> {
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

/// Switching modes: the rules of the mode not in use are removed, as
/// kube-proxy does at start. The iptables chains are looked for first
/// (one `iptables-save` per family) so a node that never ran iptables mode
/// pays almost nothing.
fn remove_other_mode(mode: Mode, flavor: Flavor) {
    match mode {
        Mode::Iptables => {
            if let Err(e) = NftBackend::cleanup() {
                tracing::warn!(error = %e, "could not remove ferry's nftables tables");
            }
        }
        Mode::Nftables => {
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
}

/// `ferry agent --cleanup`'s proxy part: removes everything either mode
/// installed; says what it removed.
pub fn cleanup(flavor: Flavor) -> (Vec<String>, Vec<String>) {
    let mut done = Vec::new();
    let mut errors = Vec::new();
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
    (done, errors)
}
