//! Conntrack cleanup against the kernel, in a scratch network namespace:
//! entries made with the `conntrack` tool, cleaned over netlink, read back
//! with the tool. Root needed (fails under CI=true, skips otherwise).

mod common;

use std::process::Command;

use common::*;
use ferry_proxy::Family;
use ferry_proxy::conntrack::{Conntrack, StaleFlows};

fn insert(ns: &Ns, orig: (&str, u16, &str, u16), reply_src: (&str, u16)) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "conntrack", "-I", "-p", "udp"])
        .args(["-s", orig.0, "--sport", &orig.1.to_string()])
        .args(["-d", orig.2, "--dport", &orig.3.to_string()])
        .args([
            "--reply-src",
            reply_src.0,
            "--reply-port-src",
            &reply_src.1.to_string(),
        ])
        .args([
            "--reply-dst",
            orig.0,
            "--reply-port-dst",
            &orig.1.to_string(),
        ])
        .args(["-t", "120", "-u", "SEEN_REPLY"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn listed(ns: &Ns) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "conntrack", "-L", "-p", "udp"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn only_the_services_flows_to_the_gone_endpoint_are_deleted_in_one_batch() {
    if !root() {
        return;
    }
    let ns = Ns::new("ferry-test-conntrack");
    // Through the Service to the endpoint that goes away (two clients).
    insert(
        &ns,
        ("10.0.9.9", 40001, "10.96.0.10", 53),
        ("10.0.0.1", 5353),
    );
    insert(
        &ns,
        ("10.0.9.8", 40002, "10.96.0.10", 53),
        ("10.0.0.1", 5353),
    );
    // Through the Service to an endpoint that stays.
    insert(
        &ns,
        ("10.0.9.7", 40003, "10.96.0.10", 53),
        ("10.0.0.2", 5353),
    );
    // Straight to the gone pod, not through the Service.
    insert(
        &ns,
        ("10.0.9.6", 40004, "10.0.0.1", 5353),
        ("10.0.0.1", 5353),
    );
    // Another host's port with the NodePort's number.
    insert(
        &ns,
        ("10.0.9.5", 40005, "192.0.2.7", 30053),
        ("192.0.2.7", 30053),
    );
    let stale = StaleFlows {
        service: [("10.96.0.10".parse().unwrap(), 53)].into(),
        node_port: Some(30053),
        gone_endpoints: [("10.0.0.1".parse().unwrap(), 5353)].into(),
        all: false,
        keep_only: None,
    };
    let mut ct = Conntrack::open_in(&ns.0, Family::V4).unwrap();
    assert_eq!(ct.udp_flows().unwrap().len(), 5);
    let deleted = ct.clean(&[stale], &|_| false).unwrap();
    assert_eq!(deleted, 2);
    let left = listed(&ns);
    for kept in ["sport=40003", "sport=40004", "sport=40005"] {
        assert!(left.contains(kept), "{kept} stays: {left}");
    }
    for gone in ["sport=40001", "sport=40002"] {
        assert!(!left.contains(gone), "{gone} is deleted: {left}");
    }
    // A Service that had no endpoint: every flow to it goes, the rest stays.
    insert(
        &ns,
        ("10.0.9.4", 40006, "10.96.0.20", 53),
        ("10.96.0.20", 53),
    );
    let first = StaleFlows {
        service: [("10.96.0.20".parse().unwrap(), 53)].into(),
        all: true,
        ..StaleFlows::default()
    };
    assert_eq!(ct.clean(&[first], &|_| false).unwrap(), 1);
    let left = listed(&ns);
    assert!(!left.contains("sport=40006"), "{left}");
    assert!(left.contains("sport=40003"), "{left}");
    // After a full sync, only flows to current endpoints stay: 40003 goes
    // to 10.0.0.2, which is no longer one.
    let full = ferry_proxy::conntrack::StaleFlows {
        service: [("10.96.0.10".parse().unwrap(), 53)].into(),
        keep_only: Some([("10.0.0.3".parse().unwrap(), 5353)].into()),
        ..StaleFlows::default()
    };
    insert(
        &ns,
        ("10.0.9.3", 40007, "10.96.0.10", 53),
        ("10.0.0.3", 5353),
    );
    assert_eq!(ct.clean(&[full], &|_| false).unwrap(), 1);
    let left = listed(&ns);
    assert!(!left.contains("sport=40003"), "{left}");
    assert!(left.contains("sport=40007"), "{left}");
    assert!(left.contains("sport=40004"), "direct flows stay: {left}");
}
