//! The route table against the Ingress v1 rules: the Kubernetes docs'
//! example tables, hosts, class selection, default backends, conflicts,
//! endpoints, bad Ingresses; and a property test against a brute-force
//! matcher written straight from the spec's wording.

use std::sync::Arc;

use ferry_model::k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use ferry_model::{ClusterState, Object};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// Services `a`..`h` in `default`, each with one ready endpoint
/// 10.0.0.N:8080 behind port `http` (80).
pub(super) fn services() -> Vec<Object> {
    let mut yaml = String::new();
    for (i, name) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  clusterIP: 10.96.0.{n}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
             addressType: IPv4\nports:\n- {{name: http, port: 8080}}\n\
             endpoints:\n- addresses: [10.0.0.{n}]\n  conditions: {{ready: true}}\n---\n",
            n = i + 1
        ));
    }
    let d = ferry_model::decode("services.yaml", &yaml);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    d.objects.into_iter().map(|o| o.object).collect()
}

/// An Ingress from its spec, unvalidated (so bad ones can be tested).
pub(super) fn ingress(name: &str, created: &str, annotations: Value, spec: Value) -> Object {
    let v = json!({
        "metadata": {"name": name, "namespace": "default",
                     "creationTimestamp": created, "annotations": annotations},
        "spec": spec,
    });
    Object::Ingress(Arc::new(serde_json::from_value::<Ingress>(v).unwrap()))
}

pub(super) fn class(name: &str, controller: &str, default: bool) -> Object {
    let v = json!({
        "metadata": {"name": name, "annotations":
            {"ingressclass.kubernetes.io/is-default-class": default.to_string()}},
        "spec": {"controller": controller},
    });
    Object::IngressClass(Arc::new(serde_json::from_value::<IngressClass>(v).unwrap()))
}

pub(super) fn backend(svc: &str) -> Value {
    json!({"service": {"name": svc, "port": {"number": 80}}})
}

/// An Ingress of class `ferry` routing `host` with `paths` = (path, type, service).
fn rules(name: &str, host: &str, paths: &[(&str, &str, &str)]) -> Object {
    ingress(
        name,
        "2026-01-01T00:00:00Z",
        json!({}),
        rules_spec(host, paths),
    )
}

fn rules_spec(host: &str, paths: &[(&str, &str, &str)]) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(p, t, s)| json!({"path": p, "pathType": t, "backend": backend(s)}))
        .collect();
    let mut rule = json!({"http": {"paths": paths}});
    if !host.is_empty() {
        rule["host"] = json!(host);
    }
    json!({"ingressClassName": "ferry", "rules": [rule]})
}

fn table(objects: Vec<Object>) -> RouteTable {
    table_with(objects, &RoutesConfig::default())
}

fn table_with(mut objects: Vec<Object>, config: &RoutesConfig) -> RouteTable {
    objects.extend(services());
    objects.push(class("ferry", class::CONTROLLER, false));
    RouteTable::build(&ClusterState::from_objects(objects), config)
}

/// The Service a request reaches; None: 404.
fn route(t: &RouteTable, host: &str, path: &str) -> Option<String> {
    t.lookup(host, path)
        .map(|b| b.target.service.name.to_string())
}

/// The Kubernetes docs' example tables (path types, hostname wildcards),
/// as data shared with the lab run (ferry/tests/lab_conformance.rs).
const DOCS_EXAMPLES: &str =
    include_str!("../../../../ferry/tests/fixtures/conformance/ingress_docs_examples.feature");

/// The rows of the data file's Examples table whose header starts with
/// `first_column`, as cells (header row left out).
fn docs_table(first_column: &str) -> Vec<Vec<String>> {
    let cells = |l: &str| -> Vec<String> {
        let inner = l.trim().trim_matches('|');
        inner.split('|').map(|c| c.trim().to_string()).collect()
    };
    let mut rows = Vec::new();
    let mut inside = false;
    for line in DOCS_EXAMPLES.lines().map(str::trim) {
        if !line.starts_with('|') {
            inside = false;
            continue;
        }
        let row = cells(line);
        if row[0] == first_column {
            inside = true;
        } else if inside {
            rows.push(row);
        }
    }
    assert!(
        !rows.is_empty(),
        "no {first_column} table in the docs examples"
    );
    rows
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('`')
}

