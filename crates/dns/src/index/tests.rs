//! The index that follows change sets against a fresh build: for random
//! sequences of cluster states, every name must hold the same RRsets either
//! way, and a change must re-encode only the names it touches.

use std::collections::BTreeMap;
use std::fmt::Write;

use ferry_model::{ClusterState, Object, ObjectKey, Update};
use proptest::prelude::*;

use super::*;
use crate::wire::dotted;

const NAMESPACES: [&str; 3] = ["a", "b", "c"];

/// The objects of manifests `yaml`; panics on any manifest error.
fn objects(yaml: &str) -> Vec<Object> {
    let d = ferry_model::decode("test.yaml", yaml);
    assert!(d.errors.is_empty(), "manifest errors: {:?}", d.errors);
    d.objects.into_iter().map(|o| o.object).collect()
}

/// The next state, made of exactly `objects`, and what changed, as a
/// source finds it.
fn next(prev: &ClusterState, objects: Vec<Object>) -> (ClusterState, ChangeSet) {
    let keys: BTreeSet<ObjectKey> = objects.iter().map(Object::key).collect();
    let deletes = prev
        .objects()
        .map(Object::key)
        .filter(|k| !keys.contains(k))
        .map(Update::Delete)
        .collect::<Vec<_>>();
    prev.apply(objects.into_iter().map(Update::Apply).chain(deletes))
}

fn zones(config: &Config) -> Vec<Zone> {
    config.zones.iter().filter_map(|z| Zone::new(z)).collect()
}

/// Everything queries and later changes read, in a comparable form.
fn dump(index: &Index) -> (BTreeMap<String, &Node>, BTreeMap<String, Vec<String>>) {
    let names = index
        .names
        .iter()
        .map(|(k, s)| (dotted(k), &s.node))
        .collect();
    let readers = index
        .readers
        .iter()
        .map(|(k, r)| {
            let mut r: Vec<String> = r.iter().map(|n| dotted(n)).collect();
            r.sort();
            (dotted(k), r)
        })
        .collect();
    (names, readers)
}

fn assert_same(incremental: &Index, fresh: &Index) {
    assert_eq!(dump(incremental), dump(fresh));
    let mut a: Vec<_> = incremental.exposed.iter().collect();
    let mut b: Vec<_> = fresh.exposed.iter().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "exposed namespaces");
    assert_eq!(incremental.namespaces, fresh.namespaces);
    assert_eq!(
        incremental.pod_ips, fresh.pod_ips,
        "pod addresses (pods verified)"
    );
    assert_eq!(incremental.owners, fresh.owners, "address owners");
}

#[derive(Clone, Debug)]
struct Endpoint {
    ip: u8,
    hostname: Option<u8>,
    ready: bool,
}

#[derive(Clone, Debug)]
enum Type {
    ClusterIp,
    DualStack,
    Headless,
    /// To another Service of the cluster (maybe itself, maybe an ExternalName).
    ExternalIn(usize, usize),
    ExternalOut,
    ExternalIp,
}

#[derive(Clone, Debug)]
struct Svc {
    ns: usize,
    name: usize,
    kind: Type,
    ports: u8,
    publish_not_ready: bool,
    endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug)]
struct Pod {
    ns: usize,
    name: usize,
    ip: u8,
    hostname: Option<u8>,
}

#[derive(Clone, Debug)]
struct Cluster {
    /// Namespace objects, by bit.
    namespaces: u8,
    services: Vec<Svc>,
    pods: Vec<Pod>,
}

fn svc() -> impl Strategy<Value = Svc> {
    let kind = prop_oneof![
        3 => Just(Type::ClusterIp),
        1 => Just(Type::DualStack),
        3 => Just(Type::Headless),
        1 => (0..3usize, 0..4usize).prop_map(|(n, s)| Type::ExternalIn(n, s)),
        1 => Just(Type::ExternalOut),
        1 => Just(Type::ExternalIp),
    ];
    let endpoint =
        (0..6u8, proptest::option::of(0..2u8), any::<bool>()).prop_map(|(ip, hostname, ready)| {
            Endpoint {
                ip,
                hostname,
                ready,
            }
        });
    (
        0..3usize,
        0..4usize,
        kind,
        1..8u8,
        any::<bool>(),
        proptest::collection::vec(endpoint, 0..4),
    )
        .prop_map(
            |(ns, name, kind, ports, publish_not_ready, endpoints)| Svc {
                ns,
                name,
                kind,
                ports,
                publish_not_ready,
                endpoints,
            },
        )
}

