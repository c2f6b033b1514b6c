//! Forwarding to a real upstream: unbound started by the test on a loopback
//! ephemeral port (killed on drop), serving a small static zone; and to a
//! scripted upstream for the answers a hostile or non-recursive server gives.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use ferry_dns::Config;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType as T};

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

fn scripted(up: &FakeUpstream) -> Config {
    Config {
        upstreams: vec![up.addr],
        ..Config::default()
    }
}

#[test]
fn rd0_queries_cannot_poison_the_forward_cache() {
    // As an authoritative-only server does: without RD, a referral to the
    // root (NOERROR, no answer, no SOA); with RD, the address.
    let up = FakeUpstream::start(|q| {
        let mut m = response_to(q);
        let name = q.queries()[0].name().clone();
        if q.recursion_desired() {
            m.add_answer(Record::from_rdata(
                name,
                300,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 53))),
            ));
        } else {
            m.add_name_server(Record::from_rdata(
                Name::root(),
                300,
                RData::NS(NS(Name::from_ascii("a.root-servers.net.").unwrap())),
            ));
        }
        Some(m)
    });
    let dns = Dns::cluster(scripted(&up));
    let mut rd0 = query("www.example.test.", T::A, false);
    rd0[2] &= !0x01;
    for _ in 0..2 {
        let m = udp(dns.addr, &rd0).unwrap();
        assert!(!m.recursion_desired(), "RD is echoed as the client sent it");
        assert_eq!(data(m.answers(), T::A), ["192.0.2.53"]);
    }
    let m = dns.udp("www.example.test.", T::A);
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert!(m.recursion_desired());
    assert_eq!(data(m.answers(), T::A), ["192.0.2.53"]);
    let asked = up.asked();
    assert!(!asked.is_empty());
    for q in &asked {
        assert!(
            q.recursion_desired(),
            "upstream was asked without RD: {q:?}"
        );
    }
}

#[test]
fn a_negative_answer_without_soa_is_not_cached() {
    let up = FakeUpstream::start(|q| {
        let mut m = response_to(q);
        let name = q.queries()[0].name().clone();
        let label = name.to_ascii().to_ascii_lowercase();
        let zone = Name::from_ascii("example.test.").unwrap();
        if label.starts_with("nxdomain-soa.") {
            m.set_response_code(ResponseCode::NXDomain);
            let soa = SOA::new(zone.clone(), zone.clone(), 1, 7200, 1800, 86400, 60);
            m.add_name_server(Record::from_rdata(zone, 60, RData::SOA(soa)));
            return Some(m);
        }
        if label.starts_with("nxdomain-bare.") {
            m.set_response_code(ResponseCode::NXDomain);
        }
        // Otherwise NODATA. Either way an NS record in authority, no SOA.
        let ns = NS(Name::from_ascii("ns.example.test.").unwrap());
        m.add_name_server(Record::from_rdata(zone, 300, RData::NS(ns)));
        Some(m)
    });
    let dns = Dns::cluster(scripted(&up));
    for _ in 0..2 {
        let m = dns.udp("nxdomain-bare.example.test.", T::A);
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
        let m = dns.udp("nodata-bare.example.test.", T::A);
        assert_eq!(rcode(&m), ResponseCode::NoError);
        assert!(m.answers().is_empty());
        let m = dns.udp("nxdomain-soa.example.test.", T::A);
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
    }
    assert_eq!(up.asked_for("nxdomain-bare.example.test."), 2);
    assert_eq!(up.asked_for("nodata-bare.example.test."), 2);
    // A denial with its SOA is kept, as RFC 2308 asks.
    assert_eq!(up.asked_for("nxdomain-soa.example.test."), 1);
}

#[test]
fn forwards_over_the_cap_are_answered_servfail_at_once() {
    // An upstream that never answers holds the only forwarding slot.
    let up = FakeUpstream::start(|_| None);
    let dns = Dns::cluster(Config {
        max_forwards: 1,
        upstream_timeout: Duration::from_secs(3),
        ..scripted(&up)
    });
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    held.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    held.send_to(&query("slow.example.test.", T::A, false), dns.addr)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.asked_for("slow.example.test.") == 0 {
        assert!(
            Instant::now() < deadline,
            "the first query was not forwarded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let m = dns.udp("other.example.test.", T::A);
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    let m = dns.tcp("third.example.test.", T::A);
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(up.asked_for("other.example.test."), 0);
    assert_eq!(up.asked_for("third.example.test."), 0);
    // Cluster names are still answered meanwhile.
    assert_eq!(
        rcode(&dns.udp("web.default.svc.cluster.local.", T::A)),
        ResponseCode::NoError
    );
    // The held query ends in SERVFAIL when upstream times out.
    let mut buf = [0u8; 512];
    let n = held
        .recv(&mut buf)
        .expect("an answer after the upstream timeout");
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    let text = dns.metrics();
    assert!(
        text.contains("ferry_dns_forward_rejected_total 2"),
        "{text}"
    );
}
