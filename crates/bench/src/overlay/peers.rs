//! Programming a node's remote peers (route + neighbour + FDB entry each)
//! into a scratch namespace's `flannel.1`, three ways: ferry's netlink
//! code pipelined (`vxlan::add_peers`), the same requests awaited one at a
//! time (`vxlan::add_peer` in a loop), and one `ip`/`bridge` command per
//! entry as flannel-era scripts did. Each way starts from a fresh device
//! and then adds one more peer; the entries are counted afterwards so a
//! way that silently lost some cannot look fast. Touches the kernel (a
//! namespace `ferry-bench-ov-peers`, a veth pair as the underlay, flannel.1) and
//! processes (`ip`, `bridge`).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_overlay::vxlan::{
    DeviceSpec, VxlanDevice, add_peer, add_peers, ensure_device, format_mac, link_index,
};
use ferry_overlay::{BackendData, Lease, LeaseAttrs};
use ferry_sys::Tool;

use super::scratch::Netns;

/// The most time the one-command-per-entry way may take in one run; past
/// it the run stops and its time is extrapolated (and marked so).
const COMMAND_BUDGET: Duration = Duration::from_secs(60);

/// How the peers are programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Way {
    Pipelined,
    OneByOne,
    Commands,
}

impl Way {
    pub(super) const ALL: [Way; 3] = [Way::Pipelined, Way::OneByOne, Way::Commands];

    pub(super) fn label(self) -> &'static str {
        match self {
            Way::Pipelined => "ferry netlink, pipelined (vxlan::add_peers)",
            Way::OneByOne => "ferry netlink, one request at a time (add_peer)",
            Way::Commands => "one ip/bridge command per entry",
        }
    }
}

/// What one way took.
pub(super) struct Timing {
    /// All the peers, from a fresh device.
    pub(super) all: Duration,
    /// One more peer afterwards.
    pub(super) one_more: Duration,
    /// True when the budget cut the commands short (`all` extrapolated).
    pub(super) extrapolated: bool,
}

/// Peer `i`: subnet 10.(128 + i/256).(i%256).0/24, a public IP and MAC of
/// its own.
fn lease(i: usize) -> Lease {
    let (hi, lo) = ((i / 256) as u8, (i % 256) as u8);
    Lease {
        subnet: ipnet::Ipv4Net::new(Ipv4Addr::new(10, 128 + hi, lo, 0), 24).unwrap_or_default(),
        attrs: LeaseAttrs {
            public_ip: Ipv4Addr::new(172, 20, hi, lo),
            backend_type: "vxlan".into(),
            backend_data: Some(BackendData {
                vni: 1,
                vtep_mac: format_mac(&[0x02, 0xfe, 0, 0, hi, lo]),
            }),
        },
    }
}

/// The scratch node: a namespace with a veth `eth0` as the underlay (this kernel has no dummy links).
pub(super) struct Bench {
    ns: Netns,
}

impl Bench {
    pub(super) fn create() -> anyhow::Result<Bench> {
        let ns = Netns::new("peers")?;
        ns.ip("link add eth0 type veth peer name eth1")?;
        ns.ip("addr add 192.168.252.1/24 dev eth0")?;
        ns.ip("link set eth0 up")?;
        Ok(Bench { ns })
    }

    /// A fresh flannel.1 (the old one and all its entries deleted).
    fn fresh_device(&self) -> anyhow::Result<VxlanDevice> {
        let _ = Tool::new("ip")
            .args(["-n", self.ns.name(), "link", "del", "flannel.1"])
            .output();
        self.ns.netlink(|handle| async move {
            let eth0 = link_index(&handle, "eth0").await?.context("no eth0")?;
            Ok(ensure_device(
                &handle,
                &DeviceSpec {
                    vni: 1,
                    port: 8472,
                    underlay_index: eth0,
                    local_ip: Ipv4Addr::new(192, 168, 252, 1),
                    underlay_mtu: 1500,
                    mac: [0x02, 0xfd, 0, 0, 0, 1],
                    subnet: "10.127.0.0/24".parse()?,
                },
            )
            .await?)
        })
    }