/// "served by" column: the 1-based rule, or `none`.
fn served_by(cell: &str) -> Option<usize> {
    cell.parse().ok()
}

#[test]
fn the_kubernetes_docs_path_examples_route_as_the_table_says() {
    let names = ["a", "b", "c"];
    let rows = docs_table("Kind");
    assert_eq!(rows.len(), 18);
    for row in rows {
        let (kind, want) = (row[0].as_str(), served_by(&row[4]));
        let typed: Vec<(&str, &str)> = row[1]
            .split(',')
            .map(|p| match p.split_once('(') {
                Some((path, t)) => (unquote(path), t.trim_end_matches(')')),
                None => (unquote(p), kind),
            })
            .collect();
        let paths: Vec<(&str, &str, &str)> = typed
            .iter()
            .zip(names)
            .map(|((p, t), s)| (*p, *t, s))
            .collect();
        let requests: Vec<&str> = match row[2].as_str() {
            "(all paths)" => vec!["/", "/anything/at/all"],
            r => r.split(',').map(unquote).collect(),
        };
        let t = table(vec![rules("ing", "", &paths)]);
        assert!(t.problems().is_empty(), "{:?}", t.problems());
        for request in requests {
            assert_eq!(
                route(&t, "example.com", request).as_deref(),
                want.map(|i| names[i - 1]),
                "docs row {row:?}: rules {paths:?}, request {request}"
            );
        }
    }
}

#[test]
fn the_kubernetes_docs_hostname_wildcard_examples_route_as_the_table_says() {
    let rows = docs_table("Host");
    assert_eq!(rows.len(), 3);
    for row in rows {
        let t = table(vec![rules(
            "wild",
            unquote(&row[0]),
            &[("/", "Prefix", "a")],
        )]);
        assert_eq!(
            route(&t, unquote(&row[1]), "/").as_deref(),
            served_by(&row[3]).map(|_| "a"),
            "docs row {row:?}"
        );
    }
}

#[test]
fn a_wildcard_host_matches_exactly_one_label() {
    let t = table(vec![
        rules("wild", "*.foo.com", &[("/", "Prefix", "a")]),
        rules("exact", "bar.foo.com", &[("/", "Prefix", "b")]),
    ]);
    assert_eq!(route(&t, "bar.foo.com", "/").as_deref(), Some("b"));
    assert_eq!(route(&t, "baz.foo.com", "/").as_deref(), Some("a"));
    assert_eq!(route(&t, "baz.bar.foo.com", "/"), None);
    assert_eq!(route(&t, "foo.com", "/"), None);
}

#[test]
fn hosts_match_without_case_port_or_final_dot_and_unknown_hosts_use_the_hostless_rules() {
    let t = table(vec![
        rules("host", "foo.bar.com", &[("/", "Prefix", "a")]),
        rules("any", "", &[("/", "Prefix", "b")]),
    ]);
    assert_eq!(route(&t, "FOO.bar.com:8080", "/x").as_deref(), Some("a"));
    assert_eq!(route(&t, "foo.bar.com.", "/x").as_deref(), Some("a"));
    assert_eq!(route(&t, "other.com", "/x").as_deref(), Some("b"));
    assert_eq!(route(&t, "[::1]:80", "/x").as_deref(), Some("b"));
    assert_eq!(route(&t, "10.1.2.3", "/x").as_deref(), Some("b"));
}

#[test]
fn a_known_host_whose_paths_do_not_match_does_not_fall_through_to_other_hosts() {
    // ingress-nginx: the host's server answers, with its default location.
    let t = table(vec![
        rules("host", "foo.com", &[("/api", "Prefix", "a")]),
        rules("any", "", &[("/", "Prefix", "b")]),
    ]);
    assert_eq!(route(&t, "foo.com", "/web"), None);
}

