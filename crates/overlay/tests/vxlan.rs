//! The VXLAN backend against the kernel: two scratch namespaces play two
//! nodes on one L2 segment (a veth pair); each programs its flannel.1 and
//! the other's lease over netlink; a TCP connection between the nodes'
//! subnet addresses crosses the tunnel; removing the peer removes its
//! route. A thousand peers programmed at once (`add_peers`) all land.
//! Root needed (fails under CI=true, skips otherwise).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::time::Duration;

use ferry_overlay::vxlan::{
    DeviceSpec, add_peer, add_peers, ensure_device, format_mac, link_index, remove_peer,
};
use ferry_overlay::{BackendData, Lease, LeaseAttrs};

struct Ns(&'static str);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", self.0]).output();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lease(subnet: &str, public: [u8; 4], mac: [u8; 6]) -> Lease {
    Lease {
        subnet: subnet.parse().unwrap(),
        attrs: LeaseAttrs {
            public_ip: public.into(),
            backend_type: "vxlan".into(),
            backend_data: Some(BackendData {
                vni: 1,
                vtep_mac: format_mac(&mac),
            }),
        },
    }
}

/// Programs node `ns`: its device for `own`, and `peer`.
fn program(ns: &str, own: &Lease, mac: [u8; 6], peer: &Lease) {
    let peer = peer.clone();
    on_device(ns, own, mac, async move |handle, dev| {
        // Twice: programming is idempotent.
        add_peer(handle, dev, &peer).await.unwrap();
        add_peer(handle, dev, &peer).await.unwrap();
    });
}

/// Inside namespace `ns` (which has an `eth0`): makes flannel.1 for
/// `own` (its subnet, its PublicIP on eth0, MAC `mac`) and runs `f` with
/// the netlink handle and the device.
fn on_device<T: Send>(
    ns: &str,
    own: &Lease,
    mac: [u8; 6],
    f: impl AsyncFnOnce(&rtnetlink::Handle, &ferry_overlay::vxlan::VxlanDevice) -> T + Send,
) -> T {
    let own = own.clone();
    ferry_sys::netns::in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(conn);
            // (Not /sys: this thread entered the namespace, sysfs did not.)
            let eth0 = link_index(&handle, "eth0").await.unwrap().unwrap();
            let dev = ensure_device(
                &handle,
                &DeviceSpec {
                    vni: 1,
                    port: 8472,
                    underlay_index: eth0,
                    local_ip: own.attrs.public_ip,
                    underlay_mtu: 1500,
                    mac,
                    subnet: own.subnet,
                },
            )
            .await
            .unwrap();
            f(&handle, &dev).await
        })
    })
    .unwrap()
}

/// Connects from 10.60.1.1 in `a` to `to` served in `b`; what `b` saw.
fn client_seen_by(a: &Ns, b: &Ns, to: &str) -> String {
    let to: std::net::SocketAddr = to.parse().unwrap();
    let listener = ferry_sys::netns::in_netns(b.0, move || std::net::TcpListener::bind(to))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().unwrap();
        c.write_all(peer.ip().to_string().as_bytes()).unwrap();
    });
    let seen = ferry_sys::netns::in_netns(a.0, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::AsyncReadExt;
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind("10.60.1.1:0".parse().unwrap()).unwrap();
            let mut c = tokio::time::timeout(Duration::from_secs(3), sock.connect(to))
                .await
                .expect("connect in time")
                .unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            out
        })
    })
    .unwrap();
    server.join().unwrap();
    seen
}

