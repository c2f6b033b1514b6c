//! Pod-to-pod traffic across two nodes of a scratch topology: a switch
//! (a bridge in its own namespace), two nodes on it, one pod behind each
//! node, and two plain namespaces on the switch (the limit). The nodes'
//! overlay is programmed with ferry-overlay's own functions: VXLAN
//! (`flannel.1`, `ensure_device` + `add_peer`) or host-gw (a plain route
//! via the other node, `underlay::add_route`). Measured: TCP throughput
//! with iperf3 (a server in the far pod, the client in the near one) and
//! the round trip of a one-byte TCP ping-pong. Touches the kernel
//! (namespaces `ferry-bench-ov-*`, links, routes) and processes (`ip`,
//! `iperf3`, `sysctl`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_overlay::underlay::{Underlay, add_route};
use ferry_overlay::vxlan::{
    DeviceSpec, add_peer, ensure_device, format_mac, link_index, stable_mac,
};
use ferry_overlay::{BackendData, Lease, LeaseAttrs};
use ferry_sys::Tool;
use ferry_sys::netns::in_netns;

use super::scratch::{Netns, veth};

const UNDERLAY_MTU: u32 = 1500;
const IPERF_PORT: u16 = 5201;
const PING_PORT: u16 = 7070;
/// Round trips per latency sample, and the most time they may take.
const PINGS: usize = 2000;
const PING_BUDGET: Duration = Duration::from_secs(10);

/// Where the two ends' work runs. The scratch topology puts both nodes on
/// one machine: without a split, the sending CPU carries the packet
/// through both nodes in its own softirq (node 1's transmit and node 2's
/// receive), which a cluster never does. With a split each side gets a
/// CPU of its own, as each node has in a cluster: iperf3's client on CPU
/// 0 and its server on CPU 1 (`-A`), and each side's underlay receive
/// steered to its own CPU (RPS, `rps_cpus` on the switch-facing device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cpus {
    /// Whatever the scheduler does (the sender's CPU does both nodes' forwarding).
    Shared,
    /// One CPU per side, as separate nodes have.
    PerNode,
}

impl Cpus {
    pub(super) fn label(self) -> &'static str {
        match self {
            Cpus::Shared => "both nodes' forwarding on the sender's CPU",
            Cpus::PerNode => "one CPU per node (RPS + iperf3 -A)",
        }
    }
}

/// How pod traffic crosses between the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Path {
    /// Two plain namespaces on the switch: no pods, no nodes.
    Limit,
    HostGw,
    Vxlan,
}

impl Path {
    pub(super) fn label(self) -> &'static str {
        match self {
            Path::Limit => "plain namespaces on the switch (limit)",
            Path::HostGw => "pod to pod, host-gw",
            Path::Vxlan => "pod to pod, VXLAN (flannel.1)",
        }
    }
}

/// One node of the topology: its namespace, pod and addresses.
struct Node {
    ns: Netns,
    pod: Netns,
    /// Its address on the switch (the lease's PublicIP).
    public_ip: Ipv4Addr,
    /// Its pod subnet, 10.61.N.0/24; the pod is .2, the node .1.
    subnet: ipnet::Ipv4Net,
    name: &'static str,
}

impl Node {
    fn pod_ip(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.subnet.network().octets();
        Ipv4Addr::new(a, b, c, 2)
    }

    fn lease(&self) -> Lease {
        Lease {
            subnet: self.subnet,
            attrs: LeaseAttrs {
                public_ip: self.public_ip,
                backend_type: "vxlan".into(),
                backend_data: Some(BackendData {
                    vni: 1,
                    vtep_mac: format_mac(&stable_mac(self.name, 1)),
                }),
            },
        }
    }
}

/// The whole topology; every namespace goes when it drops.
pub(super) struct Topology {
    nodes: [Node; 2],
    plain: [Netns; 2],
    _switch: Netns,
    /// The MTU pods got on the last path set up.
    pub(super) pod_mtu: u32,
}

