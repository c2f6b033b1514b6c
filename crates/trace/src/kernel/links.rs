//! Routes, neighbours and FDB entries of one node namespace, over
//! rtnetlink: a route lookup for a destination (what `ip route get`
//! asks), the neighbours and the bridge FDB of a device (what `ip neigh`
//! and `bridge fdb` list).
//!
//! Touches the kernel: netlink sockets opened inside the namespace
//! (`ferry_sys::netns::in_netns`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::TraceError;

/// What the route lookup gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteAnswer {
    pub dev: String,
    pub gateway: Option<Ipv4Addr>,
}

impl std::fmt::Display for RouteAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.gateway {
            Some(gw) => write!(f, "via {gw} dev {}", self.dev),
            None => write!(f, "dev {}", self.dev),
        }
    }
}

/// A neighbour or FDB entry of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ip: Option<IpAddr>,
    pub mac: String,
    pub permanent: bool,
}

/// The link state of one namespace a trace needs.
#[derive(Clone, Debug, Default)]
pub struct Links {
    pub routes: BTreeMap<Ipv4Addr, Result<RouteAnswer, String>>,
    /// By device: neighbours, FDB entries.
    pub neighbours: BTreeMap<String, Vec<Entry>>,
    pub fdb: BTreeMap<String, Vec<Entry>>,
}

fn mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

async fn names(handle: &Handle) -> Result<BTreeMap<u32, String>, rtnetlink::Error> {
    let mut out = BTreeMap::new();
    let mut links = handle.link().get().execute();
    while let Some(l) = links.try_next().await? {
        for a in &l.attributes {
            if let LinkAttribute::IfName(n) = a {
                out.insert(l.header.index, n.clone());
            }
        }
    }
    Ok(out)
}

async fn entries(
    handle: &Handle,
    family: AddressFamily,
    names: &BTreeMap<u32, String>,
    devs: &[String],
) -> Result<BTreeMap<String, Vec<Entry>>, rtnetlink::Error> {
    let mut out: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    let mut req = handle
        .neighbours()
        .get()
        .set_address_family(family)
        .execute();
    while let Some(n) = req.try_next().await? {
        let Some(dev) = names.get(&n.header.ifindex) else {
            continue;
        };
        if !devs.contains(dev) {
            continue;
        }
        let mut e = Entry {
            ip: None,
            mac: String::new(),
            permanent: n.header.state == NeighbourState::Permanent,
        };
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                    e.ip = Some(IpAddr::V4(*ip))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                    e.ip = Some(IpAddr::V6(*ip))
                }
                // In a bridge FDB dump the address is left undecoded.
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                    e.ip = Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
                }
                NeighbourAttribute::LinkLayerAddress(b) => e.mac = mac(b),
                _ => {}
            }
        }
        out.entry(dev.clone()).or_default().push(e);
    }
    Ok(out)
}

async fn route_get(
    handle: &Handle,
    names: &BTreeMap<u32, String>,
    dst: Ipv4Addr,
) -> Result<RouteAnswer, String> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .build();
    let mut answers = handle.route().get(msg).execute();
    let m = answers
        .try_next()
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no answer".to_string())?;
    let mut out = RouteAnswer {
        dev: String::new(),
        gateway: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => {
                out.dev = names.get(i).cloned().unwrap_or_else(|| format!("if{i}"))
            }
            RouteAttribute::Gateway(RouteAddress::Inet(gw)) => out.gateway = Some(*gw),
            _ => {}
        }
    }
    Ok(out)
}

/// Reads the routes to `dsts` and the neighbours and FDB entries of
/// `devs` inside network namespace `netns`.
pub fn read(netns: &str, dsts: &[Ipv4Addr], devs: &[String]) -> Result<Links, TraceError> {
    let fail = |why: String| TraceError::Kernel {
        netns: netns.to_string(),
        why,
    };
    let dsts = dsts.to_vec();
    let devs = devs.to_vec();
    ferry_sys::netns::in_netns(netns, move || -> Result<Links, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let names = names(&handle).await.map_err(|e| e.to_string())?;
            let mut links = Links::default();
            for d in dsts {
                links.routes.insert(d, route_get(&handle, &names, d).await);
            }
            links.neighbours = entries(&handle, AddressFamily::Inet, &names, &devs)
                .await
                .map_err(|e| format!("listing neighbours: {e}"))?;
            links.fdb = entries(&handle, AddressFamily::Bridge, &names, &devs)
                .await
                .map_err(|e| format!("listing the FDB: {e}"))?;
            Ok(links)
        })
    })
    .map_err(|e| fail(e.to_string()))?
    .map_err(fail)
}