    /// Programs `peers` peers, then one more, `way`; checks they all landed.
    pub(super) fn run(&self, way: Way, peers: usize) -> anyhow::Result<Timing> {
        let dev = self.fresh_device()?;
        let leases: Vec<Lease> = (0..peers).map(lease).collect();
        let extra = lease(peers);
        let timing = match way {
            Way::Pipelined | Way::OneByOne => self.ns.netlink(move |handle| async move {
                let start = Instant::now();
                if way == Way::Pipelined {
                    add_peers(&handle, &dev, &leases).await?;
                } else {
                    for l in &leases {
                        add_peer(&handle, &dev, l).await?;
                    }
                }
                let all = start.elapsed();
                let start = Instant::now();
                add_peer(&handle, &dev, &extra).await?;
                Ok(Timing {
                    all,
                    one_more: start.elapsed(),
                    extrapolated: false,
                })
            })?,
            Way::Commands => {
                let start = Instant::now();
                let mut done = 0;
                for l in &leases {
                    if start.elapsed() > COMMAND_BUDGET {
                        break;
                    }
                    self.commands(l)?;
                    done += 1;
                }
                let mut all = start.elapsed();
                let extrapolated = done < peers;
                if extrapolated {
                    all = all.mul_f64(peers as f64 / done.max(1) as f64);
                }
                let start = Instant::now();
                self.commands(&extra)?;
                Timing {
                    all,
                    one_more: start.elapsed(),
                    extrapolated,
                }
            }
        };
        // Only a way that programmed everything can be counted.
        if !timing.extrapolated {
            self.check(peers + 1)?;
        }
        Ok(timing)
    }

    /// The three commands a flannel-era script runs for one peer.
    fn commands(&self, l: &Lease) -> anyhow::Result<()> {
        let ns = self.ns.name();
        let net = l.subnet.network().to_string();
        let mac = &l
            .attrs
            .backend_data
            .as_ref()
            .context("no backend data")?
            .vtep_mac;
        let public = l.attrs.public_ip.to_string();
        let subnet = l.subnet.to_string();
        Tool::new("ip")
            .args(["-n", ns, "neigh", "replace", &net, "lladdr", mac])
            .args(["dev", "flannel.1", "nud", "permanent"])
            .run()?;
        Tool::new("bridge")
            .args(["-n", ns, "fdb", "replace", mac, "dev", "flannel.1"])
            .args(["dst", &public, "self", "permanent"])
            .run()?;
        Tool::new("ip")
            .args(["-n", ns, "route", "replace", &subnet, "via", &net])
            .args(["dev", "flannel.1", "onlink"])
            .run()?;
        Ok(())
    }

    /// Counts flannel.1's routes, permanent neighbours and FDB entries
    /// pointing at a peer; each must be `want`.
    fn check(&self, want: usize) -> anyhow::Result<()> {
        let ns = self.ns.name();
        let count = |tool: Tool, needle: &str| -> anyhow::Result<usize> {
            Ok(tool
                .run()?
                .stdout
                .lines()
                .filter(|l| l.contains(needle))
                .count())
        };
        let routes = count(
            Tool::new("ip").args(["-n", ns, "route", "show", "dev", "flannel.1"]),
            "onlink",
        )?;
        let neighbours = count(
            Tool::new("ip").args(["-n", ns, "neigh", "show", "dev", "flannel.1"]),
            "PERMANENT",
        )?;
        let fdb = count(
            Tool::new("bridge").args(["-n", ns, "fdb", "show", "dev", "flannel.1"]),
            "dst 172.20.",
        )?;
        if (routes, neighbours, fdb) != (want, want, want) {
            bail!(
                "flannel.1 has {routes} routes, {neighbours} neighbours and {fdb} FDB entries; {want} of each were programmed"
            );
        }
        Ok(())
    }
}
