//! The normalized service view, built from manifests the way a user writes
//! them: every service type, dual-stack, named and unnamed ports,
//! terminating endpoints and legacy Endpoints.

use std::net::IpAddr;

use ferry_model::{
    ClusterState, NamespacedName, Protocol, ServicePortName, ServiceType, TargetPort,
    TrafficPolicy, decode,
};

fn state(yaml: &str) -> ClusterState {
    let decoded = decode("test.yaml", yaml);
    assert!(
        decoded.errors.is_empty(),
        "unexpected errors: {:#?}",
        decoded.errors
    );
    ClusterState::from_objects(decoded.objects.into_iter().map(|d| d.object))
}

fn spn(ns: &str, name: &str, port: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName {
        namespace: ns.into(),
        name: name.into(),
        port: port.into(),
        protocol,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const SEED: &str = include_str!("../../../examples/nginx-web.yaml");

#[test]
fn seed_scenario_has_one_port_with_three_ready_endpoints() {
    let st = state(SEED);
    let port = st
        .service_port(&spn("demo", "nginx-web-service", "", Protocol::Tcp))
        .expect("service port");
    assert_eq!(port.service_type, ServiceType::ClusterIP);
    assert_eq!(port.cluster_ips, vec![ip("172.16.255.220")]);
    assert_eq!(port.port, 80);
    assert_eq!(port.target_port, TargetPort::Number(80));
    let eps: Vec<(IpAddr, u16, bool, Option<&str>)> = port
        .endpoints
        .iter()
        .map(|e| (e.ip, e.port, e.ready, e.node_name()))
        .collect();
    assert_eq!(
        eps,
        vec![
            (ip("10.204.0.13"), 80, true, Some("node-1")),
            (ip("10.204.1.3"), 80, true, Some("node-2")),
            (ip("10.204.1.8"), 80, true, Some("node-2")),
        ]
    );
    assert_eq!(port.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(port.session_affinity_timeout, None);
}

#[test]
fn nodeport_and_loadbalancer_expose_external_addresses_and_policies() {
    let st = state(
        r#"
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.50
  externalIPs: [192.0.2.9, 192.0.2.8, 192.0.2.9]
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  loadBalancerSourceRanges: [" 203.0.113.7/24 ", 198.51.100.0/24]
  sessionAffinity: ClientIP
  ports:
  - {name: http, port: 80, targetPort: web, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP, nodePort: 30053}
status:
  loadBalancer:
    ingress:
    - ip: 198.51.100.10
    - ip: 198.51.100.11
      ipMode: Proxy
    - hostname: lb.example.com
---
apiVersion: v1
kind: Service
metadata: {name: np, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.96.0.51
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  internalTrafficPolicy: Local
  ports: [{port: 8080, nodePort: 31000}]
"#,
    );
    let http = st
        .service_port(&spn("shop", "lb", "http", Protocol::Tcp))
        .unwrap();
    assert_eq!(http.service_type, ServiceType::LoadBalancer);
    assert_eq!(http.node_port, Some(30080));
    assert_eq!(http.target_port, TargetPort::Name("web".into()));
    assert_eq!(http.external_ips, vec![ip("192.0.2.8"), ip("192.0.2.9")]);
    assert_eq!(
        http.load_balancer_ips,
        vec![ip("198.51.100.10")],
        "Proxy-mode and hostname entries are not captured"
    );
    let ranges: Vec<String> = http
        .load_balancer_source_ranges
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ranges, vec!["198.51.100.0/24", "203.0.113.0/24"]);
    assert_eq!(http.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(http.health_check_node_port, Some(32000));
    assert_eq!(http.session_affinity_timeout, Some(10800));
    let dns = st
        .service_port(&spn("shop", "lb", "dns", Protocol::Udp))
        .unwrap();
    assert_eq!(dns.node_port, Some(30053));

    let np = st
        .service_port(&spn("shop", "np", "", Protocol::Tcp))
        .unwrap();
    assert_eq!(np.service_type, ServiceType::NodePort);
    assert_eq!(np.node_port, Some(31000));
    assert_eq!(np.session_affinity_timeout, Some(60));
    assert_eq!(np.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(np.health_check_node_port, None);
}

#[test]
fn externalname_and_headless_services_have_no_cluster_ip() {
    let st = state(
        r#"
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: a}
spec: {type: ExternalName, externalName: db.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: hl, namespace: a}
spec: {clusterIP: None, selector: {app: db}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: hl-1, namespace: a, labels: {kubernetes.io/service-name: hl}}
addressType: IPv4
endpoints:
- addresses: [10.0.0.2]
  hostname: db-0
  conditions: {ready: true}
- addresses: [10.0.0.1]
  hostname: db-1
  conditions: {ready: false}
ports: [{name: pg, port: 5432}]
"#,
    );
    let ext = st.service(&NamespacedName::new("a", "ext")).unwrap();
    assert_eq!(ext.service_type, ServiceType::ExternalName);
    assert_eq!(ext.external_name.as_deref(), Some("db.example.com"));
    assert!(ext.cluster_ips.is_empty());
    let hl = st.service(&NamespacedName::new("a", "hl")).unwrap();
    assert!(hl.headless);
    assert!(hl.cluster_ips.is_empty());
    assert!(
        hl.ports.is_empty(),
        "a port-less headless service has no service ports"
    );
    let addrs: Vec<(IpAddr, bool, Option<&str>)> = hl
        .addresses
        .iter()
        .map(|a| (a.ip, a.ready, a.hostname()))
        .collect();
    assert_eq!(
        addrs,
        vec![
            (ip("10.0.0.1"), false, Some("db-1")),
            (ip("10.0.0.2"), true, Some("db-0"))
        ]
    );
    assert_eq!(hl.endpoint_ports.len(), 1);
    assert_eq!(hl.endpoint_ports[0].port, 5432);
    assert_eq!(st.ports_of(&NamespacedName::new("a", "hl")).count(), 0);
}

#[test]
fn dual_stack_service_keeps_primary_family_first_and_both_slices() {
    let st = state(
        r#"
apiVersion: v1
kind: Service
metadata: {name: ds, namespace: default}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  clusterIP: fd00::10
  clusterIPs: [fd00::10, 10.96.0.10]
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ds-v4, labels: {kubernetes.io/service-name: ds}}
addressType: IPv4
endpoints: [{addresses: [10.1.0.5]}]
ports: [{port: 8080, name: ""}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ds-v6, labels: {kubernetes.io/service-name: ds}}
addressType: IPv6
endpoints: [{addresses: ["fd10::5"]}]
ports: [{port: 8080}]
"#,
    );
    let p = st
        .service_port(&spn("default", "ds", "", Protocol::Tcp))
        .unwrap();
    assert_eq!(p.cluster_ips, vec![ip("fd00::10"), ip("10.96.0.10")]);
    let eps: Vec<IpAddr> = p.endpoints.iter().map(|e| e.ip).collect();
    assert_eq!(eps, vec![ip("10.1.0.5"), ip("fd10::5")]);
    assert!(
        p.endpoints
            .iter()
            .all(|e| e.ready && e.serving && !e.terminating),
        "missing conditions mean ready"
    );
    let view = st.service(&NamespacedName::new("default", "ds")).unwrap();
    assert_eq!(
        view.ip_families,
        vec![ferry_model::IpFamily::IPv6, ferry_model::IpFamily::IPv4]
    );
}

#[test]
fn named_ports_take_endpoints_from_matching_slice_ports_only() {
    let st = state(
        r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.1.1
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: metrics, port: 9090}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- addresses: [10.1.0.2]
  nodeName: n1
  zone: z1
  hints: {forZones: [{name: z1}]}
  targetRef: {kind: Pod, name: web-0, namespace: default}
ports:
- {name: http, port: 8080}
- {name: dns, port: 5353, protocol: UDP}
- {name: metrics}
"#,
    );
    let http = st
        .service_port(&spn("default", "web", "http", Protocol::Tcp))
        .unwrap();
    assert_eq!(http.endpoints.len(), 1);
    let ep = &http.endpoints[0];
    assert_eq!(
        (ep.port, ep.node_name(), ep.zone()),
        (8080, Some("n1"), Some("z1"))
    );
    assert_eq!(ep.zone_hints().collect::<Vec<_>>(), ["z1"]);
    assert_eq!(ep.pod(), Some("web-0"));
    let dns = st
        .service_port(&spn("default", "web", "dns", Protocol::Udp))
        .unwrap();
    assert_eq!(dns.endpoints[0].port, 5353);
    let metrics = st
        .service_port(&spn("default", "web", "metrics", Protocol::Tcp))
        .unwrap();
    assert!(
        metrics.endpoints.is_empty(),
        "a slice port without a port number gives no endpoints"
    );
}

#[test]
fn terminating_endpoints_keep_their_conditions_and_ready_wins_duplicates() {
    let st = state(
        r#"
apiVersion: v1
kind: Service
metadata: {name: t, namespace: default}
spec: {clusterIP: 10.96.2.2, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: t-a, labels: {kubernetes.io/service-name: t}}
addressType: IPv4
endpoints:
- addresses: [10.1.0.9]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.1.0.7]
  conditions: {ready: false}
ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: t-b, labels: {kubernetes.io/service-name: t}}
addressType: IPv4
endpoints:
- addresses: [10.1.0.7]
  conditions: {ready: true}
ports: [{port: 80}]
"#,
    );
    let p = st
        .service_port(&spn("default", "t", "", Protocol::Tcp))
        .unwrap();
    let got: Vec<(IpAddr, bool, bool, bool)> = p
        .endpoints
        .iter()
        .map(|e| (e.ip, e.ready, e.serving, e.terminating))
        .collect();
    assert_eq!(
        got,
        vec![
            (ip("10.1.0.7"), true, true, false),
            (ip("10.1.0.9"), false, true, true)
        ]
    );
}