#[test]
fn two_nodes_reach_each_others_subnet_through_flannel_1() {
    if !ferry_sys::testing::root_or_skip("the overlay's kernel tests") {
        return;
    }
    let (a, b) = (Ns("ferry-test-vxa"), Ns("ferry-test-vxb"));
    for ns in [a.0, b.0] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(&[
        "-n", a.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.0,
    ]);
    ip(&["-n", a.0, "addr", "add", "192.168.250.1/24", "dev", "eth0"]);
    ip(&["-n", b.0, "addr", "add", "192.168.250.2/24", "dev", "eth0"]);
    for ns in [a.0, b.0] {
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }
    ip(&["-n", b.0, "addr", "add", "10.60.2.1/32", "dev", "lo"]);
    let (mac_a, mac_b) = ([0x02, 0, 0, 0, 0, 0x0a], [0x02, 0, 0, 0, 0, 0x0b]);
    let lease_a = lease("10.60.1.0/24", [192, 168, 250, 1], mac_a);
    let lease_b = lease("10.60.2.0/24", [192, 168, 250, 2], mac_b);
    program(a.0, &lease_a, mac_a, &lease_b);
    program(b.0, &lease_b, mac_b, &lease_a);

    let link = ip(&["-n", a.0, "-d", "link", "show", "flannel.1"]);
    assert!(
        link.contains("vxlan id 1") && link.contains("dstport 8472"),
        "{link}"
    );
    assert!(
        link.contains("nolearning") && link.contains("mtu 1450"),
        "{link}"
    );
    assert!(
        link.contains("02:00:00:00:00:0a"),
        "the MAC asked for: {link}"
    );
    let fdb = Command::new("bridge")
        .args(["-n", a.0, "fdb", "show", "dev", "flannel.1"])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(
        fdb.contains("02:00:00:00:00:0b dst 192.168.250.2 self permanent"),
        "{fdb}"
    );
    let neigh = ip(&["-n", a.0, "neigh", "show", "dev", "flannel.1"]);
    assert!(
        neigh.contains("10.60.2.0 lladdr 02:00:00:00:00:0b PERMANENT"),
        "{neigh}"
    );
    let routes = ip(&["-n", a.0, "route", "show", "dev", "flannel.1"]);
    assert!(
        routes.contains("10.60.2.0/24 via 10.60.2.0") && routes.contains("onlink"),
        "{routes}"
    );

    // TCP from node A to an address in node B's subnet, through the tunnel.
    let listener =
        ferry_sys::netns::in_netns(b.0, || std::net::TcpListener::bind("10.60.2.1:7070"))
            .unwrap()
            .unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().unwrap();
        c.write_all(peer.ip().to_string().as_bytes()).unwrap();
    });
    let mut c = ferry_sys::netns::in_netns(a.0, || {
        TcpStream::connect_timeout(&"10.60.2.1:7070".parse().unwrap(), Duration::from_secs(3))
    })
    .unwrap()
    .expect("connect through flannel.1");
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut seen = String::new();
    c.read_to_string(&mut seen).unwrap();
    server.join().unwrap();
    assert_eq!(
        seen, "10.60.1.0",
        "the client is node A's flannel.1 address"
    );
    let _: Ipv4Addr = seen.parse().unwrap();

    // Masquerade: pod traffic leaving the pod network takes the node's
    // address; pod to pod keeps its own.
    ip(&["-n", a.0, "addr", "add", "10.60.1.1/32", "dev", "lo"]);
    ferry_overlay::masquerade::apply(
        "10.60.0.0/16".parse().unwrap(),
        "10.60.1.0/24".parse().unwrap(),
        Some(a.0),
    )
    .unwrap();
    assert_eq!(
        client_seen_by(&a, &b, "192.168.250.2:7071"),
        "192.168.250.1",
        "masqueraded"
    );
    assert_eq!(
        client_seen_by(&a, &b, "10.60.2.1:7072"),
        "10.60.1.1",
        "pod to pod"
    );

    // The peer goes: its route goes.
    ferry_sys::netns::in_netns(a.0, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(conn);
            let dev = ferry_overlay::vxlan::VxlanDevice {
                name: "flannel.1".into(),
                index: link_index(&handle, "flannel.1").await.unwrap().unwrap(),
                mac: mac_a,
            };
            remove_peer(&handle, &dev, &lease_b).await.unwrap();
            remove_peer(&handle, &dev, &lease_b).await.unwrap();
        });
    })
    .unwrap();
    let routes = ip(&["-n", a.0, "route", "show", "dev", "flannel.1"]);
    assert!(!routes.contains("10.60.2.0/24"), "{routes}");
    let neigh = ip(&["-n", a.0, "neigh", "show", "dev", "flannel.1"]);
    assert!(!neigh.contains("10.60.2.0"), "{neigh}");
}

