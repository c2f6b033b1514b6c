//! Authoritative answers for the cluster zone, asked over real UDP and TCP
//! sockets on loopback, checked record by record against the Kubernetes DNS
//! specification and CoreDNS's kubernetes plugin.

// Tests start from the default config and change one thing, which reads best here.
#![allow(clippy::field_reassign_with_default)]

mod common;

use common::*;
use ferry_dns::{Config, PodMode};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType as T;

const Z: &str = "svc.cluster.local.";

fn n(s: &str) -> String {
    format!("{s}.{Z}")
}

#[test]
fn cluster_ip_service_answers_its_address_over_udp_and_tcp() {
    let dns = Dns::cluster(Config::default());
    for m in [
        dns.udp(&n("web.default"), T::A),
        dns.tcp(&n("web.default"), T::A),
    ] {
        assert_eq!(rcode(&m), ResponseCode::NoError);
        assert!(m.authoritative());
        assert_eq!(data(m.answers(), T::A), ["10.96.0.10"]);
        assert_eq!(m.answers()[0].ttl(), 5);
    }
}

#[test]
fn dual_stack_service_answers_a_and_aaaa() {
    let dns = Dns::cluster(Config::default());
    assert_eq!(
        data(dns.udp(&n("dual.default"), T::A).answers(), T::A),
        ["10.96.0.11"]
    );
    assert_eq!(
        data(dns.udp(&n("dual.default"), T::AAAA).answers(), T::AAAA),
        ["fd00:96::11"]
    );
    // SRV: one record per (port x ClusterIP) before merging, so weight 50.
    let srv = dns.udp(&n("_http._tcp.dual.default"), T::SRV);
    assert_eq!(
        data(srv.answers(), T::SRV),
        ["0 50 80 dual.default.svc.cluster.local."]
    );
    assert_eq!(data(srv.additionals(), T::AAAA), ["fd00:96::11"]);
}

