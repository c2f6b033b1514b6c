//! The Kubernetes API source against a fake API server (`fake/mod.rs`,
//! which says where each response shape comes from): the state after the
//! first lists and the change sets of watch events equal the manifests
//! source's for the same objects and edits; bookmarks change nothing; a
//! `410 Gone` mid-watch relists to the server's truth; a dropped watch
//! resumes from its last version; an outage keeps the last state, reports
//! the source stale, and recovers; an invalid object is reported and
//! skipped; the source's progress is the lowest version every kind's
//! watch has reached, bookmarks included; started in the background
//! during an outage, it has no state and is stale until the first lists.
//!
//! Touches the network (127.0.0.1 only) and temporary files.

mod fake;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake::ApiServer;
use ferry_model::{ChangeSet, ClusterState, Object, ServicePortView, ServiceView};
use ferry_source::{Feed, FeedOptions, Follower, ManifestSource, Snapshot, SourceSpec};
use serde_json::Value;

/// The cluster both sources read, one object per file.
const OBJECTS: &[(&str, &str)] = &[
    (
        "ns-default.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n",
    ),
    (
        "ns-demo.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n",
    ),
    (
        "ns-ingress.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ingress-nginx}\n",
    ),
    (
        "node.yaml",
        "apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels: {kubernetes.io/hostname: node-1}
  annotations: {flannel.alpha.coreos.com/public-ip: 192.0.2.1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}
status:
  addresses: [{type: InternalIP, address: 192.0.2.1}]
",
    ),
    (
        "svc-web.yaml",
        "apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
",
    ),
    (
        "slice-web.yaml",
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: demo
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: true}
  nodeName: node-1
ports: [{name: http, port: 8080, protocol: TCP}]
",
    ),
    (
        "pod-web.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: demo, labels: {app: web}}
spec:
  nodeName: node-1
  containers: [{name: web, image: web}]
status:
  podIP: 10.244.1.5
  podIPs: [{ip: 10.244.1.5}]
",
    ),
    (
        "ingressclass.yaml",
        "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
",
    ),
    (
        "ingress.yaml",
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: demo}
spec:
  ingressClassName: nginx
  tls: [{hosts: [web.example], secretName: web-tls}]
  rules:
  - host: web.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
",
    ),
    (
        "secret.yaml",
        "apiVersion: v1
kind: Secret
metadata: {name: web-tls, namespace: demo}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
",
    ),
    (
        "configmap.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: tcp-services
  namespace: ingress-nginx
  labels: {app.kubernetes.io/part-of: ingress-nginx}
data: {\"9000\": \"demo/web:80\"}
",
    ),
];

/// Served too, but not asked for: an Opaque Secret (the field selector
/// leaves it out) and a ConfigMap no component reads (no label).
const NOT_WATCHED: &[&str] = &[
    "apiVersion: v1\nkind: Secret\nmetadata: {name: password, namespace: demo}\ntype: Opaque\ndata: {p: cA==}\n",
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: demo}\ndata: {a: b}\n",
];

/// One manifest as the JSON an API client would send.
fn json_of(yaml: &str) -> Value {
    let decoded = ferry_model::decode("fixture", yaml);
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    serde_json::from_slice(&decoded.objects[0].object.to_json().unwrap()).unwrap()
}

struct Setup {
    server: ApiServer,
    dir: tempfile::TempDir,
    manifests: ManifestSource,
    feed: Feed,
}

impl Setup {
    fn new(extra: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("manifests");
        std::fs::create_dir(&files).unwrap();
        let mut served = Vec::new();
        for (name, yaml) in OBJECTS {
            std::fs::write(files.join(name), yaml).unwrap();
            served.push(json_of(yaml));
        }
        served.extend(NOT_WATCHED.iter().chain(extra).map(|y| json_of(y)));
        let server = ApiServer::start(&served);
        let (manifests, first) = ManifestSource::open(&[files], false).unwrap();
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        let feed = start(&server, dir.path());
        Setup {
            server,
            dir,
            manifests,
            feed,
        }
    }

