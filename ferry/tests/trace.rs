//! `ferry trace` against running labs of the seed scenario
//! (examples/nginx-web.yaml: three pods behind 172.16.255.220:80, one on
//! node-1, two on node-2): the iptables chains with their statistic
//! probabilities as iptables-save prints them, the nftables map elements,
//! routes via cni0 and flannel.1, a mismatch after the kernel is changed
//! behind ferry's back, and the SVG rendered to PNG.

mod common;

use std::process::Output;

use common::*;
use serde_json::Value;

fn seed() -> String {
    repo().join("examples/nginx-web.yaml").display().to_string()
}

fn trace(lab: &Lab, args: &[&str]) -> Output {
    ferry()
        .args(["trace", "--lab", &lab.name])
        .args(args)
        .output()
        .unwrap()
}

fn trace_json(lab: &Lab, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = trace(lab, &a);
    json(&String::from_utf8_lossy(&out.stdout))
}

/// The seed's client: the nginx-web pod on node-1 (itself an endpoint).
fn client(lab: &Lab) -> String {
    let pods = lab.pods("nginx-web");
    let p = pod_named(&pods, "node-1");
    format!("pod/demo/{}", p["name"].as_str().unwrap())
}

/// Runs a command inside a lab namespace.
fn in_netns(ns: &str, cmd: &[&str]) -> Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .unwrap()
}

fn kinds(t: &Value) -> Vec<String> {
    t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap().to_string())
        .collect()
}

fn kernel_lines(hop: &Value) -> Vec<String> {
    hop["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["kernel"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn iptables_trace_of_the_seed_lists_kube_chains_probabilities_and_routes() {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(
        Mode::Iptables,
        &format!("tri{}", std::process::id() % 10000),
        &[&seed()],
        &[],
    );
    let from = client(&lab);
    let t = trace_json(&lab, &[&from, "http://nginx-web-service/"]);
    assert_eq!(
        kinds(&t),
        ["dns", "service", "routing", "routing", "routing", "reply"],
        "{t:#}"
    );
    assert_eq!(t["mismatches"], 0, "{t:#}");
    assert_eq!(t["destination"], "172.16.255.220:80");
    let svc = &t["hops"][1];
    let path: Vec<&str> = svc["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(path[0], "KUBE-SERVICES");
    assert!(path[1].starts_with("KUBE-SVC-"), "{path:?}");
    assert_eq!(path[2], "KUBE-SEP-… ×3 (DNAT)");
    // The statistic probabilities as the kernel prints them, in order.
    let lines = kernel_lines(svc);
    let svc_chain = path[1];
    let jumps: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("-A {svc_chain} ")) && l.contains("-j KUBE-SEP-"))
        .collect();
    assert_eq!(jumps.len(), 3, "{lines:#?}");
    assert!(
        jumps[0].contains("--probability 0.33333333349"),
        "{}",
        jumps[0]
    );
    assert!(
        jumps[1].contains("--probability 0.50000000000"),
        "{}",
        jumps[1]
    );
    assert!(!jumps[2].contains("--probability"), "{}", jumps[2]);
    let dnat: Vec<&String> = lines.iter().filter(|l| l.contains("-j DNAT")).collect();
    for ep in ["10.204.0.13:80", "10.204.1.3:80", "10.204.1.8:80"] {
        assert!(
            dnat.iter()
                .any(|l| l.ends_with(&format!("--to-destination {ep}"))),
            "{ep}: {dnat:#?}"
        );
    }
    let shares: Vec<f64> = svc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule_probability"].as_f64().unwrap())
        .collect();
    assert_eq!(shares, [1.0 / 3.0, 0.5, 1.0]);
    assert!(
        svc["endpoints"][0]["masquerade"]
            .as_str()
            .unwrap()
            .starts_with("hairpin")
    );
    // Local endpoint through the bridge, the remote ones through VXLAN.
    for (i, dev) in [(2, "cni0"), (3, "flannel.1"), (4, "flannel.1")] {
        let hop = &t["hops"][i];
        assert_eq!(hop["path"][0], dev, "{hop:#}");
        assert!(
            kernel_lines(hop)[0].contains(&format!("dev {dev}")),
            "{hop:#}"
        );
    }
    // The text form and the probe: a real connection and its conntrack entry.
    let out = trace(&lab, &[&from, "nginx-web-service:80", "--probe"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        text.contains("conntrack: tcp") && text.contains("dst=172.16.255.220"),
        "{text}"
    );
    assert!(text.contains("counter moved: -A KUBE-SEP-"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("MISMATCH")), "{text}");
}

