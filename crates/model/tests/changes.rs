//! Property: after any sequence of creates, updates and deletes, the change
//! set that `apply` reports equals the difference between the full
//! snapshots, and the incrementally built views equal views built from
//! scratch.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_model::k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, Node, NodeSpec,
};
use ferry_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ferry_model::service::{Service, ServicePort, ServiceSpec};
use ferry_model::slice::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use ferry_model::{ChangeSet, ClusterState, Kind, Object, ObjectKey, Update};
use proptest::prelude::*;

const NAMESPACES: [&str; 2] = ["a", "b"];
const PORTS: [(&str, i32, &str); 3] = [("http", 80, "TCP"), ("dns", 53, "UDP"), ("", 8080, "TCP")];

fn meta(ns: &str, name: &str, service_label: Option<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: (!ns.is_empty()).then(|| ns.into()),
        labels: service_label
            .map(|s| BTreeMap::from([("kubernetes.io/service-name".to_string(), s)])),
        ..Default::default()
    }
}

fn ports_of(mask: u8) -> Vec<(&'static str, i32, &'static str)> {
    let mut ports: Vec<_> = PORTS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, p)| *p)
        .collect();
    if ports.len() > 1 {
        ports.retain(|p| !p.0.is_empty());
    }
    ports
}

#[derive(Clone, Debug)]
enum Op {
    Service {
        ns: usize,
        svc: u8,
        ports: u8,
        ty: u8,
        ip: u8,
        policy: bool,
    },
    Slice {
        ns: usize,
        slice: u8,
        svc: Option<u8>,
        ports: u8,
        eps: Vec<(u8, u8)>,
    },
    Endpoints {
        ns: usize,
        svc: u8,
        ready: Vec<u8>,
        not_ready: Vec<u8>,
    },
    Node {
        node: u8,
        cidr: u8,
    },
    Delete {
        kind: u8,
        ns: usize,
        idx: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 0..3u8, 1..8u8, 0..3u8, 0..3u8, any::<bool>()).prop_map(
            |(ns, svc, ports, ty, ip, policy)| Op::Service {
                ns,
                svc,
                ports,
                ty,
                ip,
                policy
            }
        ),
        (
            0..2usize,
            0..4u8,
            proptest::option::of(0..3u8),
            0..8u8,
            proptest::collection::vec((0..4u8, 0..4u8), 0..4)
        )
            .prop_map(|(ns, slice, svc, ports, eps)| Op::Slice {
                ns,
                slice,
                svc,
                ports,
                eps
            }),
        (
            0..2usize,
            0..3u8,
            proptest::collection::vec(0..4u8, 0..3),
            proptest::collection::vec(0..4u8, 0..2)
        )
            .prop_map(|(ns, svc, ready, not_ready)| Op::Endpoints {
                ns,
                svc,
                ready,
                not_ready
            }),
        (0..2u8, 0..3u8).prop_map(|(node, cidr)| Op::Node { node, cidr }),
        (0..4u8, 0..2usize, 0..4u8).prop_map(|(kind, ns, idx)| Op::Delete { kind, ns, idx }),
    ]
}

