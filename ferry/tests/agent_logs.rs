//! The agent's logs as an operator reads them from a file: no terminal
//! colour codes, and a manifest error logged once when it appears, not on
//! every later change. No root needed: the agent runs without a proxy or
//! DNS (it touches nothing) on loopback.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn svc(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: 10.96.0.9, ports: [{{port: 80}}]}}\n"
    )
}

#[test]
fn agent_logs_carry_no_colour_codes_and_a_manifest_error_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), svc("a")).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "agent",
            "--node",
            "n1",
            "--proxy-mode",
            "none",
            "--dns-addresses",
            "none",
        ])
        .arg("--source")
        .arg(format!("manifests:{}", dir.path().display()))
        .args([
            "--healthz-bind-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args([
            "--metrics-bind-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A broken manifest, then three unrelated changes.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 99999}]}\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for n in ["c", "d", "e"] {
        std::fs::write(dir.path().join(format!("{n}.yaml")), svc(n)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let started = Instant::now();
    let _ = agent.kill();
    let _ = agent.wait();
    let mut log = String::new();
    agent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(log.contains("agent started"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );
    let reported = log.lines().filter(|l| l.contains("bad.yaml")).count();
    assert_eq!(
        reported, 1,
        "the error once, not on every later change:\n{log}"
    );
}
