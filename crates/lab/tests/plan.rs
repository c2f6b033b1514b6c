//! The lab's control plane, without a kernel: scheduling, IPs, service
//! addresses and EndpointSlices for given manifests and pod states.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferry_lab::plan::{
    Counters, Inputs, PodInfo, Settings, World, allocate, desired_nodes, hints_from_slices,
    plan_pods, render,
};
use ferry_model::k8s_openapi::jiff::Timestamp;
use ferry_model::{ClusterState, NamespacedName, Protocol, ServicePortName, decode};

fn inputs(yaml: &str) -> Inputs {
    let d = decode("test.yaml", yaml);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let mut inputs = Inputs::new();
    inputs.read(d.objects.into_iter().map(|o| o.object).collect(), yaml);
    inputs
}

struct Sim {
    inputs: Inputs,
    settings: Settings,
    pods: BTreeMap<NamespacedName, PodInfo>,
    counters: Counters,
    now: u64,
}

impl Sim {
    fn new(yaml: &str) -> Self {
        Sim {
            inputs: inputs(yaml),
            settings: Settings::default(),
            pods: BTreeMap::new(),
            counters: Counters {
                next_id: 1,
                next_seq: 1,
            },
            now: 0,
        }
    }

    /// One reconcile: pods created start at once and are ready.
    fn step(&mut self) -> ferry_lab::plan::PodChanges {
        let nodes = desired_nodes(&self.inputs, &self.settings, &[]).unwrap();
        let hints = hints_from_slices(&self.inputs);
        let changes = plan_pods(
            &self.inputs,
            &nodes,
            &self.pods,
            self.now,
            &hints,
            &mut self.counters,
        );
        for name in &changes.remove {
            self.pods.remove(name);
        }
        for (name, grace) in &changes.terminate {
            if let Some(p) = self.pods.get_mut(name) {
                p.deleting = Some((self.now, *grace));
            }
        }
        for mut p in changes.create.clone() {
            p.started = true;
            p.ready = true;
            self.pods.insert(p.name.clone(), p);
        }
        changes
    }

    fn live(&self) -> Vec<(String, String, String)> {
        self.pods
            .values()
            .filter(|p| !p.terminating())
            .map(|p| (p.name.name.to_string(), p.node.clone(), p.ip.to_string()))
            .collect()
    }

    fn state(&self) -> ClusterState {
        let nodes = desired_nodes(&self.inputs, &self.settings, &[]).unwrap();
        let (alloc, errors) = allocate(&self.inputs, &BTreeMap::new(), &self.settings);
        assert!(errors.is_empty(), "{errors:?}");
        let objects = render(&World {
            inputs: &self.inputs,
            nodes: &nodes,
            pods: &self.pods,
            allocations: &alloc,
            epoch: Timestamp::UNIX_EPOCH,
        });
        ClusterState::from_objects(objects)
    }
}

const SEED: &str = include_str!("../../../examples/nginx-web.yaml");

