//! Prometheus metrics on `/metrics` (10249): one registry, in which each
//! component registers its own (the proxy's under kube-proxy's names, DNS
//! under CoreDNS's); the source's are here, prefixed `ferry_source_`.

use std::sync::Mutex;

use ferry_httpd::{Peer, Request, StatusCode, respond};
use ferry_source::Snapshot;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    version: Gauge,
    objects: Gauge,
    services: Gauge,
    errors: Gauge,
    updates: Counter,
    heap_in_use: Gauge,
    heap_free: Gauge,
    proxy_mode: crate::ProxyMode,
}

impl Metrics {
    pub(crate) fn new(proxy_mode: crate::ProxyMode) -> Self {
        let mut registry = Registry::default();
        let version = Gauge::default();
        let objects = Gauge::default();
        let services = Gauge::default();
        let errors = Gauge::default();
        let updates = Counter::default();
        let heap_in_use = Gauge::default();
        let heap_free = Gauge::default();
        registry.register(
            "ferry_heap_in_use_bytes",
            "Bytes the allocator has handed out and not had back (glibc's mallinfo2)",
            heap_in_use.clone(),
        );
        registry.register(
            "ferry_heap_free_bytes",
            "Bytes free inside the allocator's heaps, kept from the system",
            heap_free.clone(),
        );
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
        Metrics {
            registry: Mutex::new(registry),
            version,
            objects,
            services,
            errors,
            updates,
            heap_in_use,
            heap_free,
            proxy_mode,
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
        self.services.set(s.state.service_count() as i64);
        self.errors.set(s.errors.len() as i64);
        self.updates.inc();
    }

    fn render(&self) -> String {
        let heap = ferry_sys::heap_usage();
        self.heap_in_use.set(heap.in_use as i64);
        self.heap_free.set(heap.free as i64);
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
