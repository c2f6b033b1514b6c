//! Reading manifests: every mistake is named by file, document, object and
//! field; the good documents around it still load.

use ferry_model::{Kind, decode};

fn messages(yaml: &str) -> Vec<String> {
    decode("svc.yaml", yaml)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn out_of_range_port_is_named_by_file_document_object_and_field() {
    let yaml = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 70000}\n";
    assert_eq!(
        messages(yaml),
        vec![
            "svc.yaml: document 3: Service demo/web: spec.ports[1].port: 70000 is not in 1..65535"
        ]
    );
}

#[test]
fn the_broken_example_reports_each_mistake_and_keeps_nothing_invalid() {
    let text = include_str!("../../../examples/broken/mistakes.yaml");
    let decoded = decode("mistakes.yaml", text);
    let all = decoded
        .errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        "document 1: Service demo/web: spec.clusterIP: \"172.16.0.300\" is not a valid IP address",
        "document 1: Service demo/web: spec.ports[1].port: 70000 is not in 1..65535",
        "document 1: Service demo/web: spec.ports[1].protocol: \"TCPP\" is not one of \"TCP\", \"UDP\", \"SCTP\"",
        "document 2: Service demo/Bad_Name: metadata.name: \"Bad_Name\" is not a DNS-1035 label",
        "document 3: EndpointSlice demo/web-1: endpoints[0].addresses[0]: \"fd00::1\" is not an IPv4 address",
        "document 4: Service demo/typo: spec.ports[0].port: invalid type: string \"eighty\", expected i32",
        "document 5: Ingress demo/site: spec.rules[0].host: \"10.0.0.1\" must be a DNS name, not an IP address",
        "document 5: Ingress demo/site: spec.rules[0].http.paths[0].path: \"api\" must be an absolute path",
        "document 7 (line 54): invalid YAML: unclosed bracket",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    // Document 6 is valid on its own (document 1, with the same name, was rejected).
    let keys: Vec<String> = decoded
        .objects
        .iter()
        .map(|o| o.object.key().to_string())
        .collect();
    assert_eq!(keys, vec!["Service demo/web"]);
    assert!(decoded.syntax_error);
}

#[test]
fn list_items_lists_and_json_streams_are_accepted() {
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}},
        {"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":99999}]}}]}
        {"apiVersion":"v1","kind":"ServiceList","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"t","namespace":"a"},"spec":{"ports":[{"port":1}]}}]}"#;
    let d = decode("list.json", list);
    let keys: Vec<String> = d
        .objects
        .iter()
        .map(|o| o.object.key().to_string())
        .collect();
    assert_eq!(keys, vec!["Namespace a", "Service a/t"]);
    let errs: Vec<String> = d.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec![
            "list.json: document 1: items[1]: Service default/s: spec.ports[0].port: 99999 is not in 1..65535"
        ]
    );
}

#[test]
fn kinds_the_data_plane_does_not_use_are_skipped_not_errors() {
    let d = decode(
        "x.yaml",
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: d}\n",
    );
    assert!(d.errors.is_empty());
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].kind, "StatefulSet");
}

#[test]
fn retired_api_versions_are_rejected_with_the_served_one() {
    let m = messages("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: i}\n");
    assert_eq!(m.len(), 1);
    assert!(m[0].contains("apiVersion: \"extensions/v1beta1\" is not served for Ingress; use \"networking.k8s.io/v1\""), "{m:?}");
}

#[test]
fn missing_namespace_defaults_and_cluster_scoped_kinds_drop_it() {
    let d = decode(
        "x.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1}]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n, namespace: x}\n",
    );
    let keys: Vec<_> = d.objects.iter().map(|o| o.object.key()).collect();
    assert_eq!(&*keys[0].name.namespace, "default");
    assert_eq!(keys[1].kind, Kind::Node);
    assert_eq!(&*keys[1].name.namespace, "");
}

#[test]
fn duplicate_objects_in_one_file_keep_the_first() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
    let d = decode("dup.yaml", yaml);
    assert_eq!(d.objects.len(), 1);
    assert_eq!(
        d.errors[0].to_string(),
        "dup.yaml: document 2: Namespace a: metadata.name: Duplicate value: already defined in document 1"
    );
}

#[test]
fn documents_that_are_not_objects_or_lack_a_kind_are_errors() {
    let m = messages(
        "- a\n- b\n---\napiVersion: v1\nmetadata: {name: x}\n---\n# only a comment\n---\n",
    );
    assert_eq!(
        m,
        vec![
            "svc.yaml: document 1: a manifest document must be an object with apiVersion and kind",
            "svc.yaml: document 2: <no kind> default/x: kind: Required value",
        ]
    );
}

