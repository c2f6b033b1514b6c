//! What a hostile or broken TCP client can make the server hold: connections
//! over the cap are closed at once, idle ones and half-sent queries are
//! dropped after their timeouts, and a query cut short by EOF is never
//! answered from the bytes of an earlier one. Real sockets on loopback.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::*;
use ferry_dns::Config;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType as T;

const WEB: &str = "web.default.svc.cluster.local.";

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut f = (packet.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(packet);
    f
}

#[test]
fn a_tcp_query_cut_short_by_eof_gets_no_answer() {
    let dns = Dns::cluster(Config::default());
    let q = query(WEB, T::A, false);
    // One whole query, answered; then the same length with only a new ID,
    // then EOF. The rest of the first query must not complete the second.
    let mut s = tcp_connect(dns.addr, Duration::from_secs(3));
    s.write_all(&framed(&q)).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut first = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut first).unwrap();
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&[0x99, 0x99]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "answered a query that never arrived: {rest:?}"
    );
    // A first query cut short: no answer either.
    let mut s = tcp_connect(dns.addr, Duration::from_secs(3));
    s.write_all(&framed(&q)[..12]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "answered a partial query: {rest:?}");
}

#[test]
fn two_tcp_queries_on_one_connection_get_their_own_answers() {
    let dns = Dns::cluster(Config::default());
    let mut s = tcp_connect(dns.addr, Duration::from_secs(3));
    // The longer query first, so a reused buffer would hold its tail.
    for name in ["_http._tcp.web.default.svc.cluster.local.", WEB] {
        s.write_all(&framed(&query(name, T::SRV, false))).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut a = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut a).unwrap();
        let m = hickory_proto::op::Message::from_vec(&a).unwrap();
        assert_eq!(m.queries()[0].name().to_ascii(), name);
        assert_eq!(rcode(&m), ResponseCode::NoError);
    }
}

#[test]
fn tcp_connections_over_the_cap_are_closed_and_udp_still_answers() {
    let dns = Dns::cluster(Config {
        tcp_max_connections: 4,
        tcp_idle_timeout: Duration::from_secs(30),
        ..Config::default()
    });
    let mut conns: Vec<_> = (0..7)
        .map(|_| tcp_connect(dns.addr, Duration::from_secs(3)))
        .collect();
    for (i, c) in conns.iter_mut().enumerate().skip(4) {
        assert!(
            closed_by_server(c),
            "connection {i} over the cap stayed open"
        );
    }
    assert_eq!(rcode(&dns.udp(WEB, T::A)), ResponseCode::NoError);
    for (i, c) in conns.iter_mut().enumerate().take(4) {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            !closed_by_server(c),
            "connection {i} within the cap was closed"
        );
    }
    assert!(
        dns.metrics()
            .contains("ferry_dns_tcp_rejected_connections_total 3")
    );
    // A slot freed by a client is served again.
    conns.truncate(3);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(m) = tcp(dns.addr, &query(WEB, T::A, false)) {
            assert_eq!(rcode(&m), ResponseCode::NoError);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no TCP answer after a slot was freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_idle_tcp_connection_is_closed_after_the_idle_timeout() {
    let dns = Dns::cluster(Config {
        tcp_idle_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let start = Instant::now();
    let mut s = tcp_connect(dns.addr, Duration::from_secs(5));
    assert!(closed_by_server(&mut s));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_tcp_client_that_stops_mid_query_is_dropped_after_the_read_timeout() {
    let dns = Dns::cluster(Config {
        tcp_idle_timeout: Duration::from_secs(30),
        tcp_read_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let q = query(WEB, T::A, false);
    let start = Instant::now();
    let mut s = tcp_connect(dns.addr, Duration::from_secs(5));
    s.write_all(&framed(&q)[..9]).unwrap();
    assert!(closed_by_server(&mut s));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
