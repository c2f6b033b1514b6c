//! The proxy plan for each shape of Service, as kube-proxy would decide it.

use std::net::IpAddr;

use ferry_model::{ClusterState, NamespacedName, Protocol, ServicePortName, decode};
use ferry_proxy::{Family, NodeContext, ProxyPlan, ServicePlan, plan};

fn state(yaml: &str) -> ClusterState {
    let d = decode("t.yaml", yaml);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    ClusterState::from_objects(d.objects.into_iter().map(|o| o.object))
}

fn ctx(node: &str, zone: Option<&str>) -> NodeContext {
    NodeContext {
        node_name: node.into(),
        zone: zone.map(str::to_string),
        family: Family::V4,
    }
}

fn get<'a>(p: &'a ProxyPlan, name: &str, port: &str) -> &'a ServicePlan {
    p.services
        .get(&ServicePortName {
            namespace: "default".into(),
            name: name.into(),
            port: port.into(),
            protocol: Protocol::Tcp,
        })
        .unwrap_or_else(|| panic!("no plan for {name}:{port}"))
}

fn ips(eps: &[ferry_proxy::PlannedEndpoint]) -> Vec<String> {
    eps.iter()
        .map(|e| format!("{}:{}{}", e.ip, e.port, if e.local { " local" } else { "" }))
        .collect()
}

fn svc(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  clusterIP: 10.96.0.{}\n  ports: [{{port: 80}}]\n{extra}",
        name.len()
    )
}

fn slice(service: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-x, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n{endpoints}"
    )
}

const THREE: &str = "- {addresses: [10.0.1.1], nodeName: n1, zone: a}\n- {addresses: [10.0.2.1], nodeName: n2, zone: b}\n- {addresses: [10.0.2.2], nodeName: n2, zone: b}\n";

