//! The route table followed through change sets equals a table built
//! whole from the same state: random sequences of Ingress, Service,
//! EndpointSlice and IngressClass changes.

use std::collections::BTreeMap;

use ferry_model::{ClusterState, Kind, Object, ObjectKey, Update};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::tests::{backend, class, ingress, services};
use super::*;

const HOSTS: &[&str] = &["", "foo.com", "*.foo.com", "bar.com"];
const PATHS: &[&str] = &["/", "/app", "/app/x", "relative"];
const SERVICES: &[&str] = &["a", "b", "c", "missing"];
const CREATED: &[&str] = &[
    "2026-01-01T00:00:00Z",
    "2026-01-02T00:00:00Z",
    "2026-01-03T00:00:00Z",
];

/// A rule: a host of `HOSTS` and its paths, (path of `PATHS`, Exact or
/// Prefix, service of `SERVICES`).
type Rule = (usize, Vec<(usize, bool, usize)>);

/// One step of a change sequence.
#[derive(Clone, Debug)]
enum Step {
    /// Ingress `n`: class (0 ferry, 1 another, 2 none), age, default
    /// backend, rules of (host, [(path, exact, service)]), TLS.
    Ingress {
        n: usize,
        class: usize,
        created: usize,
        default: Option<usize>,
        rules: Vec<Rule>,
        tls: bool,
    },
    DeleteIngress(usize),
    /// Service `a`..`c` removed, or given back.
    DeleteService(usize),
    RestoreService(usize),
    /// The endpoints of a Service not ready, or ready again.
    Unready(usize),
    /// The `ferry` IngressClass is the default class, or not.
    DefaultClass(bool),
}

fn step() -> impl Strategy<Value = Step> {
    let path = (0..PATHS.len(), any::<bool>(), 0..SERVICES.len());
    let rule = (0..HOSTS.len(), proptest::collection::vec(path, 0..3));
    let ingress = (
        0..5usize,
        prop_oneof![4 => Just(0usize), 1 => Just(1), 1 => Just(2)],
        0..CREATED.len(),
        proptest::option::of(0..SERVICES.len()),
        proptest::collection::vec(rule, 0..3),
        any::<bool>(),
    )
        .prop_map(|(n, class, created, default, rules, tls)| Step::Ingress {
            n,
            class,
            created,
            default,
            rules,
            tls,
        });
    prop_oneof![
        6 => ingress,
        2 => (0..5usize).prop_map(Step::DeleteIngress),
        1 => (0..3usize).prop_map(Step::DeleteService),
        1 => (0..3usize).prop_map(Step::RestoreService),
        1 => (0..3usize).prop_map(Step::Unready),
        1 => any::<bool>().prop_map(Step::DefaultClass),
    ]
}

fn updates(step: &Step, all_services: &[Object]) -> Vec<Update> {
    let named = |kind: Kind, name: &'static str| {
        all_services
            .iter()
            .filter(move |o| o.kind() == kind && o.key().name.name.starts_with(name))
            .cloned()
    };
    match step {
        Step::Ingress {
            n,
            class,
            created,
            default,
            rules,
            tls,
        } => {
            let mut spec = json!({});
            match class {
                0 => spec["ingressClassName"] = json!("ferry"),
                1 => spec["ingressClassName"] = json!("other"),
                _ => {}
            }
            if let Some(d) = default {
                spec["defaultBackend"] = backend(SERVICES[*d]);
            }
            let rules: Vec<Value> = rules
                .iter()
                .map(|(host, paths)| {
                    let paths: Vec<Value> = paths
                        .iter()
                        .map(|(p, exact, s)| {
                            json!({"path": PATHS[*p],
                                   "pathType": if *exact { "Exact" } else { "Prefix" },
                                   "backend": backend(SERVICES[*s])})
                        })
                        .collect();
                    let mut rule = json!({"http": {"paths": paths}});
                    if !HOSTS[*host].is_empty() {
                        rule["host"] = json!(HOSTS[*host]);
                    }
                    rule
                })
                .collect();
            if !rules.is_empty() {
                spec["rules"] = json!(rules);
            }
            if *tls {
                spec["tls"] = json!([{"hosts": ["foo.com"], "secretName": "tls"}]);
            }
            let name = format!("ing-{n}");
            vec![Update::Apply(ingress(
                &name,
                CREATED[*created],
                json!({}),
                spec,
            ))]
        }
        Step::DeleteIngress(n) => vec![Update::Delete(ObjectKey::new(
            Kind::Ingress,
            "default",
            format!("ing-{n}").as_str(),
        ))],
        Step::DeleteService(s) => named(Kind::Service, SERVICES[*s])
            .map(|o| Update::Delete(o.key()))
            .collect(),
        Step::RestoreService(s) => named(Kind::Service, SERVICES[*s])
            .chain(named(Kind::EndpointSlice, SERVICES[*s]))
            .map(Update::Apply)
            .collect(),
        Step::Unready(s) => named(Kind::EndpointSlice, SERVICES[*s])
            .map(|o| {
                let mut v: Value = serde_json::from_slice(&o.to_json().unwrap()).unwrap();
                v["endpoints"][0]["conditions"]["ready"] = json!(false);
                let slice = serde_json::from_value(v).unwrap();
                Update::Apply(Object::EndpointSlice(std::sync::Arc::new(slice)))
            })
            .collect(),
        Step::DefaultClass(default) => {
            vec![Update::Apply(class("ferry", class::CONTROLLER, *default))]
        }
    }
}