    /// Until every kind's watch is open.
    fn wait_for_watches(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.server.open_watches() < ferry_kube::watch::KINDS.len() {
            assert!(
                Instant::now() < deadline,
                "the watchers did not all connect"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("manifests").join(name)
    }

    /// Writes a manifest and reloads it; the manifests source's change set.
    fn edit_manifest(&mut self, name: &str, yaml: Option<&str>) -> ChangeSet {
        let path = self.file(name);
        match yaml {
            Some(y) => std::fs::write(&path, y).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        self.manifests.refresh(&[path]).changes
    }
}

fn start(server: &ApiServer, dir: &Path) -> Feed {
    let spec = SourceSpec::Kube {
        kubeconfig: Some(server.kubeconfig(dir)),
    };
    ferry_kube::start(&spec, FeedOptions::default()).expect("the source starts")
}

/// The object as JSON, without what the API server sets and a manifest
/// does not carry.
fn without_server_fields(o: &Object) -> serde_json::Value {
    let mut json: serde_json::Value = serde_json::from_slice(&o.to_json().unwrap()).unwrap();
    if let Some(meta) = json["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        meta.remove("uid");
    }
    json
}

type Comparable = (
    Vec<serde_json::Value>,
    Vec<ServiceView>,
    Vec<ServicePortView>,
);

fn comparable(state: &ClusterState) -> Comparable {
    (
        state.objects().map(without_server_fields).collect(),
        state.services().map(|s| (**s).clone()).collect(),
        state.service_ports().map(|p| (**p).clone()).collect(),
    )
}

/// The parts of a change set both sources must agree on (versions differ).
fn keys(c: &ChangeSet) -> impl PartialEq + std::fmt::Debug {
    (
        c.objects.clone(),
        c.services.clone(),
        c.service_ports.clone(),
        c.endpoints.clone(),
    )
}

fn wait_for(feed: &Feed, what: &str, done: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let latest = feed.latest();
        if done(&latest) {
            return latest;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every change the follower sees until `done` holds, merged.
fn follow_until(
    follower: &mut Follower,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> ChangeSet {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut merged = ChangeSet::default();
    loop {
        if let Some(s) = follower.try_next() {
            merged.merge(s.changes.clone());
            if done(&s) {
                return merged;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn has(s: &Snapshot, kind: ferry_model::Kind, ns: &str, name: &str) -> bool {
    s.state
        .get(&ferry_model::ObjectKey::new(kind, ns, name))
        .is_some()
}

use ferry_model::Kind;

#[test]
fn after_the_first_lists_the_state_equals_the_manifests_state() {
    let setup = Setup::new(&[]);
    let first = setup.feed.latest();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert_eq!(
        comparable(&first.state),
        comparable(setup.manifests.state()),
        "objects, services and service ports as the manifests source has them"
    );
    assert!(first.state.service_ports().any(|p| !p.endpoints.is_empty()));
    // The filtered kinds: only what was asked for came.
    assert!(!has(&first, Kind::Secret, "demo", "password"));
    assert!(!has(&first, Kind::ConfigMap, "demo", "settings"));
    // Stored without what the server adds for its own bookkeeping.
    for o in first.state.objects() {
        let meta = o.metadata();
        let json = without_server_fields(o);
        assert_eq!(json["metadata"].get("managedFields"), None, "{}", o.key());
        assert!(
            meta.annotation_keys().all(|k| !k.contains("last-applied")),
            "{}",
            o.key()
        );
    }
    let node = first
        .state
        .get(&ferry_model::ObjectKey::new(Kind::Node, "", "node-1"));
    assert!(
        node.unwrap()
            .metadata()
            .annotation_keys()
            .any(|k| k == "flannel.alpha.coreos.com/public-ip"),
        "annotations a component reads stay"
    );
    // Lists were paged and asked with the selectors.
    let requests = setup.server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("/api/v1/namespaces?") && r.contains("continue=")),
        "{requests:#?}"
    );
    assert!(
        requests.iter().any(|r| r.starts_with("/api/v1/secrets?")
            && r.contains("fieldSelector=type=kubernetes.io/tls"))
    );
    assert!(requests.iter().any(|r| r.starts_with("/api/v1/configmaps?")
        && r.contains("labelSelector=app.kubernetes.io/part-of in (ferry,ingress-nginx)")));
    assert_eq!(setup.feed.health().stale_since, None);
}

/// web with its port changed from 80 to 81.
fn web_port_81() -> String {
    let (_, web) = OBJECTS.iter().find(|(f, _)| *f == "svc-web.yaml").unwrap();
    web.replace("port: 80,", "port: 81,")
}

const API_SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: demo}
spec:
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  ports: [{name: grpc, port: 9090, protocol: TCP}]
";

const API_SLICE: &str = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-xyz
  namespace: demo
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
endpoints:
- addresses: [10.244.1.9]
  conditions: {ready: true}
ports: [{name: grpc, port: 9090, protocol: TCP}]
";

#[test]
fn added_modified_and_deleted_give_the_manifests_change_sets() {
    let mut setup = Setup::new(&[]);
    let mut follower = setup.feed.follow();
    follower.try_next().expect("the first state");

    // MODIFIED: the Service's port.
    let want = setup.edit_manifest("svc-web.yaml", Some(&web_port_81()));
    setup.server.apply(json_of(&web_port_81()));
    let got = follow_until(&mut follower, "port 81", |s| {
        s.state.service_ports().any(|p| p.port == 81)
    });
    assert_eq!(keys(&got), keys(&want));
    assert!(!want.service_ports.is_empty());

    // ADDED: a Service and its slice.
    let mut want = setup.edit_manifest("svc-api.yaml", Some(API_SVC));
    want.merge(setup.edit_manifest("slice-api.yaml", Some(API_SLICE)));
    setup.server.apply(json_of(API_SVC));
    setup.server.apply(json_of(API_SLICE));
    let got = follow_until(&mut follower, "api and its endpoints", |s| {
        s.state
            .service_ports()
            .any(|p| p.port == 9090 && !p.endpoints.is_empty())
    });
    assert_eq!(keys(&got), keys(&want));

    // DELETED: web's slice (its endpoints go).
    let want = setup.edit_manifest("slice-web.yaml", None);
    setup.server.delete("EndpointSlice", "demo", "web-abc");
    let got = follow_until(&mut follower, "web without endpoints", |s| {
        !has(s, Kind::EndpointSlice, "demo", "web-abc")
    });
    assert_eq!(keys(&got), keys(&want));
    assert!(!want.endpoints.is_empty());

    assert_eq!(
        comparable(&setup.feed.latest().state),
        comparable(setup.manifests.state())
    );
}

#[test]
fn a_bookmark_changes_nothing() {
    let setup = Setup::new(&[]);
    let mut follower = setup.feed.follow();
    let first = follower.try_next().unwrap();
    setup.wait_for_watches();
    setup.server.bookmark();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        follower.try_next().is_none(),
        "a bookmark made a new state version"
    );
    assert_eq!(setup.feed.latest().state.version(), first.state.version());
    // The watch goes on after it.
    setup.server.apply(json_of(API_SVC));
    wait_for(&setup.feed, "the Service after the bookmark", |s| {
        has(s, Kind::Service, "demo", "api")
    });
    assert_eq!(setup.feed.health().stale_since, None);
}

fn progress(feed: &Feed) -> u64 {
    feed.watch_progress()
        .borrow()
        .map_or(0, |p| p.resource_version)
}

#[test]
fn progress_is_the_lowest_version_every_kind_reached_and_bookmarks_move_it() {
    let setup = Setup::new(&[]);
    setup.wait_for_watches();
    let listed = setup.server.resource_version();
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress(&setup.feed) != listed {
        assert!(Instant::now() < deadline, "not the lists' version");
        std::thread::sleep(Duration::from_millis(20));
    }
    // One Service changes: the other kinds' watches hear nothing, so the
    // source cannot yet say it has everything up to the new version.
    setup.server.apply(json_of(&web_port_81()));
    let changed = setup.server.resource_version();
    wait_for(&setup.feed, "port 81", |s| {
        s.state.service_ports().any(|p| p.port == 81)
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(progress(&setup.feed), listed);
    // A bookmark on every watch says there is nothing more up to `changed`.
    setup.server.bookmark();
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress(&setup.feed) < changed {
        assert!(Instant::now() < deadline, "the bookmarks moved nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = setup.feed.watch_progress().borrow().unwrap();
    assert_eq!(p.resource_version, changed);
    assert_eq!(p.state_version, setup.feed.latest().state.version());
}

#[test]
fn started_in_the_background_during_an_outage_it_is_stale_then_lists() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(&[json_of(OBJECTS[0].1)]);
    server.stop();
    let spec = SourceSpec::Kube {
        kubeconfig: Some(server.kubeconfig(dir.path())),
    };
    let feed = ferry_kube::start_in_background(&spec, FeedOptions::default())
        .expect("starts without the server");
    let mut follower = feed.follow();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!feed.has_state());
    assert!(follower.try_next().is_none(), "no state to follow yet");
    let health = feed.health();
    assert!(health.stale_since.is_some(), "{health:?}");
    assert!(
        health
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("not listed yet"),
        "{health:?}"
    );
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !feed.has_state() {
        assert!(
            Instant::now() < deadline,
            "never listed: {:?}",
            feed.health()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = follower.try_next().expect("the first state");
    assert_eq!(first.state.len(), 1);
    assert_eq!(feed.health().stale_since, None);
}

#[test]
fn gone_mid_watch_relists_to_the_servers_new_truth() {
    let setup = Setup::new(&[]);
    let mut follower = setup.feed.follow();
    follower.try_next().unwrap();
    // Events the watch never delivers, then 410: only a relist finds them.
    setup.server.pause();
    setup.server.delete("Service", "demo", "web");
    setup.server.apply(json_of(API_SVC));
    setup.server.expire_watches();
    let changes = follow_until(&mut follower, "the relisted Services", |s| {
        has(s, Kind::Service, "demo", "api") && !has(s, Kind::Service, "demo", "web")
    });
    assert!(
        changes
            .objects
            .contains(&ferry_model::ObjectKey::new(Kind::Service, "demo", "web")),
        "{changes:?}"
    );
    assert!(
        changes.services.iter().any(|s| &*s.name == "web"),
        "{changes:?}"
    );
    let lists = setup
        .server
        .requests()
        .iter()
        .filter(|r| r.starts_with("/api/v1/services?") && !r.contains("watch="))
        .count();
    assert!(lists >= 2, "no relist of Services");
    // Everything else is as it was.
    assert!(has(
        &setup.feed.latest(),
        Kind::EndpointSlice,
        "demo",
        "web-abc"
    ));
}

#[test]
fn a_dropped_watch_resumes_from_its_last_version() {
    let setup = Setup::new(&[]);
    setup.wait_for_watches();
    setup.server.apply(json_of(&web_port_81()));
    wait_for(&setup.feed, "port 81", |s| {
        s.state.service_ports().any(|p| p.port == 81)
    });
    let seen = setup.server.resource_version();
    setup.server.drop_watches();
    // Made while no watch may be connected: the resumed watch replays it.
    setup.server.apply(json_of(API_SVC));
    wait_for(&setup.feed, "the Service made after the drop", |s| {
        has(s, Kind::Service, "demo", "api")
    });
    let resumed = format!("resourceVersion={seen}");
    assert!(
        setup
            .server
            .requests()
            .iter()
            .any(|r| r.starts_with("/api/v1/services?")
                && r.contains("watch=true")
                && r.contains(&resumed)),
        "no watch resumed from {seen}: {:#?}",
        setup.server.requests()
    );
    let services_lists = setup
        .server
        .requests()
        .iter()
        .filter(|r| r.starts_with("/api/v1/services?") && !r.contains("watch="))
        .count();
    assert_eq!(services_lists, 1, "a dropped watch needs no relist");
}

#[test]
fn an_outage_keeps_the_last_state_reports_stale_and_recovers() {
    let setup = Setup::new(&[]);
    let before = setup.feed.latest();
    setup.server.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while setup.feed.health().stale_since.is_none() {
        assert!(
            Instant::now() < deadline,
            "the source never said it was stale"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let health = setup.feed.health();
    assert!(health.reason.is_some(), "{health:?}");
    // The last good state keeps serving.
    assert_eq!(setup.feed.latest().state.version(), before.state.version());
    assert!(has(&setup.feed.latest(), Kind::Service, "demo", "web"));
    // Changed while down, then back with a newer resourceVersion.
    setup.server.delete("Service", "demo", "web");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        setup.feed.health().stale_since.is_some(),
        "stale for the whole outage"
    );
    setup.server.restart();
    wait_for(
        &setup.feed,
        "the Service deleted during the outage to go",
        |s| !has(s, Kind::Service, "demo", "web"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.feed.health().stale_since.is_some() {
        assert!(
            Instant::now() < deadline,
            "still stale: {:?}",
            setup.feed.health()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const BAD_SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: bad, namespace: demo}
spec:
  clusterIP: 10.96.0.300
  ports: [{port: 80}]
";

#[test]
fn an_invalid_object_is_reported_and_skipped() {
    let setup = Setup::new(&[]);
    // Served as is: a client cannot send it through kubectl, but an API
    // server with looser validation (or a bug) may hold it.
    let mut bad = json_of(&BAD_SVC.replace("10.96.0.300", "10.96.0.30"));
    bad["spec"]["clusterIP"] = "10.96.0.300".into();
    bad["spec"]["clusterIPs"] = serde_json::json!(["10.96.0.300"]);
    setup.server.apply(bad);
    let s = wait_for(&setup.feed, "the error", |s| !s.errors.is_empty());
    let text: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|e| e.contains("Service demo/bad") && e.contains("spec.clusterIP")),
        "{text:#?}"
    );
    assert!(!has(&s, Kind::Service, "demo", "bad"));
    assert!(has(&s, Kind::Service, "demo", "web"), "the rest is kept");
    // Made valid: the error goes and the Service comes.
    setup
        .server
        .apply(json_of(&BAD_SVC.replace("10.96.0.300", "10.96.0.30")));
    let s = wait_for(&setup.feed, "the fixed Service", |s| {
        has(s, Kind::Service, "demo", "bad")
    });
    assert!(s.errors.is_empty(), "{:?}", s.errors);
}

#[test]
fn a_burst_of_events_becomes_few_state_versions() {
    let setup = Setup::new(&[]);
    setup.wait_for_watches();
    let before = setup.feed.latest().state.version();
    const BURST: usize = 100;
    let burst: Vec<Value> = (0..BURST)
        .map(|i| {
            json_of(
                &API_SVC
                    .replace("name: api", &format!("name: burst-{i}"))
                    .replace("10.96.0.20", &format!("10.96.1.{}", i + 1)),
            )
        })
        .collect();
    // A millisecond apart: closer than a batch, further than a busy loop.
    for svc in burst {
        setup.server.apply(svc);
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = wait_for(&setup.feed, "the burst", |s| {
        s.state.objects_of(Kind::Service).count() == 1 + BURST
    });
    let versions = after.state.version() - before;
    // One version per event would be 100; batches of 10 ms make about 11.
    assert!(
        versions <= 40,
        "{BURST} events became {versions} state versions"
    );
}