#[test]
fn a_cluster_ip_service_uses_every_ready_endpoint() {
    let st = state(&format!("{}---\n{}", svc("web", ""), slice("web", THREE)));
    let p = plan(&st, &ctx("n1", None));
    let web = get(&p, "web", "");
    assert_eq!(
        web.cluster_ips,
        vec!["10.96.0.3".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        ips(&web.cluster_endpoints),
        vec!["10.0.1.1:8080 local", "10.0.2.1:8080", "10.0.2.2:8080"]
    );
    assert!(!web.is_external());
    assert!(!web.rejects_cluster_traffic());
}

#[test]
fn terminating_endpoints_are_used_only_when_none_is_ready() {
    let eps = "- {addresses: [10.0.1.1], nodeName: n1, conditions: {ready: false, serving: true, terminating: true}}\n- {addresses: [10.0.2.1], nodeName: n2, conditions: {ready: false, serving: false, terminating: true}}\n";
    let st = state(&format!("{}---\n{}", svc("web", ""), slice("web", eps)));
    let web = get(&plan(&st, &ctx("n1", None)), "web", "").clone();
    assert_eq!(
        ips(&web.cluster_endpoints),
        vec!["10.0.1.1:8080 local"],
        "serving-terminating fallback, not the non-serving one"
    );
    let both = format!("{eps}- {{addresses: [10.0.3.1], nodeName: n3}}\n");
    let st = state(&format!("{}---\n{}", svc("web", ""), slice("web", &both)));
    let web = get(&plan(&st, &ctx("n1", None)), "web", "").clone();
    assert_eq!(
        ips(&web.cluster_endpoints),
        vec!["10.0.3.1:8080"],
        "a ready endpoint wins over terminating ones"
    );
}

#[test]
fn no_endpoints_means_reject() {
    let st = state(&svc("empty", ""));
    let p = plan(&st, &ctx("n1", None));
    assert!(get(&p, "empty", "").rejects_cluster_traffic());
}

#[test]
fn external_traffic_policy_local_uses_only_this_nodes_endpoints() {
    let extra = "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 32000\n  loadBalancerSourceRanges: [192.0.2.0/24]\n  ports: [{port: 80, nodePort: 30080}]\nstatus: {loadBalancer: {ingress: [{ip: 172.19.0.1}]}}\n";
    let yaml = format!(
        "{}---\n{}",
        svc("lb", extra).replace("  ports: [{port: 80}]\n", ""),
        slice("lb", THREE)
    );
    let st = state(&yaml);
    let on_n2 = plan(&st, &ctx("n2", None));
    let lb = get(&on_n2, "lb", "");
    assert!(lb.external_local && lb.is_external());
    assert_eq!(lb.node_port, Some(30080));
    assert_eq!(
        ips(&lb.external_endpoints),
        vec!["10.0.2.1:8080 local", "10.0.2.2:8080 local"]
    );
    assert_eq!(
        ips(&lb.cluster_endpoints).len(),
        3,
        "ClusterIP traffic still goes anywhere"
    );
    assert_eq!(lb.local_endpoints, 2);
    assert_eq!(lb.health_check_node_port, Some(32000));
    assert_eq!(lb.source_ranges.len(), 1);
    let on_n3 = plan(&st, &ctx("n3", None));
    let lb = get(&on_n3, "lb", "");
    assert!(
        lb.external_has_no_endpoints(),
        "no local endpoint: external traffic is dropped here"
    );
    assert_eq!(lb.local_endpoints, 0);
}

#[test]
fn internal_traffic_policy_local_limits_cluster_traffic_to_this_node() {
    let st = state(&format!(
        "{}---\n{}",
        svc("itp", "  internalTrafficPolicy: Local\n"),
        slice("itp", THREE)
    ));
    assert_eq!(
        ips(&get(&plan(&st, &ctx("n2", None)), "itp", "").cluster_endpoints),
        vec!["10.0.2.1:8080 local", "10.0.2.2:8080 local"]
    );
    assert!(get(&plan(&st, &ctx("n9", None)), "itp", "").rejects_cluster_traffic());
}

#[test]
fn zone_hints_keep_traffic_in_the_zone_when_every_endpoint_has_them() {
    let hinted = "- {addresses: [10.0.1.1], nodeName: n1, zone: a, hints: {forZones: [{name: a}]}}\n- {addresses: [10.0.2.1], nodeName: n2, zone: b, hints: {forZones: [{name: b}]}}\n";
    let st = state(&format!(
        "{}---\n{}",
        svc("topo", "  trafficDistribution: PreferClose\n"),
        slice("topo", hinted)
    ));
    assert_eq!(
        ips(&get(&plan(&st, &ctx("n3", Some("b"))), "topo", "").cluster_endpoints),
        vec!["10.0.2.1:8080"]
    );
    assert_eq!(
        ips(&get(&plan(&st, &ctx("n3", Some("c"))), "topo", "").cluster_endpoints).len(),
        2,
        "no endpoint for zone c: all"
    );
    assert_eq!(
        ips(&get(&plan(&st, &ctx("n3", None)), "topo", "").cluster_endpoints).len(),
        2,
        "node without zone: all"
    );
    let partly = format!("{hinted}- {{addresses: [10.0.3.1], nodeName: n3, zone: b}}\n");
    let st = state(&format!(
        "{}---\n{}",
        svc("topo", ""),
        slice("topo", &partly)
    ));
    assert_eq!(
        ips(&get(&plan(&st, &ctx("n3", Some("b"))), "topo", "").cluster_endpoints).len(),
        3,
        "an endpoint without hints turns hints off"
    );
}

#[test]
fn session_affinity_and_headless_and_externalname() {
    let yaml = format!(
        "{}---\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: hl}}\nspec: {{clusterIP: None, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: ext}}\nspec: {{type: ExternalName, externalName: a.example.com}}\n",
        svc("aff", "  sessionAffinity: ClientIP\n"),
        slice("aff", THREE)
    );
    let p = plan(&state(&yaml), &ctx("n1", None));
    assert_eq!(get(&p, "aff", "").affinity_timeout, Some(10800));
    assert_eq!(
        p.services.len(),
        1,
        "headless and ExternalName services are not proxied"
    );
}

#[test]
fn updating_with_a_change_set_equals_planning_from_scratch() {
    let c = ctx("n2", Some("b"));
    let first = state(&format!(
        "{}---\n{}---\n{}",
        svc("a", ""),
        slice("a", THREE),
        svc("bb", "")
    ));
    let mut p = plan(&first, &c);
    let (second, changes) = first.apply(
        decode(
            "u.yaml",
            &format!(
                "{}---\n{}",
                slice("a", "- {addresses: [10.0.2.9], nodeName: n2}\n"),
                svc("bb", "  publishNotReadyAddresses: true\n")
            ),
        )
        .objects
        .into_iter()
        .map(|o| ferry_model::Update::Apply(o.object)),
    );
    let changed = p.update(&second, &changes, &c);
    assert_eq!(p, plan(&second, &c));
    let names: Vec<String> = changed.changed.iter().map(|n| n.name.to_string()).collect();
    assert_eq!(
        names,
        vec!["a"],
        "bb's plan is the same: it has no endpoints either way"
    );
}

fn labelled_svc(name: &str, label: &str) -> String {
    svc(name, "").replace(
        &format!("metadata: {{name: {name}}}"),
        &format!("metadata: {{name: {name}, labels: {{{label}}}}}"),
    )
}

#[test]
fn services_for_another_proxy_or_labelled_headless_are_not_proxied_but_stay_for_dns() {
    let yaml = format!(
        "{}---\n{}---\n{}---\n{}---\n{}---\n{}",
        labelled_svc("other", "service.kubernetes.io/service-proxy-name: cilium"),
        slice("other", THREE),
        labelled_svc("hl", "service.kubernetes.io/headless: \"\""),
        slice("hl", THREE),
        svc("mine", ""),
        slice("mine", THREE),
    );
    let st = state(&yaml);
    let p = plan(&st, &ctx("n1", None));
    let planned: Vec<String> = p.services.keys().map(|n| n.name.to_string()).collect();
    assert_eq!(planned, vec!["mine"]);
    for name in ["other", "hl"] {
        assert!(
            st.service(&NamespacedName::new("default", name)).is_some(),
            "{name} is still in the model, for DNS"
        );
    }
}

#[test]
fn labelling_a_service_for_another_proxy_drops_it_in_an_update_and_unlabelling_brings_it_back() {
    let c = ctx("n1", None);
    let first = state(&format!("{}---\n{}", svc("a", ""), slice("a", THREE)));
    let mut p = plan(&first, &c);
    assert_eq!(p.services.len(), 1);

    let labelled = labelled_svc("a", "service.kubernetes.io/service-proxy-name: other");
    let (second, changes) = first.apply(objects(&labelled));
    let changed = p.update(&second, &changes, &c);
    assert!(p.services.is_empty(), "{:?}", p.services.keys());
    assert_eq!(p, plan(&second, &c));
    assert_eq!(changed.changed.len(), 1);

    let (third, changes) = second.apply(objects(&svc("a", "")));
    let changed = p.update(&third, &changes, &c);
    assert_eq!(p, plan(&third, &c));
    assert_eq!(p.services.len(), 1);
    assert_eq!(changed.changed.len(), 1);
}

fn objects(yaml: &str) -> Vec<ferry_model::Update> {
    let d = decode("u.yaml", yaml);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    d.objects
        .into_iter()
        .map(|o| ferry_model::Update::Apply(o.object))
        .collect()
}
