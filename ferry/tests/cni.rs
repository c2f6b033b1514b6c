//! `ferry cni` as a runtime runs it: the built binary under `ip netns
//! exec <node>` with the CNI_* environment and the config on stdin. Each
//! test makes its own "node" namespace (which gets cni0) and one
//! namespace per pod, with its own subnet file and IPAM directory in a
//! temporary directory. Traffic checks are TCP connections between those
//! namespaces. The chain test runs Debian's reference `portmap` after
//! ferry. Tests that touch the kernel need root (fail under CI=true, skip
//! otherwise); the spec's pure answers (VERSION, codes 1 and 6) do not.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_sys::Tool;
use serde_json::{Value, json};

const PORTMAP: &str = "/usr/lib/cni/portmap";

/// A namespace this test made, deleted on drop (failures included).
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("ferry-cni-{}-{tag}", std::process::id());
        let _ = Tool::new("ip").args(["netns", "del", &name]).output();
        Tool::new("ip").args(["netns", "add", &name]).run().unwrap();
        Ns(name)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    fn ip(&self, args: &[&str]) -> String {
        Tool::new("ip")
            .netns(Some(&self.0))
            .args(args.iter().copied())
            .run()
            .unwrap()
            .stdout
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Tool::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A node: its namespace, subnet file and IPAM directory.
struct Node {
    ns: Ns,
    dir: tempfile::TempDir,
}

/// What one plugin run printed.
struct Out {
    ok: bool,
    json: Value,
    stderr: String,
}

impl From<ferry_sys::ToolOutput> for Out {
    fn from(out: ferry_sys::ToolOutput) -> Out {
        Out {
            ok: out.status.success(),
            json: serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null),
            stderr: format!("{}{}", out.stdout, out.stderr),
        }
    }
}

