//! The cluster as the lab writes it for the agents: Namespaces, Nodes,
//! Pods (with status), Services (with their allocated addresses) and
//! EndpointSlices that follow selectors and readiness, Ingresses of a
//! class ferry owns with the node addresses in their status, plus
//! everything else the user gave, unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ferry_model::Service;
use ferry_model::k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Namespace, Node, NodeAddress, NodeCondition, NodeSpec,
    NodeStatus, ServiceStatus,
};
use ferry_model::k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use ferry_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use ferry_model::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ferry_model::k8s_openapi::jiff::Timestamp;
use ferry_model::pod::{Pod, PodConditions, PodIPs, PodSpec, PodStatus};
use ferry_model::slice::{Address, Addresses};
use ferry_model::slice::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice, TargetRef};
use ferry_model::{Kind, NamespacedName, Object, SERVICE_NAME_LABEL, service_selects};

use super::{Allocation, Inputs, NodeInfo, PodInfo};

/// Marks EndpointSlices the lab manages.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGER: &str = "ferry-lab";
const CONTROLLER: &str = "endpointslice-controller.k8s.io";

pub struct World<'a> {
    pub inputs: &'a Inputs,
    pub nodes: &'a [NodeInfo],
    pub pods: &'a BTreeMap<NamespacedName, PodInfo>,
    pub allocations: &'a BTreeMap<NamespacedName, Allocation>,
    /// Lab clock origin, for deletion timestamps.
    pub epoch: Timestamp,
}

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        ..Default::default()
    }
}

fn selector_of(inputs: &Inputs, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
    match inputs.get(&ferry_model::ObjectKey::new(Kind::Service, ns, name)) {
        Some(Object::Service(s)) => s
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .filter(|s| !s.is_empty())
            .map(ferry_model::Labels::to_map),
        _ => None,
    }
}

pub fn render(w: &World) -> Vec<Object> {
    let mut out = Vec::new();
    // Namespaces: the given ones and every one an object lives in.
    let mut namespaces: BTreeSet<String> = ["default", "kube-system"].map(String::from).into();
    for o in w.inputs.values() {
        if let Some(ns) = o.metadata().namespace() {
            namespaces.insert(ns.to_string());
        }
    }
    for ns in namespaces {
        let key = ferry_model::ObjectKey::new(Kind::Namespace, "", ns.as_str());
        if !w.inputs.contains_key(&key) {
            out.push(Object::Namespace(Arc::new(Namespace {
                metadata: meta(None, &ns),
                ..Default::default()
            })));
        }
    }
    for n in w.nodes {
        out.push(Object::Node(Arc::new(node(w, n))));
    }
    for p in w.pods.values() {
        out.push(Object::Pod(Arc::new(pod(w, p))));
    }
    let classes = ingress_classes(w.inputs);
    for o in w.inputs.values() {
        match o {
            Object::Node(_) | Object::Pod(_) | Object::Namespace(_) => {
                if o.kind() == Kind::Namespace {
                    out.push(o.clone());
                }
            }
            Object::Service(s) => {
                if let Some(a) = w.allocations.get(&o.key().name) {
                    out.push(Object::Service(Arc::new(service(s, a))));
                } else if s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
                    out.push(o.clone());
                }
            }
            Object::EndpointSlice(s) => {
                let ns = s.metadata.namespace.as_deref().unwrap_or_default();
                let svc = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL));
                let managed = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MANAGED_BY))
                    .is_some_and(|m| m == CONTROLLER);
                let lab_owns =
                    svc.is_some_and(|svc| managed && selector_of(w.inputs, ns, svc).is_some());
                if !lab_owns {
                    out.push(o.clone());
                }
            }
            Object::Endpoints(e) => {
                let ns = e.metadata.namespace.as_deref().unwrap_or_default();
                let name = e.metadata.name.as_deref().unwrap_or_default();
                if selector_of(w.inputs, ns, name).is_none() {
                    out.push(o.clone());
                }
            }
            Object::Ingress(i) => match classes.owned_class(i) {
                Some(_) => out.push(Object::Ingress(Arc::new(ingress(w, i)))),
                None => out.push(o.clone()),
            },
            _ => out.push(o.clone()),
        }
    }
    for o in w.inputs.values() {
        if let Object::Service(s) = o
            && w.allocations.contains_key(&o.key().name)
        {
            out.extend(
                slices(w, s)
                    .into_iter()
                    .map(|s| Object::EndpointSlice(Arc::new(s))),
            );
        }
    }
    out
}

/// Which Ingresses the lab's agents route: the ingress crate's own class
/// selection, with the agents' default settings.
pub fn ingress_classes(inputs: &Inputs) -> ferry_ingress::Classes {
    let classes = inputs.values().filter_map(|o| match o {
        Object::IngressClass(c) => Some(&**c),
        _ => None,
    });
    ferry_ingress::Classes::of(classes, &ferry_ingress::ClassConfig::default())
}

