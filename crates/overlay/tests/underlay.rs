//! The underlay as flanneld chooses it, on a multi-NIC node: a scratch
//! namespace with two interfaces, the default route on one. Root needed
//! (fails under CI=true, skips otherwise).

use std::net::Ipv4Addr;
use std::process::Command;

use ferry_overlay::underlay::{UnderlayError, choose};

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ip(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_default_routes_interface_unless_iface_names_one_by_name_or_address() {
    if !ferry_sys::testing::root_or_skip("the overlay's kernel tests") {
        return;
    }
    let ns = Ns(format!("ferry-test-ul-{}", std::process::id()));
    let out = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .output()
        .unwrap();
    assert!(out.status.success());
    for (dev, addr) in [("nic0", "10.9.0.5/24"), ("nic1", "10.8.0.5/24")] {
        let peer = format!("{dev}p");
        ip(
            &ns.0,
            &["link", "add", dev, "type", "veth", "peer", "name", &peer],
        );
        ip(&ns.0, &["link", "set", &peer, "up"]);
        ip(&ns.0, &["addr", "add", addr, "dev", dev]);
        ip(&ns.0, &["link", "set", dev, "up"]);
    }
    ip(&ns.0, &["link", "set", "nic1", "mtu", "9000"]);
    ip(
        &ns.0,
        &["route", "add", "default", "via", "10.9.0.1", "dev", "nic0"],
    );
    let results = ferry_sys::netns::in_netns(&ns.0, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(conn);
            (
                choose(&handle, None, None).await,
                choose(&handle, Some("nic1"), None).await,
                choose(&handle, Some("10.8.0.5"), None).await,
                choose(&handle, None, Some(Ipv4Addr::new(203, 0, 113, 5))).await,
                choose(&handle, Some("nic9"), None).await,
            )
        })
    })
    .unwrap();
    let default = results.0.unwrap();
    assert_eq!(
        (default.name.as_str(), default.public_ip),
        ("nic0", Ipv4Addr::new(10, 9, 0, 5))
    );
    assert_eq!(default.address, "10.9.0.5/24".parse().unwrap());
    let by_name = results.1.unwrap();
    assert_eq!(
        (by_name.name.as_str(), by_name.public_ip, by_name.mtu),
        ("nic1", Ipv4Addr::new(10, 8, 0, 5), 9000)
    );
    let by_address = results.2.unwrap();
    assert_eq!(by_address.name, "nic1");
    let public = results.3.unwrap();
    assert_eq!(
        (public.name.as_str(), public.public_ip),
        ("nic0", Ipv4Addr::new(203, 0, 113, 5)),
        "--public-ip is what peers send to; the interface stays the default route's"
    );
    assert!(matches!(results.4, Err(UnderlayError::NoSuchInterface(_))));
}
