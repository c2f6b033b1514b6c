//! The pod network in the lab: every agent runs the overlay (a lease from
//! the lab's file store, flannel.1 or host-gw routes, masquerade), and pod
//! traffic between nodes crosses it. Real namespaces, devices and traffic;
//! root needed (fails under CI=true, skips otherwise).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn ip_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip -n {ns} {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `bridge fdb show dev flannel.1` in a node's namespace.
fn fdb_of(ns: &str) -> String {
    let out = Command::new("bridge")
        .args(["-n", ns, "fdb", "show", "dev", "flannel.1"])
        .output()
        .unwrap();
    text(&out)
}

fn node_ns(lab: &Lab, node: &str) -> String {
    format!("ferry.{}.node.{node}", lab.name)
}

fn pod_ip(lab: &Lab, name: &str) -> String {
    lab.pods(name)[0]["ip"].as_str().unwrap().to_string()
}

/// A pod's HTTP GET of another pod's echo server (port 8080): its answer.
fn get_from(lab: &Lab, from: &str, ip: &str) -> serde_json::Value {
    json(&lab.exec_ok(
        from,
        &["curl", "-sS", "-m", "3", &format!("http://{ip}:8080/")],
    ))
}

/// What tcpdump sees on the node network (the switch's bridge) while
/// `traffic` runs: at most `count` packets matching `filter`, within 10 s.
fn capture(lab: &Lab, filter: &str, count: usize, traffic: impl FnOnce()) -> String {
    let switch = format!("ferry.{}.switch", lab.name);
    let child = Command::new("ip")
        .args([
            "netns", "exec", &switch, "timeout", "10", "tcpdump", "-i", "br0", "-n", "-l",
        ])
        .args(["-c", &count.to_string()])
        .args(filter.split(' '))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // tcpdump says "listening on br0" once its capture is open.
    std::thread::sleep(Duration::from_millis(500));
    traffic();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends `bytes` to a pod's TCP echo port from `from` and counts what
/// comes back (both ways at once, so full-size segments cross the tunnel).
fn echo_bulk(lab: &Lab, from: &str, to_ip: &str, bytes: usize) -> String {
    let script = format!(
        "import socket, threading\n\
         s = socket.create_connection(('{to_ip}', 9000), timeout=10)\n\
         f = s.makefile('rb')\n\
         f.readline()\n\
         threading.Thread(target=lambda: s.sendall(b'a' * {bytes})).start()\n\
         got = 0\n\
         while got < {bytes}:\n\
         \x20   chunk = f.read1(65536)\n\
         \x20   if not chunk: break\n\
         \x20   got += len(chunk)\n\
         print(got)\n"
    );
    lab.exec_ok(from, &["python3", "-c", &script])
        .trim()
        .to_string()
}

#[test]
fn pods_on_different_nodes_talk_through_flannel_1_as_flannel_programs_it() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2evx", &[&fixture("lab-three-nodes.yaml")], &[]);
    let (a, b) = (pod_ip(&lab, "a"), pod_ip(&lab, "b"));
    let n1 = node_ns(&lab, "node-1");
    let node2_ip = lab.node_ip("node-2");

    // The device, as flannel makes it.
    let link = ip_in(&n1, &["-d", "link", "show", "flannel.1"]);
    for want in ["vxlan id 1", "dstport 8472", "nolearning", "mtu 1450"] {
        assert!(link.contains(want), "{want}: {link}");
    }
    // The route, neighbour and FDB entry for node-2's subnet.
    let routes = ip_in(&n1, &["route", "show", "10.30.2.0/24"]);
    assert!(
        routes.contains("via 10.30.2.0 dev flannel.1") && routes.contains("onlink"),
        "{routes}"
    );
    let neigh = ip_in(&n1, &["neigh", "show", "dev", "flannel.1"]);
    let fdb = fdb_of(&n1);
    // node-2's lease in the store names its public IP and VTEP MAC, and the
    // MAC is the one on node-2's device.
    let lease: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!(
            "/run/ferry/labs/{}/leases/subnets/10.30.2.0-24",
            lab.name
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(lease["PublicIP"], node2_ip.as_str(), "{lease}");
    assert_eq!(lease["BackendType"], "vxlan", "{lease}");
    let mac = lease["BackendData"]["VtepMAC"].as_str().unwrap();
    let link2 = ip_in(&node_ns(&lab, "node-2"), &["link", "show", "flannel.1"]);
    assert!(
        link2.contains(mac),
        "node-2's device has the leased MAC {mac}: {link2}"
    );
    assert!(
        neigh.contains(&format!("10.30.2.0 lladdr {mac} PERMANENT")),
        "{neigh}"
    );
    assert!(
        fdb.contains(&format!("{mac} dst {node2_ip} self permanent")),
        "{fdb}"
    );
    // subnet.env in flannel's format.
    let env = std::fs::read_to_string(format!(
        "/run/ferry/labs/{}/nodes/node-1/subnet.env",
        lab.name
    ))
    .unwrap();
    assert!(
        env.contains("FLANNEL_SUBNET=10.30.1.1/24") && env.contains("FLANNEL_MTU=1450"),
        "{env}"
    );
    assert!(env.contains("FLANNEL_NETWORK=10.30.0.0/16"), "{env}");

    // Pod to pod across nodes keeps the client's address, and a bulk
    // transfer both ways completes (the pods' MTU fits the tunnel).
    let answer = get_from(&lab, "pod/net/a", &b);
    assert_eq!(answer["node"], "node-2");
    assert!(
        answer["client"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{a}:")),
        "{answer}"
    );
    // On the node network the pods' packets are VXLAN: UDP to port 8472
    // between the node IPs, never the pod addresses.
    let node1_ip = lab.node_ip("node-1");
    let seen = capture(&lab, "udp port 8472", 4, || {
        lab.exec_ok(
            "pod/net/a",
            &["curl", "-sS", "-m", "3", &format!("http://{b}:8080/")],
        );
    });
    assert!(
        seen.contains(&format!("{node1_ip}.")) && seen.contains(&format!("{node2_ip}.8472: ")),
        "node-1 to node-2's port 8472: {seen}"
    );
    let pod_link = lab.exec_ok("pod/net/a", &["ip", "link", "show", "eth0"]);
    assert!(pod_link.contains("mtu 1450"), "{pod_link}");
    assert_eq!(echo_bulk(&lab, "pod/net/a", &b, 2_000_000), "2000000");

    // The packets really cross the tunnel: its counters moved.
    let stats = ip_in(&n1, &["-s", "link", "show", "flannel.1"]);
    let tx_bytes: u64 = stats
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("TX:"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        tx_bytes > 2_000_000,
        "flannel.1 sent {tx_bytes} bytes: {stats}"
    );
}

both_modes!(pod_traffic_leaving_the_pod_network_is_masqueraded_to_the_node);

/// With either proxy mode beside it (the proxy's own masquerade mark,
/// 0x4000, is left alone; the rest of the decisions are in lab_proxy's
/// tests, which all run on this pod network).
fn pod_traffic_leaving_the_pod_network_is_masqueraded_to_the_node(mode: Mode) {
    if !can_run() {
        return;
    }
    let lab = Lab::up_in(mode, "e2emq", &[&fixture("lab-three-nodes.yaml")], &[]);
    let status = lab.status();
    let outside_ip = status["outside"]["ip"].as_str().unwrap().to_string();
    // An echo server in the outside namespace, for a few seconds.
    let mut server = ferry()
        .args(["lab", "exec", "--lab", &lab.name, "outside", "--"])
        .args([
            "timeout",
            "20",
            env!("CARGO_BIN_EXE_ferry"),
            "echo",
            "--port",
            "8099",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut server);
    let url = format!("http://{outside_ip}:8099/");
    let mut answer = String::new();
    for _ in 0..50 {
        let out = lab.exec("pod/net/a", &["curl", "-sS", "-m", "2", &url]);
        if out.status.success() {
            answer = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = json(&answer);
    let node1 = lab.node_ip("node-1");
    assert!(
        answer["client"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{node1}:")),
        "pod to outside leaves as its node, as flannel's --ip-masq does: {answer}"
    );
}

#[test]
fn host_gw_routes_pod_subnets_via_the_node_ips() {
    if !can_run() {
        return;
    }
    let lab = Lab::up(
        "e2ehg",
        &[&fixture("lab-three-nodes.yaml")],
        &["--backend", "host-gw"],
    );
    let n1 = node_ns(&lab, "node-1");
    let routes = ip_in(&n1, &["route", "show", "10.30.3.0/24"]);
    let node3_ip = lab.node_ip("node-3");
    assert!(
        routes.contains(&format!("via {node3_ip} dev eth0")),
        "{routes}"
    );
    let links = ip_in(&n1, &["link", "show"]);
    assert!(!links.contains("flannel."), "no VXLAN device: {links}");
    let env = std::fs::read_to_string(format!(
        "/run/ferry/labs/{}/nodes/node-1/subnet.env",
        lab.name
    ))
    .unwrap();
    assert!(env.contains("FLANNEL_MTU=1500"), "{env}");
    let (a, c) = (pod_ip(&lab, "a"), pod_ip(&lab, "c"));
    let answer = get_from(&lab, "pod/net/a", &c);
    assert_eq!(answer["node"], "node-3");
    assert!(
        answer["client"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{a}:")),
        "{answer}"
    );
    assert_eq!(echo_bulk(&lab, "pod/net/a", &c, 1_000_000), "1000000");
    // On the node network the pods' own addresses, no tunnel.
    let seen = capture(&lab, &format!("tcp and host {c}"), 2, || {
        lab.exec_ok(
            "pod/net/a",
            &["curl", "-sS", "-m", "3", &format!("http://{c}:8080/")],
        );
    });
    assert!(
        seen.contains(&format!("{a}.")) && seen.contains(&format!("{c}.8080")),
        "{seen}"
    );
}

#[test]
fn a_removed_node_loses_its_lease_and_the_others_drop_its_routes() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2erm", &[&fixture("lab-three-nodes.yaml")], &[]);
    let n1 = node_ns(&lab, "node-1");
    let lease = format!("/run/ferry/labs/{}/leases/subnets/10.30.3.0-24", lab.name);
    assert!(std::path::Path::new(&lease).exists());
    let node3_ip = lab.node_ip("node-3");
    assert!(ip_in(&n1, &["route", "show", "10.30.3.0/24"]).contains("flannel.1"));
    lab.ok(&["delete", "node/node-3"]);
    lab.wait("node-3's lease deleted", Duration::from_secs(10), |_| {
        !std::path::Path::new(&lease).exists()
    });
    lab.wait(
        "node-1 drops the route to node-3's subnet",
        Duration::from_secs(10),
        |_| {
            ip_in(&n1, &["route", "show", "10.30.3.0/24"])
                .trim()
                .is_empty()
        },
    );
    let neigh = ip_in(&n1, &["neigh", "show", "dev", "flannel.1"]);
    assert!(!neigh.contains("10.30.3.0"), "{neigh}");
    let fdb = fdb_of(&n1);
    assert!(!fdb.contains(&node3_ip), "no FDB entry to node-3: {}", fdb);
    // The rest of the pod network is untouched.
    let b = pod_ip(&lab, "b");
    let answer = get_from(&lab, "pod/net/a", &b);
    assert_eq!(answer["node"], "node-2");
}

#[test]
fn pods_still_cross_nodes_when_the_forward_policy_is_drop() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2efw", &[&fixture("lab-three-nodes.yaml")], &[]);
    // As Docker leaves a node: FORWARD drops by default.
    for node in ["node-1", "node-2"] {
        let out = Command::new("ip")
            .args(["netns", "exec", &node_ns(&lab, node)])
            .args(["iptables-nft", "-w", "5", "-P", "FORWARD", "DROP"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let b = pod_ip(&lab, "b");
    let url = format!("http://{b}:8080/");
    lab.wait(
        "pod a reaches pod b across nodes despite the DROP policy",
        Duration::from_secs(15),
        |lab| {
            lab.exec("pod/net/a", &["curl", "-sS", "-m", "1", &url])
                .status
                .success()
        },
    );
    let save = Command::new("ip")
        .args(["netns", "exec", &node_ns(&lab, "node-1")])
        .args(["iptables-nft-save", "-t", "filter"])
        .output()
        .unwrap();
    let save = String::from_utf8_lossy(&save.stdout);
    assert!(save.contains(":FORWARD DROP"), "{save}");
    assert!(save.contains("-A FORWARD -j FERRY-POD-FORWARD"), "{save}");
    assert!(
        save.contains("-A FERRY-POD-FORWARD -s 10.30.0.0/16"),
        "{save}"
    );
}

#[test]
fn agent_cleanup_removes_the_pod_networks_device_and_rules() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2ecl", &[&fixture("lab-three-nodes.yaml")], &[]);
    let n1 = node_ns(&lab, "node-1");
    // The agent is stopped first, or it would put everything back.
    let pid = lab.status()["nodes"][0]["agent_pid"].as_u64().unwrap();
    let _ = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .output();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &n1,
            env!("CARGO_BIN_EXE_ferry"),
            "agent",
            "--cleanup",
        ])
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .output();
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("flannel.1"), "{said}");
    assert!(said.contains("ferry-overlay"), "{said}");
    let links = ip_in(&n1, &["link", "show"]);
    assert!(!links.contains("flannel.1"), "{links}");
    let tables = Command::new("ip")
        .args(["netns", "exec", &n1, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(
        !text(&tables).contains("ferry-overlay"),
        "{}",
        text(&tables)
    );
}

fn etcdctl(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("ferry.{}.cp", lab.name),
            "etcdctl",
        ])
        .args(["--endpoints", "http://172.18.0.3:2379"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn leases_in_a_real_etcd_follow_flannels_keys_and_a_flannel_nodes_lease_is_followed() {
    if !can_run() {
        return;
    }
    let lab = Lab::up(
        "e2eet",
        &[&fixture("lab-three-nodes.yaml")],
        &["--lease-store", "etcd"],
    );
    let n1 = node_ns(&lab, "node-1");
    let keys = etcdctl(
        &lab,
        &["get", "--prefix", "--keys-only", "/coreos.com/network/"],
    );
    for key in [
        "/coreos.com/network/config",
        "/coreos.com/network/subnets/10.30.1.0-24",
        "/coreos.com/network/subnets/10.30.2.0-24",
        "/coreos.com/network/subnets/10.30.3.0-24",
    ] {
        assert!(keys.lines().any(|l| l == key), "{key}: {keys}");
    }
    let value = etcdctl(
        &lab,
        &[
            "get",
            "--print-value-only",
            "/coreos.com/network/subnets/10.30.2.0-24",
        ],
    );
    let value: serde_json::Value = serde_json::from_str(value.trim()).unwrap();
    assert_eq!(value["PublicIP"], lab.node_ip("node-2").as_str());
    assert_eq!(value["BackendData"]["VNI"], 1);
    // flannel's 24 h lease, held by an etcd lease.
    let lease_id = etcdctl(
        &lab,
        &[
            "get",
            "-w",
            "fields",
            "/coreos.com/network/subnets/10.30.2.0-24",
        ],
    );
    let lease_hex = lease_id
        .lines()
        .find_map(|l| l.strip_prefix("\"Lease\" : "))
        .map(|n| format!("{:x}", n.trim().parse::<i64>().unwrap()))
        .unwrap();
    let ttl = etcdctl(&lab, &["lease", "timetolive", &lease_hex]);
    let secs: u64 = ttl
        .split("remaining(")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(secs > 23 * 3600, "{ttl}");
    let b = pod_ip(&lab, "b");
    let answer = get_from(&lab, "pod/net/a", &b);
    assert_eq!(answer["node"], "node-2");

    // A flannel node's lease, written as flanneld writes it: followed by
    // etcd's watch, programmed as any peer.
    etcdctl(
        &lab,
        &[
            "put",
            "/coreos.com/network/subnets/10.30.9.0-24",
            r#"{"PublicIP":"172.18.0.99","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:0b:0c:0d:0e:0f"}}"#,
        ],
    );
    lab.wait(
        "node-1 follows the flannel node's lease",
        Duration::from_secs(10),
        |_| ip_in(&n1, &["route", "show", "10.30.9.0/24"]).contains("flannel.1"),
    );
    let fdb = fdb_of(&n1);
    assert!(fdb.contains("0a:0b:0c:0d:0e:0f dst 172.18.0.99"), "{}", fdb);
    // etcd stops answering: the pod network keeps forwarding with what it
    // has; when etcd is back, the agents follow new leases again.
    let etcd_pid = Command::new("ip")
        .args(["netns", "pids", &format!("ferry.{}.cp", lab.name)])
        .output()
        .unwrap();
    let etcd_pid = String::from_utf8_lossy(&etcd_pid.stdout)
        .lines()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "etcd")
        })
        .unwrap()
        .to_string();
    let _ = Command::new("kill").args(["-STOP", &etcd_pid]).output();
    std::thread::sleep(Duration::from_secs(3));
    let still = lab.exec(
        "pod/net/a",
        &["curl", "-sS", "-m", "3", &format!("http://{b}:8080/")],
    );
    let _ = Command::new("kill").args(["-CONT", &etcd_pid]).output();
    assert!(
        still.status.success(),
        "forwarding while etcd is down: {}",
        text(&still)
    );
    etcdctl(
        &lab,
        &[
            "put",
            "/coreos.com/network/subnets/10.30.8.0-24",
            r#"{"PublicIP":"172.18.0.98","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:0b:0c:0d:0e:08"}}"#,
        ],
    );
    lab.wait(
        "node-1 follows leases again after etcd is back",
        Duration::from_secs(15),
        |_| ip_in(&n1, &["route", "show", "10.30.8.0/24"]).contains("flannel.1"),
    );
    // A removed node's key goes, and the others drop its route.
    lab.ok(&["delete", "node/node-3"]);
    lab.wait("node-3's key deleted", Duration::from_secs(10), |lab| {
        !etcdctl(
            lab,
            &[
                "get",
                "--prefix",
                "--keys-only",
                "/coreos.com/network/subnets/",
            ],
        )
        .contains("10.30.3.0-24")
    });
    lab.wait(
        "node-1 drops node-3's route",
        Duration::from_secs(10),
        |_| {
            ip_in(&n1, &["route", "show", "10.30.3.0/24"])
                .trim()
                .is_empty()
        },
    );
}

#[test]
fn a_node_added_to_a_running_lab_is_routed_from_every_other_node_within_a_second() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2ead", &[&fixture("lab-three-nodes.yaml")], &[]);
    let more = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        more.path(),
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-4}\nspec: {podCIDR: 10.30.4.0/24}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: d, namespace: net}\nspec:\n  nodeName: node-4\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {name: echo, image: ferry-echo, ports: [{name: http, containerPort: 8080}]}\n",
    )
    .unwrap();
    lab.ok(&["apply", more.path().to_str().unwrap()]);
    // From the moment node-4 holds its lease, every other node routes its
    // subnet within a second.
    let lease = format!("/run/ferry/labs/{}/leases/subnets/10.30.4.0-24", lab.name);
    lab.wait("node-4's lease", Duration::from_secs(15), |_| {
        std::path::Path::new(&lease).exists()
    });
    let leased = std::time::Instant::now();
    for node in ["node-1", "node-2", "node-3"] {
        let ns = node_ns(&lab, node);
        while !ip_in(&ns, &["route", "show", "10.30.4.0/24"]).contains("flannel.1") {
            assert!(
                leased.elapsed() < Duration::from_secs(1),
                "{node} has no route to node-4's subnet a second after its lease"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // And the pods on every node reach the new node's pod.
    lab.wait("pod d runs", Duration::from_secs(15), |lab| {
        lab.pods("d").first().is_some_and(|p| p["ready"] == true)
    });
    let d = pod_ip(&lab, "d");
    for from in ["pod/net/a", "pod/net/b", "pod/net/c"] {
        let answer = json(&lab.exec_ok(
            from,
            &["curl", "-sS", "-m", "3", &format!("http://{d}:8080/")],
        ));
        assert_eq!(answer["node"], "node-4", "{from}");
    }
}

#[test]
fn an_agent_restarted_keeps_its_subnet_and_mac_even_when_its_device_is_gone() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2ers", &[&fixture("lab-three-nodes.yaml")], &[]);
    let n1 = node_ns(&lab, "node-1");
    let mac = |ns: &str| {
        ip_in(ns, &["link", "show", "flannel.1"])
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
    };
    let before = mac(&n1).unwrap();
    let env_file = format!("/run/ferry/labs/{}/nodes/node-1/subnet.env", lab.name);
    let env_before = std::fs::read_to_string(&env_file).unwrap();
    // The device goes, and the agent with it (kill -9): the lab starts it again.
    ip_in(&n1, &["link", "del", "flannel.1"]);
    let pid = lab.status()["nodes"][0]["agent_pid"].as_u64().unwrap();
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
    lab.wait("flannel.1 is back", Duration::from_secs(20), |_| {
        Command::new("ip")
            .args(["-n", &n1, "link", "show", "flannel.1"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert_eq!(mac(&n1).unwrap(), before, "the same MAC after a restart");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), env_before);
    // node-2's FDB entry for node-1 still names the right MAC: traffic flows.
    let a = pod_ip(&lab, "a");
    lab.wait(
        "pod b reaches pod a again",
        Duration::from_secs(10),
        |lab| {
            lab.exec(
                "pod/net/b",
                &["curl", "-sS", "-m", "1", &format!("http://{a}:8080/")],
            )
            .status
            .success()
        },
    );
}

#[test]
fn a_node_removed_while_an_agent_was_down_leaves_no_route_or_fdb_entry_once_it_is_back() {
    if !can_run() {
        return;
    }
    let lab = Lab::up("e2esw", &[&fixture("lab-three-nodes.yaml")], &[]);
    let n1 = node_ns(&lab, "node-1");
    let node3_ip = lab.node_ip("node-3");
    let pid = lab.status()["nodes"][0]["agent_pid"]
        .as_u64()
        .unwrap()
        .to_string();
    let _ = Command::new("kill").args(["-STOP", &pid]).output();
    lab.ok(&["delete", "node/node-3"]);
    let lease = format!("/run/ferry/labs/{}/leases/subnets/10.30.3.0-24", lab.name);
    lab.wait("node-3's lease deleted", Duration::from_secs(10), |_| {
        !std::path::Path::new(&lease).exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        ip_in(&n1, &["route", "show", "10.30.3.0/24"]).contains("flannel.1"),
        "node-1's agent is stopped: its route is still there"
    );
    // The agent dies while stopped; the lab starts it again.
    let _ = Command::new("kill").args(["-9", &pid]).output();
    lab.wait(
        "the new agent sweeps the stale route",
        Duration::from_secs(20),
        |_| {
            ip_in(&n1, &["route", "show", "10.30.3.0/24"])
                .trim()
                .is_empty()
        },
    );
    let neigh = ip_in(&n1, &["neigh", "show", "dev", "flannel.1"]);
    assert!(!neigh.contains("10.30.3.0"), "{neigh}");
    let fdb = fdb_of(&n1);
    assert!(
        !fdb.contains(&node3_ip),
        "the stale FDB entry to node-3 is swept too: {}",
        fdb
    );
    assert!(
        fdb.contains(&lab.node_ip("node-2")),
        "node-2's FDB entry stays: {}",
        fdb
    );
    assert!(ip_in(&n1, &["route", "show", "10.30.2.0/24"]).contains("flannel.1"));
}

#[test]
fn on_the_api_source_leases_live_on_the_nodes_as_flannels_kube_subnet_manager_keeps_them() {
    if !can_run() {
        return;
    }
    let lab = Lab::up(
        "e2eks",
        &[&fixture("lab-three-nodes.yaml")],
        &["--source", "kube", "--lease-store", "kube"],
    );
    // Each agent annotated its own Node through the API source's writer
    // (and the peers came back through the watch).
    let n1 = node_ns(&lab, "node-1");
    lab.wait(
        "node-1 routes both other subnets",
        Duration::from_secs(20),
        |_| {
            ["10.30.2.0/24", "10.30.3.0/24"]
                .iter()
                .all(|s| ip_in(&n1, &["route", "show", s]).contains("flannel.1"))
        },
    );
    let out = ferry()
        .args([
            "lab", "kubectl", "--lab", &lab.name, "get", "nodes", "-o", "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for node in nodes["items"].as_array().unwrap() {
        let a = &node["metadata"]["annotations"];
        let name = node["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            a["flannel.alpha.coreos.com/kube-subnet-manager"], "true",
            "{name}"
        );
        assert_eq!(
            a["flannel.alpha.coreos.com/public-ip"],
            lab.node_ip(name).as_str()
        );
        assert_eq!(a["flannel.alpha.coreos.com/backend-type"], "vxlan");
        assert!(
            a["flannel.alpha.coreos.com/backend-data"]
                .as_str()
                .unwrap()
                .contains("VtepMAC"),
            "{a}"
        );
    }
    // The peers come from the other Nodes' annotations.
    for subnet in ["10.30.2.0/24", "10.30.3.0/24"] {
        assert!(
            ip_in(&n1, &["route", "show", subnet]).contains("flannel.1"),
            "{subnet}"
        );
    }
    let b = pod_ip(&lab, "b");
    let answer = get_from(&lab, "pod/net/a", &b);
    assert_eq!(answer["node"], "node-2");
    // A Node deleted from the API takes its lease with it.
    lab.ok(&["delete", "node/node-3"]);
    lab.wait(
        "node-1 drops node-3's route",
        Duration::from_secs(10),
        |_| {
            ip_in(&n1, &["route", "show", "10.30.3.0/24"])
                .trim()
                .is_empty()
        },
    );
}