#[test]
fn named_ports_have_srv_records_and_the_bare_name_lists_all_ports() {
    let dns = Dns::cluster(Config::default());
    let m = dns.udp(&n("_http._tcp.web.default"), T::SRV);
    assert_eq!(
        data(m.answers(), T::SRV),
        ["0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(data(m.additionals(), T::A), ["10.96.0.10"]);
    let m = dns.udp(&n("_dns._udp.web.default"), T::SRV);
    assert_eq!(
        data(m.answers(), T::SRV),
        ["0 100 53 web.default.svc.cluster.local."]
    );
    let m = dns.udp(&n("web.default"), T::SRV);
    assert_eq!(
        data(m.answers(), T::SRV),
        [
            "0 50 53 web.default.svc.cluster.local.",
            "0 50 80 web.default.svc.cluster.local."
        ]
    );
    // A port name that does not exist, or the wrong protocol: NXDOMAIN.
    for name in ["_grpc._tcp.web.default", "_http._udp.web.default"] {
        assert_eq!(
            rcode(&dns.udp(&n(name), T::SRV)),
            ResponseCode::NXDomain,
            "{name}"
        );
    }
}

#[test]
fn headless_service_answers_ready_endpoints_by_service_hostname_and_dashed_ip() {
    let dns = Dns::cluster(Config::default());
    let m = dns.udp(&n("db.default"), T::A);
    assert_eq!(data(m.answers(), T::A), ["10.244.2.10", "10.244.2.11"]);
    assert_eq!(
        data(dns.udp(&n("db-0.db.default"), T::A).answers(), T::A),
        ["10.244.2.10"]
    );
    assert_eq!(
        data(dns.udp(&n("10-244-2-11.db.default"), T::A).answers(), T::A),
        ["10.244.2.11"]
    );
    // The unready endpoint has no name.
    assert_eq!(
        rcode(&dns.udp(&n("db-2.db.default"), T::A)),
        ResponseCode::NXDomain
    );
    // N ready endpoints x M named ports SRV records for the bare name: 2 x 2.
    let m = dns.udp(&n("db.default"), T::SRV);
    assert_eq!(
        data(m.answers(), T::SRV),
        [
            "0 25 5432 10-244-2-11.db.default.svc.cluster.local.",
            "0 25 5432 db-0.db.default.svc.cluster.local.",
            "0 25 9187 10-244-2-11.db.default.svc.cluster.local.",
            "0 25 9187 db-0.db.default.svc.cluster.local.",
        ]
    );
    assert_eq!(data(m.additionals(), T::A), ["10.244.2.10", "10.244.2.11"]);
    let m = dns.udp(&n("_pg._tcp.db.default"), T::SRV);
    assert_eq!(
        data(m.answers(), T::SRV),
        [
            "0 50 5432 10-244-2-11.db.default.svc.cluster.local.",
            "0 50 5432 db-0.db.default.svc.cluster.local.",
        ]
    );
}

#[test]
fn headless_service_publishing_not_ready_addresses_lists_unready_endpoints() {
    let dns = Dns::cluster(Config::default());
    assert_eq!(
        data(dns.udp(&n("warm.default"), T::A).answers(), T::A),
        ["10.244.3.7"]
    );
}

#[test]
fn headless_service_without_ready_endpoints_is_nxdomain() {
    let dns = Dns::cluster(Config::default());
    for t in [T::A, T::AAAA, T::SRV] {
        let m = dns.udp(&n("lonely.default"), t);
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
        assert_eq!(data(m.name_servers(), T::SOA), ["ns.dns.cluster.local."]);
    }
}

#[test]
fn external_name_inside_the_zone_is_a_chased_cname() {
    let dns = Dns::cluster(Config::default());
    let m = dns.udp(&n("alias.default"), T::A);
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_eq!(m.answers()[0].record_type(), T::CNAME);
    assert_eq!(
        data(m.answers(), T::CNAME),
        ["web.default.svc.cluster.local."]
    );
    assert_eq!(data(m.answers(), T::A), ["10.96.0.10"]);
    let m = dns.udp(&n("alias.default"), T::CNAME);
    assert_eq!(m.answers().len(), 1);
    // Sub-names of an ExternalName do not exist.
    assert_eq!(
        rcode(&dns.udp(&n("x.alias.default"), T::A)),
        ResponseCode::NXDomain
    );
}

#[test]
fn reverse_lookups_name_the_service_and_the_endpoint() {
    let dns = Dns::cluster(Config::default());
    let m = dns.udp("10.0.96.10.in-addr.arpa.", T::PTR);
    assert_eq!(
        data(m.answers(), T::PTR),
        ["web.default.svc.cluster.local."]
    );
    let m = dns.udp("10.2.244.10.in-addr.arpa.", T::PTR);
    assert_eq!(
        data(m.answers(), T::PTR),
        ["db-0.db.default.svc.cluster.local."]
    );
    let v6 = "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(
        data(dns.udp(v6, T::PTR).answers(), T::PTR),
        ["dual.default.svc.cluster.local."]
    );
    // An endpoint of a Service with a ClusterIP is named by its dashed IP.
    let m = dns.udp("5.1.244.10.in-addr.arpa.", T::PTR);
    assert_eq!(
        data(m.answers(), T::PTR),
        ["10-244-1-5.web.default.svc.cluster.local."]
    );
    assert!(m.authoritative());
    // Another type at a reverse name that exists: no records, no error.
    let m = dns.udp("5.1.244.10.in-addr.arpa.", T::A);
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    // A not-ready endpoint has no reverse name: the query goes upstream
    // (none here), as every reverse name ferry does not know.
    let m = dns.udp("6.1.244.10.in-addr.arpa.", T::PTR);
    assert!(m.answers().is_empty(), "{m:?}");
    // Only the canonical spelling is a reverse name (no leading zeros).
    let m = dns.udp("05.1.244.10.in-addr.arpa.", T::PTR);
    assert!(m.answers().is_empty(), "{m:?}");
}

#[test]
fn endpoints_of_a_service_with_a_cluster_ip_have_names_too() {
    let dns = Dns::cluster(Config::default());
    let m = dns.udp(&n("10-244-1-5.web.default"), T::A);
    assert_eq!(data(m.answers(), T::A), ["10.244.1.5"]);
    assert!(m.authoritative());
    // The name exists: NODATA for another type, with the zone's SOA.
    let m = dns.udp(&n("10-244-1-5.web.default"), T::AAAA);
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    assert_eq!(m.name_servers().len(), 1);
    // Not ready, unknown, or below an endpoint name: no such name.
    for name in [
        "10-244-1-6.web.default",
        "10-244-1-7.web.default",
        "x.10-244-1-5.web.default",
        "10-244-1-5.dual.default",
        "10-244-1-5.web.quiet",
    ] {
        assert_eq!(
            rcode(&dns.udp(&n(name), T::A)),
            ResponseCode::NXDomain,
            "{name}"
        );
    }
    // Case does not matter.
    let m = dns.udp("10-244-1-5.WEB.Default.svc.cluster.local.", T::A);
    assert_eq!(data(m.answers(), T::A), ["10.244.1.5"]);
    // An ExternalName pointing at one is followed to its address.
    let m = dns.udp(&n("to-endpoint.default"), T::A);
    assert_eq!(
        data(m.answers(), T::CNAME),
        ["10-244-1-5.web.default.svc.cluster.local."]
    );
    assert_eq!(data(m.answers(), T::A), ["10.244.1.5"]);
    assert_eq!(
        m.answers()[1].name().to_string(),
        "10-244-1-5.web.default.svc.cluster.local."
    );
    // No AAAA there: the CNAME alone.
    let m = dns.udp(&n("to-endpoint.default"), T::AAAA);
    assert_eq!(m.answers().len(), 1);
}

#[test]
fn the_zone_apex_has_soa_ns_and_the_schema_version() {
    let mut config = Config::default();
    config.nameserver_ips = vec!["10.96.0.53".parse().unwrap()];
    let dns = Dns::cluster(config);
    let m = dns.udp("cluster.local.", T::SOA);
    assert_eq!(data(m.answers(), T::SOA), ["ns.dns.cluster.local."]);
    let m = dns.udp("cluster.local.", T::NS);
    assert_eq!(data(m.answers(), T::NS), ["ns.dns.cluster.local."]);
    assert_eq!(data(m.additionals(), T::A), ["10.96.0.53"]);
    let m = dns.udp("dns-version.cluster.local.", T::TXT);
    assert_eq!(data(m.answers(), T::TXT), ["1.1.0"]);
    assert_eq!(m.answers()[0].ttl(), 28800);
}

#[test]
fn nxdomain_and_nodata_are_decided_as_coredns_does() {
    let dns = Dns::cluster(Config::default());
    let cases = [
        (
            "missing.default.svc.cluster.local.",
            T::A,
            ResponseCode::NXDomain,
            0,
        ),
        ("default.svc.cluster.local.", T::A, ResponseCode::NoError, 0),
        ("quiet.svc.cluster.local.", T::A, ResponseCode::NoError, 0),
        (
            "nowhere.svc.cluster.local.",
            T::A,
            ResponseCode::NXDomain,
            0,
        ),
        ("svc.cluster.local.", T::A, ResponseCode::NoError, 0),
        ("pod.cluster.local.", T::A, ResponseCode::NoError, 0),
        ("cluster.local.", T::A, ResponseCode::NoError, 0),
        (
            "web.default.svc.cluster.local.",
            T::AAAA,
            ResponseCode::NoError,
            0,
        ),
        (
            "web.default.svc.cluster.local.",
            T::MX,
            ResponseCode::NoError,
            0,
        ),
        (
            "web.default.svc.cluster.local.",
            T::TXT,
            ResponseCode::NoError,
            0,
        ),
        (
            "missing.default.svc.cluster.local.",
            T::TXT,
            ResponseCode::NXDomain,
            0,
        ),
        (
            "a.b.c.web.default.svc.cluster.local.",
            T::A,
            ResponseCode::NXDomain,
            0,
        ),
        (
            "web.default.other.cluster.local.",
            T::A,
            ResponseCode::NXDomain,
            0,
        ),
        (
            "10-244-1-9.default.pod.cluster.local.",
            T::A,
            ResponseCode::NXDomain,
            0,
        ),
    ];
    for (name, t, want, answers) in cases {
        let m = dns.udp(name, t);
        assert_eq!(rcode(&m), want, "{name} {t}");
        assert_eq!(m.answers().len(), answers, "{name} {t}");
        assert!(m.authoritative(), "{name}");
        assert_eq!(
            data(m.name_servers(), T::SOA),
            ["ns.dns.cluster.local."],
            "negative answers carry the SOA: {name} {t}"
        );
    }
}

#[test]
fn answers_echo_the_case_of_the_question() {
    let dns = Dns::cluster(Config::default());
    let m = dns.udp("WeB.DeFault.SVC.Cluster.Local.", T::A);
    assert_eq!(
        m.answers()[0].name().to_string(),
        "WeB.DeFault.SVC.Cluster.Local."
    );
    assert_eq!(data(m.answers(), T::A), ["10.96.0.10"]);
    let m = dns.udp("Nope.DeFault.SVC.Cluster.Local.", T::A);
    assert_eq!(
        m.queries()[0].name().to_string(),
        "Nope.DeFault.SVC.Cluster.Local."
    );
    assert_eq!(m.name_servers()[0].name().to_string(), "Cluster.Local.");
}

#[test]
fn pod_names_follow_the_pod_mode() {
    let mut config = Config::default();
    config.pods = PodMode::Insecure;
    let dns = Dns::cluster(config.clone());
    let name = "10-1-2-3.default.pod.cluster.local.";
    assert_eq!(data(dns.udp(name, T::A).answers(), T::A), ["10.1.2.3"]);
    assert_eq!(rcode(&dns.udp(name, T::AAAA)), ResponseCode::NoError);
    assert_eq!(
        rcode(&dns.udp("10-1-2-3.nowhere.pod.cluster.local.", T::A)),
        ResponseCode::NXDomain
    );
    assert_eq!(
        data(
            dns.udp("fd00--5.default.pod.cluster.local.", T::AAAA)
                .answers(),
            T::AAAA
        ),
        ["fd00::5"]
    );

    config.pods = PodMode::Verified;
    let dns = Dns::cluster(config);
    assert_eq!(rcode(&dns.udp(name, T::A)), ResponseCode::NXDomain);
    assert_eq!(
        data(
            dns.udp("10-244-1-9.default.pod.cluster.local.", T::A)
                .answers(),
            T::A
        ),
        ["10.244.1.9"]
    );
    assert_eq!(
        rcode(&dns.udp("default.pod.cluster.local.", T::A)),
        ResponseCode::NoError
    );
    // Verified means this namespace's Pod has the address: not another's.
    assert_eq!(
        rcode(&dns.udp("10-244-1-9.kube-system.pod.cluster.local.", T::A)),
        ResponseCode::NXDomain
    );
    // The name a Pod's address has, case aside; no other spelling of it.
    assert_eq!(
        data(
            dns.udp("10-244-1-9.DEFAULT.pod.cluster.local.", T::A)
                .answers(),
            T::A
        ),
        ["10.244.1.9"]
    );
    assert_eq!(
        rcode(&dns.udp("10-244-1-09.default.pod.cluster.local.", T::A)),
        ResponseCode::NXDomain
    );
}

#[test]
fn several_zones_and_namespace_filters_are_honoured() {
    let mut config = Config::default();
    config.zones = vec!["cluster.local".into(), "corp.example".into()];
    config.namespaces = Some(vec!["quiet".into()]);
    config.ttl = 30;
    let dns = Dns::cluster(config);
    assert_eq!(
        rcode(&dns.udp("web.default.svc.corp.example.", T::A)),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(&dns.udp("default.svc.cluster.local.", T::A)),
        ResponseCode::NXDomain
    );
    let m = dns.udp("quiet.svc.corp.example.", T::A);
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_eq!(m.name_servers()[0].ttl(), 30);
}

#[test]
fn cluster_names_are_servfail_until_the_first_state_and_then_answered() {
    let dns = Dns::start(Config::default(), None);
    let m = dns.udp(&n("web.default"), T::A);
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    assert!(!dns.server.is_ready());
    dns.server.update(&state(CLUSTER));
    assert_eq!(
        data(dns.udp(&n("web.default"), T::A).answers(), T::A),
        ["10.96.0.10"]
    );
}

#[test]
fn updates_replace_the_answers() {
    let dns = Dns::cluster(Config::default());
    let changed = CLUSTER.replace("clusterIP: 10.96.0.10", "clusterIP: 10.96.0.99");
    dns.server.update(&state(&changed));
    assert_eq!(
        data(dns.udp(&n("web.default"), T::A).answers(), T::A),
        ["10.96.0.99"]
    );
}

#[test]
fn zone_transfers_are_refused_and_other_names_without_upstream_too() {
    let dns = Dns::cluster(Config::default());
    assert_eq!(
        rcode(&dns.tcp("cluster.local.", T::AXFR)),
        ResponseCode::Refused
    );
    assert_eq!(
        rcode(&dns.udp("www.example.test.", T::A)),
        ResponseCode::Refused
    );
}

fn big_headless(endpoints: usize) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec:\n  clusterIP: None\n  ports: [{name: http, port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  namespace: default\n  labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nports:\n- {name: http, port: 80}\nendpoints:\n",
    );
    for i in 0..endpoints {
        y.push_str(&format!(
            "- addresses: [10.245.{}.{}]\n",
            i / 200,
            i % 200 + 1
        ));
    }
    y
}

#[test]
fn a_large_headless_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let dns = Dns::start(Config::default(), Some(&state(&big_headless(100))));
    let m = udp(dns.addr, &query(&n("big.default"), T::A, false)).unwrap();
    assert!(m.truncated());
    assert!(m.answers().is_empty());
    let m = udp(dns.addr, &query(&n("big.default"), T::A, true)).unwrap();
    assert!(m.truncated(), "100 A records exceed 1232 bytes too");
    let m = dns.tcp(&n("big.default"), T::A);
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 100);
    let m = dns.tcp(&n("big.default"), T::SRV);
    assert_eq!(m.answers().len(), 100);
    assert_eq!(m.additionals().len(), 100);
}

