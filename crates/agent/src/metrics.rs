//! Prometheus metrics on `/metrics` (10249). Names follow kube-proxy where
//! an equivalent exists; the source's own are prefixed `ferry_source_`.

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
}

impl Metrics {
    pub(crate) fn new() -> Self {
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
        Metrics {
            registry: Mutex::new(registry),
            version,
            objects,
            services,
            errors,
            updates,
        }
    }

    pub(crate) fn observe(&self, s: &Snapshot) {
        self.version.set(s.state.version() as i64);
        self.objects.set(s.state.len() as i64);
        self.services.set(s.state.services().count() as i64);
        self.errors.set(s.errors.len() as i64);
        self.updates.inc();
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
