//! The VXLAN backend, as flannel programs it, over netlink (no `ip`
//! commands): a device `flannel.<VNI>` (learning off, the kernel's port
//! 8472 unless configured, MTU of the underlay minus 50, a MAC the caller
//! keeps stable across restarts, the node subnet's network address as a
//! /32), and for each remote lease one permanent neighbour (the remote
//! subnet's network address -> the remote VTEP MAC), one FDB entry (that
//! MAC -> the remote node's public IP) and one onlink route (the remote
//! subnet via its network address on the device). The only place the
//! overlay changes the kernel.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourState};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::lease::Lease;

/// VXLAN's encapsulation overhead (flannel's `encapOverhead`).
pub const ENCAP_OVERHEAD: u32 = 50;

#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("lease {subnet}: {why}")]
    Lease { subnet: Ipv4Net, why: String },
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> VxlanError {
    let what = what.into();
    move |source| VxlanError::Netlink { what, source }
}

/// This node's VXLAN device.
#[derive(Clone, Debug)]
pub struct VxlanDevice {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

/// What the device is made from.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    pub vni: u32,
    pub port: u16,
    /// The underlay interface and this node's public IP on it.
    pub underlay_index: u32,
    pub local_ip: Ipv4Addr,
    pub underlay_mtu: u32,
    pub mac: [u8; 6],
    /// This node's subnet.
    pub subnet: Ipv4Net,
}

/// The device's MAC for a node and VNI: the same after every restart (a
/// peer's FDB entry and neighbour stay right without a new lease), locally
/// administered and unicast. flannel keeps its MAC by keeping the device;
/// ferry derives it, so a recreated device keeps it too.
pub fn stable_mac(node: &str, vni: u32) -> [u8; 6] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("ferry-vtep/{node}/{vni}"));
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// `aa:bb:cc:dd:ee:ff` -> bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Bytes -> `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The index of interface `name` in the handle's namespace, if it exists.
pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, VxlanError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // No such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(nl(format!("looking up {name}"))(e)),
    }
}

/// Makes (or reuses) `flannel.<VNI>`, gives it the subnet's network
/// address as a /32 and brings it up.
pub async fn ensure_device(handle: &Handle, spec: &DeviceSpec) -> Result<VxlanDevice, VxlanError> {
    let name = format!("flannel.{}", spec.vni);
    let index = match link_index(handle, &name).await? {
        Some(i) => i,
        None => {
            let msg = LinkVxlan::new(&name, spec.vni)
                .dev(spec.underlay_index)
                .port(spec.port)
                .local(spec.local_ip)
                .learning(false)
                .address(spec.mac.to_vec())
                .mtu(spec.underlay_mtu.saturating_sub(ENCAP_OVERHEAD))
                .build();
            handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(nl(format!("creating {name}")))?;
            link_index(handle, &name)
                .await?
                .ok_or_else(|| VxlanError::Lease {
                    subnet: spec.subnet,
                    why: format!("{name} vanished right after it was made"),
                })?
        }
    };
    handle
        .address()
        .add(index, IpAddr::V4(spec.subnet.network()), 32)
        .replace()
        .execute()
        .await
        .map_err(nl(format!("the address of {name}")))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("bringing {name} up")))?;
    Ok(VxlanDevice {
        name,
        index,
        mac: spec.mac,
    })
}

fn peer_mac(lease: &Lease) -> Result<[u8; 6], VxlanError> {
    lease
        .attrs
        .backend_data
        .as_ref()
        .and_then(|d| parse_mac(&d.vtep_mac))
        .ok_or_else(|| VxlanError::Lease {
            subnet: lease.subnet,
            why: "no VtepMAC in its BackendData".into(),
        })
}

fn route(dev: &VxlanDevice, subnet: Ipv4Net) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(subnet.network(), subnet.prefix_len())
        .gateway(subnet.network())
        .output_interface(dev.index)
        .onlink()
        .build()
}

/// The neighbour, FDB entry and route for a remote lease (replacing
/// whatever was there): [`add_peers`] for one lease.
pub async fn add_peer(handle: &Handle, dev: &VxlanDevice, lease: &Lease) -> Result<(), VxlanError> {
    add_peers(handle, dev, std::slice::from_ref(lease)).await
}

/// How many requests [`add_peers`] keeps in flight on the one netlink
/// socket: enough to hide the round trips, few enough that the kernel's
/// acknowledgements never overflow the socket's receive buffer (an
/// overflow loses acks, and the requests waiting on them fail).
pub const PEERS_IN_FLIGHT: usize = 128;