#[test]
fn a_tcp_answer_over_65535_bytes_drops_whole_records_and_sets_tc() {
    // 5000 A records are about 80 KB: more than a TCP message can hold.
    let dns = Dns::start(Config::default(), Some(&state(&big_headless(5000))));
    for edns in [false, true] {
        let m = tcp(dns.addr, &query(&n("big.default"), T::A, edns)).expect("an answer");
        assert!(m.truncated());
        assert!(m.answers().len() > 4000, "{}", m.answers().len());
        assert!(m.answers().len() < 5000);
        assert_eq!(m.extensions().is_some(), edns);
        let ips = data(m.answers(), T::A);
        assert!(ips.iter().all(|ip| ip.starts_with("10.245.")));
    }
}

#[test]
fn garbage_gets_no_crash_and_the_server_keeps_answering() {
    let dns = Dns::cluster(Config::default());
    let good = query(&n("web.default"), T::A, false);
    let mut x: u32 = 7;
    for i in 0..500 {
        let mut p = if i % 2 == 0 { good.clone() } else { Vec::new() };
        for _ in 0..(i % 40) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if p.is_empty() || i % 3 == 0 {
                p.push(x as u8);
            } else {
                let at = x as usize % p.len();
                p[at] = (x >> 8) as u8;
            }
        }
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(&p, dns.addr).unwrap();
    }
    // A header-only query with two questions: FORMERR, not silence.
    let mut two = good.clone();
    two[5] = 2;
    let m = udp(dns.addr, &two).unwrap();
    assert_eq!(rcode(&m), ResponseCode::FormErr);
    assert_eq!(
        data(dns.udp(&n("web.default"), T::A).answers(), T::A),
        ["10.96.0.10"]
    );
    assert_eq!(
        data(dns.tcp(&n("web.default"), T::A).answers(), T::A),
        ["10.96.0.10"]
    );
    assert!(dns.metrics().contains("ferry_dns_malformed_requests_total"));
}

