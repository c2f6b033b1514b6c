//! The DNS server's Prometheus metrics, named like CoreDNS's under the
//! `ferry_dns_` prefix. Label sets are created once at start, so counting a
//! request is an atomic add on the hot path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::wire;

const TYPES: [(u16, &str); 12] = [
    (wire::TYPE_A, "A"),
    (wire::TYPE_NS, "NS"),
    (wire::TYPE_CNAME, "CNAME"),
    (wire::TYPE_SOA, "SOA"),
    (wire::TYPE_PTR, "PTR"),
    (wire::TYPE_MX, "MX"),
    (wire::TYPE_TXT, "TXT"),
    (wire::TYPE_AAAA, "AAAA"),
    (wire::TYPE_SRV, "SRV"),
    (wire::TYPE_AXFR, "AXFR"),
    (wire::TYPE_IXFR, "IXFR"),
    (wire::TYPE_ANY, "ANY"),
];
const RCODES: [&str; 6] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    proto: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RcodeLabels {
    rcode: &'static str,
}

pub(crate) struct Metrics {
    /// [udp, tcp] × (TYPES + "other")
    requests: [[Counter; TYPES.len() + 1]; 2],
    /// RCODES + "other"
    responses: [Counter; RCODES.len() + 1],
    pub duration: Histogram,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
    pub forward_errors: Counter,
    pub forward_rejected: Counter,
    pub tcp_rejected: Counter,
    pub malformed: Counter,
    pub index_names: Gauge,
    pub index_builds: Counter,
    pub index_build_micros: Gauge,
    pub index_changes: Counter,
    pub index_change_micros: Gauge,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let r = registry.sub_registry_with_prefix("ferry_dns");
        let requests_family = Family::<RequestLabels, Counter>::default();
        let requests = [0, 1].map(|p| {
            let proto = if p == 0 { "udp" } else { "tcp" };
            std::array::from_fn(|i| {
                let t = TYPES.get(i).map_or("other", |(_, n)| n);
                requests_family
                    .get_or_create(&RequestLabels { proto, r#type: t })
                    .clone()
            })
        });
        r.register(
            "requests",
            "DNS requests by transport and query type",
            requests_family,
        );
        let responses_family = Family::<RcodeLabels, Counter>::default();
        let responses = std::array::from_fn(|i| {
            let rcode = RCODES.get(i).copied().unwrap_or("other");
            responses_family
                .get_or_create(&RcodeLabels { rcode })
                .clone()
        });
        r.register("responses", "DNS responses by rcode", responses_family);
        let duration = Histogram::new(exponential_buckets(0.000_025, 2.0, 16));
        r.register(
            "request_duration_seconds",
            "Time from receiving a request to sending its answer",
            duration.clone(),
        );
        let m = Metrics {
            requests,
            responses,
            duration,
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_entries: Gauge::default(),
            forward_errors: Counter::default(),
            forward_rejected: Counter::default(),
            tcp_rejected: Counter::default(),
            malformed: Counter::default(),
            index_names: Gauge::default(),
            index_builds: Counter::default(),
            index_build_micros: Gauge::default(),
            index_changes: Counter::default(),
            index_change_micros: Gauge::default(),
        };
        r.register(
            "cache_hits",
            "Forwarded names answered from the cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Forwarded names sent upstream",
            m.cache_misses.clone(),
        );
        r.register(
            "cache_entries",
            "Answers in the forward cache",
            m.cache_entries.clone(),
        );
        r.register(
            "forward_errors",
            "Forwarded queries no upstream answered (answered SERVFAIL)",
            m.forward_errors.clone(),
        );
        r.register(
            "forward_rejected",
            "Queries answered SERVFAIL because max_forwards were already in flight",
            m.forward_rejected.clone(),
        );
        r.register(
            "tcp_rejected_connections",
            "TCP connections closed on accept because tcp_max_connections were open",
            m.tcp_rejected.clone(),
        );
        r.register(
            "malformed_requests",
            "Packets that were not a well-formed query",
            m.malformed.clone(),
        );
        r.register(
            "index_names",
            "Names in the cluster zone index",
            m.index_names.clone(),
        );
        r.register(
            "index_builds",
            "Index rebuilds from a new cluster state",
            m.index_builds.clone(),
        );
        r.register(
            "index_build_last_microseconds",
            "Duration of the last index rebuild",
            m.index_build_micros.clone(),
        );
        r.register(
            "index_changes",
            "Change sets applied to the index without a rebuild",
            m.index_changes.clone(),
        );
        r.register(
            "index_change_last_microseconds",
            "Duration of the last change applied to the index",
            m.index_change_micros.clone(),
        );
        m
    }

    pub fn request(&self, qtype: u16, udp: bool) {
        let i = TYPES
            .iter()
            .position(|(t, _)| *t == qtype)
            .unwrap_or(TYPES.len());
        self.requests[usize::from(!udp)][i].inc();
    }

    pub fn response(&self, answer: &[u8]) {
        let rcode = wire::rcode_of(answer) as usize;
        self.responses[rcode.min(RCODES.len())].inc();
    }
}
