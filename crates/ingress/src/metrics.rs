//! The ingress's Prometheus metrics (`ferry_ingress_*`): requests by
//! Ingress, Service and status, their latency, upstream connect errors,
//! and the route table in use.
//!
//! Touches nothing: counters in memory, read by whoever serves `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::routes::{Backend, RouteTable};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    ingress: Arc<str>,
    service: Arc<str>,
    status: u16,
}

/// Cheap to clone: the metrics are shared.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    connect_errors: Counter,
    table_version: Gauge,
    ingresses: Gauge,
    problems: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            latency: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            connect_errors: Counter::default(),
            table_version: Gauge::default(),
            ingresses: Gauge::default(),
            problems: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("ferry_ingress");
        r.register(
            "requests",
            "Requests answered, by Ingress, Service and status",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the response headers",
            m.latency.clone(),
        );
        r.register(
            "upstream_connect_errors",
            "Connections to endpoints that failed",
            m.connect_errors.clone(),
        );
        r.register(
            "route_table_version",
            "State version of the route table in use",
            m.table_version.clone(),
        );
        r.register("ingresses", "Ingresses routed", m.ingresses.clone());
        r.register(
            "problems",
            "Ingresses skipped, rule conflicts and backends without endpoints",
            m.problems.clone(),
        );
        m
    }

    pub(crate) fn request(&self, backend: Option<&Backend>, status: StatusCode, took: Duration) {
        let [ingress, service] = match backend {
            Some(b) => b.labels.clone(),
            None => [Arc::from(""), Arc::from("")],
        };
        self.requests
            .get_or_create(&RequestLabels {
                ingress,
                service,
                status: status.as_u16(),
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub(crate) fn connect_error(&self) {
        self.connect_errors.inc();
    }

    pub(crate) fn table(&self, table: &RouteTable) {
        self.table_version.set(table.version() as i64);
        self.ingresses.set(table.ingresses().len() as i64);
        self.problems.set(table.problems().len() as i64);
    }
}