#[test]
fn metrics_count_requests_by_type_and_rcode() {
    let dns = Dns::cluster(Config::default());
    dns.udp(&n("web.default"), T::A);
    dns.udp(&n("nope.default"), T::AAAA);
    let text = dns.metrics();
    assert!(
        text.contains("ferry_dns_requests_total{proto=\"udp\",type=\"A\"} 1"),
        "{text}"
    );
    assert!(text.contains("ferry_dns_responses_total{rcode=\"NXDOMAIN\"} 1"));
    assert!(text.contains("ferry_dns_request_duration_seconds_count 2"));
}

#[test]
fn health_and_readiness_are_served_over_http() {
    let dns = Dns::start(Config::default(), None);
    let listener = dns
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    #[allow(clippy::async_yields_async)] // the task runs on; its handle is kept
    let _guard = dns.block_on(async {
        tokio::spawn(ferry_dns::serve_http(
            listener,
            dns.server.clone(),
            dns.registry.clone(),
        ))
    });
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/health").ends_with("OK"));
    assert!(get("/ready").starts_with("HTTP/1.1 503"));
    dns.server.update(&state(CLUSTER));
    assert!(get("/ready").starts_with("HTTP/1.1 200"));
    assert!(get("/metrics").contains("ferry_dns_index_names"));
}