#[test]
fn the_seed_scenario_recreates_the_recorded_pods_with_their_names_nodes_and_ips() {
    let mut sim = Sim::new(SEED);
    sim.step();
    let mut live = sim.live();
    live.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(
        live,
        vec![
            (
                "nginx-web-5d6b9c7f4-2xk8p".into(),
                "node-1".into(),
                "10.204.0.13".into()
            ),
            (
                "nginx-web-5d6b9c7f4-9qrzt".into(),
                "node-2".into(),
                "10.204.1.3".into()
            ),
            (
                "nginx-web-5d6b9c7f4-lmv6w".into(),
                "node-2".into(),
                "10.204.1.8".into()
            ),
        ]
    );
    let st = sim.state();
    let port = st
        .service_port(&ServicePortName {
            namespace: "demo".into(),
            name: "nginx-web-service".into(),
            port: "".into(),
            protocol: Protocol::Tcp,
        })
        .unwrap();
    assert_eq!(
        port.cluster_ips,
        vec!["172.16.255.220".parse::<IpAddr>().unwrap()]
    );
    let eps: Vec<String> = port
        .endpoints
        .iter()
        .map(|e| format!("{}:{} {}", e.ip, e.port, e.ready))
        .collect();
    assert_eq!(
        eps,
        vec![
            "10.204.0.13:80 true",
            "10.204.1.3:80 true",
            "10.204.1.8:80 true"
        ]
    );
    // The recorded slice is replaced by the lab's own, not merged with it.
    assert_eq!(st.objects_of(ferry_model::Kind::EndpointSlice).count(), 1);
}

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: app}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers: [{name: web, image: echo, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"#;

#[test]
fn replicas_spread_over_nodes_and_get_ips_from_each_pod_cidr() {
    let mut sim = Sim::new(DEPLOY);
    sim.step();
    let live = sim.live();
    assert_eq!(live.len(), 3);
    let on = |n: &str| live.iter().filter(|p| p.1 == n).count();
    assert_eq!((on("node-1"), on("node-2")), (2, 1));
    for (name, node, ip) in &live {
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 9 + 1 + 5,
            "{name}"
        );
        let prefix = if node == "node-1" {
            "10.244.0."
        } else {
            "10.244.1."
        };
        assert!(ip.starts_with(prefix), "{ip} on {node}");
        assert!(!ip.ends_with(".1"), "the gateway is not given to pods");
    }
    let st = sim.state();
    let port = st
        .service_port(&ServicePortName {
            namespace: "app".into(),
            name: "web".into(),
            port: "".into(),
            protocol: Protocol::Tcp,
        })
        .unwrap();
    assert_eq!(
        port.cluster_ips,
        vec!["172.16.0.10".parse::<IpAddr>().unwrap()],
        "first allocatable ClusterIP"
    );
    assert!(
        port.endpoints.iter().all(|e| e.port == 8080),
        "named targetPort resolved to the container port"
    );
}

#[test]
fn scaling_down_terminates_the_newest_and_removes_them_after_the_grace_period() {
    let mut sim = Sim::new(DEPLOY);
    sim.step();
    let newest = sim
        .pods
        .values()
        .max_by_key(|p| p.seq)
        .unwrap()
        .name
        .clone();
    let scaled = DEPLOY.replace("replicas: 3", "replicas: 2");
    sim.inputs = inputs(&scaled);
    let changes = sim.step();
    assert_eq!(changes.terminate.len(), 1);
    assert_eq!(changes.terminate[0], (newest.clone(), 5000));
    let st = sim.state();
    let port = st
        .service_port(&ServicePortName {
            namespace: "app".into(),
            name: "web".into(),
            port: "".into(),
            protocol: Protocol::Tcp,
        })
        .unwrap();
    let terminating: Vec<_> = port.endpoints.iter().filter(|e| e.terminating).collect();
    assert_eq!(terminating.len(), 1);
    assert!(!terminating[0].ready && terminating[0].serving);
    sim.now = 4999;
    assert!(sim.step().remove.is_empty());
    sim.now = 5000;
    assert_eq!(sim.step().remove, vec![newest]);
    assert_eq!(sim.pods.len(), 2);
}

#[test]
fn node_name_and_node_selector_are_honoured() {
    let mut sim = Sim::new(
        r#"
apiVersion: v1
kind: Node
metadata: {name: a, labels: {disk: ssd}}
---
apiVersion: v1
kind: Node
metadata: {name: b}
---
apiVersion: v1
kind: Pod
metadata: {name: pinned}
spec: {nodeName: b, containers: [{name: c}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: fast}
spec:
  replicas: 2
  selector: {matchLabels: {app: fast}}
  template:
    metadata: {labels: {app: fast}}
    spec: {nodeSelector: {disk: ssd}, containers: [{name: c}]}
"#,
    );
    let changes = sim.step();
    assert!(
        changes.unschedulable.is_empty(),
        "{:?}",
        changes.unschedulable
    );
    for (name, node, _) in sim.live() {
        let want = if name == "pinned" { "b" } else { "a" };
        assert_eq!(node, want, "{name}");
    }
}

#[test]
fn a_changed_template_replaces_every_pod() {
    let mut sim = Sim::new(DEPLOY);
    sim.step();
    let old: Vec<_> = sim.pods.keys().cloned().collect();
    sim.inputs = inputs(&DEPLOY.replace("containerPort: 8080", "containerPort: 8081"));
    let changes = sim.step();
    assert_eq!(changes.create.len(), 3);
    let terminated: Vec<_> = changes.terminate.iter().map(|t| t.0.clone()).collect();
    assert_eq!(terminated, old);
}

#[test]
fn explicit_service_addresses_are_kept_and_conflicts_are_named() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {type: NodePort, clusterIP: 172.16.5.5, ports: [{port: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {clusterIP: 172.16.5.5, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: c}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, clusterIP: 10.0.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: d}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 443}]}
"#;
    let (alloc, errors) = allocate(&inputs(yaml), &BTreeMap::new(), &Settings::default());
    let msgs: Vec<String> = errors.iter().map(|(k, m)| format!("{k}: {m}")).collect();
    assert_eq!(
        msgs,
        vec![
            "default/b: spec.clusterIP: 172.16.5.5 is already allocated to another Service",
            "default/c: spec.clusterIP: 10.0.0.1 is not in the lab's service CIDR 172.16.0.0/16",
        ]
    );
    let a = &alloc[&NamespacedName::new("default", "a")];
    assert_eq!(a.cluster_ip, Some("172.16.5.5".parse().unwrap()));
    assert_eq!(a.node_ports["80/TCP"], 30080);
    let d = &alloc[&NamespacedName::new("default", "d")];
    assert_eq!(d.lb_ip, Some("172.19.0.1".parse().unwrap()));
    assert!(d.health_check_node_port.is_some());
    assert_ne!(d.node_ports["443/TCP"], 30080);
    // Stable across reconciles.
    let (again, _) = allocate(&inputs(yaml), &alloc, &Settings::default());
    assert_eq!(again, alloc);
}