/// The addresses the lab writes into the status of every Ingress ferry
/// routes: every node's, sorted (each node's agent runs the ingress).
pub fn ingress_addresses(nodes: &[NodeInfo]) -> Vec<std::net::Ipv4Addr> {
    let mut ips: Vec<std::net::Ipv4Addr> = nodes.iter().map(|n| n.ip).collect();
    ips.sort();
    ips
}

/// An Ingress ferry routes, with the addresses of the nodes its ingress
/// runs on in `status.loadBalancer.ingress`, as ingress-nginx's status
/// updater publishes the node addresses of its DaemonSet's pods.
fn ingress(w: &World, i: &Ingress) -> Ingress {
    let mut i = i.clone();
    let ips = ingress_addresses(w.nodes);
    i.status = Some(IngressStatus {
        load_balancer: Some(IngressLoadBalancerStatus {
            ingress: Some(
                ips.iter()
                    .map(|ip| IngressLoadBalancerIngress {
                        ip: Some(ip.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }),
    });
    i
}

fn node(w: &World, n: &NodeInfo) -> Node {
    let key = ferry_model::ObjectKey::new(Kind::Node, "", n.name.as_str());
    let mut node = match w.inputs.get(&key) {
        Some(Object::Node(given)) => (**given).clone(),
        _ => Node {
            metadata: meta(None, &n.name),
            ..Default::default()
        },
    };
    node.metadata.labels = Some(n.labels.clone());
    let spec = node.spec.get_or_insert_with(NodeSpec::default);
    spec.pod_cidr = Some(n.pod_cidr.to_string());
    spec.pod_cidrs = Some(vec![n.pod_cidr.to_string()]);
    node.status = Some(NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: n.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: n.name.clone(),
            },
        ]),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    node
}

/// The Pod as the model keeps it (names, node, addresses, readiness); the
/// lab's writer adds the whole spec when it writes the manifest.
fn pod(w: &World, p: &PodInfo) -> Pod {
    let mut metadata = meta(Some(&p.name.namespace), &p.name.name);
    metadata.labels = Some(p.labels.clone()).filter(|l| !l.is_empty());
    if let Some((since_ms, grace_ms)) = p.deleting {
        let at = w
            .epoch
            .checked_add(std::time::Duration::from_millis(since_ms))
            .unwrap_or(w.epoch);
        metadata.deletion_timestamp = Some(Time(at));
        metadata.deletion_grace_period_seconds = Some((grace_ms / 1000) as i64);
    }
    let ready = if p.ready && !p.terminating() {
        "True"
    } else {
        "False"
    };
    Pod {
        metadata: metadata.into(),
        spec: Some(PodSpec {
            node_name: Some(p.node.as_str().into()),
            host_network: p.spec.host_network,
        }),
        status: Some(PodStatus {
            phase: Some(if p.started { "Running" } else { "Pending" }.into()),
            pod_ip: Some(Address::Ip(p.ip)),
            pod_ips: Some(PodIPs(Addresses::One(Address::Ip(p.ip)))),
            conditions: Some(PodConditions::ready(ready)),
        }),
    }
}

fn service(s: &Service, a: &Allocation) -> Service {
    let mut s = s.clone();
    let spec = s.spec.get_or_insert_with(Default::default);
    if let Some(ip) = a.cluster_ip {
        spec.cluster_ip = Some(ip.to_string());
        spec.cluster_ips = Some(vec![ip.to_string()]);
        spec.ip_families = Some(vec![if ip.is_ipv4() { "IPv4" } else { "IPv6" }.into()]);
    }
    for p in spec.ports.iter_mut().flatten() {
        if let Some(n) = a.node_ports.get(&format!(
            "{}/{}",
            p.port,
            p.protocol.as_deref().unwrap_or("TCP")
        )) {
            p.node_port = Some(i32::from(*n));
        }
    }
    if let Some(n) = a.health_check_node_port {
        spec.health_check_node_port = Some(i32::from(n));
    }
    if let Some(ip) = a.lb_ip {
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ip_mode: Some("VIP".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
    }
    s
}

/// A ServicePort's target port on one pod: a number, or the container port of that name.
fn resolve(target: Option<&IntOrString>, port: i32, p: &PodInfo) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => p
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port),
    }
}