#[test]
fn nftables_trace_of_the_seed_lists_map_elements_and_a_deleted_fdb_entry_is_a_mismatch() {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(
        Mode::Nftables,
        &format!("trn{}", std::process::id() % 10000),
        &[&seed()],
        &[],
    );
    let from = client(&lab);
    let t = trace_json(&lab, &[&from, "172.16.255.220:80"]);
    assert_eq!(
        kinds(&t),
        ["service", "routing", "routing", "routing", "reply"],
        "{t:#}"
    );
    assert_eq!(t["mismatches"], 0, "{t:#}");
    let svc = &t["hops"][0];
    let lines = kernel_lines(svc);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cluster_ips 172.16.255.220 . tcp . 80 : 0x")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == "pick 0x3 : goto pick_3"),
        "{lines:#?}"
    );
    let endpoints: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("endpoints "))
        .collect();
    assert_eq!(endpoints.len(), 3, "{lines:#?}");
    assert!(
        endpoints[0].ends_with(" . 0 : 10.204.0.13 . 80"),
        "{endpoints:#?}"
    );
    assert!(
        svc["path"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("numgen random mod 3"))
    );

    // The probe's packets traced through ferry's table (no per-Service
    // counters in nftables mode).
    let out = trace(&lab, &[&from, "172.16.255.220:80", "--probe"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(text.contains("conntrack: tcp"), "{text}");
    assert!(
        text.contains("nftrace: ip ferry services rule")
            && text.contains("nftrace: ip ferry pick_3 rule"),
        "{text}"
    );

    let node1 = svc["netns"].as_str().unwrap();
    let left = in_netns(node1, &["nft", "list", "table", "ip", "ferry-trace"]);
    assert!(
        !left.status.success(),
        "the tracing table is removed after the probe"
    );

    // Behind ferry's back: node-1 forgets where node-2's VTEP is. The
    // overlay programs only what its leases change, so it stays gone.
    let remote = &t["hops"][2];
    let fdb = remote["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "FDB on flannel.1")
        .unwrap()["model"]
        .as_str()
        .unwrap()
        .to_string();
    let (mac, dst) = fdb.split_once(" dst ").unwrap();
    let node_ns = remote["netns"].as_str().unwrap();
    let del = in_netns(
        node_ns,
        &["bridge", "fdb", "del", mac, "dev", "flannel.1", "dst", dst],
    );
    assert!(del.status.success(), "{}", common::text(&del));
    let out = trace(&lab, &[&from, "172.16.255.220:80"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let flagged: Vec<&str> = text.lines().filter(|l| l.starts_with("MISMATCH")).collect();
    assert_eq!(
        flagged.len(),
        2,
        "one per remote endpoint's route hop:\n{text}"
    );
    assert!(
        flagged.iter().all(|l| l.contains("FDB on flannel.1")),
        "{text}"
    );
    let t = trace_json(&lab, &[&from, "172.16.255.220:80"]);
    assert_eq!(t["mismatches"], 2);
    let bad: Vec<usize> = t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, h)| {
            h["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["status"] == "mismatch")
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(bad, [2, 3], "the two VXLAN route hops, nothing else");
}

/// The hops of an SVG, in document order: `data-kind` of each `class="hop"` group.
fn svg_hops(svg: &str) -> Vec<String> {
    svg.match_indices("<g class=\"hop\"")
        .map(|(i, _)| {
            let rest = &svg[i..];
            let k = rest.find("data-kind=\"").unwrap() + "data-kind=\"".len();
            rest[k..k + rest[k..].find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn svg_pictures_of_three_traces_render_and_show_every_hop_in_order() {
    if !can_run() || !ferry_sys::testing::have_or_skip("rsvg-convert") {
        return;
    }
    let lab = Lab::up(
        &format!("trs{}", std::process::id() % 10000),
        &[&seed()],
        &[],
    );
    let from = client(&lab);
    let dir = tempfile::tempdir().unwrap();
    let scenarios: [(&str, &str); 3] = [
        (&from, "http://nginx-web-service/"),
        (&from, "10.204.1.3:80"),
        ("node/node-2", "172.16.255.220:80"),
    ];
    for (i, (from, to)) in scenarios.iter().enumerate() {
        let svg_path = dir.path().join(format!("t{i}.svg"));
        let out = trace(&lab, &[from, to, "--svg", svg_path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", common::text(&out));
        let t = trace_json(&lab, &[from, to]);
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert_eq!(svg_hops(&svg), kinds(&t), "{from} -> {to}");
        for n in ["node-1", "node-2"] {
            assert!(
                svg.contains(&format!("data-name=\"{n}\"")),
                "{from} -> {to}: no {n}"
            );
        }
        assert!(svg.contains("data-name=\"cni0\"") && svg.contains("data-name=\"flannel.1\""));
        // The picture is readable without zooming (1200 px wide, taller
        // with each hop).
        let (w, h) = ferry_sys::testing::render_svg(&svg).unwrap();
        assert_eq!(w, 1200);
        assert!(h > 300 + 60 * kinds(&t).len() as u32, "{h}");
    }
}

/// The checks of a hop as (status, what, kernel).
fn checks(hop: &Value) -> Vec<(String, String, String)> {
    hop["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_string(),
                c["what"].as_str().unwrap().to_string(),
                c["kernel"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn dns_hop_asks_the_pods_real_nameserver_and_flags_a_stale_or_silent_one() {
    if !can_run() {
        return;
    }
    let lab = Lab::up(
        &format!("trd{}", std::process::id() % 10000),
        &[&seed()],
        &[],
    );
    let from = client(&lab);
    let to = "http://nginx-web-service/";

    // Healthy: the node-local DNS answers what the model says.
    let t = trace_json(&lab, &[&from, to]);
    let dns = &t["hops"][0];
    assert_eq!(dns["kind"], "dns");
    assert_eq!(
        checks(dns),
        [(
            "match".to_string(),
            "169.254.20.10 answers A nginx-web-service.demo.svc.cluster.local".to_string(),
            "NOERROR A 172.16.255.220".to_string()
        )],
        "{dns:#}"
    );
    let out = trace(&lab, &[&from, to]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        text.contains(
            "    ok      169.254.20.10 answers A nginx-web-service.demo.svc.cluster.local: NOERROR A 172.16.255.220"
        ),
        "{text}"
    );

    // Behind ferry's back: the pod's resolv.conf names a nameserver in the
    // pod that answers from a stale copy of the cluster (the Service had
    // another ClusterIP), then one where nothing answers.
    let pod_ns = t["from"]["netns"].as_str().unwrap().to_string();
    let resolv_path = format!("/etc/netns/{pod_ns}/resolv.conf");
    let original = std::fs::read_to_string(&resolv_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stale = std::fs::read_to_string(seed())
        .unwrap()
        .replace("172.16.255.220", "172.16.255.221");
    std::fs::write(dir.path().join("stale.yaml"), stale).unwrap();
    let server = Running(
        std::process::Command::new("ip")
            .args(["netns", "exec", &pod_ns])
            .arg(env!("CARGO_BIN_EXE_ferry"))
            .args(["dns", "--listen", "127.0.0.53:53", "--source"])
            .arg(format!("manifests:{}", dir.path().display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    lab.wait(
        "the stale nameserver answers",
        std::time::Duration::from_secs(20),
        |_| {
            let o = in_netns(
                &pod_ns,
                &[
                    "dig",
                    "+time=1",
                    "+tries=1",
                    "+short",
                    "@127.0.0.53",
                    "nginx-web-service.demo.svc.cluster.local",
                ],
            );
            String::from_utf8_lossy(&o.stdout).trim() == "172.16.255.221"
        },
    );
    std::fs::write(
        &resolv_path,
        original.replace("nameserver 169.254.20.10", "nameserver 127.0.0.53"),
    )
    .unwrap();
    let out = trace(&lab, &[&from, to]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    let flagged: Vec<&str> = text.lines().filter(|l| l.starts_with("MISMATCH")).collect();
    assert_eq!(
        flagged,
        [
            "MISMATCH    127.0.0.53 answers A nginx-web-service.demo.svc.cluster.local: NOERROR A 172.16.255.220"
        ],
        "{text}"
    );
    assert!(
        text.contains("            kernel: NOERROR A 172.16.255.221"),
        "{text}"
    );
    let t = trace_json(&lab, &[&from, to]);
    assert_eq!(t["mismatches"], 1, "{t:#}");
    assert_eq!(checks(&t["hops"][0])[0].0, "mismatch");
    let dir_svg = tempfile::tempdir().unwrap();
    let svg_path = dir_svg.path().join("dns.svg");
    trace(&lab, &[&from, to, "--svg", svg_path.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(
        svg.contains("<g class=\"hop\" data-index=\"1\" data-kind=\"dns\" data-mismatch=\"true\">"),
        "the picture marks the DNS hop"
    );
    assert!(
        svg.contains("data-kind=\"service\" data-mismatch=\"false\""),
        "and only it"
    );

    drop(server);
    let t = trace_json(&lab, &[&from, to]);
    let (status, _, kernel) = checks(&t["hops"][0]).remove(0);
    assert_eq!(status, "mismatch");
    assert!(kernel.contains("127.0.0.53:53"), "{kernel}");
    std::fs::write(&resolv_path, original).unwrap();
}

fn decided(hop: &Value) -> Vec<String> {
    hop["decided"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ingress_hop_names_the_rule_path_match_and_backend_endpoints() {
    if !can_run() {
        return;
    }
    let lab = Lab::up(
        &format!("trg{}", std::process::id() % 10000),
        &[&seed(), &fixture("trace-ingress.yaml")],
        &[],
    );
    let via = format!("{}:80", lab.node_ip("node-1"));

    // Exact /cart beats the Prefix /cart and the Prefix /.
    let t = trace_json(
        &lab,
        &["outside", "http://shop.example/cart", "--ingress", &via],
    );
    assert_eq!(
        kinds(&t),
        ["ingress", "routing", "routing", "routing", "reply"],
        "{t:#}"
    );
    assert_eq!(t["mismatches"], 0, "{t:#}");
    assert_eq!(t["destination"], via.as_str());
    let hop = &t["hops"][0];
    assert_eq!(hop["node"], "node-1");
    let d = decided(hop);
    assert!(
        d.contains(&"Host shop.example: the rules for exactly shop.example".to_string()),
        "{d:#?}"
    );
    assert!(
        d.contains(&"path /cart: matches Exact /cart of Ingress demo/shop".to_string()),
        "{d:#?}"
    );
    assert!(
        d.contains(&"also matches Prefix /cart of Ingress demo/shop (Service demo/nginx-web-service:80): passed over, an Exact match beats every Prefix match".to_string()),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|l| l.starts_with("also matches Prefix / of Ingress demo/shop")),
        "{d:#?}"
    );
    assert_eq!(
        hop["path"],
        serde_json::json!(["host shop.example", "Exact /cart", "Service demo/cart:8080"])
    );
    let mut eps: Vec<String> = hop["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["ip"].as_str().unwrap(), e["port"]))
        .collect();
    eps.sort();
    assert_eq!(eps, ["10.204.0.13:80", "10.204.1.3:80", "10.204.1.8:80"]);

    // A longer path: the longest Prefix, /cart, wins; in text.
    let out = trace(
        &lab,
        &[
            "outside",
            "http://shop.example/cart/items?x=1",
            "--ingress",
            &via,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        text.contains("[1] Ingress: shop.example/cart/items  (on node-1)"),
        "{text}"
    );
    assert!(
        text.contains("    - path /cart/items: matches Prefix /cart of Ingress demo/shop\n"),
        "{text}"
    );
    assert!(
        text.contains("passed over, the longest matching Prefix wins"),
        "{text}"
    );
    assert!(
        text.contains(
            "    path: host shop.example -> Prefix /cart -> Service demo/nginx-web-service:80"
        ),
        "{text}"
    );

    // Without the gateway's address: the cluster DNS does not know the
    // name, and the hop says an Ingress routes it.
    let t = trace_json(&lab, &["outside", "http://shop.example/", "--model-only"]);
    assert_eq!(kinds(&t), ["dns", "ingress"], "{t:#}");
    assert!(
        decided(&t["hops"][1])
            .iter()
            .any(|l| l.contains("give it with --ingress ADDR")),
        "{t:#}"
    );
}