/// Everything a table routes by, in a comparable form.
fn dump(t: &RouteTable) -> String {
    let backend = |b: &Arc<Backend>| {
        format!(
            "{:?} {} {:?} {:?}",
            b.ingress, b.target, b.endpoints, b.protocol
        )
    };
    // A host's effective fallback: its own, else the controller's.
    let host = |r: &HostRoutes| {
        let exact: BTreeMap<_, _> = r.exact.iter().map(|(k, b)| (k, backend(b))).collect();
        let prefix: BTreeMap<_, _> = r.prefix.iter().map(|(k, b)| (k, backend(b))).collect();
        format!(
            "exact {exact:?} prefix {prefix:?} fallback {:?}",
            r.fallback
                .as_ref()
                .or(t.default_backend.as_ref())
                .map(backend)
        )
    };
    let hosts: BTreeMap<_, _> = t.hosts.iter().map(|(k, r)| (k, host(r))).collect();
    let wildcards: BTreeMap<_, _> = t.wildcards.iter().map(|(k, r)| (k, host(r))).collect();
    let tls: Vec<_> = t.tls.iter().map(|i| name_of(i)).collect();
    format!(
        "version {}\nhosts {hosts:#?}\nwildcards {wildcards:#?}\nany {}\ningresses {:?}\nproblems {:#?}\ntls {tls:?}",
        t.version,
        host(&t.any_host),
        t.ingresses,
        t.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn a_table_followed_through_change_sets_equals_a_whole_build(
        steps in proptest::collection::vec(step(), 1..25),
        controller_default in any::<bool>(),
    ) {
        let config = RoutesConfig {
            default_backend: controller_default.then(|| "default/b:http".parse().unwrap()),
            ..RoutesConfig::default()
        };
        let all_services = services();
        let mut objects = all_services.clone();
        objects.push(class("ferry", class::CONTROLLER, false));
        let mut state = ClusterState::from_objects(objects);
        let mut index = RouteIndex::new(config.clone());
        index.apply(&state, None);
        for step in &steps {
            let (next, changes) = state.apply(updates(step, &all_services));
            let followed = index.apply(&next, Some(&changes));
            let whole = RouteTable::build(&next, &config);
            prop_assert_eq!(dump(&followed), dump(&whole), "after {:?}", step);
            state = next;
        }
    }
}

#[test]
fn an_unchanged_host_is_shared_with_the_previous_table() {
    let mut objects = services();
    objects.push(class("ferry", class::CONTROLLER, false));
    let spec = |host: &str, svc: &str| {
        json!({"ingressClassName": "ferry", "rules": [{"host": host, "http": {"paths":
            [{"path": "/", "pathType": "Prefix", "backend": backend(svc)}]}}]})
    };
    objects.push(ingress("one", CREATED[0], json!({}), spec("one.com", "a")));
    objects.push(ingress("two", CREATED[0], json!({}), spec("two.com", "b")));
    let state = ClusterState::from_objects(objects);
    let mut index = RouteIndex::new(RoutesConfig::default());
    let before = index.apply(&state, None);
    let (next, changes) = state.apply([Update::Apply(ingress(
        "two",
        CREATED[0],
        json!({}),
        spec("two.com", "c"),
    ))]);
    let after = index.apply(&next, Some(&changes));
    assert!(Arc::ptr_eq(
        &before.hosts["one.com"],
        &after.hosts["one.com"]
    ));
    assert!(!Arc::ptr_eq(
        &before.hosts["two.com"],
        &after.hosts["two.com"]
    ));
    assert_eq!(
        after
            .lookup("two.com", "/")
            .unwrap()
            .target
            .service
            .name
            .as_ref(),
        "c"
    );
}
