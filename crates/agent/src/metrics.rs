//! Prometheus metrics on `/metrics` (10249). Names follow kube-proxy where
//! an equivalent exists; the source's own are prefixed `ferry_source_`.

use std::sync::Mutex;

use ferry_httpd::{Peer, Request, StatusCode, respond};
use ferry_source::Snapshot;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    version: Gauge,
    objects: Gauge,
    services: Gauge,
    errors: Gauge,
    updates: Counter,
    proxy_mode: crate::ProxyMode,
    sync_duration: Histogram,
    sync_full: Histogram,
    sync_partial: Histogram,
    programming: Histogram,
    last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    sync_failures: Family<Vec<(String, String)>, Counter>,
    /// ServicePorts with more endpoints than nftables mode programs.
    pub(crate) endpoints_over_limit: Family<Vec<(String, String)>, Gauge>,
}

impl Metrics {
    pub(crate) fn new(proxy_mode: crate::ProxyMode) -> Self {
        let mut registry = Registry::default();
        let version = Gauge::default();
        let objects = Gauge::default();
        let services = Gauge::default();
        let errors = Gauge::default();
        let updates = Counter::default();
        registry.register(
            "ferry_source_state_version",
            "Version of the cluster state last loaded",
            version.clone(),
        );
        registry.register(
            "ferry_source_objects",
            "Objects in the cluster state",
            objects.clone(),
        );
        registry.register(
            "ferry_source_services",
            "Services in the cluster state",
            services.clone(),
        );
        registry.register(
            "ferry_source_manifest_errors",
            "Manifest errors currently reported",
            errors.clone(),
        );
        registry.register(
            "ferry_source_updates",
            "Cluster state updates received",
            updates.clone(),
        );
        let buckets = || Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let (sync_duration, sync_full, sync_partial, programming) =
            (buckets(), buckets(), buckets(), buckets());
        let last_sync = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let sync_failures = Family::<Vec<(String, String)>, Counter>::default();
        // kube-proxy's names, so existing dashboards and alerts keep working.
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            sync_full.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            sync_partial.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "From a change arriving at the agent to the rules being programmed",
            programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_failures",
            "Failed proxy rule syncs (nft transactions refused)",
            sync_failures.clone(),
        );
        let endpoints_over_limit = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "ferry_proxy_service_ports_over_endpoint_limit",
            "ServicePorts with more endpoints than nftables mode uses (4095); only the first 4095 in the plan's order get traffic",
            endpoints_over_limit.clone(),
        );
        Metrics {
            endpoints_over_limit,
            registry: Mutex::new(registry),
            version,
            objects,
            services,
            errors,
            updates,
            proxy_mode,
            sync_duration,
            sync_full,
            sync_partial,
            programming,
            last_sync,
            sync_failures,
        }
    }

    /// Registers more metrics (another component's) in the agent's registry.
    pub(crate) fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut registry)
    }

    pub(crate) fn observe(&self, s: &Snapshot) {
        self.version.set(s.state.version() as i64);
        self.objects.set(s.state.len() as i64);
        self.services.set(s.state.services().count() as i64);
        self.errors.set(s.errors.len() as i64);
        self.updates.inc();
    }

    pub(crate) fn proxy_synced(&self, stats: &ferry_proxy::SyncStats, since: std::time::Instant) {
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

    fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = encode(&mut out, &registry);
        }
        out
    }
}

pub(crate) async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    ferry_httpd::serve(listener, move |req: Request<_>, _peer: Peer| {
        let metrics = metrics.clone();
        async move {
            match req.uri().path() {
                "/proxyMode" => respond(StatusCode::OK, "text/plain", metrics.proxy_mode.as_str()),
                "/metrics" => respond(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.render(),
                ),
                _ => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "not found: try /metrics\n",
                ),
            }
        }
    })
    .await
}
