//! Forwarding to a real upstream: unbound started by the test on a loopback
//! ephemeral port (killed on drop), serving a small static zone.

mod common;

use common::*;
use ferry_dns::Config;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType as T;

fn upstream() -> Option<Unbound> {
    let mut data = vec![
        "www.example.test. 300 IN A 192.0.2.80".to_string(),
        "www.example.test. 300 IN AAAA 2001:db8::80".to_string(),
    ];
    // 60 addresses: more than 512 bytes, so unbound truncates over plain UDP.
    for i in 0..60 {
        data.push(format!("big.example.test. 300 IN A 198.51.100.{}", i + 1));
    }
    Unbound::start("example.test", &data)
}

fn config(up: &Unbound) -> Config {
    Config {
        upstreams: vec![up.addr],
        ..Config::default()
    }
}

#[test]
fn other_names_are_forwarded_then_answered_from_the_cache() {
    let Some(up) = upstream() else { return };
    let dns = Dns::cluster(config(&up));
    let m = dns.udp("WWW.Example.Test.", T::A);
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_eq!(data(m.answers(), T::A), ["192.0.2.80"]);
    assert_eq!(m.answers()[0].name().to_string(), "WWW.Example.Test.");
    let m = dns.tcp("www.example.test.", T::AAAA);
    assert_eq!(data(m.answers(), T::AAAA), ["2001:db8::80"]);
    // Negative answers are forwarded too.
    assert_eq!(
        rcode(&dns.udp("nothing.example.test.", T::A)),
        ResponseCode::NXDomain
    );
    // With the upstream gone, the cached name still answers, case echoed.
    drop(up);
    let m = dns.udp("www.EXAMPLE.test.", T::A);
    assert_eq!(data(m.answers(), T::A), ["192.0.2.80"]);
    assert_eq!(m.queries()[0].name().to_string(), "www.EXAMPLE.test.");
    assert!(m.answers()[0].ttl() <= 300);
    let text = dns.metrics();
    assert!(text.contains("ferry_dns_cache_hits_total 1"), "{text}");
    // Uncached names now fail with SERVFAIL, and cluster names still answer.
    assert_eq!(
        rcode(&dns.udp("other.example.test.", T::A)),
        ResponseCode::ServFail
    );
    assert_eq!(
        rcode(&dns.udp("web.default.svc.cluster.local.", T::A)),
        ResponseCode::NoError
    );
}

#[test]
fn a_large_upstream_answer_falls_back_to_tcp_and_is_truncated_for_udp_clients() {
    let Some(up) = upstream() else { return };
    let dns = Dns::cluster(config(&up));
    // Plain UDP client: ferry fetched all 60 records over TCP, but they do
    // not fit 512 bytes, so the client is told to retry over TCP.
    let m = udp(dns.addr, &query("big.example.test.", T::A, false)).unwrap();
    assert!(m.truncated());
    let m = dns.tcp("big.example.test.", T::A);
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 60);
    // EDNS clients get the whole answer over UDP (about 1 KB).
    let m = udp(dns.addr, &query("big.example.test.", T::A, true)).unwrap();
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 60);
}

#[test]
fn external_name_outside_the_zone_is_resolved_upstream() {
    let Some(up) = upstream() else { return };
    let dns = Dns::cluster(config(&up));
    let m = dns.udp("Outside.default.svc.cluster.local.", T::A);
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_eq!(m.answers()[0].record_type(), T::CNAME);
    assert_eq!(
        m.answers()[0].name().to_string(),
        "Outside.default.svc.cluster.local."
    );
    assert_eq!(data(m.answers(), T::CNAME), ["www.example.test."]);
    assert_eq!(data(m.answers(), T::A), ["192.0.2.80"]);
    let m = dns.tcp("outside.default.svc.cluster.local.", T::CNAME);
    assert_eq!(m.answers().len(), 1);
}

#[test]
fn reverse_names_outside_the_cluster_are_forwarded() {
    let Some(up) = upstream() else { return };
    let dns = Dns::cluster(config(&up));
    // Not a cluster address: unbound answers (its default local zones make
    // 127.in-addr.arpa authoritative), not ferry.
    let m = dns.udp("1.0.0.127.in-addr.arpa.", T::PTR);
    assert_eq!(data(m.answers(), T::PTR), ["localhost."]);
    assert!(!m.authoritative() || rcode(&m) == ResponseCode::NoError);
}
