//! End-to-end tests of the ingress in a lab: every node's agent runs the
//! ingress on its node address, port 80 (as an ingress-nginx DaemonSet with
//! host ports), and `outside` reaches it on any node IP with curl; the lab
//! writes the node addresses into the status of the Ingresses ferry owns.
//! Root needed (fail under CI=true, skip otherwise).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn seed() -> String {
    repo().join("examples/nginx-web.yaml").display().to_string()
}

/// `curl` from the outside namespace to a node's ingress with a Host
/// header: the status code and the body.
fn get(lab: &Lab, node_ip: &str, host: &str, path: &str) -> (u16, String) {
    let out = lab.exec_ok(
        "outside",
        &[
            "curl",
            "-sS",
            "-m",
            "3",
            "-H",
            &format!("Host: {host}"),
            "-w",
            "\n%{http_code}",
            &format!("http://{node_ip}{path}"),
        ],
    );
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The pod that answered, through the ingress.
fn pod_of(lab: &Lab, node_ip: &str, host: &str, path: &str) -> String {
    let (code, body) = get(lab, node_ip, host, path);
    assert_eq!(code, 200, "{host}{path} via {node_ip}: {body}");
    json(&body)["pod"].as_str().unwrap().to_string()
}

/// `curl` over HTTPS from the outside namespace to a node's ingress, with
/// `host` as SNI and Host (`--resolve`): status, body and curl's verbose
/// log (the certificate).
fn get_https(lab: &Lab, node_ip: &str, host: &str, path: &str) -> (u16, String, String) {
    let out = lab.exec(
        "outside",
        &[
            "curl",
            "-sS",
            "-v",
            "-k",
            "-m",
            "3",
            "--resolve",
            &format!("{host}:443:{node_ip}"),
            "-w",
            "\n%{http_code}",
            &format!("https://{host}{path}"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn outside_reaches_services_over_https_on_every_node_with_the_default_certificate() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("il3", &[&seed(), &fixture("lab-ingress.yaml")], &[]);
    let status = lab.status();
    for node in status["nodes"].as_array().unwrap() {
        let ip = node["ip"].as_str().unwrap();
        let (code, body, log) = get_https(&lab, ip, "shop.example.com", "/api");
        assert_eq!(code, 200, "via {ip}: {body}\n{log}");
        let seen = json(&body);
        assert!(seen["pod"].as_str().unwrap().starts_with("api-"), "{seen}");
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");
        // No Secret names shop.example.com: the self-signed default
        // certificate answers, and the host gets no HSTS.
        assert!(
            log.contains("Ferry Ingress Controller Fake Certificate"),
            "{log}"
        );
        assert!(
            !log.to_ascii_lowercase()
                .contains("strict-transport-security"),
            "{log}"
        );
        // HTTP/2 by ALPN.
        assert!(
            log.contains("ALPN: server accepted h2") || log.contains("HTTP/2 200"),
            "{log}"
        );
    }
}

#[test]
fn outside_reaches_services_through_the_ingress_on_every_node() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("il1", &[&seed(), &fixture("lab-ingress.yaml")], &[]);
    let status = lab.status();
    let outside_ip = status["outside"]["ip"].as_str().unwrap().to_string();
    let node_ips: Vec<String> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ip"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(node_ips.len(), 2, "{status}");

    for ip in &node_ips {
        // Exact beats Prefix; Prefix `/` takes the rest of the host.
        assert!(pod_of(&lab, ip, "shop.example.com", "/api").starts_with("api-"));
        assert!(pod_of(&lab, ip, "shop.example.com", "/api/orders").starts_with("nginx-web-"));
        assert!(pod_of(&lab, ip, "shop.example.com", "/").starts_with("nginx-web-"));
        // Another host; its unmatched paths go to the Ingress's default backend.
        assert!(pod_of(&lab, ip, "api.example.com", "/v1/users").starts_with("api-"));
        assert!(pod_of(&lab, ip, "api.example.com", "/other").starts_with("nginx-web-"));
        // An unknown host, and a host of an Ingress of another class: 404.
        assert_eq!(get(&lab, ip, "unknown.example.com", "/").0, 404);
        assert_eq!(get(&lab, ip, "other.example.com", "/").0, 404);
        // The pod sees the outside client in X-Forwarded-For.
        let (_, body) = get(&lab, ip, "shop.example.com", "/");
        let seen = json(&body);
        assert_eq!(
            seen["headers"]["x-forwarded-for"].as_str(),
            Some(outside_ip.as_str()),
            "{seen}"
        );
        assert_eq!(seen["headers"]["x-forwarded-host"], "shop.example.com");
    }
    // Each node's agent logs the requests it proxied (access log on stdout,
    // which the lab keeps in the agent's log).
    let log_file = format!("/run/ferry/labs/{}/logs/agent-node-1.log", lab.name);
    let api_line = |log: &str| {
        log.lines()
            .find(|l| l.contains("\"GET /api HTTP/1.1\" 200 "))
            .map(str::to_string)
    };
    lab.wait("the access log line", Duration::from_secs(2), |_| {
        api_line(&std::fs::read_to_string(&log_file).unwrap_or_default()).is_some()
    });
    let line = api_line(&std::fs::read_to_string(&log_file).unwrap()).unwrap();
    assert!(line.starts_with(&format!("{outside_ip} - [")), "{line}");
    assert!(
        line.ends_with(" 200 demo/shop demo/api-service:80"),
        "{line}"
    );
    // Requests are spread over the Service's pods.
    let pods: std::collections::BTreeSet<String> = (0..12)
        .map(|_| pod_of(&lab, &node_ips[0], "shop.example.com", "/"))
        .collect();
    assert!(pods.len() >= 2, "{pods:?}");

    // lab status lists ferry's Ingress (only it) with its class and the
    // node addresses the lab wrote into its status.
    let ingresses = lab.status()["ingresses"].as_array().unwrap().clone();
    assert_eq!(ingresses.len(), 1, "{ingresses:?}");
    assert_eq!(ingresses[0]["name"], "shop");
    assert_eq!(ingresses[0]["class"], "ferry");
    let mut want = node_ips.clone();
    want.sort();
    assert_eq!(ingresses[0]["addresses"], Value::from(want.clone()));
    let table = lab.ok(&["status"]);
    assert!(table.contains("demo/shop"), "{table}");
    assert!(!table.contains("demo/other"), "{table}");
    // The objects the agents and the lab's API server read carry it.
    let written: Value = serde_json::from_slice(
        &std::fs::read(format!(
            "/run/ferry/labs/{}/manifests/ingress.demo.shop.json",
            lab.name
        ))
        .unwrap(),
    )
    .unwrap();
    let ips: Vec<&str> = written["status"]["loadBalancer"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, want, "{written}");
    let other = std::fs::read_to_string(format!(
        "/run/ferry/labs/{}/manifests/ingress.demo.other.json",
        lab.name
    ))
    .unwrap();
    assert!(!other.contains("loadBalancer"), "{other}");
    let out = ferry()
        .args(["lab", "kubectl", "--lab", &lab.name])
        .args(["get", "ingress", "-n", "demo", "shop", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let kubectl = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        json(&kubectl)["status"]["loadBalancer"]["ingress"][0]["ip"].as_str(),
        Some(want[0].as_str()),
        "{kubectl}"
    );

    // An Ingress changed while the lab runs takes effect within a second.
    let changed = std::fs::read_to_string(fixture("lab-ingress.yaml"))
        .unwrap()
        .replace("api.example.com", "new.example.com");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("changed.yaml");
    std::fs::write(&file, changed).unwrap();
    lab.ok(&["apply", file.to_str().unwrap()]);
    let applied = Instant::now();
    let deadline = Duration::from_secs(1);
    loop {
        let new = get(&lab, &node_ips[1], "new.example.com", "/v1/x");
        if new.0 == 200 && json(&new.1)["pod"].as_str().unwrap().starts_with("api-") {
            break;
        }
        assert!(
            applied.elapsed() < deadline,
            "the changed Ingress did not take effect within {deadline:?}: {new:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("Ingress change visible after {:?}", applied.elapsed());
    assert_eq!(get(&lab, &node_ips[0], "api.example.com", "/v1/x").0, 404);
}

#[test]
fn outside_reaches_tcp_and_udp_services_through_the_ingress_on_every_node() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("il2", &[&seed(), &fixture("lab-ingress.yaml")], &[]);
    let status = lab.status();
    let outside_ip = status["outside"]["ip"].as_str().unwrap();
    for node in status["nodes"].as_array().unwrap() {
        let ip = node["ip"].as_str().unwrap();
        // TCP 9000 (tcp-services) to the seed Service's pods: the
        // connection is the ingress's own (a proxy, not a NAT), so the pod
        // sees the node, not outside.
        let a = json(&lab.exec_ok(
            "outside",
            &["curl", "-sS", "-m", "3", &format!("http://{ip}:9000/x")],
        ));
        assert!(a["pod"].as_str().unwrap().starts_with("nginx-web-"), "{a}");
        let client = a["client"].as_str().unwrap().split(':').next().unwrap();
        assert_ne!(client, outside_ip, "{a}");
        assert_eq!(a["path"], "/x", "{a}");
        // UDP 9053 (udp-services) to udp-echo's pods, the answer from the port asked.
        let script = format!("exec 3<>/dev/udp/{ip}/9053; echo hello >&3; timeout 3 head -n1 <&3");
        let u = json(&lab.exec_ok("outside", &["bash", "-c", &script]));
        assert!(u["pod"].as_str().unwrap().starts_with("udp-echo-"), "{u}");
        assert_eq!(u["data"].as_str().map(str::trim), Some("hello"), "{u}");
        // The malformed entry is not listened on.
        let refused = lab.exec(
            "outside",
            &["curl", "-sS", "-m", "3", &format!("http://{ip}:9001/")],
        );
        assert!(!refused.status.success());
    }
    // The malformed entry is reported in the agent's log.
    let log = std::fs::read_to_string(format!(
        "/run/ferry/labs/{}/logs/agent-node-1.log",
        lab.name
    ))
    .unwrap();
    assert!(
        log.contains("ConfigMap ingress-nginx/tcp-services: data[\"9001\"]"),
        "{log}"
    );
}