#[test]
fn implementation_specific_paths_match_as_prefix() {
    let t = table(vec![rules(
        "ing",
        "",
        &[("/app", "ImplementationSpecific", "a")],
    )]);
    assert_eq!(route(&t, "x", "/app/page").as_deref(), Some("a"));
    assert_eq!(route(&t, "x", "/app").as_deref(), Some("a"));
    assert_eq!(route(&t, "x", "/application"), None);
}

#[test]
fn requests_with_repeated_slashes_match_prefix_paths_element_wise() {
    let t = table(vec![rules("ing", "", &[("/a/b", "Prefix", "a")])]);
    assert_eq!(route(&t, "x", "//a///b/c").as_deref(), Some("a"));
    assert_eq!(route(&t, "x", "/a"), None);
}

#[test]
fn ingress_class_selection_follows_ingress_nginx() {
    let spec = |class: Option<&str>| {
        let mut s = rules_spec("", &[("/", "Prefix", "a")]);
        match class {
            Some(c) => s["ingressClassName"] = json!(c),
            None => {
                s.as_object_mut().unwrap().remove("ingressClassName");
            }
        }
        s
    };
    let t0 = "2026-01-01T00:00:00Z";
    let objects = vec![
        ingress("named-ferry", t0, json!({}), spec(Some("ferry"))),
        ingress("named-other", t0, json!({}), spec(Some("other"))),
        ingress("named-unknown", t0, json!({}), spec(Some("nope"))),
        ingress(
            "legacy-ferry",
            t0,
            json!({"kubernetes.io/ingress.class": "ferry"}),
            spec(None),
        ),
        ingress(
            "legacy-nginx",
            t0,
            json!({"kubernetes.io/ingress.class": "nginx"}),
            spec(None),
        ),
        ingress(
            "field-beats-annotation",
            t0,
            json!({"kubernetes.io/ingress.class": "ferry"}),
            spec(Some("other")),
        ),
        ingress("classless", t0, json!({}), spec(None)),
        class("other", "example.com/other", false),
        class("nginx", "k8s.io/ingress-nginx", false),
    ];
    let names = |t: &RouteTable| -> Vec<String> {
        t.ingresses().iter().map(|n| n.name.to_string()).collect()
    };
    // Defaults: ferry's own class only; no default class, so no class-less ones.
    let t = table(objects.clone());
    assert_eq!(names(&t), ["legacy-ferry", "named-ferry"]);
    // Taking over from ingress-nginx by class name or by controller value.
    let by_class = RoutesConfig {
        classes: ClassConfig {
            extra_classes: vec!["nginx".into()],
            ..ClassConfig::default()
        },
        ..RoutesConfig::default()
    };
    let t = table_with(objects.clone(), &by_class);
    assert_eq!(names(&t), ["legacy-ferry", "legacy-nginx", "named-ferry"]);
    let by_controller = RoutesConfig {
        classes: ClassConfig {
            controllers: vec![class::CONTROLLER.into(), "k8s.io/ingress-nginx".into()],
            ..ClassConfig::default()
        },
        ..RoutesConfig::default()
    };
    let t = table_with(objects.clone(), &by_controller);
    assert_eq!(names(&t), ["legacy-ferry", "legacy-nginx", "named-ferry"]);
    // A different controller value: ferry's own class is no longer ferry's.
    let renamed = RoutesConfig {
        classes: ClassConfig {
            controllers: vec!["example.com/other".into()],
            ..ClassConfig::default()
        },
        ..RoutesConfig::default()
    };
    let t = table_with(objects.clone(), &renamed);
    assert_eq!(names(&t), ["field-beats-annotation", "named-other"]);
    // A default IngressClass of ferry's takes the class-less Ingresses.
    let mut with_default = objects.clone();
    with_default.push(class("ferry-default", class::CONTROLLER, true));
    let t = table(with_default);
    assert_eq!(names(&t), ["classless", "legacy-ferry", "named-ferry"]);
    // A default class of another controller does not.
    let mut other_default = objects;
    other_default.push(class("x-default", "example.com/other", true));
    let t = table(other_default);
    assert_eq!(names(&t), ["legacy-ferry", "named-ferry"]);
}