fn cluster(services: usize, pods: usize) -> impl Strategy<Value = Cluster> {
    let pod = (0..3usize, 0..3usize, 0..6u8, proptest::option::of(0..2u8)).prop_map(
        |(ns, name, ip, hostname)| Pod {
            ns,
            name,
            ip,
            hostname,
        },
    );
    (
        0..8u8,
        proptest::collection::vec(svc(), 0..=services),
        proptest::collection::vec(pod, 0..=pods),
    )
        .prop_map(|(namespaces, services, pods)| Cluster {
            namespaces,
            services,
            pods,
        })
}

/// One change to a cluster: some objects dropped, some added or replaced,
/// some Namespace objects toggled; most of the cluster stays as it was,
/// so names read by unchanged names (CNAME targets, SRV targets) change
/// under them.
#[derive(Clone, Debug)]
struct Step {
    drop: Vec<bool>,
    add: Cluster,
}

fn step() -> impl Strategy<Value = Step> {
    (
        proptest::collection::vec(proptest::bool::weighted(0.2), 16),
        cluster(3, 2),
    )
        .prop_map(|(drop, add)| Step { drop, add })
}

impl Cluster {
    fn after(&self, step: &Step) -> Cluster {
        let mut kept = step.drop.iter().cycle();
        let mut keep = || !kept.next().copied().unwrap_or(false);
        let mut services: Vec<Svc> = self.services.iter().filter(|_| keep()).cloned().collect();
        services.extend(step.add.services.iter().cloned());
        let mut pods: Vec<Pod> = self.pods.iter().filter(|_| keep()).cloned().collect();
        pods.extend(step.add.pods.iter().cloned());
        Cluster {
            namespaces: self.namespaces ^ step.add.namespaces,
            services,
            pods,
        }
    }
}