impl Topology {
    pub(super) fn create() -> anyhow::Result<Topology> {
        let switch = Netns::new("switch")?;
        switch.ip("link add br0 type bridge")?;
        switch.ip("link set br0 up")?;
        let port = |ns: &Netns, tag: &str, ip: &str| -> anyhow::Result<()> {
            veth(ns, "eth0", &switch, tag)?;
            switch.ip(&format!("link set {tag} master br0"))?;
            ns.ip(&format!("addr add {ip}/24 dev eth0"))
        };
        let mut nodes = Vec::new();
        for (i, name) in [(1u8, "node-1"), (2, "node-2")] {
            let ns = Netns::new(&format!("n{i}"))?;
            let pod = Netns::new(&format!("p{i}"))?;
            let public_ip = Ipv4Addr::new(192, 168, 251, i);
            port(&ns, &format!("sw-n{i}"), &public_ip.to_string())?;
            ns.sysctl("net.ipv4.ip_forward=1")?;
            veth(&ns, "veth0", &pod, "eth0")?;
            ns.ip(&format!("addr add 10.61.{i}.1/24 dev veth0"))?;
            pod.ip(&format!("addr add 10.61.{i}.2/24 dev eth0"))?;
            pod.ip(&format!("route add default via 10.61.{i}.1"))?;
            nodes.push(Node {
                ns,
                pod,
                public_ip,
                subnet: format!("10.61.{i}.0/24").parse()?,
                name,
            });
        }
        let mut plain = Vec::new();
        for i in 1..=2u8 {
            let ns = Netns::new(&format!("c{i}"))?;
            port(&ns, &format!("sw-c{i}"), &format!("192.168.251.{}", 10 + i))?;
            plain.push(ns);
        }
        let nodes: [Node; 2] = nodes.try_into().ok().context("two nodes")?;
        let plain: [Netns; 2] = plain.try_into().ok().context("two plain namespaces")?;
        Ok(Topology {
            nodes,
            plain,
            _switch: switch,
            pod_mtu: UNDERLAY_MTU,
        })
    }

    /// Programs both nodes for `path` (undoing the other backend first)
    /// and gives the pods the MTU that path allows.
    pub(super) fn set_path(&mut self, path: Path) -> anyhow::Result<()> {
        let leases = [self.nodes[0].lease(), self.nodes[1].lease()];
        for (i, node) in self.nodes.iter().enumerate() {
            let peer = leases[1 - i].clone();
            let own = leases[i].clone();
            let _ = Tool::new("ip")
                .args(["-n", node.ns.name(), "link", "del", "flannel.1"])
                .output();
            let _ = node.ns.ip(&format!("route del {}", peer.subnet));
            let mac = stable_mac(node.name, 1);
            node.ns.netlink(move |handle| async move {
                let eth0 = link_index(&handle, "eth0")
                    .await?
                    .context("the node has no eth0")?;
                match path {
                    Path::Vxlan => {
                        let dev = ensure_device(
                            &handle,
                            &DeviceSpec {
                                vni: 1,
                                port: 8472,
                                underlay_index: eth0,
                                local_ip: own.attrs.public_ip,
                                underlay_mtu: UNDERLAY_MTU,
                                mac,
                                subnet: own.subnet,
                            },
                        )
                        .await?;
                        add_peer(&handle, &dev, &peer).await?;
                    }
                    Path::HostGw | Path::Limit => {
                        let underlay = Underlay {
                            name: "eth0".into(),
                            index: eth0,
                            mtu: UNDERLAY_MTU,
                            address: ipnet::Ipv4Net::new(own.attrs.public_ip, 24)?,
                            public_ip: own.attrs.public_ip,
                        };
                        add_route(&handle, &underlay, peer.subnet, peer.attrs.public_ip).await?;
                    }
                }
                Ok(())
            })?;
        }
        // flannel's subnet.env carries the device's MTU to the CNI plugin.
        self.pod_mtu = match path {
            Path::Vxlan => UNDERLAY_MTU - ferry_overlay::vxlan::ENCAP_OVERHEAD,
            _ => UNDERLAY_MTU,
        };
        for node in &self.nodes {
            node.ns
                .ip(&format!("link set veth0 mtu {}", self.pod_mtu))?;
            node.pod
                .ip(&format!("link set eth0 mtu {}", self.pod_mtu))?;
        }
        Ok(())
    }

    /// Steers each side's underlay receive to that side's CPU, or back to
    /// the CPU that received it (`cpus`). Needs two CPUs.
    pub(super) fn set_cpus(&self, cpus: Cpus) -> anyhow::Result<()> {
        let sides = [
            (&self.nodes[0].ns, 1u8),
            (&self.plain[0], 1),
            (&self.nodes[1].ns, 2),
            (&self.plain[1], 2),
        ];
        for (ns, mask) in sides {
            let mask = if cpus == Cpus::PerNode { mask } else { 0 };
            // sysfs shows a namespace's devices only when mounted in it,
            // which `ip netns exec` does.
            Tool::new("sh")
                .netns(Some(ns.name()))
                .args([
                    "-c",
                    &format!("echo {mask:x} > /sys/class/net/eth0/queues/rx-0/rps_cpus"),
                ])
                .run()
                .with_context(|| format!("setting RPS on eth0 in {}", ns.name()))?;
        }
        Ok(())
    }

