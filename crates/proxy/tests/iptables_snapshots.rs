//! The iptables-restore input generated for each shape of Service (the
//! same shapes as the nftables snapshots), and chain names checked
//! against kube-proxy's. Pure; no kernel.

use std::collections::{BTreeMap, BTreeSet};

use ferry_model::{ClusterState, decode};
use ferry_proxy::iptables::rules::{self, Scope, Settings};
use ferry_proxy::{Family, NodeContext, plan};

fn state(yaml: &str) -> ClusterState {
    let d = decode("t.yaml", yaml);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    ClusterState::from_objects(d.objects.into_iter().map(|o| o.object))
}

fn restore_text(yaml: &str, node: &str) -> String {
    let p = plan(
        &state(yaml),
        &NodeContext {
            node_name: node.into(),
            zone: None,
            family: Family::V4,
        },
    );
    let settings = Settings {
        family: Family::V4,
        local_cidr: Some("10.244.0.0/16".parse().unwrap()),
        large: false,
    };
    let rendered: BTreeMap<_, _> = p
        .services
        .iter()
        .map(|(n, s)| (n.clone(), rules::service(s, &settings)))
        .collect();
    rules::restore(Family::V4, &rendered, &Scope::Full, &BTreeSet::new())
}

const ENDPOINTS: &str = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints:\n- {addresses: [10.244.0.5], nodeName: n1}\n- {addresses: [10.244.1.5], nodeName: n2}\n- {addresses: [10.244.2.5], nodeName: n2}\n";

fn svc(spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  clusterIP: 172.16.0.10\n{spec}"
    )
}

#[test]
fn cluster_ip() {
    let text = restore_text(
        &format!("{}{ENDPOINTS}", svc("  ports: [{port: 80}]\n")),
        "n1",
    );
    // The seeds' shape: 1/3, 1/2, then an unconditional jump.
    assert!(
        text.contains("--probability 0.3333333333 -j KUBE-SEP-"),
        "{text}"
    );
    assert!(
        text.contains("--probability 0.5000000000 -j KUBE-SEP-"),
        "{text}"
    );
    insta::assert_snapshot!(text);
}

#[test]
fn cluster_ip_without_endpoints() {
    insta::assert_snapshot!(restore_text(
        &svc("  ports: [{name: web, port: 80}, {name: dns, port: 53, protocol: UDP}]\n"),
        "n1"
    ));
}

#[test]
fn node_port_cluster_policy() {
    insta::assert_snapshot!(restore_text(
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
    insta::assert_snapshot!(
        "ipt_lb_local_on_a_node_with_an_endpoint",
        restore_text(&yaml, "n1")
    );
    insta::assert_snapshot!(
        "ipt_lb_local_on_a_node_without_endpoints",
        restore_text(&yaml, "n3")
    );
}

#[test]
fn internal_traffic_policy_local() {
    let yaml = format!(
        "{}{ENDPOINTS}",
        svc("  internalTrafficPolicy: Local\n  ports: [{port: 80}]\n")
    );
    insta::assert_snapshot!(
        "ipt_itp_local_with_a_local_endpoint",
        restore_text(&yaml, "n1")
    );
    insta::assert_snapshot!("ipt_itp_local_without", restore_text(&yaml, "n3"));
}

#[test]
fn session_affinity() {
    insta::assert_snapshot!(restore_text(
        &format!(
            "{}{ENDPOINTS}",
            svc("  sessionAffinity: ClientIP\n  ports: [{port: 80}]\n")
        ),
        "n1"
    ));
}

/// Chain names equal kube-proxy's for the same ServicePorts.
#[test]
fn chain_names_match_kube_proxy() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-system}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: kube-dns, namespace: kube-system}\nspec:\n  clusterIP: 172.16.0.10\n  ports: [{name: dns, port: 53, protocol: UDP}]\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\nspec:\n  clusterIP: 172.16.0.1\n  ports: [{name: https, port: 443}]\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: svc1, namespace: ns1}\nspec:\n  clusterIP: 172.30.0.41\n  ports: [{name: p80, port: 80}]\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: svc1-1, namespace: ns1, labels: {kubernetes.io/service-name: svc1}}\naddressType: IPv4\nports: [{name: p80, port: 80}]\nendpoints:\n- {addresses: [10.180.0.1]}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns}}\naddressType: IPv4\nports: [{name: dns, port: 53, protocol: UDP}]\nendpoints:\n- {addresses: [10.244.0.2]}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: k-1, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}\naddressType: IPv4\nports: [{name: https, port: 6443}]\nendpoints:\n- {addresses: [172.18.0.11]}\n";
    let text = restore_text(yaml, "n1");
    for (comment, chain) in [
        (
            "\"kube-system/kube-dns:dns cluster IP\"",
            "KUBE-SVC-TCOU7JCQXEZGVUNU",
        ),
        (
            "\"default/kubernetes:https cluster IP\"",
            "KUBE-SVC-NPX46M4PTMTKRN6Y",
        ),
        ("\"ns1/svc1:p80 cluster IP\"", "KUBE-SVC-XPGD46QRK7WJZT7O"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with("-A KUBE-SERVICES") && l.contains(comment))
            .unwrap_or_else(|| panic!("no {comment} rule in\n{text}"));
        assert!(line.ends_with(&format!("-j {chain}")), "{line}");
    }
    assert!(
        text.contains(":KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]"),
        "ns1/svc1:p80 -> 10.180.0.1:80 has kube-proxy's endpoint chain name\n{text}"
    );
}
