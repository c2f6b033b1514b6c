//! Element changes sent over netlink must hit the very elements `nft`
//! wrote (same byte layout), in a scratch network namespace. Root needed
//! (skips without it, fails under CI=true).

mod common;

use std::process::Command;

use common::{Ns, root};

use ferry_model::Protocol;
use ferry_proxy::nft::netlink::Netlink;
use ferry_proxy::nft::ruleset;
use ferry_proxy::nft::sets::{Data, Element, Key, Set};

fn nft(ns: &str, text: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn list(ns: &str, set: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "set", "ip", "ferry", set,
        ])
        .output()
        .unwrap();
    let out2 = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "map", "ip", "ferry", set,
        ])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out2.stdout)
    )
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn el(set: Set, key: Key, data: Option<Data>) -> Element {
    Element::new(set, key, data)
}

#[test]
fn netlink_deletes_what_nft_added_and_nft_sees_what_netlink_added() {
    if !root() {
        return;
    }
    let ns = Ns::new("ferry-test-netlink");
    nft(
        &ns.0,
        &ruleset::table(ferry_proxy::Family::V4, &[1, 2], &[600]),
    );
    let samples = [
        el(
            Set::NoEndpoints,
            Key::Service(ip("172.16.0.10"), Protocol::Tcp, 80),
            None,
        ),
        el(
            Set::NoEndpointNodePorts,
            Key::NodePort(Protocol::Tcp, 30000),
            None,
        ),
        el(
            Set::ClusterIps,
            Key::Service(ip("172.16.0.11"), Protocol::Udp, 53),
            Some(Data::Mark(0x1002)),
        ),
        el(
            Set::NodePorts,
            Key::NodePort(Protocol::Sctp, 30001),
            Some(Data::Mark(0x2001)),
        ),
        el(
            Set::Endpoints,
            Key::Endpoint(0x1002, 1),
            Some(Data::Endpoint(ip("10.244.0.5"), 5353)),
        ),
        el(
            Set::Hairpin,
            Key::Pair(ip("10.244.0.5"), ip("10.244.0.5")),
            None,
        ),
        el(Set::ClusterSlots, Key::Mark(0x1002), None),
        el(Set::AffinitySlots(600), Key::Mark(0x1002), None),
        el(
            Set::FirewallKeys,
            Key::Service(ip("172.19.0.1"), Protocol::Tcp, 80),
            None,
        ),
        el(Set::Pick, Key::Mark(2), Some(Data::GotoPick(2))),
    ];
    let mut nl = Netlink::open_in(&ns.0, ferry_proxy::Family::V4).unwrap();
    // nft adds, netlink deletes.
    let text = ferry_proxy::nft::elements::render(
        &ferry_proxy::nft::elements::Delta {
            delete: vec![],
            add: samples.to_vec(),
        },
        "ip",
        "ferry",
    );
    nft(&ns.0, &text);
    nl.apply("ferry", &samples, &[])
        .unwrap_or_else(|e| panic!("netlink could not delete what nft added: {e}"));
    for e in &samples {
        let set = e.set.name();
        let key = e.text(false);
        assert!(
            !list(&ns.0, &set).contains(key.split(" . ").next().unwrap())
                || set == "pick"
                || set.starts_with("affinity"),
            "{set} still has {key}",
        );
    }
    // netlink adds, nft lists them as it would have written them.
    nl.apply("ferry", &[], &samples).unwrap();
    assert!(
        list(&ns.0, "cluster_ips").contains("172.16.0.11 . udp . 53 : 0x00001002"),
        "{}",
        list(&ns.0, "cluster_ips")
    );
    assert!(
        list(&ns.0, "endpoints").contains("0x00001002 . 1 : 10.244.0.5 . 5353"),
        "{}",
        list(&ns.0, "endpoints")
    );
    assert!(list(&ns.0, "no_endpoints").contains("172.16.0.10 . tcp . 80"));
    assert!(
        list(&ns.0, "node_ports").contains("sctp . 30001 : 0x00002001"),
        "{}",
        list(&ns.0, "node_ports")
    );
    assert!(
        list(&ns.0, "pick").contains("goto pick_2"),
        "{}",
        list(&ns.0, "pick")
    );
}

#[test]
fn table_checks_see_deletes_flushes_and_missing_elements() {
    if !root() {
        return;
    }
    let ns = Ns::new("ferry-test-nlcheck");
    nft(&ns.0, &ruleset::table(ferry_proxy::Family::V4, &[1], &[]));
    nft(&ns.0, "add element ip ferry canary { 0x5 }\n");
    let (tx, rx) = std::sync::mpsc::channel();
    let name = ns.0.clone();
    std::thread::spawn(move || {
        let mut nl = Netlink::open_in(&name, ferry_proxy::Family::V4).unwrap();
        let handle = nl.table_handle("ferry").unwrap();
        let rules = nl.rule_count("ferry").unwrap();
        let canary = nl
            .has_element("ferry", &el(Set::Canary, Key::Mark(0x5), None))
            .unwrap();
        let absent = nl
            .has_element("ferry", &el(Set::Canary, Key::Mark(0x6), None))
            .unwrap();
        tx.send((handle, rules, canary, absent)).unwrap();
    });
    let (handle, rules, canary, absent) = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("netlink requests hung");
    assert!(handle.is_some());
    assert!(rules > 5, "{rules}");
    assert!(canary && !absent);
}
