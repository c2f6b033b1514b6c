//! `ferry apiserver` as API clients see it, on loopback: Debian's kubectl
//! (code nobody here wrote) lists and watches it; raw HTTP checks paging,
//! resource versions, 410 Gone, bookmarks, selectors and the writes
//! components make. No root needed.

mod common;

use common::free_port;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["apiserver", "--manifests"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child, port };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if server.request("GET", "/version", None).0 == 200 {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the API server did not answer within 10 s");
    }

    /// One request: (status, body).
    fn request(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, String) {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (ctype, text) = body.unwrap_or(("application/json", ""));
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        // Whole responses carry a Content-Length; the body is one JSON value.
        (status, body.to_string())
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.request("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// A watch's events (JSON lines) until `until` says stop or `limit` passes.
    fn watch(
        &self,
        path: &str,
        limit: Duration,
        mut until: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reader = BufReader::new(c);
        let mut events = Vec::new();
        let start = Instant::now();
        let mut line = String::new();
        while start.elapsed() < limit && !until(&events) {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.starts_with('{') {
                        events.push(serde_json::from_str(line.trim()).unwrap());
                    }
                }
                Err(_) => continue,
            }
        }
        events
    }
}

const SERVICES: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo, labels: {app: web}}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec: {clusterIP: 10.96.0.11, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: demo}
type: kubernetes.io/tls
data: {tls.crt: '', tls.key: ''}
---
apiVersion: v1
kind: Secret
metadata: {name: other, namespace: demo}
type: Opaque
";

fn dir_with(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.yaml"), yaml).unwrap();
    dir
}

/// Replaces a manifest file whole (write then rename, as the lab does).
fn rewrite(dir: &Path, yaml: &str) {
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, dir.join("cluster.yaml")).unwrap();
}

fn kubeconfig(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\ncontexts:\n- name: lab\n  context: {{cluster: lab, user: lab}}\ncurrent-context: lab\nusers:\n- name: lab\n  user: {{}}\n"
        ),
    )
    .unwrap();
    path
}

