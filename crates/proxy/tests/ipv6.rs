//! IPv6 traffic through `ip6 ferry`: a ClusterIP on an IPv6 address, DNAT'ed
//! to three real HTTP servers, with curl as the client, all inside a scratch
//! network namespace. Root needed (skips without it, fails under CI=true).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::root;
use ferry_model::{Protocol, ServicePortName};
use ferry_proxy::nft::NftBackend;
use ferry_proxy::{Family, PlannedEndpoint, ProxyPlan, ServicePlan};

const NS: &str = "ferry-test-ipv6";

struct Scratch(Vec<Child>);
impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", NS]).status();
    }
}

fn ip(args: &str) {
    let ok = Command::new("ip")
        .args(["-n", NS])
        .args(args.split_whitespace())
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip -n {NS} {args}");
}

#[test]
fn a_cluster_ip_on_ipv6_reaches_every_endpoint() {
    if !root() {
        return;
    }
    let _ = Command::new("ip").args(["netns", "del", NS]).status();
    assert!(
        Command::new("ip")
            .args(["netns", "add", NS])
            .status()
            .unwrap()
            .success()
    );
    let mut scratch = Scratch(Vec::new());
    ip("link set lo up");
    ip("link add brx type bridge");
    for n in 1..=3 {
        ip(&format!("addr add fd00:98::{n}/64 dev brx nodad"));
    }
    ip("link set brx up");
    ip("route add fd00:99::/64 dev brx");
    let dirs: Vec<tempfile::TempDir> = (1..=3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (n, d) in dirs.iter().enumerate() {
        std::fs::write(d.path().join("who"), format!("server-{}\n", n + 1)).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                NS,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                &format!("fd00:98::{}", n + 1),
            ])
            .arg("--directory")
            .arg(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        scratch.0.push(child);
    }
    let endpoint = |n: u8| PlannedEndpoint {
        ip: format!("fd00:98::{n}").parse().unwrap(),
        port: 8080,
        local: true,
    };
    let endpoints: Vec<PlannedEndpoint> = (1..=3).map(endpoint).collect();
    let name = ServicePortName {
        namespace: "ns".into(),
        name: "web".into(),
        port: "".into(),
        protocol: Protocol::Tcp,
    };
    let service = ServicePlan {
        name: name.clone(),
        protocol: Protocol::Tcp,
        port: 80,
        cluster_ips: vec!["fd00:99::10".parse().unwrap()],
        node_port: None,
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        source_ranges: Vec::new(),
        affinity_timeout: None,
        cluster_endpoints: endpoints.clone(),
        external_endpoints: endpoints,
        external_local: false,
        internal_local: false,
        cluster_policy_endpoints: Vec::new(),
        health_check_node_port: None,
        local_endpoints: 3,
    };
    let mut plan = ProxyPlan::default();
    plan.services.insert(name, Arc::new(service));
    let mut backend = NftBackend::in_netns(NS, Family::V6);
    backend
        .full_sync(&plan, &["fd00:98::/64".parse().unwrap()])
        .unwrap();

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.values().sum::<usize>() < 30 && Instant::now() < deadline {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                NS,
                "curl",
                "-s",
                "-g",
                "-m",
                "2",
                "http://[fd00:99::10]:80/who",
            ])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if body.starts_with("server-") {
            *seen.entry(body).or_default() += 1;
        } else {
            // The servers may still be starting.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(seen.values().sum::<usize>(), 30, "{seen:?}");
    assert_eq!(seen.len(), 3, "every IPv6 endpoint answers: {seen:?}");
    let rules = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "exec", NS, "nft", "list", "table", "ip6", "ferry"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(rules.contains("fd00:99::10 . tcp . 80"), "{rules}");
}
