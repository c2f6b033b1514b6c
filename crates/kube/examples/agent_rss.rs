//! The agent's memory on each source for the same cluster: serves N Pods
//! and N Services (shaped as an API server sends them) from the fake API
//! server of the tests and, as manifests, from a temporary directory;
//! runs `ferry agent` with no component (only the source and its health
//! endpoint) on each, waits until it holds every object, and prints its
//! RSS.
//!
//! `cargo run --release -p ferry-kube --example agent_rss -- FERRY_BINARY [N]`.
//! Touches the network (127.0.0.1 only), temporary files, and starts
//! `ferry` (killed at the end).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../tests/fake/mod.rs"]
mod fake;
mod shapes;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `objects` figure of the agent's /healthz.
fn objects(port: u16) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()?;
    body["objects"].as_u64()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn measure(ferry: &str, source: &[&str], want: u64) -> f64 {
    let port = free_port();
    let child = Command::new(ferry)
        .args(["agent", "--node", "node-1", "--components", "dns"])
        .args(["--dns-addresses", "none", "--proxy-mode", "none"])
        .args(source)
        .args(["--healthz-bind-address", &format!("127.0.0.1:{port}")])
        .args([
            "--metrics-bind-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while objects(port) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "the agent never held {want} objects (it has {:?})",
            objects(port)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let startup garbage settle.
    std::thread::sleep(Duration::from_secs(2));
    rss_mib(running.0.id())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let ferry = args.next().expect("usage: agent_rss FERRY_BINARY [N]");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2500);
    let mut objects: Vec<Value> = vec![serde_json::json!(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})];
    for i in 0..n {
        objects.push(serde_json::from_str(&shapes::pod(i)).unwrap());
        objects.push(serde_json::from_str(&shapes::service(i)).unwrap());
    }
    let want = objects.len() as u64;
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let stream: String = objects.iter().map(|o| format!("{o}\n")).collect();
    std::fs::write(manifests.join("cluster.json"), stream).unwrap();
    let server = fake::ApiServer::start(&objects);
    server.set_page_size(500);
    let kubeconfig = server.kubeconfig(dir.path());

    let on_files = measure(
        &ferry,
        &["--source", &format!("manifests:{}", manifests.display())],
        want,
    );
    let on_api = measure(
        &ferry,
        &[
            "--source",
            "kube",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
        ],
        want,
    );
    println!("ferry agent (source only), {n} Pods + {n} Services:");
    println!("  --source manifests: {on_files:.1} MiB RSS (the same JSON in a file, kept whole)");
    println!(
        "  --source kube:      {on_api:.1} MiB RSS (sent with managedFields and last-applied, stripped)"
    );
}
