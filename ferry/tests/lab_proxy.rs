//! End-to-end tests of the service proxy in a lab: real traffic from pods,
//! nodes and the outside client through each node's rules. Every test runs
//! in both proxy modes (`NAME::nftables`, `NAME::iptables`). Root needed
//! (fail under CI=true, skip otherwise).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

fn pods_answering(out: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v = json(line);
        *seen
            .entry(v["pod"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    seen
}

fn cluster_ip_spreads_over_every_endpoint_from_a_pod_on_each_node(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2espread", &[&fixture("lab-proxy.yaml")], &[]);
    // One client per node: the bare client pod on node-1 and the solo pod on node-2.
    for client in ["pod/shop/client", "pod/shop/solo"] {
        let script = "for i in $(seq 600); do curl -s -m 2 http://172.16.20.10/; echo; done";
        let out = lab.exec_ok(client, &["bash", "-c", script]);
        let seen = pods_answering(&out);
        assert_eq!(seen.len(), 3, "from {client}: {seen:?}");
        assert_eq!(
            seen.values().sum::<usize>(),
            600,
            "from {client}: every request answered"
        );
        for (pod, n) in &seen {
            // 1/3 of 600 is 200; 150..250 is more than 5 standard deviations wide.
            assert!(
                (150..=250).contains(n),
                "from {client}: {pod} got {n} of 600: {seen:?}"
            );
        }
    }
    // UDP through the ClusterIP too.
    let out = lab.exec_ok(
        "pod/shop/client",
        &[
            "bash",
            "-c",
            "exec 3<>/dev/udp/172.16.20.10/53; echo q >&3; timeout 3 head -n1 <&3",
        ],
    );
    assert!(json(&out)["pod"].as_str().unwrap().starts_with("web-"));
}

fn node_ports_and_load_balancer_ips_answer_from_outside(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2enodeport", &[&fixture("lab-proxy.yaml")], &[]);
    let status = lab.status();
    let outside_ip = status["outside"]["ip"].as_str().unwrap().to_string();
    for node in status["nodes"].as_array().unwrap() {
        let ip = node["ip"].as_str().unwrap();
        let a = json(&lab.exec_ok(
            "outside",
            &["curl", "-sS", "-m", "3", &format!("http://{ip}:30080/")],
        ));
        assert!(a["pod"].as_str().unwrap().starts_with("web-"), "{a}");
        // externalTrafficPolicy Cluster: the client address is masqueraded to the node.
        assert_ne!(
            a["client"].as_str().unwrap().split(':').next(),
            Some(outside_ip.as_str())
        );
    }
    let lb = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web-lb")
        .unwrap()["load_balancer_ips"][0]
        .as_str()
        .unwrap()
        .to_string();
    let out = lab.exec_ok(
        "outside",
        &[
            "bash",
            "-c",
            &format!("for i in $(seq 30); do curl -s -m 2 http://{lb}/; echo; done"),
        ],
    );
    let seen = pods_answering(&out);
    assert_eq!(seen.values().sum::<usize>(), 30, "{seen:?}");
    assert!(
        seen.len() >= 2,
        "the LoadBalancer IP reaches several endpoints: {seen:?}"
    );
}

fn local_policy_keeps_the_client_ip_and_only_uses_local_endpoints(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2elocal", &[&fixture("lab-proxy.yaml")], &[]);
    let status = lab.status();
    let outside_ip = status["outside"]["ip"].as_str().unwrap().to_string();
    let ip_of = |n: &str| lab.node_ip(n);
    // solo runs on node-2: its NodePort there answers, with the real client IP.
    let a = json(&lab.exec_ok(
        "outside",
        &[
            "curl",
            "-sS",
            "-m",
            "3",
            &format!("http://{}:30082/", ip_of("node-2")),
        ],
    ));
    assert_eq!(a["pod"], "solo");
    assert_eq!(
        a["client"].as_str().unwrap().split(':').next(),
        Some(outside_ip.as_str())
    );
    // node-1 has no local endpoint: dropped, not forwarded.
    let out = lab.exec(
        "outside",
        &[
            "curl",
            "-sS",
            "-m",
            "1",
            &format!("http://{}:30082/", ip_of("node-1")),
        ],
    );
    assert!(
        !out.status.success(),
        "node-1 must not forward Local-policy traffic"
    );
    // Through the LoadBalancer IP (routed only to node-2, as its health check would say).
    let lb = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "solo-local")
        .unwrap()["load_balancer_ips"][0]
        .as_str()
        .unwrap()
        .to_string();
    let a = json(&lab.exec_ok(
        "outside",
        &["curl", "-sS", "-m", "3", &format!("http://{lb}/")],
    ));
    assert_eq!(
        a["client"].as_str().unwrap().split(':').next(),
        Some(outside_ip.as_str())
    );
}

fn curl_from_client(lab: &Lab, url: &str) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = lab.exec("pod/shop/client", &["curl", "-sS", "-m", "2", url]);
    (out, start.elapsed())
}