#[test]
fn default_backends_serve_what_no_rule_matches_as_in_ingress_nginx() {
    let t0 = "2026-01-01T00:00:00Z";
    let t1 = "2026-01-02T00:00:00Z";
    let mut with_default = rules_spec("foo.com", &[("/api", "Prefix", "a")]);
    with_default["defaultBackend"] = backend("b");
    let catch_all = json!({"ingressClassName": "ferry", "defaultBackend": backend("c")});
    let newer_catch_all = json!({"ingressClassName": "ferry", "defaultBackend": backend("d")});
    let objects = vec![
        ingress("host-default", t0, json!({}), with_default),
        ingress("catch-all", t0, json!({}), catch_all),
        ingress("catch-all-2", t1, json!({}), newer_catch_all),
        rules("plain", "bar.com", &[("/api", "Prefix", "e")]),
    ];
    let t = table(objects.clone());
    // The host's own Ingress's defaultBackend.
    assert_eq!(route(&t, "foo.com", "/web").as_deref(), Some("b"));
    assert_eq!(route(&t, "foo.com", "/api").as_deref(), Some("a"));
    // Unknown hosts: the oldest catch-all Ingress; the newer one is reported.
    assert_eq!(route(&t, "nowhere.com", "/").as_deref(), Some("c"));
    assert!(t.problems().iter().any(|p| matches!(p,
        Problem::Conflict { loser, .. } if &*loser.name == "catch-all-2")));
    // A host without a defaultBackend: the controller's default, else 404.
    assert_eq!(route(&t, "bar.com", "/web"), None);
    let config = RoutesConfig {
        default_backend: Some("default/f:http".parse().unwrap()),
        ..RoutesConfig::default()
    };
    let t = table_with(objects, &config);
    assert_eq!(route(&t, "bar.com", "/web").as_deref(), Some("f"));
    assert_eq!(route(&t, "nowhere.com", "/").as_deref(), Some("c"));
    let t = table_with(
        vec![rules("plain", "bar.com", &[("/api", "Prefix", "e")])],
        &config,
    );
    assert_eq!(route(&t, "nowhere.com", "/").as_deref(), Some("f"));
}

#[test]
fn the_oldest_ingress_wins_a_conflict_and_the_newer_one_is_reported() {
    let spec = |svc| rules_spec("foo.com", &[("/app", "Prefix", svc), ("/x", "Exact", svc)]);
    let t = table(vec![
        ingress("newer", "2026-01-02T00:00:00Z", json!({}), spec("a")),
        ingress("older", "2026-01-01T00:00:00Z", json!({}), spec("b")),
        // Same age: namespace/name order decides.
        ingress("same-age-z", "2026-01-03T00:00:00Z", json!({}), spec("c")),
        ingress("same-age-a", "2026-01-03T00:00:00Z", json!({}), spec("d")),
    ]);
    assert_eq!(route(&t, "foo.com", "/app").as_deref(), Some("b"));
    assert_eq!(route(&t, "foo.com", "/x").as_deref(), Some("b"));
    let conflicts: Vec<(String, String)> = t
        .problems()
        .iter()
        .filter_map(|p| match p {
            Problem::Conflict { winner, loser, .. } => {
                Some((winner.name.to_string(), loser.name.to_string()))
            }
            _ => None,
        })
        .collect();
    let pair = |w: &str, l: &str| (w.to_string(), l.to_string());
    assert_eq!(
        conflicts,
        [
            pair("older", "newer"),
            pair("older", "newer"),
            pair("older", "same-age-a"),
            pair("older", "same-age-a"),
            pair("older", "same-age-z"),
            pair("older", "same-age-z"),
        ]
    );
    // The message names both Ingresses and the rule.
    let text = t.problems()[0].to_string();
    assert!(
        text.contains("default/newer") && text.contains("default/older") && text.contains("/app"),
        "{text}"
    );
    // Prefix /app and /app/ are the same rule.
    let t = table(vec![
        ingress(
            "one",
            "2026-01-01T00:00:00Z",
            json!({}),
            rules_spec("", &[("/app", "Prefix", "a")]),
        ),
        ingress(
            "two",
            "2026-01-02T00:00:00Z",
            json!({}),
            rules_spec("", &[("/app/", "Prefix", "b")]),
        ),
    ]);
    assert_eq!(route(&t, "x", "/app/").as_deref(), Some("a"));
    assert_eq!(t.problems().len(), 1);
}