#[test]
fn legacy_endpoints_are_converted_to_slices() {
    let st = state(
        r#"
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: default}
spec: {clusterIP: 10.96.3.3, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy}
subsets:
- addresses: [{ip: 10.2.0.1, nodeName: n1, hostname: a}]
  notReadyAddresses: [{ip: 10.2.0.2}]
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: skipped, labels: {endpointslice.kubernetes.io/skip-mirror: "true"}}
subsets: [{addresses: [{ip: 10.2.0.3}], ports: [{port: 1}]}]
"#,
    );
    let p = st
        .service_port(&spn("default", "legacy", "http", Protocol::Tcp))
        .unwrap();
    let got: Vec<(IpAddr, u16, bool, Option<&str>)> = p
        .endpoints
        .iter()
        .map(|e| (e.ip, e.port, e.ready, e.node_name()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ip("10.2.0.1"), 8080, true, Some("n1")),
            (ip("10.2.0.2"), 8080, false, None)
        ]
    );
}

#[test]
fn slices_without_a_service_label_feed_no_service() {
    let st = state(
        r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: default}
spec: {clusterIP: 10.96.4.4, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orphan}
addressType: IPv4
endpoints: [{addresses: [10.3.0.1]}]
ports: [{port: 80}]
"#,
    );
    let p = st
        .service_port(&spn("default", "s", "", Protocol::Tcp))
        .unwrap();
    assert!(p.endpoints.is_empty());
    assert_eq!(st.len(), 2);
}