#[test]
fn service_rules_of_the_api_server_are_enforced() {
    let cases = [
        (
            "spec: {type: ClusterIP, ports: [{port: 1, nodePort: 30001}]}",
            "spec.ports[0].nodePort: may not be used when type is ClusterIP",
        ),
        (
            "spec: {ports: [{port: 1}, {port: 2}]}",
            "spec.ports[0].name: Required value",
        ),
        (
            "spec: {ports: [{name: a, port: 1}, {name: a, port: 2}]}",
            "spec.ports[1].name: Duplicate value: \"a\"",
        ),
        (
            "spec: {ports: [{name: a, port: 1}, {name: b, port: 1}]}",
            "spec.ports[1]: Duplicate value: port 1 TCP",
        ),
        (
            "spec: {type: ExternalName}",
            "spec.externalName: Required value",
        ),
        (
            "spec: {clusterIP: None, type: NodePort, ports: [{port: 1}]}",
            "spec.clusterIP: \"None\" (headless) is only allowed for type ClusterIP",
        ),
        (
            "spec: {externalIPs: [127.0.0.1], ports: [{port: 1}]}",
            "spec.externalIPs[0]: 127.0.0.1 may not be in the loopback range",
        ),
        (
            "spec: {loadBalancerSourceRanges: [10.0.0.0/8], ports: [{port: 1}]}",
            "spec.loadBalancerSourceRanges: may only be used when type is LoadBalancer",
        ),
        (
            "spec: {type: LoadBalancer, loadBalancerSourceRanges: [10.0.0.0/99], ports: [{port: 1}]}",
            "spec.loadBalancerSourceRanges[0]: \"10.0.0.0/99\" is not a valid CIDR",
        ),
        (
            "spec: {sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}, ports: [{port: 1}]}",
            "timeoutSeconds: 0 is not in 1..86400",
        ),
        (
            "spec: {externalTrafficPolicy: Local, ports: [{port: 1}]}",
            "spec.externalTrafficPolicy: may only be set for externally-accessible services",
        ),
        (
            "spec: {ports: [{port: 1, targetPort: 0}]}",
            "spec.ports[0].targetPort: 0 is not in 1..65535",
        ),
        (
            "spec: {ports: [{port: 1, targetPort: Web}]}",
            "spec.ports[0].targetPort: \"Web\" is not a port name",
        ),
        (
            "spec: {selector: {\"bad key!\": x}, ports: [{port: 1}]}",
            "spec.selector[bad key!]",
        ),
        (
            "spec: {clusterIPs: [10.0.0.1, 10.0.0.2], ports: [{port: 1}]}",
            "spec.clusterIPs[1]: two cluster IPs of the same IP family",
        ),
        ("spec: {}", "spec.ports: Required value"),
    ];
    for (spec, expected) in cases {
        let yaml =
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: n}}\n{spec}\n");
        let m = messages(&yaml).join("\n");
        assert!(
            m.contains(expected),
            "for {spec}: expected {expected:?} in {m:?}"
        );
    }
}

#[test]
fn other_kinds_are_validated_too() {
    let cases = [
        (
            "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {podCIDR: 10.0.0.0/33}",
            "spec.podCIDR: \"10.0.0.0/33\" is not a valid CIDR",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}",
            "spec.containers[0].ports[0].containerPort: 0 is not in 1..65535",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\nstatus: {podIP: 1.2.3}",
            "status.podIP: \"1.2.3\" is not a valid IP address",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\ndata: {tls.crt: YQ==}",
            "data[tls.key]: Required value",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {\"a b\": x}",
            "data[a b]: \"a b\" is not a valid key",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: c}\nspec: {controller: nginx}",
            "spec.controller: \"nginx\" must be a domain-prefixed path",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec: {}",
            "spec: either defaultBackend or rules must be specified",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec: {defaultBackend: {service: {name: s, port: {}}}}",
            "spec.defaultBackend.service.port: Required value: name or number",
        ),
        (
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\nsubsets: [{addresses: [{ip: x}], ports: [{port: 1}]}]",
            "subsets[0].addresses[0].ip: \"x\" is not a valid IP address",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv5\nendpoints: []",
            "addressType: \"IPv5\" is not one of",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}",
            "metadata.name: \"a.b\" is not a DNS-1123 label",
        ),
    ];
    for (yaml, expected) in cases {
        let m = messages(yaml).join("\n");
        assert!(
            m.contains(expected),
            "for {yaml}: expected {expected:?} in {m:?}"
        );
    }
}

#[test]
fn a_large_file_decoded_in_parallel_keeps_document_order_and_numbers() {
    let mut text = String::new();
    for i in 1..=6000 {
        let port = if i == 4321 { 0 } else { 80 };
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: ns-{}\n  labels: {{app: web, tier: frontend}}\nspec:\n  clusterIP: 10.96.{}.{}\n  ports:\n  - name: http\n    port: {port}\n    targetPort: 8080\n",
            i % 7,
            i / 250,
            i % 250 + 1
        ));
    }
    assert!(
        text.len() > 1 << 20,
        "the file must be big enough to take the parallel path"
    );
    let d = decode("big.yaml", &text);
    assert_eq!(d.objects.len(), 5999);
    assert!(
        d.objects.windows(2).all(|w| w[0].document < w[1].document),
        "objects are in document order"
    );
    assert_eq!(d.objects[4320].document, 4322);
    let errs: Vec<String> = d.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec![
            "big.yaml: document 4321: Service ns-2/svc-4321: spec.ports[0].port: 0 is not in 1..65535"
        ]
    );
}
