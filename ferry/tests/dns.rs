//! `ferry dns` as a real process, asked with `dig` (Debian dnsutils): it
//! serves the manifests directory, follows edits, forwards nothing without
//! an upstream, and answers /health. Every process is killed on drop.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Running, free_port};

fn have_dig() -> bool {
    ferry_sys::testing::have_or_skip("dig")
}

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig runs");
    // Fields are tab-separated; compare them with single spaces.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

const MANIFEST: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
";

#[test]
fn ferry_dns_answers_dig_and_follows_manifest_edits() {
    if !have_dig() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), MANIFEST).unwrap();
    let port = free_port();
    let http = free_port();
    let child = common::ferry()
        .args(["dns", "--source"])
        .arg(format!("manifests:{}", dir.path().display()))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics", &format!("127.0.0.1:{http}")])
        .args(["--ttl", "30", "--pods", "insecure"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = dig(port, &["+short", "web.default.svc.cluster.local", "A"]);
        if a.trim() == "10.96.0.10" {
            break;
        }
        assert!(Instant::now() < deadline, "ferry dns did not answer: {a:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let full = dig(port, &["WEB.default.svc.cluster.local", "A"]);
    assert!(full.contains("status: NOERROR"), "{full}");
    assert!(full.contains("flags: qr aa rd ra"), "{full}");
    assert!(
        full.contains("WEB.default.svc.cluster.local. 30 IN A 10.96.0.10"),
        "{full}"
    );
    let srv = dig(
        port,
        &["+short", "_http._tcp.web.default.svc.cluster.local", "SRV"],
    );
    assert_eq!(srv.trim(), "0 100 80 web.default.svc.cluster.local.");
    let tcp = dig(port, &["+tcp", "+short", "-x", "10.96.0.10"]);
    assert_eq!(tcp.trim(), "web.default.svc.cluster.local.");
    let pod = dig(port, &["+short", "10-1-2-3.default.pod.cluster.local"]);
    assert_eq!(pod.trim(), "10.1.2.3");
    let nx = dig(port, &["nope.default.svc.cluster.local"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        nx.contains("cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local."),
        "{nx}"
    );
    let other = dig(port, &["www.example.test"]);
    assert!(other.contains("status: REFUSED"), "{other}");
    let axfr = dig(port, &["cluster.local", "AXFR"]);
    assert!(axfr.contains("Transfer failed"), "{axfr}");

    // An edit reaches the answers.
    std::fs::write(
        dir.path().join("web.yaml"),
        MANIFEST.replace("10.96.0.10", "10.96.0.20"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dig(port, &["+short", "web.default.svc.cluster.local"]).trim() != "10.96.0.20" {
        assert!(
            Instant::now() < deadline,
            "the edit did not reach the answers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let health = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{http}/health")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "OK");
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{http}/metrics")])
        .output()
        .unwrap();
    let m = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        m.contains("ferry_dns_requests_total{proto=\"udp\",type=\"SRV\"} 1"),
        "{m}"
    );
}

#[test]
fn ferry_dns_names_a_bad_flag_value() {
    let out = common::ferry()
        .args([
            "dns",
            "--source",
            "manifests:/nonexistent",
            "--listen",
            "127.0.0.1:0",
            "--pods",
            "sometimes",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pod mode is disabled, insecure or verified"),
        "{err}"
    );
    let out = common::ferry()
        .args([
            "dns",
            "--source",
            "manifests:/nonexistent",
            "--listen",
            "127.0.0.1:0",
            "--ttl",
            "4000",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ttl 4000: must be between 0 and 3600"),
        "{err}"
    );
}
