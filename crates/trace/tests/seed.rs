//! The model's trace of the seed scenario (examples/nginx-web.yaml) on a
//! two-node topology like the lab's, in both proxy modes: no kernel.

use std::net::IpAddr;
use std::path::PathBuf;

use ferry_overlay::config::BackendConfig;
use ferry_overlay::lease::{BackendData, Lease, LeaseAttrs};
use ferry_source::ManifestSource;
use ferry_trace::plan::{Inputs, Network, NodeInfo, PodInfo, Topology, plan};
use ferry_trace::resolve::{From, Resolv};
use ferry_trace::{Expect, HopKind, ProxyMode, Trace};

fn seed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/nginx-web.yaml")
}

fn state() -> ferry_model::ClusterState {
    let (source, _) = ManifestSource::open(&[seed_path()], false).unwrap();
    source.state().clone()
}

/// The seed plus a LoadBalancer Service with externalTrafficPolicy: Local
/// whose only endpoint is on node-2.
const LOCAL_LB: &str = "apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: demo}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  clusterIP: 172.16.255.221
  selector: {app: nginx-web}
  ports: [{port: 80, targetPort: 80, nodePort: 30080}]
status:
  loadBalancer:
    ingress: [{ip: 192.0.2.10}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-lb-1
  namespace: demo
  labels: {kubernetes.io/service-name: web-lb}
addressType: IPv4
ports: [{name: \"\", port: 80, protocol: TCP}]
endpoints:
- addresses: [10.204.1.3]
  conditions: {ready: true}
  nodeName: node-2
";

fn topology() -> Topology {
    let node = |name: &str, ip: &str, cidr: &str| NodeInfo {
        name: name.into(),
        ip: ip.parse().unwrap(),
        pod_cidr: Some(cidr.parse().unwrap()),
        netns: format!("ferry.t.{name}"),
    };
    let pod = |name: &str, node: &str, ip: &str| PodInfo {
        namespace: "demo".into(),
        name: name.into(),
        node: node.into(),
        ip: ip.parse().unwrap(),
        netns: format!("ferry.t.pod.{name}"),
        host_network: false,
        terminating: false,
    };
    Topology {
        nodes: vec![
            node("node-1", "172.18.0.11", "10.204.0.0/24"),
            node("node-2", "172.18.0.12", "10.204.1.0/24"),
        ],
        pods: vec![
            pod("nginx-web-a", "node-1", "10.204.0.13"),
            pod("nginx-web-b", "node-2", "10.204.1.3"),
            pod("nginx-web-c", "node-2", "10.204.1.8"),
        ],
        outside: Some(("ferry.t.outside".into(), "172.18.0.2".parse().unwrap())),
    }
}

fn network() -> Network {
    let lease = |subnet: &str, ip: &str, mac: &str| Lease {
        subnet: subnet.parse().unwrap(),
        attrs: LeaseAttrs {
            public_ip: ip.parse().unwrap(),
            backend_type: "vxlan".into(),
            backend_data: Some(BackendData {
                vni: 1,
                vtep_mac: mac.into(),
            }),
        },
    };
    Network {
        backend: BackendConfig::default(),
        leases: vec![
            lease("10.204.0.0/24", "172.18.0.11", "02:00:00:00:00:01"),
            lease("10.204.1.0/24", "172.18.0.12", "02:00:00:00:00:02"),
        ],
        pod_network: Some("10.204.0.0/16".parse().unwrap()),
    }
}

fn trace(mode: ProxyMode, to: &str) -> Trace {
    trace_in(state(), mode, to)
}

fn trace_in(state: ferry_model::ClusterState, mode: ProxyMode, to: &str) -> Trace {
    let from = From::Pod {
        namespace: "demo".into(),
        name: "nginx-web-a".into(),
    };
    trace_from(state, mode, &from, to)
}

fn trace_from(state: ferry_model::ClusterState, mode: ProxyMode, from: &From, to: &str) -> Trace {
    trace_via(state, mode, from, to, None)
}

fn trace_via(
    state: ferry_model::ClusterState,
    mode: ProxyMode,
    from: &From,
    to: &str,
    ingress: Option<std::net::SocketAddr>,
) -> Trace {
    let topology = topology();
    let network = network();
    let inputs = Inputs {
        state: &state,
        topology: &topology,
        network: &network,
        mode,
        resolv: Resolv::cluster_first("demo", "169.254.20.10"),
        ingress,
    };
    plan(&inputs, from, &to.parse().unwrap()).unwrap()
}

#[test]
fn the_seed_trace_in_iptables_mode_lists_the_chains_and_statistic_probabilities() {
    let t = trace(ProxyMode::Iptables, "http://nginx-web-service/");
    let kinds: Vec<HopKind> = t.hops.iter().map(|h| h.kind).collect();
    assert_eq!(
        kinds,
        [
            HopKind::Dns,
            HopKind::Service,
            HopKind::Routing,
            HopKind::Routing,
            HopKind::Routing,
            HopKind::Reply
        ]
    );
    let dns = &t.hops[0];
    assert_eq!(dns.path[0], "nginx-web-service.demo.svc.cluster.local");
    assert!(
        dns.decided.iter().any(|d| d.contains("A 172.16.255.220")),
        "{:?}",
        dns.decided
    );
    assert_eq!(t.destination.as_deref(), Some("172.16.255.220:80"));
    let svc = &t.hops[1];
    assert_eq!(svc.path[0], "KUBE-SERVICES");
    assert!(svc.path[1].starts_with("KUBE-SVC-"), "{:?}", svc.path);
    assert_eq!(svc.path[2], "KUBE-SEP-… ×3 (DNAT)");
    let p: Vec<f64> = svc.endpoints.iter().map(|c| c.rule_probability).collect();
    assert_eq!(p, [1.0 / 3.0, 0.5, 1.0]);
    assert!(
        svc.endpoints
            .iter()
            .all(|c| (c.share - 1.0 / 3.0).abs() < 1e-12)
    );
    // The client is itself the first endpoint: hairpin.
    assert!(
        svc.endpoints[0]
            .masquerade
            .as_deref()
            .unwrap()
            .starts_with("hairpin")
    );
    assert!(svc.endpoints[1].masquerade.is_none());
    let dnat: Vec<String> = svc
        .checks
        .iter()
        .filter_map(|c| match &c.expect {
            Expect::IptablesRule(r) if r.target == "DNAT" => r.to_destination.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(dnat, ["10.204.0.13:80", "10.204.1.3:80", "10.204.1.8:80"]);
    assert_eq!(t.hops[2].path[0], "cni0");
    assert_eq!(t.hops[3].path[0], "flannel.1");
    assert!(matches!(
        t.hops[3].checks[2].expect,
        Expect::Fdb { ref mac, dst, .. } if mac == "02:00:00:00:00:02" && dst.to_string() == "172.18.0.12"
    ));
}

#[test]
fn the_seed_trace_in_nftables_mode_lists_the_map_elements_and_numgen_shares() {
    let t = trace(ProxyMode::Nftables, "172.16.255.220:80");
    assert_eq!(t.hops[0].kind, HopKind::Service, "an address needs no DNS");
    let svc = &t.hops[0];
    assert!(
        svc.path.iter().any(|p| p.contains("numgen random mod 3")),
        "{:?}",
        svc.path
    );
    assert!(
        svc.endpoints
            .iter()
            .all(|c| (c.rule_probability - 1.0 / 3.0).abs() < 1e-12)
    );
    let endpoints: Vec<(u32, IpAddr)> = svc
        .checks
        .iter()
        .filter_map(|c| match c.expect {
            Expect::NftEndpoint { index, ip, .. } => Some((index, ip)),
            _ => None,
        })
        .collect();
    assert_eq!(endpoints.len(), 3);
    assert_eq!(endpoints[2], (2, "10.204.1.8".parse().unwrap()));
    assert!(matches!(
        svc.checks[0].expect,
        Expect::NftDispatch { count: 3, .. }
    ));
}

#[test]
fn pod_to_pod_without_a_service_is_routing_only() {
    let t = trace(ProxyMode::Nftables, "10.204.1.3:80");
    let kinds: Vec<HopKind> = t.hops.iter().map(|h| h.kind).collect();
    assert_eq!(kinds, [HopKind::Routing, HopKind::Reply]);
    assert!(t.hops[1].decided[0].contains("no NAT"));
}

#[test]
fn host_traffic_to_another_nodes_pod_is_masqueraded_by_the_pod_network() {
    let node = From::Node("node-1".into());
    let remote = trace_from(state(), ProxyMode::Nftables, &node, "10.204.1.8:80");
    let reply = remote.hops.last().unwrap();
    assert!(reply.decided[0].contains("un-SNATs"), "{:?}", reply.decided);
    let local = trace_from(state(), ProxyMode::Nftables, &node, "10.204.0.13:80");
    assert!(local.hops.last().unwrap().decided[0].contains("no NAT"));
}

#[test]
fn an_unknown_name_ends_at_dns() {
    let t = trace(ProxyMode::Nftables, "nothing-here:80");
    assert_eq!(t.hops.len(), 1);
    assert_eq!(
        t.hops[0].path.len(),
        4,
        "three search domains, then the name"
    );
    assert!(t.destination.is_none());
    // Each name is a check on the pod's nameserver: NXDOMAIN in the
    // cluster zone; the bare name goes upstream, which the model cannot
    // decide.
    let models: Vec<&str> = t.hops[0].checks.iter().map(|c| c.model.as_str()).collect();
    assert_eq!(
        models,
        [
            "NXDOMAIN",
            "NXDOMAIN",
            "NXDOMAIN",
            "forwarded upstream: whatever upstream answers"
        ]
    );
    assert!(matches!(
        &t.hops[0].checks[3].expect,
        Expect::Dns { name, .. } if name == "nothing-here"
    ));
}

#[test]
fn pod_traffic_to_a_local_policy_load_balancer_short_circuits_only_in_iptables_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(seed_path(), dir.path().join("a.yaml")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), LOCAL_LB).unwrap();
    let (source, snap) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    let state = source.state().clone();
    // node-1 has no endpoint of web-lb.
    let ipt = trace_in(state.clone(), ProxyMode::Iptables, "192.0.2.10:80");
    let svc = &ipt.hops[0];
    assert!(
        svc.decided.iter().any(|d| d.contains("short circuit")),
        "{:?}",
        svc.decided
    );
    let eps: Vec<String> = svc.endpoints.iter().map(|c| c.ip.to_string()).collect();
    assert_eq!(eps, ["10.204.1.3"]);
    assert_eq!(ipt.hops[1].path[0], "flannel.1");
    let nft = trace_in(state, ProxyMode::Nftables, "192.0.2.10:80");
    assert_eq!(nft.hops.len(), 1, "dropped at the service hop");
    assert!(
        nft.hops[0].decided.iter().any(|d| d.contains("dropped")),
        "{:?}",
        nft.hops[0].decided
    );
}

/// The seed plus LOCAL_LB's web-lb, and an Ingress for shop.example:
/// Exact /cart to web-lb, Prefix / to nginx-web-service.
const SHOP: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: ferry}
spec: {controller: ferry.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: demo}
spec:
  ingressClassName: ferry
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /cart, pathType: Exact, backend: {service: {name: web-lb, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: nginx-web-service, port: {number: 80}}}}
";

#[test]
fn a_url_through_the_ingress_gateway_is_routed_by_the_ingress_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(seed_path(), dir.path().join("a.yaml")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), LOCAL_LB).unwrap();
    std::fs::write(dir.path().join("c.yaml"), SHOP).unwrap();
    let (source, snap) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    let state = source.state().clone();
    let via = Some("172.18.0.12:80".parse().unwrap());
    let from = From::Address("192.0.2.99".parse().unwrap());
    let t = trace_via(
        state.clone(),
        ProxyMode::Nftables,
        &from,
        "http://shop.example/cart",
        via,
    );
    let kinds: Vec<HopKind> = t.hops.iter().map(|h| h.kind).collect();
    assert_eq!(kinds, [HopKind::Ingress, HopKind::Routing, HopKind::Reply]);
    let hop = &t.hops[0];
    assert_eq!(hop.node.as_deref(), Some("node-2"), "the gateway's node");
    assert_eq!(
        hop.path,
        ["host shop.example", "Exact /cart", "Service demo/web-lb:80"]
    );
    assert!(
        hop.decided.iter().any(|d| d
            == "also matches Prefix / of Ingress demo/shop (Service demo/nginx-web-service:80): passed over, an Exact match beats every Prefix match"),
        "{:#?}",
        hop.decided
    );
    assert_eq!(
        t.hops[1].path[0], "cni0",
        "web-lb's endpoint is on node-2 itself"
    );
    // Another path: the Prefix /, three endpoints; from node-1's address
    // the routes go through the bridge and VXLAN.
    let t = trace_via(
        state.clone(),
        ProxyMode::Nftables,
        &from,
        "http://shop.example/other",
        via,
    );
    assert_eq!(t.hops[0].endpoints.len(), 3);
    assert_eq!(t.hops[0].path[1], "Prefix /");
    // An unknown host: the host-less rules (none) and no default backend.
    let t = trace_via(
        state,
        ProxyMode::Nftables,
        &from,
        "http://other.example/",
        via,
    );
    assert_eq!(t.hops.len(), 1);
    assert!(
        t.hops[0]
            .decided
            .iter()
            .any(|d| d.contains("the gateway answers 404")),
        "{:#?}",
        t.hops[0].decided
    );
    // With an Ingress that has only a defaultBackend, unknown hosts go there.
    std::fs::write(dir.path().join("d.yaml"), CATCH_ALL).unwrap();
    let (source, _) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    let t = trace_via(
        source.state().clone(),
        ProxyMode::Nftables,
        &from,
        "http://other.example/x",
        via,
    );
    let hop = &t.hops[0];
    assert!(
        hop.decided.contains(
            &"path /x: no rule path matches; the catch-all spec.defaultBackend of Ingress demo/fallback"
                .to_string()
        ),
        "{:#?}",
        hop.decided
    );
    assert_eq!(
        hop.path,
        ["any host", "default backend", "Service demo/web-lb:80"]
    );
}