fn to_update(op: &Op) -> Update {
    match op {
        Op::Service {
            ns,
            svc,
            ports,
            ty,
            ip,
            policy,
        } => {
            let ty = ["ClusterIP", "NodePort", "LoadBalancer"][*ty as usize];
            let ports = ports_of(*ports)
                .into_iter()
                .enumerate()
                .map(|(i, (name, port, proto))| ServicePort {
                    name: (!name.is_empty()).then(|| name.into()),
                    port,
                    protocol: Some(proto.into()),
                    node_port: (ty != "ClusterIP").then_some(30000 + i as i32),
                    ..Default::default()
                })
                .collect();
            let cluster_ip = match ip {
                0 => "None".to_string(),
                n => format!("10.96.0.{n}"),
            };
            Update::Apply(Object::Service(Arc::new(Service {
                metadata: meta(NAMESPACES[*ns], &format!("s{svc}"), None).into(),
                spec: Some(ServiceSpec {
                    type_: Some(ty.into()),
                    cluster_ip: Some(cluster_ip),
                    ports: Some(ports),
                    external_traffic_policy: (ty != "ClusterIP")
                        .then(|| if *policy { "Local" } else { "Cluster" }.into()),
                    ..Default::default()
                }),
                status: None,
            })))
        }
        Op::Slice {
            ns,
            slice,
            svc,
            ports,
            eps,
        } => {
            let ports = ports_of(*ports)
                .into_iter()
                .map(|(name, port, proto)| EndpointPort {
                    name: Some(name.into()),
                    port: Some(port + 1000),
                    protocol: Some(proto.into()),
                    app_protocol: None,
                })
                .collect();
            let endpoints = eps
                .iter()
                .map(|(ip, cond)| Endpoint {
                    addresses: [format!("10.244.0.{ip}")].into_iter().collect(),
                    conditions: Some(EndpointConditions {
                        ready: Some(*cond == 0),
                        serving: Some(*cond <= 1),
                        terminating: Some(*cond == 1),
                    }),
                    node_name: Some(format!("n{}", ip % 2).into()),
                    ..Default::default()
                })
                .collect();
            Update::Apply(Object::EndpointSlice(Arc::new(EndpointSlice {
                metadata: meta(
                    NAMESPACES[*ns],
                    &format!("e{slice}"),
                    svc.map(|s| format!("s{s}")),
                )
                .into(),
                address_type: "IPv4".into(),
                endpoints: Some(endpoints),
                ports: Some(ports),
            })))
        }
        Op::Endpoints {
            ns,
            svc,
            ready,
            not_ready,
        } => {
            let addr = |i: &u8| EndpointAddress {
                ip: format!("10.244.1.{i}"),
                ..Default::default()
            };
            Update::Apply(Object::Endpoints(Arc::new(Endpoints {
                metadata: meta(NAMESPACES[*ns], &format!("s{svc}"), None),
                subsets: Some(vec![EndpointSubset {
                    addresses: Some(ready.iter().map(addr).collect()),
                    not_ready_addresses: Some(not_ready.iter().map(addr).collect()),
                    ports: Some(vec![CorePort {
                        name: Some("http".into()),
                        port: 9000,
                        ..Default::default()
                    }]),
                }]),
            })))
        }
        Op::Node { node, cidr } => Update::Apply(Object::Node(Arc::new(Node {
            metadata: meta("", &format!("n{node}"), None),
            spec: Some(NodeSpec {
                pod_cidr: Some(format!("10.244.{cidr}.0/24")),
                ..Default::default()
            }),
            status: None,
        }))),
        Op::Delete { kind, ns, idx } => {
            let (kind, name, ns) = match kind {
                0 => (Kind::Service, format!("s{}", idx % 3), NAMESPACES[*ns]),
                1 => (Kind::EndpointSlice, format!("e{idx}"), NAMESPACES[*ns]),
                2 => (Kind::Endpoints, format!("s{}", idx % 3), NAMESPACES[*ns]),
                _ => (Kind::Node, format!("n{}", idx % 2), ""),
            };
            Update::Delete(ObjectKey::new(kind, ns, name))
        }
    }
}

fn without_versions(mut c: ChangeSet) -> ChangeSet {
    c.from_version = 0;
    c.to_version = 0;
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn reported_changes_equal_the_snapshot_diff(batches in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..30)) {
        let mut state = ClusterState::new();
        for batch in &batches {
            let (next, changes) = state.apply(batch.iter().map(to_update));
            let full = state.diff(&next);
            prop_assert_eq!(without_versions(changes.clone()), without_versions(full));
            prop_assert_eq!(changes.is_empty(), next.version() == state.version());

            // The incremental views equal the views of a state built in one go.
            let fresh = ClusterState::from_objects(next.objects().cloned());
            let drift = fresh.diff(&next);
            prop_assert!(drift.services.is_empty() && drift.service_ports.is_empty() && drift.endpoints.is_empty() && drift.objects.is_empty(),
                "incremental state drifted from a fresh build: {:?}", drift);
            prop_assert_eq!(next.service_count(), next.services().count());
            state = next;
        }
    }
}

#[test]
fn an_object_changed_and_changed_back_in_one_batch_is_no_change() {
    let svc = Op::Service {
        ns: 0,
        svc: 0,
        ports: 1,
        ty: 0,
        ip: 1,
        policy: false,
    };
    let other = Op::Service {
        ns: 0,
        svc: 0,
        ports: 2,
        ty: 0,
        ip: 1,
        policy: false,
    };
    let (state, first) = ClusterState::new().apply([to_update(&svc)]);
    assert!(!first.is_empty());
    let (next, changes) = state.apply([to_update(&other), to_update(&svc)]);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(next.version(), state.version());
}

#[test]
fn endpoint_only_changes_do_not_mark_the_service_port_config() {
    let svc = Op::Service {
        ns: 0,
        svc: 0,
        ports: 1,
        ty: 0,
        ip: 1,
        policy: false,
    };
    let slice = |eps| Op::Slice {
        ns: 0,
        slice: 0,
        svc: Some(0),
        ports: 1,
        eps,
    };
    let (state, _) = ClusterState::new().apply([to_update(&svc), to_update(&slice(vec![(1, 0)]))]);
    let (_, changes) = state.apply([to_update(&slice(vec![(1, 0), (2, 0)]))]);
    let names: Vec<String> = changes.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(names, vec!["a/s0:http/TCP"]);
    assert!(changes.service_ports.is_empty());
    assert_eq!(
        changes.services.len(),
        1,
        "the service-level address list changed too"
    );
}
