//! Numbers the API server bounds: node ports inside `--service-node-port-range`,
//! grace periods and CIDR prefixes that would overflow a reader's arithmetic.
//! Each is an error naming the field, never a panic or a wrapped value.

use ferry_model::{NodePortRange, ValidationOptions, decode, decode_with};
use proptest::prelude::*;

fn messages_with(yaml: &str, options: &ValidationOptions) -> Vec<String> {
    decode_with("t.yaml", yaml, options)
        .errors
        .iter()
        .map(|e| e.field.to_string())
        .collect()
}

fn messages(yaml: &str) -> Vec<String> {
    messages_with(yaml, &ValidationOptions::default())
}

fn node_port_service(node_port: i64) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  type: NodePort\n  ports: [{{port: 80, nodePort: {node_port}}}]\n"
    )
}

#[test]
fn a_node_port_outside_the_default_range_is_rejected_naming_the_field() {
    assert_eq!(
        messages(&node_port_service(80)),
        vec![
            "spec.ports[0].nodePort: 80 is not in the node port range 30000-32767 (the API server's --service-node-port-range)"
        ]
    );
    assert!(messages(&node_port_service(30000)).is_empty());
    assert!(messages(&node_port_service(32767)).is_empty());
    assert_eq!(messages(&node_port_service(32768)).len(), 1);
    assert!(decode("t.yaml", &node_port_service(80)).objects.is_empty());
}

#[test]
fn the_node_port_range_follows_the_api_server_flag() {
    let options = ValidationOptions {
        service_node_port_range: "80-8080".parse().unwrap(),
    };
    assert!(messages_with(&node_port_service(80), &options).is_empty());
    assert_eq!(
        messages_with(&node_port_service(30000), &options),
        vec![
            "spec.ports[0].nodePort: 30000 is not in the node port range 80-8080 (the API server's --service-node-port-range)"
        ]
    );
    assert_eq!(
        ValidationOptions::default().service_node_port_range,
        NodePortRange::new(30000, 32767).unwrap()
    );
}

#[test]
fn a_health_check_node_port_must_be_in_the_range_and_not_one_of_the_services_node_ports() {
    let lb = |hc: i64| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: lb}}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: {hc}\n  ports: [{{port: 80, nodePort: 30080}}]\n"
        )
    };
    assert!(messages(&lb(30081)).is_empty());
    assert_eq!(
        messages(&lb(10256)),
        vec![
            "spec.healthCheckNodePort: 10256 is not in the node port range 30000-32767 (the API server's --service-node-port-range)"
        ]
    );
    assert_eq!(
        messages(&lb(30080)),
        vec!["spec.healthCheckNodePort: Duplicate value: 30080 is also a nodePort of this Service"]
    );
}

fn pod(extra_spec: &str, extra_meta: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n{extra_meta}spec:\n  containers: [{{name: c, image: i}}]\n{extra_spec}"
    )
}

#[test]
fn grace_periods_too_large_for_a_duration_are_rejected_naming_the_field() {
    let too_big = i64::MAX;
    assert_eq!(
        messages(&pod(
            &format!("  terminationGracePeriodSeconds: {too_big}\n"),
            ""
        )),
        vec![format!(
            "spec.terminationGracePeriodSeconds: {too_big} is too large: at most 9223372036 seconds (about 292 years)"
        )]
    );
    assert_eq!(
        messages(&pod(
            "",
            &format!("  deletionGracePeriodSeconds: {too_big}\n")
        )),
        vec![format!(
            "metadata.deletionGracePeriodSeconds: {too_big} is too large: at most 9223372036 seconds (about 292 years)"
        )]
    );
    assert_eq!(
        messages(&pod("", "  deletionGracePeriodSeconds: -1\n")),
        vec!["metadata.deletionGracePeriodSeconds: -1 must be 0 or more"]
    );
    assert!(messages(&pod("  terminationGracePeriodSeconds: 9223372036\n", "")).is_empty());
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  selector: {{matchLabels: {{app: a}}}}\n  template:\n    metadata: {{labels: {{app: a}}}}\n    spec:\n      terminationGracePeriodSeconds: {too_big}\n      containers:\n      - name: c\n        image: i\n        readinessProbe: {{tcpSocket: {{port: 80}}, initialDelaySeconds: -5, terminationGracePeriodSeconds: {too_big}}}\n"
    );
    let got = messages(&deployment);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].starts_with("spec.template.spec.terminationGracePeriodSeconds: "));
    assert!(got.iter().any(|m| {
        m.starts_with("spec.template.spec.containers[0].readinessProbe.initialDelaySeconds: -5")
    }));
    assert!(got.iter().any(|m| m.starts_with(
        "spec.template.spec.containers[0].readinessProbe.terminationGracePeriodSeconds: "
    )));
}

#[test]
fn numbers_beyond_the_fields_type_and_oversized_cidr_prefixes_are_field_errors() {
    // One past i64::MAX does not fit the field at all.
    assert_eq!(
        decode(
            "t.yaml",
            &pod("  terminationGracePeriodSeconds: 9223372036854775808\n", "")
        )
        .errors
        .len(),
        1
    );
    let got = messages(&node_port_service(i64::from(i32::MAX) + 1));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("spec.ports[0].nodePort: "), "{got:?}");
    let node = |cidr: &str| {
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n}}\nspec: {{podCIDR: \"{cidr}\"}}\n"
        )
    };
    for cidr in [
        "10.0.0.0/33",
        "10.0.0.0/4294967296",
        "10.0.0.0/-1",
        "fd00::/129",
    ] {
        let got = messages(&node(cidr));
        assert_eq!(got.len(), 1, "{cidr}: {got:?}");
        assert!(got[0].starts_with("spec.podCIDR: "), "{got:?}");
    }
    let lb = "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  loadBalancerSourceRanges: [\"10.0.0.0/300\"]\n  ports: [{port: 80}]\n";
    assert_eq!(
        messages(lb),
        vec![
            "spec.loadBalancerSourceRanges[0]: \"10.0.0.0/300\" is not a valid CIDR (for example 10.0.0.0/8)"
        ]
    );
}

proptest! {
    /// Any 64-bit grace period and any nodePort decode without a panic, and
    /// an accepted one is inside the bounds readers rely on.
    #[test]
    fn extreme_numbers_decode_to_errors_not_panics(
        grace in prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(-1i64), Just(0i64), any::<i64>()],
        node_port in prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(0i64), any::<i64>(), 0i64..70000],
    ) {
        let d = decode("t.yaml", &pod(&format!("  terminationGracePeriodSeconds: {grace}\n"), ""));
        prop_assert_eq!(d.objects.is_empty(), !(0..=9_223_372_036).contains(&grace));
        let d = decode("t.yaml", &node_port_service(node_port));
        let accepted = node_port == 0 || (30000..=32767).contains(&node_port);
        prop_assert_eq!(!d.objects.is_empty(), accepted, "{:?}", d.errors);
    }
}