#[test]
fn headless_service_without_spec_ports_serves_srv_from_its_endpointslice_ports() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: bare, namespace: default}\nspec:\n  clusterIP: None\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: bare-1\n  namespace: default\n  labels: {kubernetes.io/service-name: bare}\naddressType: IPv4\nports:\n- {name: http, port: 8080}\nendpoints:\n- addresses: [10.244.4.1]\n  hostname: bare-0\n  conditions: {ready: true}\n";
    let dns = Dns::start(Config::default(), Some(&state(yaml)));
    assert_eq!(
        data(dns.udp(&n("bare.default"), T::A).answers(), T::A),
        ["10.244.4.1"]
    );
    for m in [
        dns.udp(&n("_http._tcp.bare.default"), T::SRV),
        dns.tcp(&n("_http._tcp.bare.default"), T::SRV),
    ] {
        assert_eq!(rcode(&m), ResponseCode::NoError);
        assert_eq!(
            data(m.answers(), T::SRV),
            ["0 100 8080 bare-0.bare.default.svc.cluster.local."]
        );
        assert_eq!(data(m.additionals(), T::A), ["10.244.4.1"]);
    }
    let m = dns.udp(&n("bare.default"), T::SRV);
    assert_eq!(
        data(m.answers(), T::SRV),
        ["0 100 8080 bare-0.bare.default.svc.cluster.local."]
    );
}