fn yaml(c: &Cluster) -> String {
    let mut y = String::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        if c.namespaces & (1 << i) != 0 {
            let _ = writeln!(
                y,
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}"
            );
        }
    }
    // One object per name: a later one replaces an earlier one.
    let services: BTreeMap<_, _> = c.services.iter().map(|s| ((s.ns, s.name), s)).collect();
    let pods: BTreeMap<_, _> = c.pods.iter().map(|p| ((p.ns, p.name), p)).collect();
    for s in services.values() {
        let ns = NAMESPACES[s.ns];
        let name = format!("s{}", s.name);
        let _ = writeln!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:"
        );
        let _ = writeln!(y, "  publishNotReadyAddresses: {}", s.publish_not_ready);
        let ip = format!("10.96.{}.{}", s.ns, s.name);
        match &s.kind {
            Type::ClusterIp => {
                let _ = writeln!(y, "  clusterIP: {ip}");
            }
            Type::DualStack => {
                let _ = writeln!(
                    y,
                    "  clusterIP: {ip}\n  clusterIPs: [{ip}, \"fd00:96::{}:{}\"]\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack",
                    s.ns, s.name
                );
            }
            Type::Headless => {
                let _ = writeln!(y, "  clusterIP: None");
            }
            Type::ExternalIn(n, t) => {
                let _ = writeln!(
                    y,
                    "  type: ExternalName\n  externalName: s{t}.{}.svc.cluster.local",
                    NAMESPACES[*n]
                );
            }
            Type::ExternalOut => {
                let _ = writeln!(y, "  type: ExternalName\n  externalName: www.example.test");
            }
            Type::ExternalIp => {
                let _ = writeln!(y, "  type: ExternalName\n  externalName: 192.0.2.1");
            }
        }
        let ports = [
            "{name: http, port: 80}",
            "{name: dns, port: 53, protocol: UDP}",
            "{name: metrics, port: 9090}",
        ];
        let ports: Vec<&str> = (0..3)
            .filter(|b| s.ports & (1 << b) != 0)
            .map(|b| ports[b])
            .collect();
        let _ = writeln!(y, "  ports: [{}]", ports.join(", "));
        if s.endpoints.is_empty() {
            continue;
        }
        let _ = writeln!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{}]\nendpoints:",
            ports.join(", ")
        );
        for e in &s.endpoints {
            let _ = writeln!(y, "- addresses: [10.244.0.{}]", e.ip);
            if let Some(h) = e.hostname {
                let _ = writeln!(y, "  hostname: h{h}");
            }
            let _ = writeln!(y, "  conditions: {{ready: {}}}", e.ready);
        }
    }
    for p in pods.values() {
        let _ = writeln!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{}, namespace: {}}}\nspec:",
            p.name, NAMESPACES[p.ns]
        );
        if let Some(h) = p.hostname {
            let _ = writeln!(y, "  hostname: h{h}\n  subdomain: s0");
        }
        let _ = writeln!(
            y,
            "  containers: [{{name: c, image: busybox}}]\nstatus:\n  podIP: 10.244.0.{0}\n  podIPs: [{{ip: 10.244.0.{0}}}]",
            p.ip
        );
    }
    y
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![
            Just(PodMode::Disabled),
            Just(PodMode::Insecure),
            Just(PodMode::Verified)
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(pods, filtered, two_zones)| {
            let mut c = Config {
                pods,
                nameserver_ips: vec!["10.96.0.53".parse().unwrap()],
                ..Config::default()
            };
            if filtered {
                c.namespaces = Some(vec!["a".into(), "B".into()]);
            }
            if two_zones {
                c.zones.push("example.org".into());
            }
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn following_change_sets_gives_the_index_a_fresh_build_gives(
        config in config(),
        first in cluster(8, 6),
        steps in proptest::collection::vec(step(), 1..8),
        use_diff in any::<bool>(),
    ) {
        let zones = zones(&config);
        let mut state = ClusterState::new();
        let mut index = Index::build(&state, &config, &zones, 1);
        let mut c = Cluster { namespaces: 0, services: Vec::new(), pods: Vec::new() };
        let first = Step { drop: vec![true], add: first };
        for (i, step) in std::iter::once(&first).chain(&steps).enumerate() {
            c = c.after(step);
            let (later, changes) = next(&state, objects(&yaml(&c)));
            let changes = if use_diff { state.diff(&later) } else { changes };
            let serial = i as u32 + 2;
            let (applied, _) = index.apply(&later, &changes, &config, &zones, serial);
            let fresh = Index::build(&later, &config, &zones, serial);
            assert_same(&applied, &fresh);
            prop_assert_eq!(applied.soa(0), fresh.soa(0));
            // The old version is untouched by the change.
            assert_same(&index, &Index::build(&state, &config, &zones, serial - 1));
            index = applied;
            state = later;
        }
    }
}

fn cluster_of(services: usize) -> Cluster {
    Cluster {
        namespaces: 0,
        services: (0..services)
            .map(|name| Svc {
                ns: 0,
                name,
                kind: Type::Headless,
                ports: 1,
                publish_not_ready: false,
                endpoints: vec![Endpoint {
                    ip: name as u8,
                    hostname: None,
                    ready: true,
                }],
            })
            .collect(),
        pods: Vec::new(),
    }
}

#[test]
fn a_change_to_one_service_reencodes_only_its_names() {
    let config = Config::default();
    let zones = zones(&config);
    let (before, _) = next(&ClusterState::new(), objects(&yaml(&cluster_of(4))));
    let index = Index::build(&before, &config, &zones, 1);
    let mut c = cluster_of(4);
    c.services[2].endpoints[0].ready = false;
    let (after, changes) = next(&before, objects(&yaml(&c)));
    let (applied, encoded) = index.apply(&after, &changes, &config, &zones, 2);
    // The headless s2's name, its port name and its endpoint name (reverse
    // names are answered on the fly).
    assert_eq!(encoded, 3);
    assert!(
        index
            .get(&encode_name("s2.a.svc.cluster.local").unwrap())
            .is_some()
    );
    assert!(
        applied
            .get(&encode_name("s2.a.svc.cluster.local").unwrap())
            .is_none()
    );
    assert_same(&applied, &Index::build(&after, &config, &zones, 2));
}

#[test]
fn a_namespace_goes_away_with_its_last_object_and_the_serial_moves() {
    let config = Config::default();
    let zones = zones(&config);
    let ns = encode_name("a.svc.cluster.local").unwrap();
    let (before, _) = next(&ClusterState::new(), objects(&yaml(&cluster_of(1))));
    let index = Index::build(&before, &config, &zones, 1);
    assert!(index.get(&ns).is_some());
    let (after, changes) = next(&before, Vec::new());
    let (applied, _) = index.apply(&after, &changes, &config, &zones, 2);
    assert!(applied.get(&ns).is_none());
    assert!(
        applied
            .get(&encode_name("svc.cluster.local").unwrap())
            .is_some()
    );
    assert_ne!(applied.soa(0), index.soa(0));
    assert_same(&applied, &Index::build(&after, &config, &zones, 2));
}