/// A namespace `ferry-test-TAG-PID` with a veth `eth0` (up, its peer
/// unused) and flannel.1 on it for subnet `own`; runs `f` with the handle
/// and device inside it.
fn with_device<T: Send>(
    tag: &str,
    own: &str,
    f: impl AsyncFnOnce(&rtnetlink::Handle, &ferry_overlay::vxlan::VxlanDevice) -> T + Send,
) -> (Ns, T) {
    let ns = Ns(Box::leak(
        format!("ferry-test-{tag}-{}", std::process::id()).into_boxed_str(),
    ));
    ip(&["netns", "add", ns.0]);
    ip(&[
        "-n", ns.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ip(&["-n", ns.0, "link", "set", "eth0", "up"]);
    let own = lease(own, [192, 168, 253, 1], [0x02, 0, 0, 0, 0, 0x0c]);
    let out = on_device(ns.0, &own, [0x02, 0, 0, 0, 0, 0x0c], f);
    (ns, out)
}

#[test]
fn a_thousand_peers_programmed_at_once_all_land() {
    if !ferry_sys::testing::root_or_skip("the overlay's kernel tests") {
        return;
    }
    let leases: Vec<Lease> = (0..1000u32)
        .map(|i| {
            let (hi, lo) = ((i / 256) as u8, (i % 256) as u8);
            lease(
                &format!("10.{}.{lo}.0/24", 100 + hi),
                [172, 22, hi, lo],
                [0x02, 0xee, 0, 0, hi, lo],
            )
        })
        .collect();
    let (ns, ()) = with_device("vxp", "10.99.0.0/24", async |handle, dev| {
        add_peers(handle, dev, &leases).await.unwrap();
        // Again: replacing what is there is not an error.
        add_peers(handle, dev, &leases[..10]).await.unwrap();
    });

    let routes = ip(&["-n", ns.0, "route", "show", "dev", "flannel.1"]);
    let neigh = ip(&["-n", ns.0, "neigh", "show", "dev", "flannel.1"]);
    let fdb = Command::new("bridge")
        .args(["-n", ns.0, "fdb", "show", "dev", "flannel.1"])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
    assert_eq!(
        routes.lines().filter(|l| l.contains("onlink")).count(),
        1000
    );
    assert_eq!(
        neigh.lines().filter(|l| l.contains("PERMANENT")).count(),
        1000
    );
    assert_eq!(
        fdb.lines().filter(|l| l.contains("dst 172.22.")).count(),
        1000
    );
    // The last and the first, entry by entry.
    assert!(
        routes.contains("10.103.231.0/24 via 10.103.231.0")
            && routes.contains("10.100.0.0/24 via 10.100.0.0"),
        "{routes}"
    );
    assert!(
        neigh.contains("10.103.231.0 lladdr 02:ee:00:00:03:e7 PERMANENT"),
        "{neigh}"
    );
    assert!(
        fdb.contains("02:ee:00:00:03:e7 dst 172.22.3.231 self permanent"),
        "{fdb}"
    );
}

#[test]
fn add_peers_refuses_a_lease_without_a_vtep_mac_before_sending_anything() {
    if !ferry_sys::testing::root_or_skip("the overlay's kernel tests") {
        return;
    }
    let good = lease("10.70.1.0/24", [172, 23, 0, 1], [0x02, 0, 0, 0, 0x70, 1]);
    let mut bad = lease("10.70.2.0/24", [172, 23, 0, 2], [0x02, 0, 0, 0, 0x70, 2]);
    bad.attrs.backend_data = None;
    let (ns, err) = with_device("vxq", "10.70.0.0/24", async |handle, dev| {
        add_peers(handle, dev, &[good, bad]).await.unwrap_err()
    });
    assert!(err.to_string().contains("10.70.2.0/24"), "{err}");
    let routes = ip(&["-n", ns.0, "route", "show", "dev", "flannel.1"]);
    assert!(!routes.contains("10.70.1.0"), "nothing sent: {routes}");
}