fn kubectl_ok(config: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(config)
        .args(["--request-timeout", "5s"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_lists_gets_and_watches_what_the_manifests_hold() {
    if !ferry_sys::testing::have_or_skip("kubectl") {
        return;
    }
    let dir = dir_with(SERVICES);
    let server = Server::start(dir.path(), &[]);
    let config = kubeconfig(dir.path(), server.port);
    let names = kubectl_ok(&config, &["get", "services", "-A", "-o", "name"]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["service/db", "service/web"]
    );
    let web: Value = serde_json::from_str(&kubectl_ok(
        &config,
        &["get", "service", "web", "-n", "demo", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(web["spec"]["clusterIP"], "10.96.0.10");
    let table = kubectl_ok(&config, &["get", "nodes"]);
    assert!(table.contains("node-1"), "{table}");
    let selected = kubectl_ok(
        &config,
        &["get", "svc", "-n", "demo", "-l", "app=web", "-o", "name"],
    );
    assert_eq!(selected.trim(), "service/web");

    // kubectl's watch: a change to the manifests arrives as an event.
    let rv = web["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&config)
        .args([
            "get",
            "--raw",
            &format!("/api/v1/namespaces/demo/services?watch=1&resourceVersion={rv}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    rewrite(dir.path(), &SERVICES.replace("port: 5432", "port: 5433"));
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(10));
    let _ = watch.kill();
    let _ = watch.wait();
    let event: Value = serde_json::from_str(&line.expect("an event within 10 s")).unwrap();
    assert_eq!(event["type"], "MODIFIED", "{event}");
    assert_eq!(event["object"]["metadata"]["name"], "db");
    assert_eq!(event["object"]["spec"]["ports"][0]["port"], 5433);
}

#[test]
fn lists_page_and_watches_resume_until_their_version_is_compacted_away() {
    let dir = dir_with(SERVICES);
    let server = Server::start(dir.path(), &["--max-events", "2"]);
    let first = server.get_json("/api/v1/services?limit=1");
    assert_eq!(first["kind"], "ServiceList");
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let token = first["metadata"]["continue"].as_str().unwrap();
    let rest = server.get_json(&format!("/api/v1/services?limit=1&continue={token}"));
    assert_eq!(rest["items"][0]["metadata"]["name"], "web");
    assert!(rest["metadata"]["continue"].is_null());
    let rv: u64 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Three changes to one Service: the log of 2 no longer holds `rv`.
    for port in [81, 82, 83] {
        rewrite(
            dir.path(),
            &SERVICES.replace("port: 80}", &format!("port: {port}}}")),
        );
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let web = server.get_json("/api/v1/namespaces/demo/services/web");
            if web["spec"]["ports"][0]["port"] == port {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let events = server.watch(
        &format!("/api/v1/services?watch=true&resourceVersion={rv}"),
        Duration::from_secs(5),
        |e| !e.is_empty(),
    );
    assert_eq!(events[0]["type"], "ERROR", "{events:?}");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");

    // From the current version, the next change arrives.
    let now = server.get_json("/api/v1/services")["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let port = server.port;
    let dir_path = dir.path().to_path_buf();
    let changer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        rewrite(&dir_path, &SERVICES.replace("port: 80}", "port: 90}"));
        port
    });
    let events = server.watch(
        &format!("/api/v1/services?watch=true&resourceVersion={now}"),
        Duration::from_secs(10),
        |e| !e.is_empty(),
    );
    changer.join().unwrap();
    assert_eq!(events[0]["type"], "MODIFIED", "{events:?}");
    assert_eq!(events[0]["object"]["spec"]["ports"][0]["port"], 90);
}

#[test]
fn idle_watches_that_allow_bookmarks_get_them_and_a_watch_without_a_version_starts_with_the_state()
{
    let dir = dir_with(SERVICES);
    let server = Server::start(dir.path(), &["--bookmark-seconds", "1"]);
    let events = server.watch(
        "/api/v1/services?watch=1&allowWatchBookmarks=true",
        Duration::from_secs(5),
        |e| e.iter().any(|e| e["type"] == "BOOKMARK"),
    );
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK"], "{events:?}");
    assert!(
        events[2]["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some()
    );
}

#[test]
fn a_watch_that_allows_bookmarks_hears_at_once_when_the_store_moved_past_it() {
    let dir = dir_with(SERVICES);
    // No idle bookmark within the test: only the prompt one can arrive.
    let server = Server::start(dir.path(), &["--bookmark-seconds", "600"]);
    let now = server.get_json("/api/v1/namespaces")["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let dir_path = dir.path().to_path_buf();
    let changer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        rewrite(&dir_path, &SERVICES.replace("port: 80}", "port: 90}"));
    });
    // Namespaces do not change; a Service does.
    let started = std::time::Instant::now();
    let events = server.watch(
        &format!("/api/v1/namespaces?watch=true&allowWatchBookmarks=true&resourceVersion={now}"),
        Duration::from_secs(10),
        |e| !e.is_empty(),
    );
    changer.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(events[0]["type"], "BOOKMARK", "{events:?}");
    let moved: u64 = events[0]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(moved > now.parse().unwrap(), "{events:?}");
}

#[test]
fn selectors_filter_and_bad_requests_get_api_status_errors() {
    let dir = dir_with(SERVICES);
    let server = Server::start(dir.path(), &[]);
    let tls = server.get_json("/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Ftls");
    let names: Vec<&str> = tls["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tls"]);
    let (status, body) = server.request(
        "GET",
        "/api/v1/services?fieldSelector=spec.type%3DNodePort",
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("field label not supported"), "{body}");
    let (status, body) = server.request("GET", "/api/v1/widgets", None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.request("GET", "/api/v1/namespaces/demo/services/nope", None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"reason\":\"NotFound\""), "{body}");
}

#[test]
fn node_annotations_written_through_the_api_are_served_watched_and_kept_across_a_restart() {
    let dir = dir_with(SERVICES);
    let patches = dir.path().join("patches.json");
    let patches_arg = patches.display().to_string();
    let server = Server::start(dir.path(), &["--patches-file", &patches_arg]);
    let rv = server.get_json("/api/v1/nodes")["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let patch =
        r#"{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"172.18.0.11"}}}"#;
    let (status, body) = server.request(
        "PATCH",
        "/api/v1/nodes/node-1",
        Some(("application/merge-patch+json", patch)),
    );
    assert_eq!(status, 200, "{body}");
    let events = server.watch(
        &format!("/api/v1/nodes?watch=1&resourceVersion={rv}"),
        Duration::from_secs(5),
        |e| !e.is_empty(),
    );
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(
        events[0]["object"]["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"],
        "172.18.0.11"
    );
    // A patch that would make the object invalid is refused whole.
    let (status, body) = server.request(
        "PATCH",
        "/api/v1/nodes/node-1",
        Some(("application/merge-patch+json", r#"{"spec":{"podCIDR":17}}"#)),
    );
    assert_eq!(status, 422, "{body}");
    // JSON patches are not taken (only merge and strategic merge).
    let (status, _) = server.request(
        "PATCH",
        "/api/v1/nodes/node-1",
        Some(("application/json-patch+json", "[]")),
    );
    assert_eq!(status, 415);
    drop(server);
    let server = Server::start(dir.path(), &["--patches-file", &patches_arg]);
    let node = server.get_json("/api/v1/nodes/node-1");
    assert_eq!(
        node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"], "172.18.0.11",
        "kept across a restart"
    );
    assert_eq!(node["spec"]["podCIDR"], "10.244.1.0/24");
}

#[test]
fn ferry_services_reads_the_same_table_from_the_api_as_from_the_manifests() {
    let dir = dir_with(SERVICES);
    let server = Server::start(dir.path(), &[]);
    let config = kubeconfig(dir.path(), server.port);
    let services = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("services")
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ferry services {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let from_files = services(&[dir.path().join("cluster.yaml").to_str().unwrap()]);
    let from_api = services(&["--source", &format!("kube:{}", config.display())]);
    assert!(
        from_files["services"]
            .as_array()
            .is_some_and(|a| a.len() == 2),
        "{from_files}"
    );
    assert_eq!(from_api, from_files);
}