fn assert_refused_at_once(out: &std::process::Output, took: Duration, what: &str) {
    assert!(!out.status.success(), "{what}: answered");
    assert!(
        text(out).contains("Couldn't connect") || text(out).contains("refused"),
        "{what}: {}",
        text(out)
    );
    assert!(
        took < Duration::from_secs(1),
        "{what}: refused at once, not a timeout: {took:?}"
    );
}

fn hairpin_works_and_a_service_without_endpoints_refuses_at_once(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2ehairpin", &[&fixture("lab-proxy.yaml")], &[]);
    let solo_ip = lab.pods("solo")[0]["ip"].as_str().unwrap().to_string();
    let a = json(&lab.exec_ok(
        "pod/shop/solo",
        &["curl", "-sS", "-m", "3", "http://172.16.20.11/"],
    ));
    assert_eq!(
        a["pod"], "solo",
        "a pod reaches itself through its own Service"
    );
    assert_ne!(
        a["client"].as_str().unwrap().split(':').next(),
        Some(solo_ip.as_str()),
        "hairpin traffic is masqueraded"
    );
    let (out, took) = curl_from_client(&lab, "http://172.16.20.12/");
    assert_refused_at_once(&out, took, "a Service without endpoints");
    // A ClusterIP answers only on its Service's ports. nftables mode
    // refuses another port at once (as kube-proxy's nftables mode does);
    // iptables mode, like kube-proxy's, does not capture it at all, so
    // the connection goes nowhere.
    let (out, took) = curl_from_client(&lab, "http://172.16.20.10:81/");
    assert!(!out.status.success());
    if mode == Mode::Nftables {
        assert_refused_at_once(&out, took, "an unknown port of a ClusterIP");
    }
    // The rules, read back from the kernel.
    match mode {
        Mode::Nftables => {
            let rules = lab.exec_ok("node/node-1", &["nft", "list", "table", "ip", "ferry"]);
            assert!(rules.contains("172.16.20.10 . tcp . 80"), "{rules}");
            assert!(
                rules.contains("172.16.20.12 . tcp . 80"),
                "the empty service is in no_endpoints: {rules}"
            );
        }
        Mode::Iptables => {
            let rules = lab.exec_ok("node/node-1", &["iptables-save"]);
            assert!(
                rules.lines().any(|l| l.starts_with("-A KUBE-SERVICES")
                    && l.contains("-d 172.16.20.10/32")
                    && l.contains("--dport 80 -j KUBE-SVC-")),
                "{rules}"
            );
            assert!(
                rules.lines().any(|l| l.starts_with("-A KUBE-SERVICES")
                    && l.contains("has no endpoints")
                    && l.contains("-d 172.16.20.12/32")
                    && l.ends_with("-j REJECT --reject-with icmp-port-unreachable")),
                "the empty service is rejected in filter KUBE-SERVICES: {rules}"
            );
        }
    }
}

fn endpoint_changes_reach_the_rules_and_agent_metrics_report_syncs(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2esync", &[&fixture("lab-proxy.yaml")], &[]);
    lab.ok(&["scale", "deployment/shop/web", "1"]);
    lab.wait(
        "one endpoint left in the rules",
        Duration::from_secs(5),
        |l| {
            let out = l.exec_ok(
                "pod/shop/client",
                &[
                    "bash",
                    "-c",
                    "for i in $(seq 20); do curl -s -m 2 http://172.16.20.10/; echo; done",
                ],
            );
            pods_answering(&out).len() == 1
        },
    );
    let node1 = lab.status()["nodes"][0]["ip"].as_str().unwrap().to_string();
    let metrics = lab.exec_ok(
        "node/node-1",
        &["curl", "-sS", &format!("http://{node1}:10249/metrics")],
    );
    assert!(
        metrics.contains("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kubeproxy_network_programming_duration_seconds"),
        "{metrics}"
    );
    let served = lab.exec_ok(
        "node/node-1",
        &["curl", "-sS", &format!("http://{node1}:10249/proxyMode")],
    );
    assert_eq!(served, mode.as_str());
}