#[test]
fn a_portless_slice_gives_addresses_but_no_port_endpoints() {
    let st = state(
        r#"
apiVersion: v1
kind: Service
metadata: {name: p, namespace: default}
spec: {clusterIP: 10.96.5.5, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: p-1, labels: {kubernetes.io/service-name: p}}
addressType: IPv4
endpoints: [{addresses: [10.9.0.1], hostname: a}]
"#,
    );
    let port = st
        .service_port(&spn("default", "p", "", Protocol::Tcp))
        .unwrap();
    assert!(
        port.endpoints.is_empty(),
        "no slice port, no endpoint for the service port"
    );
    let view = st.service(&NamespacedName::new("default", "p")).unwrap();
    assert_eq!(view.addresses.len(), 1);
    assert_eq!(view.addresses[0].hostname(), Some("a"));
    assert!(view.endpoint_ports.is_empty());
}

#[test]
fn repeated_strings_are_one_shared_copy_across_objects_and_views() {
    // Node names, namespaces, label keys and values repeat on every Pod and
    // endpoint of a large cluster: the decoded objects and the views made
    // from them point at one copy each (issue 13's memory target).
    let st = state(SEED);
    let port = st
        .service_port(&spn("demo", "nginx-web-service", "", Protocol::Tcp))
        .expect("service port");
    let on_node_2: Vec<&str> = port
        .endpoints
        .iter()
        .filter_map(|e| e.node_name())
        .filter(|n| *n == "node-2")
        .collect();
    assert_eq!(on_node_2.len(), 2);
    assert!(std::ptr::eq(on_node_2[0].as_ptr(), on_node_2[1].as_ptr()));
    let view = st
        .service(&NamespacedName::new("demo", "nginx-web-service"))
        .expect("service view");
    let address = view
        .addresses
        .iter()
        .find(|a| a.ip == ip("10.204.1.3"))
        .expect("address");
    assert!(std::ptr::eq(
        address.node_name().unwrap().as_ptr(),
        on_node_2[0].as_ptr()
    ));
    let pods = decode(
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: demo, labels: {app: web}}\nspec: {nodeName: node-2, containers: [{name: c, image: i}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: demo, labels: {app: web}}\nspec: {nodeName: node-2, containers: [{name: c, image: i}]}\n",
    );
    let pods: Vec<_> = pods
        .objects
        .iter()
        .filter_map(|d| match &d.object {
            ferry_model::Object::Pod(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(pods.len(), 2);
    let node = |p: &ferry_model::Pod| p.spec.as_ref().unwrap().node_name.clone().unwrap();
    assert!(std::sync::Arc::ptr_eq(&node(&pods[0]), &node(&pods[1])));
    assert!(std::ptr::eq(node(&pods[0]).as_ptr(), on_node_2[0].as_ptr()));
    let ns = |p: &ferry_model::Pod| p.metadata.namespace.clone().unwrap();
    assert!(std::sync::Arc::ptr_eq(&ns(&pods[0]), &ns(&pods[1])));
    let label = |p: &ferry_model::Pod| {
        p.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("app")
            .unwrap()
            .as_ptr()
    };
    assert_eq!(label(&pods[0]), label(&pods[1]));
    // An object's key holds the object's own name, not a copy.
    let object = ferry_model::Object::Pod(pods[0].clone());
    let name = pods[0].metadata.name.clone().unwrap();
    assert!(std::sync::Arc::ptr_eq(&object.key().name.name, &name));
}
