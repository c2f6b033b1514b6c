//! The Kubernetes API source behind the commands that take `--source`:
//! `ferry dns --source kube:KUBECONFIG` answers `dig` for a Service the
//! fake API server holds and follows its changes, and `ferry agent
//! --source kube --kubeconfig F` reports a stale source on its health
//! endpoint during an API server outage, and in step again after. The
//! fake server (crates/kube/tests/fake) says where its responses come
//! from. No root: DNS serves on a loopback port, and the agent runs no
//! component that programs the kernel.
//!
//! Touches the network (127.0.0.1 only), temporary files, and processes
//! (ferry, dig, curl), each killed on drop.

mod common;
#[path = "../../crates/kube/tests/fake/mod.rs"]
mod fake;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Running, free_port};
use serde_json::{Value, json};

fn service(ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "demo"},
           "spec": {"clusterIP": ip, "clusterIPs": [ip],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

fn cluster() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}),
        service("10.96.0.10"),
    ]
}

fn dig_short(port: u16, name: &str) -> String {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+time=2",
            "+tries=1",
            "+short",
            name,
            "A",
        ])
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ferry_dns_on_the_kube_source_answers_dig_and_follows_changes() {
    if !ferry_sys::testing::have_or_skip("dig") {
        return;
    }
    let server = fake::ApiServer::start(&cluster());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let port = free_port();
    let child = common::ferry()
        .args(["dns", "--source"])
        .arg(format!("kube:{}", kubeconfig.display()))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _running = Running(child);
    let name = "web.demo.svc.cluster.local";
    eventually("the Service's address", || {
        dig_short(port, name) == "10.96.0.10"
    });
    server.apply(service("10.96.0.20"));
    eventually("the changed address", || {
        dig_short(port, name) == "10.96.0.20"
    });
    server.delete("Service", "demo", "web");
    eventually("the name to go", || dig_short(port, name).is_empty());
}

fn health(port: u16) -> Option<Value> {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "2",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// `ferry agent` on the API source with DNS on no address and no proxy
/// (nothing that needs root), its health on 127.0.0.1:`healthz`.
fn agent_without_kernel_components(
    kubeconfig: &std::path::Path,
    healthz: u16,
    node: &str,
) -> Running {
    let child = common::ferry()
        .args(["agent", "--source", "kube", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "--components",
            "dns",
            "--dns-addresses",
            "none",
            "--proxy-mode",
            "none",
        ])
        .args(["--healthz-bind-address", &format!("127.0.0.1:{healthz}")])
        .args([
            "--metrics-bind-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("NODE_NAME", node)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Running(child)
}

#[test]
fn the_agent_on_the_kube_source_reports_an_outage_as_stale() {
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let server = fake::ApiServer::start(&cluster());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let healthz = free_port();
    let _running = agent_without_kernel_components(&kubeconfig, healthz, "node-from-env");
    // Health answers from the start ("not listed yet"); wait for the list.
    eventually("the agent's health after the first list", || {
        health(healthz).is_some_and(|b| b["stateVersion"] != 0)
    });
    let body = health(healthz).unwrap();
    assert_eq!(body["nodeName"], "node-from-env", "{body}");
    assert_eq!(body["objects"], 2, "{body}");
    assert!(body.get("sourceStaleSince").is_none(), "{body}");

    server.stop();
    eventually("a stale source on /healthz", || {
        health(healthz).is_some_and(|b| b.get("sourceStaleSince").is_some())
    });
    let body = health(healthz).unwrap();
    assert_eq!(body["objects"], 2, "the last state keeps serving: {body}");
    assert!(
        body["sourceStaleReason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    server.restart();
    eventually("the source in step again", || {
        health(healthz).is_some_and(|b| b.get("sourceStaleSince").is_none())
    });
}

fn status_of(port: u16, path: &str) -> Option<(u16, Value)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, serde_json::from_str(body).ok()?))
}

#[test]
fn the_agent_started_while_the_api_server_is_down_serves_its_health_and_lists_when_it_returns() {
    if !ferry_sys::testing::have_or_skip("curl") {
        return;
    }
    let server = fake::ApiServer::start(&cluster());
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let healthz = free_port();
    let _running = agent_without_kernel_components(&kubeconfig, healthz, "node-a");
    eventually("the agent's health while the API is down", || {
        status_of(healthz, "/healthz").is_some()
    });
    for path in ["/healthz", "/readyz"] {
        let (code, body) = status_of(healthz, path).unwrap();
        assert_eq!(code, 503, "{path}: {body}");
        assert!(body.get("sourceStaleSince").is_some(), "{path}: {body}");
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no state yet")),
            "{path}: {body}"
        );
        assert_eq!(body["objects"], 0, "{path}: {body}");
    }
    server.restart();
    eventually("ready once the lists arrive", || {
        status_of(healthz, "/readyz").is_some_and(|(code, _)| code == 200)
    });
    let (code, body) = status_of(healthz, "/healthz").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["objects"], 2, "{body}");
    assert!(body.get("sourceStaleSince").is_none(), "{body}");
}

/// A network namespace of this test's own, deleted on drop (after the
/// processes in it, which are dropped first).
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("ferry-kube-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let ns = Netns(name);
        let lo = Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(lo.success());
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The agent itself (node-local DNS on its dummy interface, which needs
/// root) inside a namespace of the test's own, with the fake API server
/// listening on that namespace's loopback.
#[test]
fn the_agent_on_the_kube_source_answers_dig() {
    if !ferry_sys::testing::root_or_skip("the agent's node-local DNS")
        || !ferry_sys::testing::have_or_skip("dig")
        || !ferry_sys::testing::have_or_skip("ip")
    {
        return;
    }
    let ns = Netns::new("agent");
    let server = ferry_sys::netns::in_netns(&ns.0, || fake::ApiServer::start(&cluster())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "agent",
            "--node",
            "node-1",
            "--source",
            "kube",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .args(["--components", "dns", "--proxy-mode", "none"])
        .args(["--dns-addresses", "169.254.20.10", "--dns-upstream", "none"])
        .args(["--healthz-bind-address", "127.0.0.1:10256"])
        .args(["--metrics-bind-address", "127.0.0.1:10249"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let running = Running(child);
    let dig = |name: &str| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "dig",
                "@169.254.20.10",
                "+time=1",
                "+tries=1",
                "+short",
                name,
                "A",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let name = "web.demo.svc.cluster.local";
    eventually("the agent's answer", || dig(name) == "10.96.0.10");
    server.apply(service("10.96.0.20"));
    eventually("the changed answer", || dig(name) == "10.96.0.20");
    drop(running);
    drop(server);
}