fn session_affinity_keeps_a_client_on_one_endpoint_until_it_goes_away(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2esticky", &[&fixture("lab-proxy.yaml")], &[]);
    let script = "for i in $(seq 30); do curl -s -m 2 http://172.16.20.13/; echo; done";
    let seen = pods_answering(&lab.exec_ok("pod/shop/client", &["bash", "-c", script]));
    assert_eq!(seen.len(), 1, "one client, one endpoint: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 30);
    // A different client may land elsewhere, but sticks too.
    let other = pods_answering(&lab.exec_ok("pod/shop/solo", &["bash", "-c", script]));
    assert_eq!(other.len(), 1, "{other:?}");
    // When the chosen endpoint goes away, the client moves on (to one other endpoint).
    let chosen = seen.keys().next().unwrap().clone();
    lab.ok(&["delete", &format!("pod/shop/{chosen}")]);
    lab.wait(
        "the client to be served by another pod",
        Duration::from_secs(5),
        |l| {
            let now = pods_answering(&l.exec_ok(
                "pod/shop/client",
                &[
                    "bash",
                    "-c",
                    "for i in $(seq 10); do curl -s -m 2 http://172.16.20.13/; echo; done",
                ],
            ));
            now.len() == 1 && !now.contains_key(&chosen)
        },
    );
}

fn load_balancer_source_ranges_block_and_allow(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2efw", &[&fixture("lab-proxy.yaml")], &[]);
    let lb = |name: &str| {
        lab.status()["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["load_balancer_ips"][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    let guarded = lb("guarded");
    // The outside client (172.18.0.2) is not in 203.0.113.0/24: dropped.
    let out = lab.exec(
        "outside",
        &["curl", "-sS", "-m", "1", &format!("http://{guarded}/")],
    );
    assert!(
        !out.status.success(),
        "a client outside the source ranges must be blocked"
    );
    // Allow the outside client's network and it gets through.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("allow.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Service\nmetadata: {name: guarded, namespace: shop}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  loadBalancerSourceRanges: [203.0.113.0/24, 172.18.0.0/24]\n  ports: [{port: 80, targetPort: http}]\n",
    )
    .unwrap();
    lab.ok(&["apply", f.to_str().unwrap()]);
    lab.wait(
        "the allowed client to get through",
        Duration::from_secs(5),
        |l| {
            l.exec(
                "outside",
                &["curl", "-sS", "-m", "1", &format!("http://{guarded}/")],
            )
            .status
            .success()
        },
    );
    // An unrestricted load balancer is not affected.
    let open = lb("web-lb");
    assert!(
        lab.exec(
            "outside",
            &["curl", "-sS", "-m", "2", &format!("http://{open}/")]
        )
        .status
        .success()
    );
}

/// Sends one datagram from a fixed source port (so that conntrack sees the
/// same flow every time) and prints the answer.
const UDP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 40053))
s.settimeout(1.0)
s.sendto(b"q", ("172.16.20.53", 53))
try:
    print(s.recvfrom(4096)[0].decode())
except socket.timeout:
    print("timeout")
"#;

fn a_udp_service_keeps_answering_after_its_only_endpoint_is_replaced(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2eudp", &[&fixture("lab-proxy.yaml")], &[]);
    let ask = |l: &Lab| l.exec_ok("pod/shop/client", &["python3", "-c", UDP_CLIENT]);
    let first = json(&ask(&lab));
    let old = first["pod"].as_str().unwrap().to_string();
    assert!(old.starts_with("dns-"), "{first}");
    lab.ok(&["delete", &format!("pod/shop/{old}")]);
    // Same client flow: it must reach the new pod within a few seconds, not
    // stay stuck on the old one's conntrack entry until it times out.
    let start = Instant::now();
    lab.wait(
        "the same UDP flow to reach the replacement pod",
        Duration::from_secs(8),
        |l| {
            let a = ask(l);
            a.trim() != "timeout" && json(&a)["pod"].as_str().is_some_and(|p| p != old)
        },
    );
    assert!(start.elapsed() < Duration::from_secs(8));
}

