//! The iptables backend against real iptables in a scratch network
//! namespace: a full load, partial syncs that add, change and remove
//! Services (stale chains deleted, untouched chains left out of the input),
//! a restart that finds and deletes chains it no longer wants, the outside
//! flush being noticed, and cleanup. Both flavors (nf_tables and legacy).
//! Root needed (skips without it, fails under CI=true).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{Ns, root};
use ferry_model::{ClusterState, Update};
use ferry_proxy::iptables::{Flavor, IptablesBackend};
use ferry_proxy::{Family, NodeContext, ProxyPlan, plan};

fn save(ns: &str, flavor: Flavor, table: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            &flavor.binary(Family::V4, "-save"),
            "-t",
            table,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chains(save: &str, prefix: &str) -> BTreeSet<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn yaml(services: &[(&str, &str, &[&str])]) -> String {
    let mut s = String::new();
    for (name, ip, eps) in services {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  type: NodePort\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
        ));
        if !eps.is_empty() {
            s.push_str(&format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
            ));
            for e in *eps {
                s.push_str(&format!("- {{addresses: [{e}], nodeName: n1}}\n"));
            }
        }
    }
    s
}

fn state_of(text: &str) -> ClusterState {
    let d = ferry_model::decode("t.yaml", text);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    ClusterState::from_objects(d.objects.into_iter().map(|o| o.object))
}

fn ctx() -> NodeContext {
    NodeContext {
        node_name: "n1".into(),
        zone: None,
        family: Family::V4,
    }
}

fn run(flavor: Flavor, ns_name: &str) {
    let ns = Ns::new(ns_name);
    let cidrs = vec!["10.244.0.0/16".parse().unwrap()];
    let first = state_of(&yaml(&[
        ("web", "172.16.0.10", &["10.244.0.5", "10.244.0.6"]),
        ("api", "172.16.0.11", &["10.244.0.7"]),
        ("db", "172.16.0.12", &["10.244.0.8"]),
    ]));
    let mut b = IptablesBackend::in_netns(&ns.0, Family::V4, flavor);
    let mut p = plan(&first, &ctx());
    let stats = b.full_sync(&p, &cidrs).expect("full sync");
    assert!(stats.full);
    let nat = save(&ns.0, flavor, "nat");
    assert_eq!(chains(&nat, "KUBE-SVC-").len(), 3, "{nat}");
    assert_eq!(chains(&nat, "KUBE-SEP-").len(), 4, "{nat}");
    assert!(
        nat.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ),
        "{nat}"
    );
    assert!(b.rules_intact());

    // web loses an endpoint, db goes away, cache comes: a partial sync.
    let second = state_of(&yaml(&[
        ("web", "172.16.0.10", &["10.244.0.5"]),
        ("api", "172.16.0.11", &["10.244.0.7"]),
        ("cache", "172.16.0.13", &["10.244.0.9"]),
    ]));
    let changes = first.diff(&second);
    let changed = p.update(&second, &changes, &ctx());
    let stats = b.sync(&p, &changed.changed, &cidrs).expect("partial sync");
    assert!(!stats.full);
    let nat2 = save(&ns.0, flavor, "nat");
    assert_eq!(chains(&nat2, "KUBE-SVC-").len(), 3, "{nat2}");
    assert_eq!(
        chains(&nat2, "KUBE-SEP-").len(),
        3,
        "stale endpoint chains deleted:\n{nat2}"
    );
    assert!(!nat2.contains("shop/db:http"), "{nat2}");
    assert!(nat2.contains("shop/cache:http cluster IP"), "{nat2}");
    // api's chains were not in the input and are still there, unchanged.
    let api_rules = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains("shop/api:http"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(api_rules(&nat), api_rules(&nat2));
    // The jumps are not duplicated by a second full sync.
    b.full_sync(&p, &cidrs).expect("second full sync");
    let nat3 = save(&ns.0, flavor, "nat");
    assert_eq!(nat3.matches("-j KUBE-SERVICES").count(), 2, "{nat3}");

    // A new agent whose state lacks web finds web's chains and deletes them.
    let third = second
        .apply([Update::Delete(ferry_model::ObjectKey::new(
            ferry_model::Kind::Service,
            "shop",
            "web",
        ))])
        .0;
    let mut restarted = IptablesBackend::in_netns(&ns.0, Family::V4, flavor);
    let p3: ProxyPlan = plan(&third, &ctx());
    restarted.full_sync(&p3, &cidrs).expect("restart");
    let nat4 = save(&ns.0, flavor, "nat");
    assert_eq!(chains(&nat4, "KUBE-SVC-").len(), 2, "{nat4}");
    assert!(!nat4.contains("shop/web:http"), "{nat4}");

    // Flushing nat from outside is noticed.
    let flushed = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            &flavor.binary(Family::V4, ""),
            "-t",
            "nat",
            "-F",
        ])
        .status()
        .unwrap();
    assert!(flushed.success());
    assert!(!restarted.rules_intact());
    restarted.full_sync(&p3, &cidrs).expect("reload");
    assert!(restarted.rules_intact());

    // Cleanup leaves no KUBE- chain and no jump.
    let removed = IptablesBackend::cleanup(Family::V4, flavor, Some(&ns.0)).expect("cleanup");
    assert!(removed > 10, "{removed}");
    let left = format!(
        "{}{}",
        save(&ns.0, flavor, "nat"),
        save(&ns.0, flavor, "filter")
    );
    assert!(!left.contains("KUBE-"), "{left}");
}

#[test]
fn nf_tables_flavor() {
    if !root() {
        return;
    }
    run(Flavor::Nft, "ferry-test-ipt-nft");
}

#[test]
fn legacy_flavor() {
    if !root() {
        return;
    }
    run(Flavor::Legacy, "ferry-test-ipt-legacy");
}