const CATCH_ALL: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback, namespace: demo}
spec:
  ingressClassName: ferry
  defaultBackend: {service: {name: web-lb, port: {number: 80}}}
";

/// A NodePort Service with an external IP, a headless Service and an
/// ExternalName Service, all over the seed's pods.
const SHAPES: &str = "apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: demo}
spec:
  type: NodePort
  clusterIP: 172.16.255.222
  externalIPs: [192.0.2.20]
  selector: {app: nginx-web}
  ports: [{port: 8080, targetPort: 80, nodePort: 30081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-np-1
  namespace: demo
  labels: {kubernetes.io/service-name: web-np}
addressType: IPv4
ports: [{name: \"\", port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.204.0.13], conditions: {ready: true}, nodeName: node-1}
- {addresses: [10.204.1.3], conditions: {ready: true}, nodeName: node-2}
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: demo}
spec:
  clusterIP: None
  selector: {app: nginx-web}
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-headless-1
  namespace: demo
  labels: {kubernetes.io/service-name: web-headless}
addressType: IPv4
ports: [{name: \"\", port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.204.1.8], conditions: {ready: true}, nodeName: node-2}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: demo}
spec:
  type: ExternalName
  externalName: www.example.org
";

fn shapes_state() -> ferry_model::ClusterState {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(seed_path(), dir.path().join("a.yaml")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), SHAPES).unwrap();
    let (source, snap) = ManifestSource::open(&[dir.path().to_path_buf()], false).unwrap();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    source.state().clone()
}

fn kinds_of(t: &Trace) -> Vec<HopKind> {
    t.hops.iter().map(|h| h.kind).collect()
}

#[test]
fn a_node_port_from_outside_is_captured_on_the_node_it_was_sent_to_and_masqueraded() {
    for mode in [ProxyMode::Iptables, ProxyMode::Nftables] {
        let t = trace_from(shapes_state(), mode, &From::Outside, "172.18.0.12:30081");
        let svc = t
            .hops
            .iter()
            .find(|h| h.kind == HopKind::Service)
            .unwrap_or_else(|| panic!("{mode:?}: no service hop: {:?}", kinds_of(&t)));
        assert!(
            svc.title.contains("demo/web-np") && svc.title.contains("NodePort"),
            "{mode:?}: {}",
            svc.title
        );
        assert_eq!(svc.node.as_deref(), Some("node-2"), "{mode:?}");
        let eps: Vec<String> = svc
            .endpoints
            .iter()
            .map(|c| format!("{}:{}", c.ip, c.port))
            .collect();
        assert_eq!(eps, ["10.204.0.13:80", "10.204.1.3:80"], "{mode:?}");
        // externalTrafficPolicy Cluster: traffic from outside is masqueraded.
        assert!(
            svc.endpoints.iter().all(|c| c.masquerade.is_some()),
            "{mode:?}: {:?}",
            svc.endpoints
        );
        // Then a route from node-2 to each endpoint: the bridge for its own pod, VXLAN for node-1's.
        let routes: Vec<&str> = t
            .hops
            .iter()
            .filter(|h| h.kind == HopKind::Routing)
            .map(|h| h.path[0].as_str())
            .collect();
        assert!(
            routes.contains(&"flannel.1") && routes.contains(&"cni0"),
            "{mode:?}: {routes:?}"
        );
    }
}

#[test]
fn an_external_ip_is_captured_as_such_in_both_modes() {
    for mode in [ProxyMode::Iptables, ProxyMode::Nftables] {
        let t = trace_from(shapes_state(), mode, &From::Outside, "192.0.2.20:8080");
        let svc = &t.hops.iter().find(|h| h.kind == HopKind::Service).unwrap();
        assert!(
            svc.title.contains("demo/web-np") && svc.title.contains("external IP"),
            "{mode:?}: {}",
            svc.title
        );
        assert_eq!(svc.endpoints.len(), 2, "{mode:?}");
        // The same Service port on its ClusterIP from a pod is a ClusterIP capture.
        let t = trace_in(shapes_state(), mode, "172.16.255.222:8080");
        assert!(
            t.hops[0].title.contains("ClusterIP"),
            "{mode:?}: {}",
            t.hops[0].title
        );
    }
}

#[test]
fn a_headless_name_resolves_to_its_endpoints_and_skips_the_proxy() {
    for mode in [ProxyMode::Iptables, ProxyMode::Nftables] {
        let t = trace_in(shapes_state(), mode, "web-headless:80");
        assert_eq!(kinds_of(&t)[0], HopKind::Dns, "{mode:?}");
        assert!(
            t.hops[0].decided.iter().any(|d| d.contains("headless")),
            "{mode:?}: {:?}",
            t.hops[0].decided
        );
        assert!(
            !kinds_of(&t).contains(&HopKind::Service),
            "{mode:?}: {:?}",
            kinds_of(&t)
        );
        // Straight to the pod on node-2, over the tunnel.
        let route = t.hops.iter().find(|h| h.kind == HopKind::Routing).unwrap();
        assert!(
            route.title.contains("10.204.1.8"),
            "{mode:?}: {}",
            route.title
        );
        assert_eq!(route.path[0], "flannel.1", "{mode:?}");
    }
}

#[test]
fn an_external_name_is_a_cname_and_no_proxy_hop() {
    for mode in [ProxyMode::Iptables, ProxyMode::Nftables] {
        let t = trace_in(shapes_state(), mode, "ext:80");
        assert_eq!(kinds_of(&t), [HopKind::Dns], "{mode:?}");
        assert!(
            t.hops[0]
                .decided
                .iter()
                .any(|d| d.contains("CNAME www.example.org")),
            "{mode:?}: {:?}",
            t.hops[0].decided
        );
    }
}
