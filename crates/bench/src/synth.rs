//! Synthetic clusters for benchmarks: N services with E endpoints each, as
//! manifest text (to measure the real loading path) or as typed objects
//! (to build large states quickly). Deterministic.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ferry_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ferry_model::service::{Service, ServicePort, ServiceSpec};
use ferry_model::slice::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use ferry_model::{Object, SERVICE_NAME_LABEL};

const NAMESPACES: usize = 10;

pub fn namespace(i: usize) -> String {
    format!("ns-{}", i % NAMESPACES)
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

pub fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + i as u32)
}

fn pod_ip(i: usize, j: usize, per: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * per + j) as u32)
}

/// Multi-document YAML of the Pods behind `services` services with
/// `endpoints` endpoints each (running, with the endpoints' IPs).
pub fn pods_manifest(services: usize, endpoints: usize) -> String {
    let mut out = String::with_capacity(services * endpoints * 200);
    for i in 0..services {
        for j in 0..endpoints {
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {svc}-{j}, namespace: {ns}, labels: {{app: {svc}}}}}\nspec: {{nodeName: node-{node}, containers: [{{name: app, image: echo}}]}}\nstatus: {{phase: Running, podIP: {ip}}}\n",
                svc = service_name(i),
                ns = namespace(i),
                node = j % 4,
                ip = pod_ip(i, j, endpoints),
            );
        }
    }
    out
}

/// Multi-document YAML for `services` services with `endpoints` endpoints each.
pub fn manifests(services: usize, endpoints: usize) -> String {
    let mut s = String::with_capacity(services * (400 + endpoints * 120));
    for i in 0..services {
        let (ns, name) = (namespace(i), service_name(i));
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  clusterIP: {ip}\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abcde\n  namespace: {ns}\n  labels:\n    {SERVICE_NAME_LABEL}: {name}\naddressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n",
            ip = cluster_ip(i)
        );
        for j in 0..endpoints {
            let _ = write!(
                s,
                "- addresses: [\"{}\"]\n  conditions: {{ready: true, serving: true, terminating: false}}\n  nodeName: node-{}\n",
                pod_ip(i, j, endpoints),
                j % 4
            );
        }
    }
    s
}

pub fn service(i: usize, port: i32) -> Object {
    Object::Service(Arc::new(Service {
        metadata: ObjectMeta {
            name: Some(service_name(i)),
            namespace: Some(namespace(i)),
            ..Default::default()
        }
        .into(),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip(i).to_string()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }))
}

/// The slice of service `i`; `not_ready` marks one endpoint not ready.
pub fn slice(i: usize, endpoints: usize, not_ready: Option<usize>) -> Object {
    let name = service_name(i);
    Object::EndpointSlice(Arc::new(EndpointSlice {
        metadata: ferry_model::meta::ObjectMeta {
            name: Some(format!("{name}-abcde").into()),
            namespace: Some(ferry_model::intern::shared(&namespace(i))),
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), name)]).into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
        endpoints: Some(
            (0..endpoints)
                .map(|j| Endpoint {
                    addresses: ferry_model::slice::Addresses::One(ferry_model::slice::Address::Ip(
                        std::net::IpAddr::V4(pod_ip(i, j, endpoints)),
                    )),
                    conditions: Some(EndpointConditions {
                        ready: Some(not_ready != Some(j)),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some(ferry_model::intern::shared(&format!("node-{}", j % 4))),
                    ..Default::default()
                })
                .collect(),
        ),
    }))
}

/// Typed objects for `services` services (Service + EndpointSlice each).
pub fn objects(services: usize, endpoints: usize) -> impl Iterator<Item = Object> {
    (0..services).flat_map(move |i| [service(i, 80), slice(i, endpoints, None)])
}
