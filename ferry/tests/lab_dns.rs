//! End-to-end tests of cluster DNS in a lab: each node's agent serves DNS
//! at 169.254.20.10 (NOTRACK, on a dummy interface) and pods' resolv.conf
//! points there; queries are made with `dig` and the C library resolver
//! (`getent`) from inside pods. Root needed (fail under CI=true, skip
//! otherwise).

mod common;

use std::time::{Duration, Instant};

use common::*;

fn seed() -> String {
    repo().join("examples/nginx-web.yaml").display().to_string()
}

fn a_pod(lab: &Lab, namespace: &str) -> String {
    let status = lab.status();
    let pod = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no pod in {namespace}: {status}"));
    format!("pod/{namespace}/{}", pod["name"].as_str().unwrap())
}

fn dig(lab: &Lab, pod: &str, args: &[&str]) -> String {
    let mut cmd = vec!["dig", "+time=1", "+tries=1"];
    cmd.extend(args);
    lab.exec_ok(pod, &cmd)
}

#[test]
fn pods_resolve_services_by_full_name_and_through_the_search_path() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2edns", &[&seed()], &[]);
    let pod = a_pod(&lab, "demo");
    let resolv = lab.exec_ok(&pod, &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 169.254.20.10"), "{resolv}");
    assert_eq!(
        dig(
            &lab,
            &pod,
            &["+short", "nginx-web-service.demo.svc.cluster.local"]
        )
        .trim(),
        "172.16.255.220"
    );
    // The short name through the search path, with dig and with the C library.
    assert_eq!(
        dig(&lab, &pod, &["+short", "+search", "nginx-web-service"]).trim(),
        "172.16.255.220"
    );
    let getent = lab.exec_ok(&pod, &["getent", "hosts", "nginx-web-service"]);
    assert!(getent.starts_with("172.16.255.220"), "{getent}");
    // The answer is authoritative, with CoreDNS's TTL, and comes from the node-local address.
    let full = dig(
        &lab,
        &pod,
        &["nginx-web-service.demo.svc.cluster.local", "A"],
    );
    assert!(full.contains("flags: qr aa rd"), "{full}");
    assert!(full.contains("SERVER: 169.254.20.10#53"), "{full}");
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(
        words.windows(5).any(|w| w
            == [
                "nginx-web-service.demo.svc.cluster.local.",
                "5",
                "IN",
                "A",
                "172.16.255.220"
            ]),
        "{full}"
    );
    // A name that does not exist in an existing namespace: NXDOMAIN with the SOA.
    let missing = dig(&lab, &pod, &["nope.demo.svc.cluster.local", "A"]);
    assert!(missing.contains("status: NXDOMAIN"), "{missing}");
    assert!(missing.contains("SOA"), "{missing}");
    // The same over TCP.
    assert_eq!(
        dig(
            &lab,
            &pod,
            &["+tcp", "+short", "nginx-web-service.demo.svc.cluster.local"]
        )
        .trim(),
        "172.16.255.220"
    );
    // DNS to the node-local address is not tracked by conntrack, while
    // other traffic of the pod is (the control: conntrack lists it).
    let node = lab.status()["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| format!("pod/demo/{}", p["name"].as_str().unwrap()) == pod)
        .unwrap()["node"]
        .as_str()
        .unwrap()
        .to_string();
    lab.exec_ok(
        &pod,
        &[
            "curl",
            "-s",
            "-m",
            "2",
            "-o",
            "/dev/null",
            "http://172.16.255.220/",
        ],
    );
    let node = format!("node/{node}");
    let tracked = lab.exec_ok(
        &node,
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--orig-dst",
            "172.16.255.220",
        ],
    );
    assert!(
        tracked.contains("dport=80"),
        "the control flow is not listed: {tracked}"
    );
    let dns = lab.exec_ok(&node, &["conntrack", "-L", "--orig-dst", "169.254.20.10"]);
    assert!(!dns.contains("dport=53"), "DNS flows were tracked: {dns}");
    // CoreDNS-style readiness of the node's DNS, and its metrics in the agent's.
    let node_ip = lab.node_ip(node.trim_start_matches("node/"));
    let ready = lab.exec_ok(
        &node,
        &["curl", "-sS", "-f", &format!("http://{node_ip}:8181/ready")],
    );
    assert_eq!(ready.trim(), "OK");
    let metrics = lab.exec_ok(
        &node,
        &["curl", "-sS", &format!("http://{node_ip}:10249/metrics")],
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferry_dns_requests_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// `dig` that may fail (inside waits: a lost query is retried, not fatal).
fn dig_quiet(lab: &Lab, pod: &str, args: &[&str]) -> String {
    let mut cmd = vec!["dig", "+time=1", "+tries=1"];
    cmd.extend(args);
    String::from_utf8_lossy(&lab.exec(pod, &cmd).stdout).into_owned()
}

#[test]
fn a_created_service_resolves_within_a_second_and_a_deleted_one_stops() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2ednsupd", &[&seed()], &[]);
    let pod = a_pod(&lab, "demo");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("more.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: later, namespace: demo}\nspec:\n  clusterIP: 172.16.77.7\n  selector: {app: nginx-web}\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let name = "later.demo.svc.cluster.local";
    assert!(dig(&lab, &pod, &[name]).contains("status: NXDOMAIN"));
    lab.ok(&["apply", &file.display().to_string()]);
    let applied = Instant::now();
    lab.wait("the new service to resolve", Duration::from_secs(5), |l| {
        dig_quiet(l, &pod, &["+short", name]).trim() == "172.16.77.7"
    });
    let took = applied.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "resolved only after {took:?}"
    );
    lab.ok(&["delete", "service/demo/later"]);
    let deleted = Instant::now();
    lab.wait(
        "the deleted service to stop resolving",
        Duration::from_secs(5),
        |l| dig(l, &pod, &[name]).contains("status: NXDOMAIN"),
    );
    assert!(
        deleted.elapsed() < Duration::from_secs(1),
        "still resolving after {:?}",
        deleted.elapsed()
    );
}

/// The agent can also serve the cluster DNS Service's ClusterIP, as
/// NodeLocal DNSCache does: DNS to it is NOTRACKed, so the proxy's DNAT
/// to the Service's endpoints (here an address nobody answers on) does
/// not apply and the node answers itself. On SIGTERM the agent gives the
/// ClusterIP back (queries go to the endpoints again) and leaves the
/// proxy's rules; started again, it takes the address back.
#[test]
fn the_agent_answers_on_the_dns_service_cluster_ip_instead_of_its_endpoints_and_gives_it_back_on_sigterm()
 {
    if !can_run() {
        return;
    }
    let ns = "ferry-test-dnsvip";
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", ns])
        .output();
    assert!(
        std::process::Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .unwrap()
            .success()
    );
    struct Cleanup(&'static str, Option<std::process::Child>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(c) = &mut self.1 {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", self.0])
                .output();
        }
    }
    let mut cleanup = Cleanup(ns, None);
    let in_ns = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(in_ns(&["ip", "link", "set", "lo", "up"]).status.success());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: kube-dns, namespace: kube-system}\nspec:\n  clusterIP: 172.16.0.10\n  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: kube-dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns}}\naddressType: IPv4\nports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]\nendpoints:\n- {addresses: [10.9.9.9]}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: 172.16.0.20\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let source = format!("manifests:{}", dir.path().display());
    cleanup.1 = Some(
        std::process::Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_ferry"), "agent"])
            .args(["--node", "n1", "--source", &source])
            .args([
                "--dns-addresses",
                "169.254.20.10,172.16.0.10",
                "--dns-upstream",
                "none",
            ])
            .args(["--healthz-bind-address", "127.0.0.1:10256"])
            .args(["--metrics-bind-address", "127.0.0.1:10249"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ask = |server: &str| {
        let out = in_ns(&[
            "dig",
            "+time=1",
            "+tries=1",
            "+short",
            &format!("@{server}"),
            "web.default.svc.cluster.local",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let start = Instant::now();
    while ask("169.254.20.10") != "172.16.0.20" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the agent never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The proxy's rules for the ClusterIP are in place (DNAT to 10.9.9.9) …
    let rules = String::from_utf8_lossy(&in_ns(&["nft", "list", "table", "ip", "ferry"]).stdout)
        .into_owned();
    assert!(rules.contains("172.16.0.10 . udp . 53"), "{rules}");
    // … yet the ClusterIP is answered by the node, over UDP and TCP.
    assert_eq!(ask("172.16.0.10"), "172.16.0.20");
    let tcp = in_ns(&[
        "dig",
        "+tcp",
        "+time=1",
        "+tries=1",
        "+short",
        "@172.16.0.10",
        "web.default.svc.cluster.local",
    ]);
    assert_eq!(String::from_utf8_lossy(&tcp.stdout).trim(), "172.16.0.20");

    let spawn = || {
        std::process::Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_ferry"), "agent"])
            .args(["--node", "n1", "--source", &source])
            .args(["--dns-addresses", "169.254.20.10,172.16.0.10"])
            .args(["--dns-upstream", "none"])
            .args(["--healthz-bind-address", "127.0.0.1:10256"])
            .args(["--metrics-bind-address", "127.0.0.1:10249"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let addrs = |in_ns: &dyn Fn(&[&str]) -> std::process::Output| {
        let out = in_ns(&["ip", "-4", "-o", "addr", "show"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut agent = cleanup.1.take().unwrap();
    let pid = agent.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    while agent.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the agent did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = addrs(&in_ns);
    assert!(
        !after.contains("172.16.0.10"),
        "the ClusterIP is given back: {after}"
    );
    assert!(
        after.contains("169.254.20.10"),
        "the link-local address stays: {after}"
    );
    let notrack = in_ns(&["nft", "list", "table", "ip", "ferry-dns"]);
    assert!(notrack.status.success());
    assert!(
        !String::from_utf8_lossy(&notrack.stdout).contains("172.16.0.10"),
        "no NOTRACK for the ClusterIP once given back"
    );
    let rules = in_ns(&["nft", "list", "table", "ip", "ferry"]);
    assert!(rules.status.success(), "the proxy's rules stay");
    assert!(String::from_utf8_lossy(&rules.stdout).contains("172.16.0.10 . udp . 53"));
    // Started again, the agent takes the ClusterIP back.
    cleanup.1 = Some(spawn());
    let start = Instant::now();
    while ask("172.16.0.10") != "172.16.0.20" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the restarted agent never answered on the ClusterIP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