    /// (client namespace, server namespace, server address) for `path`.
    fn ends(&self, path: Path) -> (&Netns, &Netns, Ipv4Addr) {
        match path {
            Path::Limit => (
                &self.plain[0],
                &self.plain[1],
                Ipv4Addr::new(192, 168, 251, 12),
            ),
            _ => (
                &self.nodes[0].pod,
                &self.nodes[1].pod,
                self.nodes[1].pod_ip(),
            ),
        }
    }

    /// iperf3's TCP throughput over `seconds`, in Gbit/s (what the server
    /// received).
    pub(super) fn throughput(&self, path: Path, seconds: u32, cpus: Cpus) -> anyhow::Result<f64> {
        let (client, server, addr) = self.ends(path);
        let _server = IperfServer::start(server, addr, cpus)?;
        let pin: &[&str] = match cpus {
            Cpus::PerNode => &["-A", "0"],
            Cpus::Shared => &[],
        };
        let client_tool = Tool::new("iperf3")
            .netns(Some(client.name()))
            .args([
                "-c",
                &addr.to_string(),
                "-p",
                &IPERF_PORT.to_string(),
                "-t",
                &seconds.to_string(),
                "-J",
            ])
            .args(pin.iter().copied())
            .timeout(Duration::from_secs(u64::from(seconds) + 30));
        // The server needs a moment to listen; retry for at most 5 s.
        let deadline = Instant::now() + Duration::from_secs(5);
        let out = loop {
            std::thread::sleep(Duration::from_millis(100));
            let out = client_tool.output()?;
            // With -J, iperf3 reports even its errors in the JSON.
            let refused = out.stdout.contains("refused") || out.stderr.contains("refused");
            if out.status.success() {
                break out;
            }
            if !refused || Instant::now() > deadline {
                bail!(
                    "{}: {} {}",
                    client_tool.describe(),
                    out.stdout.trim(),
                    out.stderr.trim()
                );
            }
        };
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).context("reading iperf3's JSON")?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .with_context(|| format!("iperf3 gave no end.sum_received: {}", out.stdout))
    }

    /// Round-trip times (µs) of a one-byte TCP ping-pong between the ends.
    pub(super) fn round_trips(&self, path: Path) -> anyhow::Result<Vec<f64>> {
        let (client, server, addr) = self.ends(path);
        let to = SocketAddr::new(addr.into(), PING_PORT);
        let listener = in_netns(server.name(), move || TcpListener::bind(to))?
            .with_context(|| format!("listening on {to} in {}", server.name()))?;
        let echo = std::thread::spawn(move || -> std::io::Result<()> {
            let (mut c, _) = listener.accept()?;
            c.set_nodelay(true)?;
            c.set_read_timeout(Some(PING_BUDGET + Duration::from_secs(5)))?;
            let mut b = [0u8; 1];
            while c.read(&mut b)? == 1 {
                c.write_all(&b)?;
            }
            Ok(())
        });
        let times = in_netns(client.name(), move || -> anyhow::Result<Vec<f64>> {
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3))
                .with_context(|| format!("connecting to {to}"))?;
            c.set_nodelay(true)?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            let start = Instant::now();
            let mut times = Vec::with_capacity(PINGS);
            let mut b = [7u8; 1];
            for _ in 0..PINGS {
                if start.elapsed() > PING_BUDGET {
                    break;
                }
                let t = Instant::now();
                c.write_all(&b)?;
                c.read_exact(&mut b)?;
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(times)
        })??;
        // The client closed its end: the echo sees EOF and returns.
        let _ = echo.join();
        Ok(times)
    }
}

/// `iperf3 -s` in a namespace, killed and reaped on drop.
struct IperfServer(Child);

impl IperfServer {
    fn start(ns: &Netns, addr: Ipv4Addr, cpus: Cpus) -> anyhow::Result<IperfServer> {
        let pin: &[&str] = match cpus {
            Cpus::PerNode => &["-A", "1"],
            Cpus::Shared => &[],
        };
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "iperf3", "-s", "-B"])
            .arg(addr.to_string())
            .args(["-p", &IPERF_PORT.to_string()])
            .args(pin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        Ok(IperfServer(child))
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
