//! The pod's wiring over netlink (no `ip` commands), as the reference
//! bridge plugin does it: the node's bridge (made if missing) with the
//! gateway address, a veth pair whose host end joins the bridge (hairpin
//! on, so a pod reaches itself through a Service) and whose other end
//! moves into the pod's namespace as CNI_IFNAME with the pod's address,
//! MTU and routes. Each function runs against a netlink handle of the
//! namespace it is given; `in_pod` opens one inside the pod's namespace.
//! Touches the kernel.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{CniError, Code};
use crate::result::Iface;

fn kernel(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> CniError {
    let what = what.into();
    move |e| CniError::new(Code::Kernel, format!("netlink: {what}: {e}"))
}

/// Runs `f` with a netlink handle of the current thread's namespace on a
/// runtime of its own.
pub fn with_handle<T>(f: impl AsyncFnOnce(Handle) -> Result<T, CniError>) -> Result<T, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(Code::Io, format!("starting a runtime: {e}")))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| CniError::new(Code::Io, format!("opening a netlink socket: {e}")))?;
        tokio::spawn(conn);
        f(handle).await
    })
}

/// Runs `f` with a netlink handle inside the namespace at `netns`.
pub fn in_pod<T: Send>(
    netns: &Path,
    f: impl AsyncFnOnce(Handle) -> Result<T, CniError> + Send,
) -> Result<T, CniError> {
    ferry_sys::netns::in_netns_path(netns, || with_handle(f)).map_err(|e| netns_error(netns, e))?
}

/// A namespace that cannot be entered: missing is "unknown container" (3).
pub fn netns_error(netns: &Path, e: std::io::Error) -> CniError {
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        Code::UnknownContainer
    } else {
        Code::Io
    };
    CniError::new(code, format!("network namespace {}: {e}", netns.display()))
}

async fn get(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l),
        // No such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(kernel(format!("looking up {name}"))(e)),
    }
}

/// The interface's name, MAC and MTU, and its bridge (controller) index.
pub async fn describe(
    handle: &Handle,
    name: &str,
) -> Result<Option<(Iface, u32, Option<u32>)>, CniError> {
    let Some(link) = get(handle, name).await? else {
        return Ok(None);
    };
    let (mut mac, mut mtu, mut controller) = (String::new(), 0, None);
    for a in &link.attributes {
        match a {
            LinkAttribute::Address(bytes) => {
                mac = bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Controller(c) => controller = Some(*c),
            _ => {}
        }
    }
    Ok(Some((
        Iface {
            name: name.to_string(),
            mac,
            mtu,
        },
        link.header.index,
        controller,
    )))
}

/// Makes (or reuses) the bridge, gives it the gateway address and
/// brings it up; returns its index.
pub async fn ensure_bridge(handle: &Handle, name: &str, gateway: Ipv4Net) -> Result<u32, CniError> {
    let index = match get(handle, name).await? {
        Some(l) => l.header.index,
        None => {
            match handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
            {
                Ok(()) => {}
                // Another ADD made it in the meantime.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -17 => {}
                Err(e) => return Err(kernel(format!("creating bridge {name}"))(e)),
            }
            get(handle, name)
                .await?
                .ok_or_else(|| {
                    CniError::new(
                        Code::Kernel,
                        format!("bridge {name} vanished right after it was made"),
                    )
                })?
                .header
                .index
        }
    };
    address_up(handle, index, name, gateway).await?;
    Ok(index)
}

/// Gives interface `index` the address (replacing it if present) and
/// brings it up.
async fn address_up(
    handle: &Handle,
    index: u32,
    name: &str,
    address: Ipv4Net,
) -> Result<(), CniError> {
    handle
        .address()
        .add(index, IpAddr::V4(address.addr()), address.prefix_len())
        .replace()
        .execute()
        .await
        .map_err(kernel(format!("the address {address} on {name}")))?;
    up(handle, index, name).await
}

async fn up(handle: &Handle, index: u32, name: &str) -> Result<(), CniError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(kernel(format!("bringing {name} up")))
}

/// Deletes interface `name` if it exists.
pub async fn delete(handle: &Handle, name: &str) -> Result<bool, CniError> {
    let Some(link) = get(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(false),
        Err(e) => Err(kernel(format!("deleting {name}"))(e)),
    }
}

/// The veth pair: `host` on the bridge (hairpin as asked, up), `peer`
/// made in the namespace `netns` (under its temporary name).
pub async fn make_veth(
    handle: &Handle,
    host: &str,
    peer: &str,
    mtu: u32,
    bridge: u32,
    hairpin: bool,
    netns: &std::fs::File,
) -> Result<(), CniError> {
    // Left over from an ADD that failed half-way.
    delete(handle, host).await?;
    delete(handle, peer).await?;
    // The peer is made straight in the pod's namespace (as the reference
    // plugins do): moving a device between namespaces afterwards costs the
    // kernel a synchronize_net, ~15 ms per pod.
    let peer_msg = LinkUnspec::new_with_name(peer)
        .mtu(mtu)
        .setns_by_fd(netns.as_raw_fd())
        .build();
    let veth = rtnetlink::LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .mtu(mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    handle
        .link()
        .add(veth)
        .execute()
        .await
        .map_err(kernel(format!("creating veth {host}")))?;
    let index = |name: &'static str, n: String| async move {
        get(handle, &n)
            .await?
            .map(|l| l.header.index)
            .ok_or_else(|| {
                CniError::new(
                    Code::Kernel,
                    format!("{name} {n} vanished right after it was made"),
                )
            })
    };
    let host_index = index("veth", host.to_string()).await?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(host_index)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(kernel(format!("attaching {host} to the bridge")))?;
    if hairpin {
        handle
            .link()
            .set_port(LinkBridgePort::new(host_index).hairpin(true).build())
            .execute()
            .await
            .map_err(kernel(format!("hairpin mode on {host}")))?;
    }
    Ok(())
}

/// Inside the pod: the moved end takes its name, MTU, address and routes.
pub async fn configure_pod(
    handle: &Handle,
    temp: &str,
    ifname: &str,
    address: Ipv4Net,
    gateway: Ipv4Addr,
    routes: &[Ipv4Net],
) -> Result<Iface, CniError> {
    let index = get(handle, temp)
        .await?
        .ok_or_else(|| {
            CniError::new(
                Code::Kernel,
                format!("{temp} did not arrive in the pod's namespace"),
            )
        })?
        .header
        .index;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name(ifname.to_string())
                .build(),
        )
        .execute()
        .await
        .map_err(kernel(format!("renaming {temp} to {ifname}")))?;
    address_up(handle, index, ifname, address).await?;
    for dst in routes {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(gateway)
            .output_interface(index)
            .build();
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(kernel(format!("the route to {dst} via {gateway}")))?;
    }
    if let Some(lo) = get(handle, "lo").await? {
        up(handle, lo.header.index, "lo").await?;
    }
    describe(handle, ifname)
        .await?
        .map(|(i, _, _)| i)
        .ok_or_else(|| CniError::new(Code::Kernel, format!("{ifname} vanished in the pod")))
}

/// The IPv4 addresses (with prefix) of interface `index`.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<Ipv4Net>, CniError> {
    let mut out = Vec::new();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(kernel("listing addresses"))?
    {
        for a in &msg.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = a
                && let Ok(net) = Ipv4Net::new(*ip, msg.header.prefix_len)
            {
                out.push(net);
            }
        }
    }
    Ok(out)
}