/// [`add_peer`] for many leases at once: every lease's neighbour, FDB
/// entry and route, pipelined on the handle's one netlink connection
/// ([`PEERS_IN_FLIGHT`] requests outstanding) rather than one round trip
/// after another. A lease without a VTEP MAC fails before anything is
/// sent; the first kernel error is returned (the other requests may still
/// have landed, as with `add_peer`; programming again is idempotent).
pub async fn add_peers(
    handle: &Handle,
    dev: &VxlanDevice,
    leases: &[Lease],
) -> Result<(), VxlanError> {
    use futures_util::StreamExt;
    let macs = leases.iter().map(peer_mac).collect::<Result<Vec<_>, _>>()?;
    let requests = leases.iter().zip(macs).flat_map(|(lease, mac)| {
        let gw = IpAddr::V4(lease.subnet.network());
        let neighbour = handle
            .neighbours()
            .add(dev.index, gw)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        let fdb = handle
            .neighbours()
            .add_bridge(dev.index, &mac)
            .destination(IpAddr::V4(lease.attrs.public_ip))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        let route = handle
            .route()
            .add(route(dev, lease.subnet))
            .replace()
            .execute();
        let subnet = lease.subnet;
        let boxed =
            |f: std::pin::Pin<Box<dyn Future<Output = Result<(), rtnetlink::Error>> + Send>>,
             what: String| async move { f.await.map_err(nl(what)) };
        [
            boxed(Box::pin(neighbour), format!("the neighbour of {subnet}")),
            boxed(Box::pin(fdb), format!("the FDB entry of {subnet}")),
            boxed(Box::pin(route), format!("the route to {subnet}")),
        ]
    });
    let mut results = futures_util::stream::iter(requests).buffer_unordered(PEERS_IN_FLIGHT);
    let mut first_error = None;
    while let Some(r) = results.next().await {
        if let Err(e) = r
            && first_error.is_none()
        {
            first_error = Some(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Removes a remote lease's route, neighbour and FDB entry (already gone
/// is fine).
pub async fn remove_peer(
    handle: &Handle,
    dev: &VxlanDevice,
    lease: &Lease,
) -> Result<(), VxlanError> {
    let gone = |r: Result<(), rtnetlink::Error>, what: String| match r {
        Err(rtnetlink::Error::NetlinkError(e)) if matches!(e.raw_code(), -2 | -3) => Ok(()),
        other => other.map_err(nl(what)),
    };
    gone(
        handle.route().del(route(dev, lease.subnet)).execute().await,
        format!("deleting the route to {}", lease.subnet),
    )?;
    let mac = peer_mac(lease)?;
    let mut neigh = handle
        .neighbours()
        .add(dev.index, IpAddr::V4(lease.subnet.network()));
    let neigh = neigh.message_mut().clone();
    gone(
        handle.neighbours().del(neigh).execute().await,
        format!("deleting the neighbour of {}", lease.subnet),
    )?;
    remove_fdb(handle, dev, mac, lease.attrs.public_ip).await
}

/// Removes the route and neighbour an earlier run left for `subnet`
/// whose lease (and so VTEP MAC) is no longer known; its FDB entry goes
/// by [`remove_fdb`] (the sweep matches entries by MAC).
pub async fn remove_stale(
    handle: &Handle,
    dev: &VxlanDevice,
    subnet: Ipv4Net,
) -> Result<(), VxlanError> {
    let gone = |r: Result<(), rtnetlink::Error>, what: String| match r {
        Err(rtnetlink::Error::NetlinkError(e)) if matches!(e.raw_code(), -2 | -3) => Ok(()),
        other => other.map_err(nl(what)),
    };
    gone(
        handle.route().del(route(dev, subnet)).execute().await,
        format!("deleting the stale route to {subnet}"),
    )?;
    let mut neigh = handle
        .neighbours()
        .add(dev.index, IpAddr::V4(subnet.network()));
    let neigh = neigh.message_mut().clone();
    gone(
        handle.neighbours().del(neigh).execute().await,
        format!("deleting the stale neighbour of {subnet}"),
    )
}

/// The unicast FDB entries on the device that point at a remote VTEP
/// (MAC -> destination IP): what an earlier run may have left.
pub async fn fdb_entries(
    handle: &Handle,
    dev: &VxlanDevice,
) -> Result<Vec<([u8; 6], Ipv4Addr)>, VxlanError> {
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
    let mut dump = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute();
    let mut out = Vec::new();
    while let Some(n) = dump
        .try_next()
        .await
        .map_err(nl(format!("listing the FDB of {}", dev.name)))?
    {
        if n.header.ifindex != dev.index {
            continue;
        }
        let (mut mac, mut dst) = (None, None);
        for a in &n.attributes {
            match a {
                NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                    mac = <[u8; 6]>::try_from(b.as_slice()).ok()
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
                // A bridge FDB dump leaves the address undecoded.
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                    dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                }
                _ => {}
            }
        }
        if let (Some(mac), Some(dst)) = (mac, dst)
            && mac != [0; 6]
        {
            out.push((mac, dst));
        }
    }
    Ok(out)
}

/// Removes one FDB entry (already gone is fine).
pub async fn remove_fdb(
    handle: &Handle,
    dev: &VxlanDevice,
    mac: [u8; 6],
    dst: Ipv4Addr,
) -> Result<(), VxlanError> {
    let mut fdb = handle
        .neighbours()
        .add_bridge(dev.index, &mac)
        .destination(IpAddr::V4(dst))
        .flags(NeighbourFlags::Own);
    let fdb = fdb.message_mut().clone();
    match handle.neighbours().del(fdb).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if matches!(e.raw_code(), -2 | -3) => Ok(()),
        other => other.map_err(nl(format!(
            "deleting the stale FDB entry {} -> {dst}",
            format_mac(&mac)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_macs_are_unicast_local_and_differ_by_node() {
        let a = stable_mac("node-1", 1);
        assert_eq!(a, stable_mac("node-1", 1));
        assert_ne!(a, stable_mac("node-2", 1));
        assert_ne!(a, stable_mac("node-1", 2));
        assert_eq!(a[0] & 0x03, 0x02, "{}", format_mac(&a));
    }

    #[test]
    fn macs_round_trip() {
        let m = parse_mac("12:c6:65:89:b4:e3").unwrap();
        assert_eq!(format_mac(&m), "12:c6:65:89:b4:e3");
        assert!(parse_mac("12:c6:65:89:b4").is_none());
        assert!(parse_mac("12:c6:65:89:b4:e3:00").is_none());
        assert!(parse_mac("zz:c6:65:89:b4:e3").is_none());
    }
}
