//! Property: applying any sequence of plans incrementally (full load, then
//! element deltas over netlink) leaves the kernel with the same ruleset as
//! one full load of the final plan. Read back from the kernel with `nft`
//! in two scratch network namespaces, with slot ids (which depend on
//! history) replaced by what they point at. Root needed (skips without it,
//! fails under CI=true).

use std::collections::{BTreeMap, BTreeSet};
mod common;

use std::process::Command;

use common::plans::{plan_strategy, to_v6};
use common::{Ns, root};
use ferry_model::ServicePortName;
use ferry_proxy::Family;
use ferry_proxy::nft::NftBackend;
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
