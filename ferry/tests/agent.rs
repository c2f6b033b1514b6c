//! The agent as a process, on loopback and without a service proxy (no
//! root needed): health endpoints, and --min-sync-period merging a burst
//! of changes without losing the last one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Agent(Child);
impl Drop for Agent {
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

fn healthz(port: u16) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    serde_json::from_str(raw.split_once("\r\n\r\n")?.1.trim()).ok()
}

fn svc(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: 10.96.0.9, ports: [{{port: 80}}]}}\n"
    )
}

#[test]
fn min_sync_period_merges_a_burst_and_keeps_the_last_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), svc("a")).unwrap();
    let (health, metrics) = (free_port(), free_port());
    let agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "agent",
                "--node",
                "n1",
                "--proxy-mode",
                "none",
                "--dns-addresses",
                "none",
                "--min-sync-period",
                "2s",
            ])
            .arg("--source")
            .arg(format!("manifests:{}", dir.path().display()))
            .args(["--healthz-bind-address", &format!("127.0.0.1:{health}")])
            .args(["--metrics-bind-address", &format!("127.0.0.1:{metrics}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let objects = |port| healthz(port).and_then(|v| v["objects"].as_u64());
    let start = Instant::now();
    while objects(health) != Some(1) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(objects(health), Some(1), "the agent did not come up");
    // The first change goes through at once (nothing synced within the period).
    std::fs::write(dir.path().join("b.yaml"), svc("b")).unwrap();
    let start = Instant::now();
    while objects(health) != Some(2) && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(objects(health), Some(2));
    // A burst right after waits for the period, and its last change is kept.
    std::fs::write(dir.path().join("c.yaml"), svc("c")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(dir.path().join("d.yaml"), svc("d")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        objects(health),
        Some(2),
        "changes within the period are held back"
    );
    let start = Instant::now();
    while objects(health) != Some(4) && start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        objects(health),
        Some(4),
        "the burst, last change included, lands after the period"
    );
    drop(agent);
}
