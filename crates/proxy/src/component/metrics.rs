//! The service proxy's Prometheus metrics, under kube-proxy's names where
//! an equivalent exists (existing dashboards and alerts keep working),
//! registered in the registry the agent serves on `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::SyncStats;

type Labels = Vec<(String, String)>;

pub(crate) struct ProxyMetrics {
    sync_duration: Histogram,
    sync_full: Histogram,
    sync_partial: Histogram,
    programming: Histogram,
    last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    sync_failures: Family<Labels, Counter>,
    /// ServicePorts with more endpoints than nftables mode programs.
    pub(crate) endpoints_over_limit: Family<Labels, Gauge>,
}

impl ProxyMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let buckets = || Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let m = ProxyMetrics {
            sync_duration: buckets(),
            sync_full: buckets(),
            sync_partial: buckets(),
            programming: buckets(),
            last_sync: Gauge::default(),
            sync_failures: Family::default(),
            endpoints_over_limit: Family::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.sync_full.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.sync_partial.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "From a change arriving at the agent to the rules being programmed",
            m.programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_failures",
            "Failed proxy rule syncs (nft transactions refused)",
            m.sync_failures.clone(),
        );
        registry.register(
            "ferry_proxy_service_ports_over_endpoint_limit",
            "ServicePorts with more endpoints than nftables mode uses (4095); only the first 4095 in the plan's order get traffic",
            m.endpoints_over_limit.clone(),
        );
        m
    }

    pub(crate) fn proxy_synced(&self, stats: &SyncStats, since: std::time::Instant) {
        let secs = stats.took.as_secs_f64();
        self.sync_duration.observe(secs);
        if stats.full {
            self.sync_full.observe(secs);
        } else {
            self.sync_partial.observe(secs);
        }
        self.programming.observe(since.elapsed().as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_sync.set(now);
    }

    pub(crate) fn proxy_failed(&self, mode: &'static str) {
        self.sync_failures
            .get_or_create(&vec![("mode".into(), mode.into())])
            .inc();
    }
}
