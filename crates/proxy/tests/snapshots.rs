//! The nftables elements generated for each shape of Service, as `nft`
//! commands (snapshots: a change to the generated ruleset shows up in
//! review). Pure; no kernel.

use ferry_model::{ClusterState, decode};
use ferry_proxy::nft::elements::{Delta, SlotIds, contribution, render};
use ferry_proxy::nft::ruleset;
use ferry_proxy::{Family, NodeContext, plan};

fn commands(yaml: &str, node: &str) -> String {
    let d = decode("t.yaml", yaml);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let state = ClusterState::from_objects(d.objects.into_iter().map(|o| o.object));
    let p = plan(
        &state,
        &NodeContext {
            node_name: node.into(),
            zone: None,
            family: Family::V4,
        },
    );
    let mut ids = SlotIds::default();
    let mut add = Vec::new();
    for s in p.services.values() {
        add.extend(contribution(s, &mut ids));
    }
    render(
        &Delta {
            delete: Vec::new(),
            add,
        },
        "ip",
        ruleset::TABLE,
    )
}

const ENDPOINTS: &str = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints:\n- {addresses: [10.244.0.5], nodeName: n1}\n- {addresses: [10.244.1.5], nodeName: n2}\n";

fn svc(spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  clusterIP: 172.16.0.10\n{spec}"
    )
}

#[test]
fn cluster_ip() {
    insta::assert_snapshot!(commands(
        &format!("{}{ENDPOINTS}", svc("  ports: [{port: 80}]\n")),
        "n1"
    ));
}

#[test]
fn cluster_ip_without_endpoints() {
    insta::assert_snapshot!(commands(
        &svc("  ports: [{port: 80}, {name: dns, port: 53, protocol: UDP}]\n")
            .replace("{port: 80}", "{name: web, port: 80}"),
        "n1"
    ));
}

#[test]
fn node_port_cluster_policy() {
    insta::assert_snapshot!(commands(
        &format!(
            "{}{ENDPOINTS}",
            svc("  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n")
        ),
        "n1"
    ));
}

#[test]
fn load_balancer_local_policy_with_and_without_a_local_endpoint() {
    let yaml = format!(
        "{}{ENDPOINTS}",
        svc(
            "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 32000\n  loadBalancerSourceRanges: [203.0.113.0/24]\n  ports: [{port: 80, nodePort: 30081}]\nstatus: {loadBalancer: {ingress: [{ip: 172.19.0.1}]}}\n"
        )
    );
    insta::assert_snapshot!("lb_local_on_a_node_with_an_endpoint", commands(&yaml, "n1"));
    insta::assert_snapshot!(
        "lb_local_on_a_node_without_endpoints",
        commands(&yaml, "n3")
    );
}

#[test]
fn session_affinity() {
    insta::assert_snapshot!(commands(
        &format!(
            "{}{ENDPOINTS}",
            svc("  sessionAffinity: ClientIP\n  ports: [{port: 80}]\n")
        ),
        "n1"
    ));
}

#[test]
fn the_table() {
    insta::assert_snapshot!(ruleset::table(Family::V4, &[1, 2, 3], &[10800]));
}
