//! The underlay: which interface carries the node's traffic to the other
//! nodes, and the node's public IP on it, chosen as flanneld's `--iface`
//! and `--public-ip` choose them: `--iface` by name or by address, else
//! the interface of the default route; the public IP is `--public-ip`,
//! else the interface's first IPv4 address. Also the plain routes (host-gw
//! and DirectRouting) via a peer's public IP on it.
//!
//! Touches the kernel: reads links, addresses and routes over netlink
//! (interface addresses through getifaddrs), adds and deletes routes.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::Handle;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};

use crate::vxlan::VxlanError;

/// The interface the overlay runs over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    /// The interface's own address and network.
    pub address: Ipv4Net,
    /// What peers send to (PublicIP in the lease).
    pub public_ip: Ipv4Addr,
}

#[derive(Debug, thiserror::Error)]
pub enum UnderlayError {
    #[error("--iface {0}: no interface has that name or address")]
    NoSuchInterface(String),
    #[error("no default route: give --iface to say which interface reaches the other nodes")]
    NoDefaultRoute,
    #[error("interface {0} has no IPv4 address")]
    NoAddress(String),
    #[error(transparent)]
    Netlink(#[from] VxlanError),
}

fn nl(what: &str) -> impl FnOnce(rtnetlink::Error) -> VxlanError + '_ {
    move |source| VxlanError::Netlink {
        what: what.to_string(),
        source,
    }
}

/// IPv4 addresses by interface name, in the kernel's order.
fn ipv4_addresses() -> Vec<(String, Ipv4Net)> {
    ferry_sys::interface_ipv4_addresses()
        .into_iter()
        .filter_map(|(name, ip, prefix)| Some((name, Ipv4Net::new(ip, prefix).ok()?)))
        .collect()
}

/// The interface of the IPv4 default route (the lowest metric first).
async fn default_route_interface(handle: &Handle) -> Result<Option<u32>, VxlanError> {
    let request = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut routes = handle.route().get(request).execute();
    let mut best: Option<(u32, u32)> = None;
    while let Some(route) = routes.try_next().await.map_err(nl("reading the routes"))? {
        if route.header.destination_prefix_length != 0
            || route.header.table != rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN
        {
            continue;
        }
        let mut oif = None;
        let mut metric = 0;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => metric = *p,
                _ => {}
            }
        }
        if let Some(i) = oif
            && best.is_none_or(|(_, m)| metric < m)
        {
            best = Some((i, metric));
        }
    }
    Ok(best.map(|(i, _)| i))
}

async fn link(
    handle: &Handle,
    index: Option<u32>,
    name: Option<&str>,
) -> Option<(u32, String, u32)> {
    let mut req = handle.link().get();
    if let Some(i) = index {
        req = req.match_index(i);
    }
    if let Some(n) = name {
        req = req.match_name(n.to_string());
    }
    let msg = req.execute().try_next().await.ok()??;
    let mut link_name = String::new();
    let mut mtu = 1500;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link_name = n.clone(),
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    Some((msg.header.index, link_name, mtu))
}

/// Chooses the underlay as flanneld does.
pub async fn choose(
    handle: &Handle,
    iface: Option<&str>,
    public_ip: Option<Ipv4Addr>,
) -> Result<Underlay, UnderlayError> {
    let addresses = ipv4_addresses();
    let (index, name, mtu) = match iface {
        Some(wanted) => {
            let by_address = wanted.parse::<Ipv4Addr>().ok().and_then(|ip| {
                addresses
                    .iter()
                    .find(|(_, a)| a.addr() == ip)
                    .map(|(n, _)| n.clone())
            });
            let name = by_address.unwrap_or_else(|| wanted.to_string());
            link(handle, None, Some(&name))
                .await
                .ok_or_else(|| UnderlayError::NoSuchInterface(wanted.to_string()))?
        }
        None => {
            let index = default_route_interface(handle)
                .await?
                .ok_or(UnderlayError::NoDefaultRoute)?;
            link(handle, Some(index), None)
                .await
                .ok_or(UnderlayError::NoDefaultRoute)?
        }
    };
    let address = match iface.and_then(|i| i.parse::<Ipv4Addr>().ok()) {
        Some(ip) => addresses
            .iter()
            .find(|(n, a)| *n == name && a.addr() == ip)
            .map(|(_, a)| *a),
        None => addresses.iter().find(|(n, _)| *n == name).map(|(_, a)| *a),
    }
    .ok_or_else(|| UnderlayError::NoAddress(name.clone()))?;
    Ok(Underlay {
        public_ip: public_ip.unwrap_or(address.addr()),
        name,
        index,
        mtu,
        address,
    })
}

/// The IPv4 routes of the main table out of interface `index`:
/// destination and gateway (what an earlier run may have left).
pub async fn routes_via(
    handle: &Handle,
    index: u32,
) -> Result<Vec<(Ipv4Net, Option<Ipv4Addr>)>, VxlanError> {
    use rtnetlink::packet_route::route::RouteAddress;
    let request = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut routes = handle.route().get(request).execute();
    let mut out = Vec::new();
    while let Some(route) = routes.try_next().await.map_err(nl("reading the routes"))? {
        if route.header.table != rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN {
            continue;
        }
        let (mut dst, mut gw, mut oif) = (None, None, None);
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(*a),
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(*a),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        if oif == Some(index)
            && let Some(d) = dst
            && let Ok(net) = Ipv4Net::new(d, route.header.destination_prefix_length)
        {
            out.push((net, gw));
        }
    }
    Ok(out)
}

fn plain_route(underlay: &Underlay, subnet: Ipv4Net, via: Ipv4Addr) -> RouteMessage {
    rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(subnet.network(), subnet.prefix_len())
        .gateway(via)
        .output_interface(underlay.index)
        .build()
}

/// `subnet via VIA dev UNDERLAY` (replacing whatever route was there).
pub async fn add_route(
    handle: &Handle,
    underlay: &Underlay,
    subnet: Ipv4Net,
    via: Ipv4Addr,
) -> Result<(), VxlanError> {
    handle
        .route()
        .add(plain_route(underlay, subnet, via))
        .replace()
        .execute()
        .await
        .map_err(|source| VxlanError::Netlink {
            what: format!("the route to {subnet} via {via}"),
            source,
        })
}

/// Deletes that route (already gone is fine).
pub async fn remove_route(
    handle: &Handle,
    underlay: &Underlay,
    subnet: Ipv4Net,
    via: Ipv4Addr,
) -> Result<(), VxlanError> {
    match handle
        .route()
        .del(plain_route(underlay, subnet, via))
        .execute()
        .await
    {
        Err(rtnetlink::Error::NetlinkError(e)) if matches!(e.raw_code(), -2 | -3) => Ok(()),
        other => other.map_err(|source| VxlanError::Netlink {
            what: format!("deleting the route to {subnet} via {via}"),
            source,
        }),
    }
}
