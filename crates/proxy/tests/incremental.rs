//! Property: applying any sequence of plans incrementally (full load, then
//! element deltas over netlink) leaves the kernel with the same ruleset as
//! one full load of the final plan. Read back from the kernel with `nft`
//! in two scratch network namespaces, with slot ids (which depend on
//! history) replaced by what they point at. Root needed (skips without it,
//! fails under CI=true).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
mod common;

use std::process::Command;
use std::sync::Arc;

use common::{Ns, root};
use ferry_model::{Protocol, ServicePortName};
use ferry_proxy::nft::NftBackend;
use ferry_proxy::{Family, PlannedEndpoint, ProxyPlan, ServicePlan};
use proptest::prelude::*;

const SETS: [&str; 18] = [
    "affinity_600",
    "affinity_10800",
    "cluster_addresses",
    "cluster_ips",
    "external_ips",
    "node_ports",
    "endpoints",
    "pick",
    "no_endpoints",
    "no_endpoint_node_ports",
    "drop_external",
    "drop_node_ports",
    "hairpin",
    "masquerade_slots",
    "keep_client_slots",
    "cluster_slots",
    "firewall_keys",
    "firewall_allow",
];

fn elements(ns: &str, family: &str, set: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", family, "ferry"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some(start) = text.find(&format!(" {set} {{")) else {
        return Vec::new();
    };
    let block = &text[start..];
    let block = &block[..block.find("\n\t}").unwrap_or(block.len())];
    let Some(e) = block.find("elements = {") else {
        return Vec::new();
    };
    let inner = &block[e + "elements = {".len()..];
    let inner = &inner[..inner.rfind('}').unwrap_or(inner.len())];
    inner
        .split(',')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The table with slot marks replaced by the endpoints they lead to.
fn canonical(ns: &str, family: &str) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut sig: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in elements(ns, family, "endpoints") {
        // "0x00001003 . 0 : 10.244.0.3 . 8080"
        let (key, value) = e.split_once(" : ").unwrap();
        let (mark, slot) = key.split_once(" . ").unwrap();
        sig.entry(mark.to_string())
            .or_default()
            .push(format!("{slot}={value}"));
    }
    let name = |mark: &str| -> String {
        let mut v = sig.get(mark).cloned().unwrap_or_default();
        v.sort();
        let count = u32::from_str_radix(mark.trim_start_matches("0x"), 16).map_or(0, |m| m & 0xfff);
        format!("[{count}:{}]", v.join(","))
    };
    let mut out = BTreeMap::new();
    for set in SETS {
        let items: BTreeSet<String> = elements(ns, family, set)
            .into_iter()
            .map(|e| match set {
                "endpoints" => {
                    let (key, value) = e.split_once(" : ").unwrap();
                    let (mark, slot) = key.split_once(" . ").unwrap();
                    format!("{} . {slot} : {value}", name(mark))
                }
                "cluster_ips" | "external_ips" | "node_ports" => {
                    let (key, value) = e.split_once(" : ").unwrap();
                    format!("{key} : {}", name(value))
                }
                "masquerade_slots" | "keep_client_slots" | "cluster_slots" | "affinity_600"
                | "affinity_10800" => name(&e),
                _ => e,
            })
            .collect();
        out.insert(set, items);
    }
    out
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

prop_compose! {
    fn service(i: usize)(
        proto in 0..2u8,
        eps in proptest::collection::btree_set(0..6u8, 0..4),
        local_eps in proptest::collection::btree_set(0..6u8, 0..3),
        node_port in proptest::option::of(30000..30004u16),
        lb in any::<bool>(),
        shared_lb in any::<bool>(),
        affinity in proptest::option::of(proptest::sample::select(vec![600u32, 10800])),
        external_local in any::<bool>(),
        ranges in any::<bool>(),
    ) -> ServicePlan {
        let endpoint = |e: &u8| PlannedEndpoint { ip: ip(&format!("10.244.{}.{}", e % 2, 10 + e)), port: 8080, local: e.is_multiple_of(2) };
        let cluster_endpoints: Vec<PlannedEndpoint> = eps.iter().map(endpoint).collect();
        let external_endpoints: Vec<PlannedEndpoint> = if external_local { local_eps.iter().filter(|e| e.is_multiple_of(2)).map(endpoint).collect() } else { cluster_endpoints.clone() };
        let protocol = if proto == 0 { Protocol::Tcp } else { Protocol::Udp };
        ServicePlan {
            name: ServicePortName { namespace: "ns".into(), name: format!("s{i}").into(), port: "".into(), protocol },
            protocol,
            // Load-balancer IPs may be shared between Services (on different
            // ports), as load-balancer IP sharing does.
            port: 80 + i as u16,
            cluster_ips: vec![ip(&format!("172.16.0.{}", 10 + i))],
            node_port: node_port.map(|p| p + 10 * i as u16),
            external_ips: Vec::new(),
            load_balancer_ips: if lb { vec![ip(&format!("172.19.0.{}", if shared_lb { 1 } else { 1 + i }))] } else { Vec::new() },
            source_ranges: if lb && ranges { vec!["203.0.113.0/24".parse().unwrap()] } else { Vec::new() },
            affinity_timeout: affinity,
            local_endpoints: external_endpoints.iter().filter(|e| e.local).count(),
            cluster_endpoints,
            external_endpoints,
            external_local,
            internal_local: false,
            cluster_policy_endpoints: Vec::new(),
            health_check_node_port: None,
        }
    }
}

/// The same plan with IPv6 addresses (for the `ip6 ferry` table).
fn to_v6(plan: &ProxyPlan) -> ProxyPlan {
    let v6 = |ip: &IpAddr| -> IpAddr {
        let IpAddr::V4(v4) = ip else { return *ip };
        let o = v4.octets();
        IpAddr::V6(std::net::Ipv6Addr::new(
            0xfd00,
            u16::from(o[0]),
            u16::from(o[1]),
            0,
            0,
            0,
            u16::from(o[2]),
            u16::from(o[3]),
        ))
    };
    let mut out = ProxyPlan::default();
    for (name, p) in &plan.services {
        let mut p = (**p).clone();
        p.cluster_ips = p.cluster_ips.iter().map(v6).collect();
        p.load_balancer_ips = p.load_balancer_ips.iter().map(v6).collect();
        p.external_ips = p.external_ips.iter().map(v6).collect();
        p.source_ranges = p
            .source_ranges
            .iter()
            .map(|_| "2001:db8::/64".parse().unwrap())
            .collect();
        for e in p
            .cluster_endpoints
            .iter_mut()
            .chain(p.external_endpoints.iter_mut())
        {
            e.ip = v6(&e.ip);
        }
        out.services.insert(name.clone(), Arc::new(p));
    }
    out
}

fn plan_strategy() -> impl Strategy<Value = ProxyPlan> {
    (
        proptest::collection::vec(any::<bool>(), 4),
        service(0),
        service(1),
        service(2),
        service(3),
    )
        .prop_map(|(present, a, b, c, d)| {
            let mut plan = ProxyPlan::default();
            for (keep, s) in present.into_iter().zip([a, b, c, d]) {
                if keep {
                    plan.services.insert(s.name.clone(), Arc::new(s));
                }
            }
            plan
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn incremental_syncs_end_where_a_full_load_of_the_final_plan_does(plans in proptest::collection::vec(plan_strategy(), 2..6), ipv6 in any::<bool>()) {
        if !root() {
            return Ok(());
        }
        let (family, plans) = if ipv6 {
            (Family::V6, plans.iter().map(to_v6).collect::<Vec<_>>())
        } else {
            (Family::V4, plans)
        };
        let cidrs = vec!["10.244.0.0/16".parse().unwrap(), "fd00:a::/32".parse().unwrap()];
        let a = Ns::new("ferry-test-incr-a");
        let b = Ns::new("ferry-test-incr-b");
        let mut inc = NftBackend::in_netns(&a.0, family);
        inc.full_sync(&plans[0], &cidrs).unwrap();
        for pair in plans.windows(2) {
            let names: BTreeSet<ServicePortName> = pair[0].services.keys().chain(pair[1].services.keys()).cloned().collect();
            let names: Vec<ServicePortName> = names.into_iter().collect();
            inc.sync(&pair[1], &names, &cidrs).unwrap();
        }
        let mut full = NftBackend::in_netns(&b.0, family);
        full.full_sync(plans.last().unwrap(), &cidrs).unwrap();
        prop_assert_eq!(canonical(&a.0, family.nft()), canonical(&b.0, family.nft()));
        prop_assert!(!elements(&a.0, family.nft(), "cluster_cidrs").is_empty(), "the cluster CIDR of the family is in the table");
    }
}