fn the_health_check_node_port_reports_local_endpoints(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2ehc", &[&fixture("lab-proxy.yaml")], &[]);
    let ip_of = |n: &str| lab.node_ip(n);
    let hc_port = {
        let svc = std::fs::read(format!(
            "/run/ferry/labs/{}/manifests/service.shop.solo-local.json",
            lab.name
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&svc).unwrap();
        v["spec"]["healthCheckNodePort"].as_u64().unwrap()
    };
    // solo runs on node-2 only.
    let on = |node: &str| {
        lab.exec(
            "outside",
            &[
                "curl",
                "-s",
                "-o",
                "/dev/stderr",
                "-w",
                "%{http_code}",
                "-m",
                "2",
                &format!("http://{}:{hc_port}/", ip_of(node)),
            ],
        )
    };
    let node2 = on("node-2");
    assert_eq!(String::from_utf8_lossy(&node2.stdout), "200");
    let body = json(&String::from_utf8_lossy(&node2.stderr));
    assert_eq!(body["localEndpoints"], 1);
    assert_eq!(body["service"]["name"], "solo-local");
    assert_eq!(String::from_utf8_lossy(&on("node-1").stdout), "503");
}

/// The node's rules as a sorted list of lines: ferry's table as `nft`
/// lists it, with slot marks (which depend on history) blanked; or the
/// iptables rules without counters.
fn ruleset(mode: Mode, lab: &Lab, node: &str) -> Vec<String> {
    if mode == Mode::Iptables {
        let text = lab.exec_ok(node, &["iptables-save"]);
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.split_once(" [") {
                Some((chain, _)) if l.starts_with(':') => chain.to_string(),
                _ => l.to_string(),
            })
            .collect();
        lines.sort();
        return lines;
    }
    let text = lab.exec_ok(node, &["nft", "list", "table", "ip", "ferry"]);
    let mut lines: Vec<String> = text
        .lines()
        .flat_map(|l| l.split(", "))
        .map(|l| {
            l.split_whitespace()
                .map(|w| if w.starts_with("0x") { "MARK" } else { w })
                .collect::<Vec<_>>()
                .join(" ")
                .trim_matches(|c| c == ',' || c == '{' || c == '}')
                .trim()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

fn restarting_the_agent_keeps_established_connections_and_ends_with_the_same_rules(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2erestart", &[&fixture("lab-basic.yaml")], &[]);
    let svc_ip = lab.cluster_ip("web");
    let before = ruleset(mode, &lab, "node/node-1");
    // A TCP connection through the ClusterIP, held across the restart.
    let script = format!(
        "exec 3<>/dev/tcp/{svc_ip}/9000; read -r line <&3; echo \"$line\"; sleep 3; echo still-here >&3; read -r back <&3; echo \"$back\""
    );
    let held = ferry()
        .args([
            "lab",
            "exec",
            "--lab",
            &lab.name,
            "pod/shop/client",
            "--",
            "bash",
            "-c",
            &script,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let agent = lab.status()["nodes"][0]["agent_pid"].as_u64().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &agent.to_string()])
            .status()
            .unwrap()
            .success()
    );
    lab.wait(
        "the agent to be back and healthy",
        Duration::from_secs(10),
        |l| {
            let n = &l.status()["nodes"][0];
            n["agent_pid"].as_u64() != Some(agent) && n["agent_healthy"] == true
        },
    );
    let out = held.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the held connection broke: {text}");
    assert_eq!(text.lines().last(), Some("still-here"), "{text}");
    lab.wait(
        "the same ruleset after the restart",
        Duration::from_secs(5),
        |l| ruleset(mode, l, "node/node-1") == before,
    );
}

fn not_ready_and_terminating_endpoints_get_no_new_connections(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2eready2", &[&fixture("lab-basic.yaml")], &[]);
    let svc_ip = lab.cluster_ip("web");
    let web = lab.pods("web-");
    let (unready, deleted) = (
        web[0]["name"].as_str().unwrap().to_string(),
        web[1]["name"].as_str().unwrap().to_string(),
    );
    lab.exec_ok(
        &format!("pod/shop/{unready}"),
        &[env!("CARGO_BIN_EXE_ferry"), "echo-ctl", "ready", "false"],
    );
    lab.ok(&["delete", &format!("pod/shop/{deleted}")]);
    let script = format!("for i in $(seq 60); do curl -s -m 2 http://{svc_ip}/; echo; done");
    lab.wait(
        "traffic to avoid the unready and the terminating pod",
        Duration::from_secs(6),
        |l| {
            let seen = pods_answering(&l.exec_ok("pod/shop/client", &["bash", "-c", &script]));
            !seen.contains_key(&unready)
                && !seen.contains_key(&deleted)
                && seen.values().sum::<usize>() == 60
        },
    );
}

fn a_table_deleted_or_flushed_from_outside_is_restored(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2etamper", &[&fixture("lab-proxy.yaml")], &[]);
    let works = |l: &Lab| {
        l.exec(
            "pod/shop/client",
            &["curl", "-s", "-m", "1", "http://172.16.20.10/"],
        )
        .status
        .success()
    };
    assert!(works(&lab));
    let (tampers, look, expect): (&[&[&str]], &[&str], &str) = match mode {
        Mode::Nftables => (
            &[
                &["nft", "flush", "table", "ip", "ferry"],
                &["nft", "delete", "table", "ip", "ferry"],
            ],
            &["nft", "list", "tables"],
            "table ip ferry\n",
        ),
        Mode::Iptables => (
            &[
                &["iptables", "-t", "nat", "-F"],
                &["bash", "-c", "iptables -t nat -F && iptables -t nat -X"],
            ],
            &["iptables-save", "-t", "nat"],
            "-j KUBE-SERVICES",
        ),
    };
    for tamper in tampers {
        lab.exec_ok("node/node-1", tamper);
        // The agent checks every second (nftables) or every 5 s (iptables).
        lab.wait("the rules to be restored", Duration::from_secs(12), |l| {
            l.exec_ok("node/node-1", look).contains(expect) && works(l)
        });
    }
}

/// A scratch network namespace, deleted on drop.
struct ScratchNs(&'static str);

impl ScratchNs {
    fn new(name: &'static str) -> ScratchNs {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .output();
        assert!(
            std::process::Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .unwrap()
                .success()
        );
        // As on any node: loopback up (the agents bind 127.0.0.1).
        assert!(
            std::process::Command::new("ip")
                .args(["-n", name, "link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success()
        );
        ScratchNs(name)
    }

    /// What `cmd` prints, whether it succeeded or not.
    fn output_even_failed(&self, cmd: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", self.0])
            .args(cmd)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What `cmd` prints; a listing that fails fails the test, so "the
    /// rule is gone" can never be concluded from a command that broke.
    fn output(&self, cmd: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", self.0])
            .args(cmd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} in {}: {}",
            self.0,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ferry agent` in this namespace, following `dir`, health on
    /// 127.0.0.1:`health` and metrics on `health - 7` (10256 and 10249 by
    /// default), its stderr appended to `dir/agent.log`; callers add flags.
    fn agent_command(&self, dir: &std::path::Path, health: u16) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args([
            "netns",
            "exec",
            self.0,
            env!("CARGO_BIN_EXE_ferry"),
            "agent",
        ])
        .args(["--node", "n1"])
        .arg("--source")
        .arg(format!("manifests:{}", dir.display()))
        .arg("--healthz-bind-address")
        .arg(format!("127.0.0.1:{health}"))
        .arg("--metrics-bind-address")
        .arg(format!("127.0.0.1:{}", health - 7))
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("agent.log"))
                .unwrap(),
        );
        c
    }

    /// An agent of `mode` with an empty cluster, killed on drop.
    fn agent(&self, mode: Mode, dir: &std::path::Path) -> KillOnDrop {
        KillOnDrop(
            self.agent_command(dir, 10256)
                .args(["--proxy-mode", mode.as_str()])
                .spawn()
                .unwrap(),
        )
    }

    /// Whether `mode`'s rules are in the namespace.
    fn has_rules(&self, mode: Mode) -> bool {
        match mode {
            // (not `table ip ferry-dns`, the node-local DNS table of both modes)
            Mode::Nftables => self
                .output(&["nft", "list", "tables"])
                .lines()
                .any(|l| l.trim() == "table ip ferry"),
            Mode::Iptables => self.output(&["iptables-save"]).contains(":KUBE-SERVICES"),
        }
    }

    fn wait_for(&self, what: &str, f: impl Fn(&ScratchNs) -> bool) {
        let start = Instant::now();
        while !f(self) {
            // Generous: iptables-restore waits for the xtables lock, which
            // is one for the whole machine and other tests hold it.
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}: not within 30 s; the agents' logs in this test's directory say why"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", self.0])
            .output();
    }
}

/// Prints a log file when the test fails.
struct PrintOnPanic(std::path::PathBuf);

impl Drop for PrintOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {}:\n{}",
                self.0.display(),
                std::fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent_cleanup_removes_the_table(mode: Mode) {
    if !can_run() {
        return;
    }
    // An agent in a scratch namespace installs its rules; once it is
    // stopped, `ferry agent --cleanup` removes them.
    let ns = ScratchNs::new(match mode {
        Mode::Nftables => "ferry-test-cleanup",
        Mode::Iptables => "ferry-test-cleanup-i",
    });
    let dir = tempfile::tempdir().unwrap();
    let agent = ns.agent(mode, dir.path());
    ns.wait_for("the agent's rules", |ns| ns.has_rules(mode));
    drop(agent);
    // A chain of kubelet's, referenced from INPUT, is not ferry's to remove.
    for rule in [
        "iptables -N KUBE-FIREWALL",
        "iptables -A INPUT -j KUBE-FIREWALL",
    ] {
        let mut args = vec!["netns", "exec", ns.0];
        args.extend(rule.split_whitespace());
        assert!(
            std::process::Command::new("ip")
                .args(&args)
                .status()
                .unwrap()
                .success()
        );
    }
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.0,
            env!("CARGO_BIN_EXE_ferry"),
            "agent",
            "--cleanup",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!ns.has_rules(mode), "{}", text(&out));
    assert!(!ns.has_rules(Mode::Nftables));
    let left = ns.output(&["iptables-save"]);
    let kube: Vec<&str> = left.lines().filter(|l| l.contains("KUBE-")).collect();
    assert_eq!(
        kube,
        [":KUBE-FIREWALL - [0:0]", "-A INPUT -j KUBE-FIREWALL"],
        "only kubelet's chain is left: {left}"
    );
}

#[test]
fn a_second_agent_on_a_node_is_refused_and_the_first_keeps_serving() {
    if !can_run() {
        return;
    }
    let ns = ScratchNs::new("ferry-test-second");
    let dir = tempfile::tempdir().unwrap();
    let first = ns.agent(Mode::Nftables, dir.path());
    ns.wait_for("the first agent's rules", |ns| ns.has_rules(Mode::Nftables));
    let started = Instant::now();
    // Other ports, so only the lock can stop it.
    let out = ns
        .agent_command(dir.path(), 20256)
        .args(["--proxy-mode", "iptables"])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the second agent must exit: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("PID {}", first.0.id())),
        "names the first agent's PID {}: {err}",
        first.0.id()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The second one touched nothing: no iptables rules, and the first
    // agent's table and health stay.
    assert!(!ns.has_rules(Mode::Iptables));
    assert!(ns.has_rules(Mode::Nftables));
    let health = ns.output(&["curl", "-s", "-m", "2", "http://127.0.0.1:10256/healthz"]);
    assert!(health.contains("lastUpdated"), "{health}");
}

#[test]
fn health_says_503_and_why_while_syncs_fail_and_the_synced_version_waits_for_success() {
    if !can_run() {
        return;
    }
    let ns = ScratchNs::new("ferry-test-health");
    let dir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let flag = bin.path().join("fail");
    // iptables-restore that fails while the flag file exists.
    for tool in ["iptables-restore", "ip6tables-restore"] {
        let real = ferry_sys::find_in_path(tool).unwrap();
        let script = format!(
            "#!/bin/sh\nif [ -e {} ]; then echo 'injected failure: table busy' >&2; exit 1; fi\nexec {} \"$@\"\n",
            flag.display(),
            real.display()
        );
        let path = bin.path().join(tool);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let _agent = KillOnDrop(
        ns.agent_command(dir.path(), 10256)
            .args(["--proxy-mode", "iptables", "--dns-addresses", "none"])
            .env("PATH", path)
            .spawn()
            .unwrap(),
    );
    let health = |ns: &ScratchNs| -> (u16, serde_json::Value) {
        // Not `output`: refused while the agent starts is an answer here.
        let out = ns.output_even_failed(&[
            "curl",
            "-s",
            "-m",
            "2",
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{http_code}",
            "http://127.0.0.1:10256/healthz",
        ]);
        let (body, code) = out.trim().rsplit_once('\n').unwrap_or(("null", "0"));
        (
            code.parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or_default(),
        )
    };
    ns.wait_for("healthy at start", |ns| health(ns).0 == 200);
    std::fs::write(&flag, "").unwrap();
    std::fs::write(
        dir.path().join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default, resourceVersion: \"7\"}\nspec:\n  clusterIP: 10.96.0.50\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    ns.wait_for("503 while the sync fails", |ns| health(ns).0 == 503);
    let (_, body) = health(&ns);
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("injected failure"),
        "the body says why: {body}"
    );
    assert_ne!(body["syncedResourceVersion"], 7, "not synced yet: {body}");
    assert_eq!(body["nodeEligible"], true);
    std::fs::remove_file(&flag).unwrap();
    // iptables mode retries at its next check (every 5 s).
    let start = Instant::now();
    loop {
        let (code, body) = health(&ns);
        if code == 200 && body["syncedResourceVersion"] == 7 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "healthy again after the retry: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// --min-sync-period lives in the proxy component, as kube-proxy's sync
/// runner lives in its proxier: a burst within the period is programmed
/// once, its last change included.
#[test]
fn min_sync_period_merges_a_burst_and_keeps_the_last_change() {
    if !can_run() {
        return;
    }
    let ns = ScratchNs::new("ferry-test-minsync");
    let dir = tempfile::tempdir().unwrap();
    let svc = |name: &str, rv: u32, ip: &str| {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, resourceVersion: \"{rv}\"}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
            ),
        )
        .unwrap();
    };
    svc("a", 1, "10.96.0.1");
    let _agent = KillOnDrop(
        ns.agent_command(dir.path(), 10256)
            .args(["--dns-addresses", "none", "--min-sync-period", "2s"])
            .spawn()
            .unwrap(),
    );
    let synced = |ns: &ScratchNs| {
        let out =
            ns.output_even_failed(&["curl", "-s", "-m", "1", "http://127.0.0.1:10256/healthz"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v["syncedResourceVersion"].as_u64())
    };
    ns.wait_for("the agent up with a programmed", |ns| synced(ns) == Some(1));
    // The first change goes through at once (nothing synced within the period).
    svc("b", 2, "10.96.0.2");
    ns.wait_for("b programmed at once", |ns| synced(ns) == Some(2));
    // A burst right after waits for the period, and its last change is kept.
    svc("c", 3, "10.96.0.3");
    std::thread::sleep(Duration::from_millis(100));
    svc("d", 4, "10.96.0.4");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        synced(&ns),
        Some(2),
        "changes within the period are held back"
    );
    let rules = ns.output(&["nft", "list", "table", "ip", "ferry"]);
    assert!(!rules.contains("10.96.0.4"), "not in the kernel yet");
    ns.wait_for("the burst, last change included, after the period", |ns| {
        synced(ns) == Some(4)
    });
    let rules = ns.output(&["nft", "list", "table", "ip", "ferry"]);
    assert!(
        rules.contains("10.96.0.3") && rules.contains("10.96.0.4"),
        "{rules}"
    );
}

/// nftables mode numbers at most 4,095 endpoints per ServicePort: beyond
/// that it says so, in the log and in a metric, and still serves.
#[test]
fn more_endpoints_than_nftables_mode_uses_are_counted_and_the_service_still_served() {
    if !can_run() {
        return;
    }
    let ns = ScratchNs::new("ferry-test-4095");
    let dir = tempfile::tempdir().unwrap();
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: 10.96.7.7, ports: [{port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: default, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nports: [{port: 80}]\nendpoints:\n",
    );
    for i in 0..4_100u32 {
        y.push_str(&format!(
            "- {{addresses: [10.1.{}.{}]}}\n",
            i / 250,
            1 + i % 250
        ));
    }
    std::fs::write(dir.path().join("big.yaml"), y).unwrap();
    let _agent = KillOnDrop(
        ns.agent_command(dir.path(), 10256)
            .args(["--dns-addresses", "none"])
            .spawn()
            .unwrap(),
    );
    let over = |ns: &ScratchNs| {
        ns.output_even_failed(&["curl", "-s", "-m", "1", "http://127.0.0.1:10249/metrics"])
            .lines()
            .any(|l| {
                l.starts_with("ferry_proxy_service_ports_over_endpoint_limit{ip_family=\"IPv4\"} 1")
            })
    };
    ns.wait_for("the over-limit gauge at 1", over);
    let rules = ns.output(&["nft", "list", "table", "ip", "ferry"]);
    assert!(rules.contains("10.96.7.7"), "the Service is programmed");
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("more endpoints than nftables mode uses"))
            .count(),
        1,
        "logged once: {log}"
    );
}

#[test]
fn switching_modes_removes_the_other_modes_rules() {
    if !can_run() {
        return;
    }
    let ns = ScratchNs::new("ferry-test-switch");
    let dir = tempfile::tempdir().unwrap();
    let _log = PrintOnPanic(dir.path().join("agent.log"));
    let mut before: Option<Mode> = None;
    for mode in [Mode::Iptables, Mode::Nftables, Mode::Iptables] {
        let agent = ns.agent(mode, dir.path());
        ns.wait_for(&format!("{mode:?} rules"), |ns| ns.has_rules(mode));
        if let Some(old) = before {
            ns.wait_for(
                &format!("{old:?} rules gone after switching to {mode:?}"),
                |ns| !ns.has_rules(old),
            );
        }
        drop(agent);
        before = Some(mode);
    }
}

/// Requests from `client` to `url` until every pod of `want` answered
/// (bounded): the client address each endpoint saw, by endpoint pod.
fn clients_seen_by_endpoints(
    lab: &Lab,
    client: &str,
    url: &str,
    want: &[&str],
) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..10 {
        let script = format!("for i in $(seq 20); do curl -s -m 2 {url}; echo; done");
        let out = lab.exec_ok(client, &["bash", "-c", &script]);
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let v = json(line);
            let ip = v["client"].as_str().unwrap().rsplit_once(':').unwrap().0;
            seen.insert(v["pod"].as_str().unwrap().to_string(), ip.to_string());
        }
        if want.iter().all(|p| seen.contains_key(*p)) {
            break;
        }
    }
    seen
}

fn pod_traffic_to_a_cluster_ip_keeps_the_client_pods_own_ip(mode: Mode) {
    if !can_run() {
        return;
    }
    // The seed scenario, as `scripts/run.sh` starts it, plus a client pod
    // on node-1; and a cluster whose podCIDRs lie outside the lab's
    // default pod range.
    // (lab, manifests, client pod, URL (empty: the Service web), endpoints)
    type Case<'a> = (&'a str, Vec<String>, &'a str, &'a str, [&'a str; 3]);
    let cases: [Case; 2] = [
        (
            "e2eseedsrc",
            vec![
                repo().join("examples/nginx-web.yaml").display().to_string(),
                fixture("seed-client.yaml"),
            ],
            "pod/demo/client",
            "http://172.16.255.220/",
            [
                "nginx-web-5d6b9c7f4-2xk8p",
                "nginx-web-5d6b9c7f4-9qrzt",
                "nginx-web-5d6b9c7f4-lmv6w",
            ],
        ),
        (
            "e2efarsrc",
            vec![fixture("pod-cidrs-elsewhere.yaml")],
            "pod/far/client",
            "",
            ["web-a", "web-b", "web-b"],
        ),
    ];
    for (name, paths, client, url, endpoints) in cases {
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let lab = Lab::up_in(mode, name, &paths, &[]);
        let url = if url.is_empty() {
            format!("http://{}/", lab.cluster_ip("web"))
        } else {
            url.to_string()
        };
        let (ns, pod) = client.trim_start_matches("pod/").split_once('/').unwrap();
        let client_ip = lab.status()["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["namespace"] == ns && p["name"] == pod)
            .unwrap()["ip"]
            .as_str()
            .unwrap()
            .to_string();
        let seen = clients_seen_by_endpoints(&lab, client, &url, &endpoints);
        for e in endpoints {
            assert_eq!(
                seen.get(e).map(String::as_str),
                Some(client_ip.as_str()),
                "{name}: endpoint {e} must see the client pod's own IP {client_ip} (not masqueraded): {seen:?}"
            );
        }
    }
}

both_modes!(
    pod_traffic_to_a_cluster_ip_keeps_the_client_pods_own_ip,
    cluster_ip_spreads_over_every_endpoint_from_a_pod_on_each_node,
    node_ports_and_load_balancer_ips_answer_from_outside,
    local_policy_keeps_the_client_ip_and_only_uses_local_endpoints,
    hairpin_works_and_a_service_without_endpoints_refuses_at_once,
    endpoint_changes_reach_the_rules_and_agent_metrics_report_syncs,
    session_affinity_keeps_a_client_on_one_endpoint_until_it_goes_away,
    load_balancer_source_ranges_block_and_allow,
    a_udp_service_keeps_answering_after_its_only_endpoint_is_replaced,
    the_health_check_node_port_reports_local_endpoints,
    restarting_the_agent_keeps_established_connections_and_ends_with_the_same_rules,
    not_ready_and_terminating_endpoints_get_no_new_connections,
    a_table_deleted_or_flushed_from_outside_is_restored,
    agent_cleanup_removes_the_table,
);