#[test]
fn too_many_nodes_or_overlapping_pod_cidrs_are_refused() {
    let yaml = "apiVersion: v1\nkind: Node\nmetadata: {name: a}\nspec: {podCIDR: 10.1.0.0/16}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\nspec: {podCIDR: 10.1.2.0/24}\n";
    let err = desired_nodes(&inputs(yaml), &Settings::default(), &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("Node a and Node b have overlapping pod CIDRs"),
        "{err}"
    );
}

#[test]
fn unready_pods_are_not_ready_endpoints_unless_published() {
    let mut sim = Sim::new(&format!(
        "{DEPLOY}---\napiVersion: v1\nkind: Service\nmetadata: {{name: all, namespace: app}}\nspec: {{clusterIP: None, publishNotReadyAddresses: true, selector: {{app: web}}, ports: [{{port: 80}}]}}\n"
    ));
    sim.step();
    for p in sim.pods.values_mut() {
        p.ready = false;
    }
    let st = sim.state();
    let web = st
        .service_port(&ServicePortName {
            namespace: "app".into(),
            name: "web".into(),
            port: "".into(),
            protocol: Protocol::Tcp,
        })
        .unwrap();
    assert!(web.endpoints.iter().all(|e| !e.ready && !e.serving));
    let all = st
        .service_port(&ServicePortName {
            namespace: "app".into(),
            name: "all".into(),
            port: "".into(),
            protocol: Protocol::Tcp,
        })
        .unwrap();
    assert!(all.endpoints.iter().all(|e| e.ready));
}

#[test]
fn a_new_service_cannot_take_an_address_an_existing_one_holds() {
    let first =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
    let (alloc, _) = allocate(&inputs(first), &BTreeMap::new(), &Settings::default());
    let held = alloc[&NamespacedName::new("default", "web")]
        .cluster_ip
        .unwrap();
    let both = format!(
        "{first}---\napiVersion: v1\nkind: Service\nmetadata: {{name: alpha}}\nspec: {{clusterIP: {held}, ports: [{{port: 80}}]}}\n"
    );
    let (again, errors) = allocate(&inputs(&both), &alloc, &Settings::default());
    assert_eq!(
        again[&NamespacedName::new("default", "web")].cluster_ip,
        Some(held)
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].1.contains("is already allocated"), "{errors:?}");
}