#[test]
fn a_bad_ingress_is_reported_by_name_and_field_and_the_rest_still_route() {
    let t0 = "2026-01-01T00:00:00Z";
    let bad_path = rules_spec(
        "bad.com",
        &[("/ok", "Prefix", "a"), ("relative", "Prefix", "a")],
    );
    let bad_type = rules_spec("bad2.com", &[("/x", "Regex", "a")]);
    let bad_host = rules_spec("foo.*.com", &[("/", "Prefix", "a")]);
    let resource = json!({"ingressClassName": "ferry", "defaultBackend":
        {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b"}}});
    let t = table(vec![
        ingress("bad-path", t0, json!({}), bad_path),
        ingress("bad-type", t0, json!({}), bad_type),
        ingress("bad-host", t0, json!({}), bad_host),
        ingress("resource", t0, json!({}), resource),
        rules("good", "good.com", &[("/", "Prefix", "b")]),
    ]);
    assert_eq!(route(&t, "good.com", "/").as_deref(), Some("b"));
    // Nothing of a bad Ingress routes, not even its good paths.
    assert_eq!(route(&t, "bad.com", "/ok"), None);
    let fields: Vec<String> = t
        .problems()
        .iter()
        .map(|p| match p {
            Problem::Invalid { ingress, field, .. } => format!("{ingress} {field}"),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        fields,
        [
            "default/bad-host spec.rules[0].host",
            "default/bad-path spec.rules[0].http.paths[1].path",
            "default/bad-type spec.rules[0].http.paths[0].pathType",
            "default/resource spec.defaultBackend",
        ]
    );
    assert_eq!(t.ingresses().len(), 1);
}

#[test]
fn backends_resolve_to_ready_endpoints_of_the_service_port_by_number_or_name() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
        spec:\n  clusterIP: 10.96.1.1\n  ports:\n  - {name: http, port: 80, targetPort: web}\n  - {name: admin, port: 9000}\n---\n\
        apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
        metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
        addressType: IPv4\nports:\n- {name: http, port: 8080}\n- {name: admin, port: 9001}\n\
        endpoints:\n- addresses: [10.1.0.2]\n  conditions: {ready: true}\n\
        - addresses: [10.1.0.1]\n  conditions: {ready: true}\n\
        - addresses: [10.1.0.3]\n  conditions: {ready: false, serving: true, terminating: true}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: draining, namespace: default}\n\
        spec:\n  clusterIP: 10.96.1.2\n  ports:\n  - {name: http, port: 80}\n---\n\
        apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
        metadata: {name: draining-1, namespace: default, labels: {kubernetes.io/service-name: draining}}\n\
        addressType: IPv4\nports:\n- {name: http, port: 80}\n\
        endpoints:\n- addresses: [10.1.1.1]\n  conditions: {ready: false, serving: true, terminating: true}\n\
        - addresses: [10.1.1.2]\n  conditions: {ready: false, serving: false, terminating: true}\n";
    let mut objects: Vec<Object> = ferry_model::decode("web.yaml", yaml)
        .objects
        .into_iter()
        .map(|o| o.object)
        .collect();
    let path = |p: &str, svc: &str, port: Value| {
        json!({"path": p, "pathType": "Prefix",
        "backend": {"service": {"name": svc, "port": port}}})
    };
    objects.push(ingress(
        "web",
        "2026-01-01T00:00:00Z",
        json!({}),
        json!({"ingressClassName": "ferry", "rules": [{"http": {"paths": [
            path("/num", "web", json!({"number": 80})),
            path("/name", "web", json!({"name": "admin"})),
            path("/draining", "draining", json!({"number": 80})),
            path("/missing", "nope", json!({"number": 80})),
            path("/noport", "web", json!({"number": 81})),
        ]}}]}),
    ));
    let t = table(objects);
    let eps = |p: &str| -> Vec<String> {
        t.lookup("x", p)
            .unwrap()
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(eps("/num"), ["10.1.0.1:8080", "10.1.0.2:8080"]);
    assert_eq!(eps("/name"), ["10.1.0.1:9001", "10.1.0.2:9001"]);
    assert_eq!(eps("/draining"), ["10.1.1.1:80"]);
    assert!(eps("/missing").is_empty());
    assert!(eps("/noport").is_empty());
    let reported: Vec<String> = t.problems().iter().map(ToString::to_string).collect();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(reported[0].contains("default/nope:80") && reported[0].contains("no such Service"));
    assert!(reported[1].contains("default/web:81") && reported[1].contains("no TCP port 81"));
}

#[test]
fn a_service_ref_parses_as_namespace_name_port() {
    let r: ServiceRef = "ns/svc:http".parse().unwrap();
    assert_eq!(r.to_string(), "ns/svc:http");
    let r: ServiceRef = "ns/svc:8080".parse().unwrap();
    assert_eq!(r.port, PortRef::Number(8080));
    assert!("svc:80".parse::<ServiceRef>().is_err());
    assert!("ns/svc".parse::<ServiceRef>().is_err());
}

// The property: for any set of rules from a few Ingresses and any request,
// the table answers what the spec's wording gives when every rule is tried.

const HOSTS: [&str; 5] = ["", "foo.com", "*.foo.com", "a.foo.com", "bar.com"];
const REQUEST_HOSTS: [&str; 6] = [
    "foo.com",
    "a.foo.com",
    "b.foo.com",
    "x.a.foo.com",
    "bar.com",
    "zzz",
];
const ELEMENTS: [&str; 3] = ["a", "b", "ab"];

#[derive(Clone, Debug)]
struct Rule {
    host: usize,
    path: String,
    exact: bool,
}

fn path_strategy() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(0..ELEMENTS.len(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(elems, trailing)| {
            let mut p: String = elems.iter().map(|e| format!("/{}", ELEMENTS[*e])).collect();
            if p.is_empty() || trailing {
                p.push('/');
            }
            p
        })
}

fn rule_strategy() -> impl Strategy<Value = Rule> {
    (0..HOSTS.len(), path_strategy(), any::<bool>()).prop_map(|(host, path, exact)| Rule {
        host,
        path,
        exact,
    })
}

fn elements(p: &str) -> Vec<&str> {
    p.split('/').filter(|e| !e.is_empty()).collect()
}

/// The spec, tried rule by rule: the host (exact, else a one-label
/// wildcard, else no host), then every path of that host: the longest
/// match, Exact over Prefix on a tie, the oldest Ingress first among equals.
fn brute_force(ingresses: &[Vec<Rule>], host: &str, path: &str) -> Option<usize> {
    let all: Vec<(usize, &Rule)> = ingresses
        .iter()
        .enumerate()
        .flat_map(|(i, rs)| rs.iter().map(move |r| (i, r)))
        .collect();
    let wildcard_of = |h: &str| h.split_once('.').map(|(_, rest)| format!("*.{rest}"));
    let chosen = if all.iter().any(|(_, r)| HOSTS[r.host] == host) {
        host.to_string()
    } else {
        // No wildcard rule for it either: the rules without a host.
        wildcard_of(host)
            .filter(|w| all.iter().any(|(_, r)| HOSTS[r.host] == *w))
            .unwrap_or_default()
    };
    let request = elements(path);
    all.iter()
        .filter(|(_, r)| HOSTS[r.host] == chosen)
        .filter(|(_, r)| {
            if r.exact {
                r.path == path
            } else {
                request.starts_with(&elements(&r.path))
            }
        })
        // Longest first, Exact first, then oldest: the first in this order.
        .min_by_key(|(i, r)| {
            let len = if r.exact {
                usize::MAX
            } else {
                elements(&r.path).len()
            };
            (std::cmp::Reverse(len), *i)
        })
        .map(|(i, _)| *i)
}

proptest! {
    #[test]
    fn lookups_equal_a_brute_force_matcher(
        ingresses in proptest::collection::vec(proptest::collection::vec(rule_strategy(), 1..4), 1..6),
        requests in proptest::collection::vec((0..REQUEST_HOSTS.len(), path_strategy()), 1..20),
    ) {
        // Ingress i is older than i + 1 and sends everything to service i.
        let svc = ["a", "b", "c", "d", "e", "f"];
        let objects: Vec<Object> = ingresses
            .iter()
            .enumerate()
            .map(|(i, rs)| {
                let rules: Vec<Value> = rs.iter().map(|r| {
                    let mut rule = json!({"http": {"paths": [{"path": r.path,
                        "pathType": if r.exact { "Exact" } else { "Prefix" },
                        "backend": backend(svc[i])}]}});
                    if !HOSTS[r.host].is_empty() {
                        rule["host"] = json!(HOSTS[r.host]);
                    }
                    rule
                }).collect();
                ingress(&format!("ing-{i}"), &format!("2026-01-01T00:00:0{i}Z"), json!({}),
                    json!({"ingressClassName": "ferry", "rules": rules}))
            })
            .collect();
        let t = table(objects);
        for (h, path) in requests {
            let host = REQUEST_HOSTS[h];
            let want = brute_force(&ingresses, host, &path).map(|i| svc[i].to_string());
            prop_assert_eq!(route(&t, host, &path), want, "{} {}", host, path);
        }
    }
}

#[test]
fn explain_names_the_host_rules_and_every_matching_path_best_first() {
    let t = table(vec![
        rules(
            "shop",
            "shop.example",
            &[
                ("/", "Prefix", "a"),
                ("/cart", "Prefix", "b"),
                ("/cart/items", "Exact", "c"),
            ],
        ),
        rules("wild", "*.example", &[("/", "Prefix", "d")]),
    ]);
    let e = t.explain("Shop.Example:8080", "/cart/items");
    assert_eq!(e.host, HostMatch::Exact("shop.example"));
    let matched: Vec<(PathMatched, &str)> = e
        .matches
        .iter()
        .map(|(m, b)| (*m, &*b.target.service.name))
        .collect();
    assert_eq!(
        matched,
        [
            (PathMatched::Exact("/cart/items"), "c"),
            (PathMatched::Prefix("/cart"), "b"),
            (PathMatched::Prefix(""), "a"),
        ]
    );
    assert_eq!(
        e.backend().map(|b| &*b.target.service.name),
        route(&t, "shop.example", "/cart/items").as_deref()
    );
    // The longest Prefix when no Exact path matches.
    let e = t.explain("shop.example", "/cart/items/");
    assert_eq!(e.matches[0].0, PathMatched::Prefix("/cart"));
    // A wildcard host, and a host nothing routes.
    assert_eq!(
        t.explain("api.example", "/").host,
        HostMatch::Wildcard("example")
    );
    let none = t.explain("other.test", "/");
    assert_eq!(none.host, HostMatch::Any);
    assert!(none.matches.is_empty() && none.fallback.is_none());
    assert!(none.backend().is_none());
}