impl Node {
    fn new(subnet: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("subnet.env"),
            format!(
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={subnet}\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n"
            ),
        )
        .unwrap();
        let ns = Ns::new("node");
        ns.ip(&["link", "set", "lo", "up"]);
        Node { ns, dir }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The network config for `version`, with `extra` keys merged in.
    fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "podnet",
            "type": "ferry",
            "subnetFile": self.dir.path().join("subnet.env"),
            "dataDir": self.data_dir(),
        });
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// Runs `program` (ferry or a reference plugin) in the node's namespace.
    fn call(
        &self,
        program: &str,
        command: &str,
        pod: Option<(&Ns, &str)>,
        args: &str,
        conf: &Value,
    ) -> Out {
        let mut tool = Tool::new(program)
            .netns(Some(&self.ns.0))
            .env("CNI_COMMAND", command)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env("CNI_ARGS", args)
            .stdin(conf.to_string())
            .timeout(Duration::from_secs(20));
        if let Some((ns, id)) = pod {
            tool = tool.env("CNI_CONTAINERID", id).env("CNI_NETNS", ns.path());
        }
        tool.output().unwrap().into()
    }

    fn ferry(&self, command: &str, pod: Option<(&Ns, &str)>, conf: &Value) -> Out {
        self.call(env!("CARGO_BIN_EXE_ferry"), command, pod, "", conf)
    }

    fn add(&self, pod: &Ns, id: &str) -> Value {
        let out = self.ferry("ADD", Some((pod, id)), &self.conf("1.1.0", json!({})));
        assert!(out.ok, "ADD {id}: {}", out.stderr);
        out.json
    }

    fn allocated(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.data_dir().join("podnet"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn address_of(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

/// A TCP connection from namespace `from` to `to` (listening in `at`)
/// carries a byte each way.
fn reaches(from: &Ns, at: &Ns, to: SocketAddr) -> Result<(), String> {
    let listener = ferry_sys::netns::in_netns(&at.0, || TcpListener::bind(to))
        .unwrap()
        .map_err(|e| format!("bind {to} in {}: {e}", at.0))?;
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().ok()?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok()?;
        s.write_all(b"!").ok()
    });
    let got = ferry_sys::netns::in_netns(&from.0, move || -> std::io::Result<u8> {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        c.write_all(b"?")?;
        let mut b = [0u8; 1];
        c.read_exact(&mut b)?;
        Ok(b[0])
    })
    .unwrap();
    match got {
        Ok(b'!') => {
            let _ = server.join();
            Ok(())
        }
        other => {
            // Unblock the acceptor so the thread ends.
            let _ = ferry_sys::netns::in_netns(&at.0, move || {
                TcpStream::connect_timeout(&to, Duration::from_millis(200))
            });
            let _ = server.join();
            Err(format!("{} -> {to}: {other:?}", from.0))
        }
    }
}

fn root() -> bool {
    ferry_sys::testing::root_or_skip("CNI kernel tests")
}

#[test]
fn add_gives_the_pod_its_address_mtu_and_default_route_and_it_reaches_the_gateway_and_another_pod()
{
    if !root() {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let (a, b) = (Ns::new("pa"), Ns::new("pb"));
    let ra = node.add(&a, "ctr-a");
    let rb = node.add(&b, "ctr-b");
    let (ipa, ipb) = (address_of(&ra), address_of(&rb));
    assert_ne!(ipa, ipb);
    assert_eq!(ra["ips"][0]["gateway"], "10.244.1.1");
    let link: Value = serde_json::from_str(&a.ip(&["-j", "addr", "show", "dev", "eth0"])).unwrap();
    assert_eq!(link[0]["mtu"], 1400, "the pod's MTU is FLANNEL_MTU: {link}");
    let addrs: Vec<&str> = link[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["local"].as_str())
        .collect();
    assert!(addrs.contains(&ipa.as_str()), "{link}");
    let routes: Value = serde_json::from_str(&a.ip(&["-j", "route", "show", "default"])).unwrap();
    assert_eq!(routes[0]["gateway"], "10.244.1.1", "{routes}");
    reaches(&a, &node.ns, "10.244.1.1:7001".parse().unwrap()).unwrap();
    reaches(&a, &b, format!("{ipb}:7002").parse().unwrap()).unwrap();
    reaches(&b, &a, format!("{ipa}:7003").parse().unwrap()).unwrap();
}

#[test]
fn the_host_end_is_on_the_bridge_with_hairpin_on() {
    if !root() || !ferry_sys::testing::have_or_skip("bridge") {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let pod = Ns::new("p");
    let r = node.add(&pod, "ctr-h");
    let host = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert_eq!(r["interfaces"][0]["name"], "cni0");
    let out = Tool::new("bridge")
        .netns(Some(&node.ns.0))
        .args(["-j", "-d", "link", "show", "dev", &host])
        .run()
        .unwrap();
    let port: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(port[0]["master"], "cni0", "{port}");
    assert_eq!(port[0]["hairpin"], true, "{port}");
}

#[test]
fn concurrent_adds_get_distinct_addresses() {
    if !root() {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let pods: Vec<Ns> = (0..6).map(|i| Ns::new(&format!("c{i}"))).collect();
    let addresses: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let node = &node;
                s.spawn(move || address_of(&node.add(p, &format!("ctr-{i}"))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::BTreeSet<_> = addresses.iter().collect();
    assert_eq!(distinct.len(), pods.len(), "{addresses:?}");
    assert_eq!(node.allocated().len(), pods.len());
}

#[test]
fn a_requested_ip_is_honoured_from_cni_args_and_from_runtime_config() {
    if !root() {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let (a, b) = (Ns::new("ra"), Ns::new("rb"));
    let conf = node.conf("1.0.0", json!({}));
    let out = node.call(
        env!("CARGO_BIN_EXE_ferry"),
        "ADD",
        Some((&a, "ctr-a")),
        "IgnoreUnknown=1;IP=10.244.1.77",
        &conf,
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(address_of(&out.json), "10.244.1.77");
    let conf = node.conf(
        "1.0.0",
        json!({"runtimeConfig": {"ips": ["10.244.1.78/24"]}}),
    );
    let out = node.ferry("ADD", Some((&b, "ctr-b")), &conf);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(address_of(&out.json), "10.244.1.78");
    // Taken already: refused, naming the holder.
    let c = Ns::new("rc");
    let out = node.call(
        env!("CARGO_BIN_EXE_ferry"),
        "ADD",
        Some((&c, "ctr-c")),
        "IP=10.244.1.77",
        &node.conf("1.0.0", json!({})),
    );
    assert!(!out.ok);
    assert!(
        out.json["msg"].as_str().unwrap().contains("ctr-a"),
        "{}",
        out.json
    );
}

#[test]
fn del_frees_the_address_and_removes_the_veth_and_a_second_del_succeeds() {
    if !root() {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let pod = Ns::new("d");
    let r = node.add(&pod, "ctr-d");
    let host = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert_eq!(node.allocated(), vec![address_of(&r)]);
    let conf = node.conf("1.1.0", json!({"prevResult": r}));
    for round in 0..2 {
        let out = node.ferry("DEL", Some((&pod, "ctr-d")), &conf);
        assert!(out.ok, "DEL #{round}: {}", out.stderr);
        assert!(out.json.is_null(), "DEL prints nothing: {}", out.stderr);
    }
    assert!(node.allocated().is_empty());
    let links = node.ns.ip(&["-o", "link"]);
    assert!(!links.contains(&host), "{links}");
    assert!(!pod.ip(&["-o", "link"]).contains("eth0"));
    // The pod's namespace already gone: still success.
    let gone = Ns::new("gone");
    let r = node.add(&gone, "ctr-gone");
    let path = gone.path();
    drop(gone);
    let out = Tool::new(env!("CARGO_BIN_EXE_ferry"))
        .netns(Some(&node.ns.0))
        .env("CNI_COMMAND", "DEL")
        .env("CNI_CONTAINERID", "ctr-gone")
        .env("CNI_NETNS", path)
        .env("CNI_IFNAME", "eth0")
        .stdin(node.conf("1.1.0", json!({"prevResult": r})).to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(node.allocated().is_empty());
}

#[test]
fn check_passes_after_add_and_fails_when_the_pod_address_was_removed() {
    if !root() {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let pod = Ns::new("k");
    let r = node.add(&pod, "ctr-k");
    let conf = node.conf("1.1.0", json!({"prevResult": r.clone()}));
    let out = node.ferry("CHECK", Some((&pod, "ctr-k")), &conf);
    assert!(out.ok, "{}", out.stderr);
    let addr = r["ips"][0]["address"].as_str().unwrap();
    pod.ip(&["addr", "del", addr, "dev", "eth0"]);
    let out = node.ferry("CHECK", Some((&pod, "ctr-k")), &conf);
    assert!(!out.ok);
    assert_eq!(out.json["code"], 103, "{}", out.json);
    assert!(
        out.json["msg"].as_str().unwrap().contains(addr),
        "{}",
        out.json
    );
    // CHECK is not in 0.3.1: code 1.
    let out = node.ferry(
        "CHECK",
        Some((&pod, "ctr-k")),
        &node.conf("0.3.1", json!({"prevResult": r})),
    );
    assert_eq!(out.json["code"], 1, "{}", out.json);
}

#[test]
fn an_interface_that_already_exists_in_the_pod_is_an_error() {
    if !root() {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let pod = Ns::new("x");
    node.add(&pod, "ctr-x");
    let out = node.ferry(
        "ADD",
        Some((&pod, "ctr-x2")),
        &node.conf("1.1.0", json!({})),
    );
    assert!(!out.ok);
    assert!(
        out.json["msg"]
            .as_str()
            .unwrap()
            .contains("eth0 already exists"),
        "{}",
        out.json
    );
    assert_eq!(
        node.allocated().len(),
        1,
        "the failed ADD allocated nothing"
    );
}

#[test]
fn gc_releases_allocations_of_attachments_the_runtime_no_longer_lists() {
    if !root() {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let (a, b) = (Ns::new("ga"), Ns::new("gb"));
    let ra = node.add(&a, "ctr-keep");
    let rb = node.add(&b, "ctr-stale");
    let stale_host = rb["interfaces"][1]["name"].as_str().unwrap().to_string();
    let conf = node.conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": "ctr-keep", "ifname": "eth0"}]}),
    );
    let out = node.ferry("GC", None, &conf);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(node.allocated(), vec![address_of(&ra)]);
    assert!(!node.ns.ip(&["-o", "link"]).contains(&stale_host));
    // GC is a 1.1.0 command.
    assert_eq!(
        node.ferry("GC", None, &node.conf("1.0.0", json!({}))).json["code"],
        1
    );
}

#[test]
fn an_exhausted_range_is_a_clear_error() {
    if !root() {
        return;
    }
    // A /29: .1 is the gateway, .2 to .6 for pods.
    let node = Node::new("10.244.1.1/29");
    let pods: Vec<Ns> = (0..6).map(|i| Ns::new(&format!("e{i}"))).collect();
    for (i, p) in pods.iter().take(5).enumerate() {
        node.add(p, &format!("ctr-{i}"));
    }
    let out = node.ferry(
        "ADD",
        Some((&pods[5], "ctr-5")),
        &node.conf("1.1.0", json!({})),
    );
    assert!(!out.ok);
    let msg = out.json["msg"].as_str().unwrap();
    assert!(
        msg.contains("no free address in 10.244.1.0/29") && msg.contains("all 5"),
        "{msg}"
    );
    assert!(!pods[5].ip(&["-o", "link"]).contains("eth0"));
}

#[test]
fn status_is_ready_only_with_a_readable_subnet_file() {
    if !root() {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let out = node.ferry("STATUS", None, &node.conf("1.1.0", json!({})));
    assert!(out.ok, "{}", out.stderr);
    std::fs::remove_file(node.dir.path().join("subnet.env")).unwrap();
    let out = node.ferry("STATUS", None, &node.conf("1.1.0", json!({})));
    assert!(!out.ok);
    assert_eq!(out.json["code"], 50, "{}", out.json);
    // ADD meanwhile: try again later.
    let pod = Ns::new("s");
    let out = node.ferry("ADD", Some((&pod, "ctr-s")), &node.conf("1.1.0", json!({})));
    assert_eq!(out.json["code"], 11, "{}", out.json);
}

/// The plugin with only a CNI environment and stdin (no namespace needed).
fn plain(program: &Path, command: &str, stdin: &str) -> Out {
    Tool::new(program.display().to_string())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_NETNS", "/run/netns/none-such")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(stdin.to_string())
        .output()
        .unwrap()
        .into()
}

#[test]
fn version_lists_the_supported_versions_when_run_as_cni_path_ferry_with_no_arguments() {
    // As a runtime would: `$CNI_PATH/ferry`, a symlink, no arguments.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ferry");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ferry"), &link).unwrap();
    let out = plain(&link, "VERSION", r#"{"cniVersion":"1.0.0"}"#);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["cniVersion"], "1.0.0");
    assert_eq!(
        out.json["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn a_wrong_cni_version_is_code_1_and_bad_json_is_code_6_naming_the_field() {
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let out = plain(
        ferry,
        "ADD",
        r#"{"cniVersion":"2.0.0","name":"n","type":"ferry"}"#,
    );
    assert!(!out.ok);
    assert_eq!(out.json["code"], 1, "{}", out.stderr);
    assert!(out.json["details"].as_str().unwrap().contains("1.1.0"));
    let out = plain(
        ferry,
        "ADD",
        r#"{"cniVersion":"1.0.0","name":"n","type":"ferry","hairpinMode":"yes"}"#,
    );
    assert!(!out.ok);
    assert_eq!(out.json["code"], 6, "{}", out.stderr);
    assert_eq!(out.json["cniVersion"], "1.0.0");
    assert!(
        out.json["msg"].as_str().unwrap().contains("hairpinMode"),
        "{}",
        out.json
    );
    let out = plain(ferry, "ADD", "{not json");
    assert_eq!(out.json["code"], 6, "{}", out.stderr);
    let out = plain(ferry, "FROB", "{}");
    assert_eq!(out.json["code"], 4, "{}", out.stderr);
}

#[test]
fn debian_portmap_is_installed_under_ci() {
    if ferry_sys::testing::in_ci() {
        assert!(
            Path::new(PORTMAP).exists(),
            "{PORTMAP} is missing: scripts/setup.sh installs containernetworking-plugins"
        );
    }
}

#[test]
fn chained_with_debian_portmap_a_host_port_reaches_the_pod() {
    if !root() {
        return;
    }
    if !Path::new(PORTMAP).exists() {
        assert!(!ferry_sys::testing::in_ci(), "{PORTMAP} is missing");
        eprintln!("skipping: {PORTMAP} is not installed (containernetworking-plugins)");
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let pod = Ns::new("pm");
    // The list's version: Debian's reference plugins speak up to 1.0.0.
    let out = node.ferry(
        "ADD",
        Some((&pod, "ctr-pm")),
        &node.conf("1.0.0", json!({})),
    );
    assert!(out.ok, "{}", out.stderr);
    let ip = address_of(&out.json);
    let portmap_conf = json!({
        "cniVersion": "1.0.0",
        "name": "podnet",
        "type": "portmap",
        "runtimeConfig": {"portMappings": [{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}]},
        "prevResult": out.json,
    });
    let pm = node.call(PORTMAP, "ADD", Some((&pod, "ctr-pm")), "", &portmap_conf);
    assert!(pm.ok, "portmap ADD: {}", pm.stderr);
    assert_eq!(address_of(&pm.json), ip, "portmap passes ferry's result on");
    // The pod listens on 8080 (its own address); the node connects to its
    // own cni0 address on the host port.
    let listener = ferry_sys::netns::in_netns(&pod.0, || TcpListener::bind("0.0.0.0:8080"))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().ok()?;
        s.write_all(b"pod").ok()?;
        Some(peer)
    });
    let got = ferry_sys::netns::in_netns(&node.ns.0, || -> std::io::Result<String> {
        let to: SocketAddr = "10.244.1.1:30080".parse().unwrap();
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut s = String::new();
        c.read_to_string(&mut s)?;
        Ok(s)
    })
    .unwrap();
    assert_eq!(got.unwrap(), "pod");
    assert!(server.join().unwrap().is_some());
    // DEL in reverse order, as the runtime runs a chain.
    let pm = node.call(PORTMAP, "DEL", Some((&pod, "ctr-pm")), "", &portmap_conf);
    assert!(pm.ok, "portmap DEL: {}", pm.stderr);
    let out = node.ferry(
        "DEL",
        Some((&pod, "ctr-pm")),
        &node.conf("1.0.0", json!({})),
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(node.allocated().is_empty());
}

#[test]
fn without_is_default_gateway_only_the_cluster_network_goes_via_the_gateway() {
    if !root() {
        return;
    }
    let node = Node::new("10.244.1.1/24");
    let pod = Ns::new("ng");
    let conf = node.conf("0.3.1", json!({"isDefaultGateway": false, "mtu": 1300}));
    let out = node.ferry("ADD", Some((&pod, "ctr-ng")), &conf);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["ips"][0]["version"], "4", "0.3.1's result shape");
    assert_eq!(out.json["routes"][0]["dst"], "10.244.0.0/16");
    let routes: Value = serde_json::from_str(&pod.ip(&["-j", "route"])).unwrap();
    let dsts: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .collect();
    assert!(!dsts.contains(&"default"), "{routes}");
    assert!(dsts.contains(&"10.244.0.0/16"), "{routes}");
    let link: Value =
        serde_json::from_str(&pod.ip(&["-j", "link", "show", "dev", "eth0"])).unwrap();
    assert_eq!(
        link[0]["mtu"], 1300,
        "the config's mtu wins over FLANNEL_MTU"
    );
}