/// EndpointSlices for a Service with a selector: pods that match, grouped
/// by their resolved ports (pods naming the same port differently go to
/// different slices), conditions as the EndpointSlice controller sets them.
fn slices(w: &World, svc: &Service) -> Vec<EndpointSlice> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let ns = svc
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default()
        .to_string();
    let name = svc.metadata.name.as_deref().unwrap_or_default().to_string();
    let ports = spec.ports.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Vec<Endpoint>> = BTreeMap::new();
    for p in w.pods.values() {
        if *p.name.namespace != ns || !service_selects(spec.selector.as_ref(), &p.labels) {
            continue;
        }
        let resolved: Vec<(String, i32, String)> = ports
            .iter()
            .filter_map(|sp| {
                let target = resolve(sp.target_port.as_ref(), sp.port, p)?;
                Some((
                    sp.name.clone().unwrap_or_default(),
                    target,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        let serving = p.ready;
        let terminating = p.terminating();
        let hostname = p
            .spec
            .hostname
            .clone()
            .filter(|_| p.spec.subdomain.as_deref() == Some(name.as_str()));
        let zone = w
            .nodes
            .iter()
            .find(|n| n.name == p.node)
            .and_then(|n| n.labels.get("topology.kubernetes.io/zone").cloned());
        groups.entry(resolved).or_default().push(Endpoint {
            addresses: Addresses::One(Address::Ip(p.ip)),
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname.map(Into::into),
            node_name: Some(p.node.as_str().into()),
            zone: zone.map(Into::into),
            target_ref: Some(Box::new(TargetRef {
                kind: Some("Pod".into()),
                namespace: Some(ns.as_str().into()),
                name: Some(p.name.name.clone()),
            })),
            ..Default::default()
        });
    }
    if groups.is_empty() && spec.selector.as_ref().is_some_and(|s| !s.is_empty()) {
        groups.insert(Vec::new(), Vec::new());
    }
    if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
        return Vec::new();
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (ports, mut endpoints))| {
            endpoints.sort_by_key(|e| e.addresses.first().and_then(Address::ip));
            let mut labels = BTreeMap::new();
            labels.insert(SERVICE_NAME_LABEL.to_string(), name.clone());
            labels.insert(MANAGED_BY.to_string(), MANAGER.to_string());
            let slice_name = if i == 0 {
                format!("{name}-ferry")
            } else {
                format!("{name}-ferry-{i}")
            };
            let mut metadata = meta(Some(&ns), &slice_name);
            metadata.labels = Some(labels);
            EndpointSlice {
                metadata: metadata.into(),
                address_type: "IPv4".into(),
                endpoints: Some(endpoints),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: Some(name),
                            port: Some(port),
                            protocol: Some(protocol),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::k8s_openapi::api::networking::v1::IngressClass;
    use serde_json::json;

    fn ingress_object(name: &str, class: Option<&str>) -> Object {
        let i: Ingress = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"ingressClassName": class, "defaultBackend":
                     {"service": {"name": "web", "port": {"number": 80}}}},
        }))
        .unwrap();
        Object::Ingress(Arc::new(i))
    }

    #[test]
    fn only_ingresses_of_a_class_ferry_owns_get_the_node_addresses() {
        let class: IngressClass = serde_json::from_value(json!({
            "metadata": {"name": "ferry",
                         "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": "ferry.dev/ingress-controller"},
        }))
        .unwrap();
        let objects = [
            Object::IngressClass(Arc::new(class)),
            ingress_object("mine", Some("ferry")),
            ingress_object("classless", None),
            ingress_object("theirs", Some("nginx")),
        ];
        let inputs: Inputs = objects.into_iter().map(|o| (o.key(), o)).collect();
        let node = |name: &str, index: u32, ip: &str| NodeInfo {
            name: name.into(),
            index,
            ip: ip.parse().unwrap(),
            pod_cidr: format!("10.244.{index}.0/24").parse().unwrap(),
            labels: BTreeMap::new(),
        };
        let nodes = [node("b", 2, "172.18.0.12"), node("a", 1, "172.18.0.11")];
        let out = render(&World {
            inputs: &inputs,
            nodes: &nodes,
            pods: &BTreeMap::new(),
            allocations: &BTreeMap::new(),
            epoch: Timestamp::UNIX_EPOCH,
        });
        let status = |name: &str| -> Option<Vec<String>> {
            out.iter()
                .find_map(|o| match o {
                    Object::Ingress(i) if i.metadata.name.as_deref() == Some(name) => Some(i),
                    _ => None,
                })
                .unwrap()
                .status
                .as_ref()
                .map(|s| {
                    s.load_balancer
                        .iter()
                        .flat_map(|lb| lb.ingress.iter().flatten())
                        .filter_map(|i| i.ip.clone())
                        .collect()
                })
        };
        let both = Some(vec!["172.18.0.11".to_string(), "172.18.0.12".to_string()]);
        assert_eq!(status("mine"), both);
        // The default class is ferry's, so a class-less Ingress is too.
        assert_eq!(status("classless"), both);
        assert_eq!(status("theirs"), None);
        // lab status names the default class for the class-less one.
        let classes = ingress_classes(&inputs);
        let class_of = |name: &str| match &ingress_object(name, None) {
            Object::Ingress(i) => classes.owned_class(i),
            _ => None,
        };
        assert_eq!(class_of("classless").as_deref(), Some("ferry"));
    }
}
